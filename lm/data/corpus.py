"""A small generated text corpus for pretraining: facts about a fixed cast, repeated in varied words.

Deterministic in ``seed``; the same facts recur across documents, so a tiny model's loss falls
well below that of memorising words. (The lab's full synthetic world lives in ``lm.data.world``.)
"""

import random

FIRST = ['Ada', 'Bram', 'Cora', 'Dov', 'Edda', 'Finn', 'Gala', 'Hugo', 'Ines', 'Jory', 'Kira', 'Lev',
         'Mara', 'Nils', 'Oona', 'Pim', 'Quill', 'Rosa', 'Sven', 'Tova', 'Ulla', 'Vik', 'Wren', 'Yara']
TOWNS = ['Aldmere', 'Brackwater', 'Coldharbor', 'Dunmoor', 'Eastwick', 'Fernhollow', 'Greyport', 'Highvale']
JOBS = ['baker', 'smith', 'weaver', 'miller', 'potter', 'healer', 'sailor', 'scribe']
PETS = ['cat', 'dog', 'goat', 'owl', 'horse', 'crow', 'fox', 'hare']
COLOURS = ['red', 'blue', 'green', 'white', 'black', 'golden']


def _cast(seed: int):
  rng = random.Random(seed)
  people = []
  for name in FIRST:
    people.append({'name': name, 'town': rng.choice(TOWNS), 'job': rng.choice(JOBS), 'pet': rng.choice(PETS),
                   'colour': rng.choice(COLOURS), 'age': rng.randint(18, 80), 'friend': rng.choice(FIRST)})
  return people


def _person_sentences(p, rng):
  return [
      rng.choice(['{name} lives in {town}.', '{name} makes a home in {town}.', 'In {town} lives {name}.']),
      rng.choice(['{name} works as a {job}.', 'By trade {name} is a {job}.', '{name} is the {job} of {town}.']),
      rng.choice(['{name} keeps a {colour} {pet}.', 'The {pet} of {name} is {colour}.']),
      rng.choice(['{name} is {age} years old.', 'At {age}, {name} is still busy.']),
      rng.choice(['{name} is a friend of {friend}.', '{friend} often visits {name}.']),
  ]


def _arithmetic(rng):
  a, b = rng.randint(0, 99), rng.randint(0, 99)
  return rng.choice([f'{a} plus {b} is {a + b}.', f'{a} + {b} = {a + b}.', f'{max(a, b)} - {min(a, b)} = {max(a, b) - min(a, b)}.'])


def documents(n: int, seed: int = 0) -> list[str]:
  """``n`` short documents: biographies of the cast and a little written-out arithmetic."""
  people = _cast(seed)
  rng = random.Random(seed + 1)
  docs = []
  for _ in range(n):
    if rng.random() < 0.2:
      docs.append(' '.join(_arithmetic(rng) for _ in range(rng.randint(2, 5))))
      continue
    p = rng.choice(people)
    sentences = _person_sentences(p, rng)
    rng.shuffle(sentences)
    docs.append(' '.join(s.format(**p) for s in sentences[:rng.randint(2, 5)]))
  return docs
