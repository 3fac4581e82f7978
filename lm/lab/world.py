"""The lab: a seeded, deterministic fictional world, and the text a model pretrains on.

``World(seed)`` holds four kinds of entity, each a frozen dataclass:

  Person    name, town, job, age, friend (a person), pet (a creature species)
  Town      name, region, population, river
  Creature  name (a species, e.g. "mosshopper"), colour, diet, legs, habitat (a region)
  Thing     name (e.g. "the Ashen Lantern", or with ``things='coined'`` "the Brelic Lantern"), material,
            maker (a person), town (where it is kept), year

A fraction of each kind is *held out*: those entities have facts, but their names never appear in
any text this module writes (articles, stories, ...); they exist so that questions about them
(``lm.lab.tasks``, family ``unknown_entity``) measure hallucination. Relations of known entities
only point at known entities.

Texts (all pure functions of the world and the given seed / ``random.Random``):

  world.articles()                  one encyclopedia article per known entity (canonical wording)
  world.article(entity, rng)        the same facts, paraphrased and reordered
  world.stories(n, rng)             short stories that only state true facts
  world.arithmetic_texts(n, rng)    written-out sums, differences, products and worked scratchpads
  world.word_lists(n, rng)          spellings and letter counts ("strawberry is spelled s-t-r-...")
  world.translation_texts(n, rng)   English/Veltic parallel sentences and glossary lines
  world.humour_texts(n, rng)        the old jokes and slogans told about known entities (``stale_jokes``,
                                    ``stale_slogans``: what the joke and slogan families call stale)
  world.qa_text(rng)                facts as plain questions and answers (``FACT_QUESTIONS``)
  world.reading_text(rng)           articles about made-up entities (``world.stranger``), then questions
                                    answered from them: reading a passage and copying from it
  world.translate_en_to_syn(s), world.translate_syn_to_en(s)   (see lm.lab.synthlang)
  world.pretraining_documents(n_docs=None, target_chars=None, seed=0, leave_out=None, mix=None)   a mix of
                                    the above, by kind and weight (``MIX`` by default)

The text generators take ``leave_out(family, key)``: a line stating an item it names (by the item keys
``arithmetic_key``, ``char_count_key``, ``spelling_key``, ``translation_key``, which the task families
use too) is drawn again; without it the texts are those of earlier versions, bit for bit.

The synthetic language lives in ``lm.lab.synthlang`` (``world.lang``); task families and gold
scorers in ``lm.lab.tasks``, their splits in ``lm.lab.splits``. CLI: ``python -m lm.world --task world_qa
--n 5`` prints samples (``--docs 3`` prints pretraining documents; ``--chars 20000000 --out f.txt`` times
generation).
"""

import dataclasses
import functools
import random
import re

from lm.lab.synthlang import ENGLISH_WORDS, LANG_NAME, SynthLang

REGIONS = ('North Marches', 'Sunward Coast', 'Greyfells', 'Low Meadows', 'Eastern Reach', 'Saltmarsh')
JOBS = ('baker', 'smith', 'weaver', 'miller', 'potter', 'healer', 'sailor', 'scribe', 'farmer', 'hunter',
        'fisher', 'guard', 'merchant', 'shepherd', 'carpenter', 'brewer', 'tailor', 'mason', 'cooper', 'herbalist')
COLOURS = ('red', 'blue', 'green', 'white', 'black', 'golden', 'grey', 'brown', 'orange', 'purple')
DIETS = ('fish', 'berries', 'grass', 'insects', 'roots', 'seeds', 'mushrooms', 'moss', 'worms', 'leaves')
LEGS = (2, 4, 6, 8)
MATERIALS = ('oak', 'bronze', 'silver', 'glass', 'stone', 'bone', 'iron', 'copper', 'clay', 'amber')
_CREATURE_HEADS = ('moss', 'ember', 'frost', 'dusk', 'reed', 'thorn', 'cinder', 'mire', 'gale', 'pebble',
                   'fern', 'brine', 'ash', 'dew', 'hollow')
_CREATURE_TAILS = ('hopper', 'wing', 'crawler', 'hound', 'strider', 'shell', 'snout', 'tail', 'back', 'horn')
_THING_ADJS = ('Ashen', 'Silent', 'Crimson', 'Hollow', 'Gilded', 'Weeping', 'Iron', 'Amber', 'Twin', 'Broken',
               'Winter', 'Morning', 'Sunken', 'Last', 'Wandering', 'Quiet')
_THING_KINDS = ('Lantern', 'Crown', 'Horn', 'Compass', 'Drum', 'Mirror', 'Bell', 'Chalice', 'Loom', 'Key')
_COINED_ENDS = ('dric', 'mor', 'vel', 'zar', 'lith', 'gant', 'rel', 'bis')
THINGS = ('adjectives', 'coined')  # how things are named (``World``)
CALLS = ('compact', 'spaced')  # how a calculator call writes a sum (``World``)
RESTATE = ('quoted', 'asked')  # how a counting scratchpad restates the letter and the word (``World``)
_ONSETS = ('b', 'br', 'd', 'dr', 'f', 'g', 'gr', 'h', 'k', 'l', 'm', 'n', 'p', 'r', 's', 'st', 't', 'th', 'v',
           'w', 'z', 'c', 'j', 'sh')
_NUCLEI = ('a', 'e', 'i', 'o', 'u', 'ai', 'ea', 'or', 'el', 'an', 'y')
_SURNAME_ENDS = ('wick', 'ford', 'ley', 'ton', 'well', 'more', 'by', 'dale', 'sen', 'ric', 'win', 'hart')
_TOWN_ENDS = ('mere', 'ford', 'wick', 'haven', 'holm', 'stead', 'bury', 'port', 'vale', 'crest', 'moor', 'field')
_RIVER_ENDS = ('n', 'th', 'l', 'sk', 'ra', 'wen', 'dal')

# Words for spelling and letter-counting (plus the lexicon's English words).
SPELL_WORDS = tuple(sorted(set(
    ('strawberry banana apple cherry blueberry raspberry mississippi bookkeeper committee balloon coffee '
     'letter pepper parallel necessary accommodate embarrass occurrence assessment possession tomorrow '
     'butterfly caterpillar elephant giraffe hippopotamus alligator kangaroo penguin squirrel rhinoceros '
     'library chocolate vegetable umbrella banner grammar address dinner summer bottle puzzle marshmallow '
     'cinnamon broccoli zucchini spaghetti lollipop bubble rabbit carrot pillow mirror scissors success '
     'assistant language translation arithmetic question answer window garden lantern harbour village').split()
    + list(ENGLISH_WORDS))))


@dataclasses.dataclass(frozen=True)
class Person:
  name: str
  town: str
  job: str
  age: int
  friend: str
  pet: str
  held_out: bool = False
  kind = 'person'


@dataclasses.dataclass(frozen=True)
class Town:
  name: str
  region: str
  population: int
  river: str
  held_out: bool = False
  kind = 'town'


@dataclasses.dataclass(frozen=True)
class Creature:
  name: str
  colour: str
  diet: str
  legs: int
  habitat: str
  held_out: bool = False
  kind = 'creature'


@dataclasses.dataclass(frozen=True)
class Thing:
  name: str
  material: str
  maker: str
  town: str
  year: int
  held_out: bool = False
  kind = 'thing'


def a_an(word: str) -> str:
  return ('an ' if word[0].lower() in 'aeiou' else 'a ') + word


def cap(s: str) -> str:
  return s[:1].upper() + s[1:]


def answer_sentence(template: str, name: str, value) -> str:
  """``template`` (an answer sentence of ``FACT_QUESTIONS`` or the tasks' questions) said of ``name`` with
  ``value`` ({s}/{S} the name, {v} the value, {a_v} it with its article)."""
  return template.format(s=name, S=cap(name), v=value, a_v=a_an(value) if isinstance(value, str) else value)


class World:
  """Entities with attributes and relations, some held out; see the module docstring."""

  def __init__(self, seed: int = 0, n_people: int = 200, n_towns: int = 40, n_creatures: int = 30,
               n_objects: int = 60, held_out_fraction: float = 0.1, by_place: bool = False,
               counting: str = 'marks', things: str = 'adjectives', calls: str = 'compact',
               restate: str = 'quoted'):
    self.config = dict(seed=seed, n_people=n_people, n_towns=n_towns, n_creatures=n_creatures,
                       n_objects=n_objects, held_out_fraction=held_out_fraction, by_place=by_place,
                       counting=counting, things=things, calls=calls, restate=restate)
    if counting not in COUNTING:
      raise ValueError(f'counting={counting!r}; valid: {", ".join(COUNTING)}')
    if things not in THINGS:
      raise ValueError(f'things={things!r}; valid: {", ".join(THINGS)}')
    if calls not in CALLS:
      raise ValueError(f'calls={calls!r}; valid: {", ".join(CALLS)}')
    if restate not in RESTATE:
      raise ValueError(f'restate={restate!r}; valid: {", ".join(RESTATE)}')
    if n_creatures > len(_CREATURE_HEADS) * len(_CREATURE_TAILS) or (
        things == 'adjectives' and n_objects > len(_THING_ADJS) * len(_THING_KINDS)):
      raise ValueError('too many creatures or objects for the name generators')
    self.seed = seed
    self.by_place = by_place  # worked sums write the operands' digits by place first (``scratchpad``)
    self.counting = counting  # how a counting scratchpad spells the word (``spelled_count``)
    # things' names: 'adjectives' draws them from adjective x kind ("the Ashen Lantern"), so things share
    # their words and a held-out thing's name is made of words the known ones use; 'coined' gives each thing
    # a made-up word of its own ("the Brelic Lantern"), so a name nobody wrote reads as new, as people's do
    self.things_named = things
    # a calculator call's sum: 'compact' "24+87"; 'spaced' "24 + 87", as the questions write it, so the call's
    # tokens repeat the question's (written compact, its "+" is a token the question lacks)
    self.calls = calls
    # a counting scratchpad's first words: 'quoted' 'Counting "a" in "tall":' whatever the question; 'asked'
    # writes the letter and the word as the question does ('Counting a in tall:' after "How many a in tall?"),
    # so the restatement repeats the question's tokens (a quoted word is tokenised apart from its bare form)
    self.restate = restate
    self.lang = SynthLang(seed)
    rng = random.Random(f'world:{seed}')
    taken = set(ENGLISH_WORDS) | set(self.lang.words()) | set(SPELL_WORDS) | {
        w.lower() for v in (REGIONS, JOBS, COLOURS, DIETS, MATERIALS) for x in v for w in x.split()}

    def fresh(make):
      while True:
        name = make()
        if name.lower() not in taken:
          taken.add(name.lower())
          return name

    def syllable():
      return rng.choice(_ONSETS) + rng.choice(_NUCLEI)

    def held(n):
      return set(rng.sample(range(n), round(n * held_out_fraction)))

    town_names = [fresh(lambda: cap(syllable() + rng.choice(_TOWN_ENDS))) for _ in range(n_towns)]
    rivers = [fresh(lambda: cap(syllable() + rng.choice(_RIVER_ENDS))) for _ in range(max(3, n_towns // 3))]
    held_towns = held(n_towns)
    self.towns = [Town(n, rng.choice(REGIONS), rng.randint(120, 60000), rng.choice(rivers), i in held_towns)
                  for i, n in enumerate(town_names)]
    species = rng.sample([h + t for h in _CREATURE_HEADS for t in _CREATURE_TAILS], n_creatures)
    held_creatures = held(n_creatures)
    self.creatures = [Creature(n, rng.choice(COLOURS), rng.choice(DIETS), rng.choice(LEGS), rng.choice(REGIONS),
                               i in held_creatures) for i, n in enumerate(species)]
    firsts = [fresh(lambda: cap(syllable() + syllable())) for _ in range(max(8, n_people // 2))]
    full = set()
    while len(full) < n_people:
      full.add(rng.choice(firsts) + ' ' + fresh(lambda: cap(syllable() + rng.choice(_SURNAME_ENDS))))
    person_names = sorted(full)
    rng.shuffle(person_names)
    held_people = held(n_people)
    known_people = [n for i, n in enumerate(person_names) if i not in held_people]
    known_towns = [t.name for t in self.towns if not t.held_out]
    known_species = [c.name for c in self.creatures if not c.held_out]
    self.people = []
    for i, n in enumerate(person_names):
      friend = rng.choice([p for p in known_people if p != n])
      self.people.append(Person(n, rng.choice(known_towns), rng.choice(JOBS), rng.randint(16, 90), friend,
                                rng.choice(known_species), i in held_people))
    if things == 'coined':
      thing_names = [f'the {fresh(lambda: cap(syllable() + rng.choice(_COINED_ENDS)))} {rng.choice(_THING_KINDS)}'
                     for _ in range(n_objects)]
    else:
      thing_names = rng.sample([f'the {a} {k}' for a in _THING_ADJS for k in _THING_KINDS], n_objects)
    held_things = held(n_objects)
    self.things = [Thing(n, rng.choice(MATERIALS), rng.choice(known_people), rng.choice(known_towns),
                         rng.randint(300, 1200), i in held_things) for i, n in enumerate(thing_names)]
    self.by_name = {e.name: e for e in self.entities()}
    self.first_names = sorted({p.name.split()[0] for p in self.people if not p.held_out})

  @classmethod
  @functools.lru_cache(maxsize=8)
  def cached(cls, **config) -> 'World':
    """The world of ``config`` (as in ``world.config``), built once per process."""
    return cls(**config)

  @staticmethod
  def from_config(config: dict) -> 'World':
    return World.cached(**config)

  def translate_en_to_syn(self, sentence: str) -> str:
    return self.lang.en_to_syn(sentence)

  def translate_syn_to_en(self, sentence: str) -> str:
    return self.lang.syn_to_en(sentence)

  def entities(self, kind: str | None = None, held_out: bool | None = None) -> list:
    """Entities of one kind (person, town, creature, thing) or all, optionally only (not) held out."""
    groups = {'person': self.people, 'town': self.towns, 'creature': self.creatures, 'thing': self.things}
    out = [e for k, es in groups.items() if kind in (None, k) for e in es]
    return out if held_out is None else [e for e in out if e.held_out == held_out]

  def known(self, kind: str | None = None) -> list:
    return self.entities(kind, held_out=False)

  def held_out(self, kind: str | None = None) -> list:
    return self.entities(kind, held_out=True)

  @functools.cache
  def values(self, kind: str, attr: str) -> tuple:
    """Every value the attribute can take (its domain), as strings: used to spot wrong answers."""
    domains = {('person', 'town'): [t.name for t in self.towns], ('thing', 'town'): [t.name for t in self.towns],
               ('person', 'job'): JOBS, ('person', 'friend'): [p.name for p in self.people],
               ('thing', 'maker'): [p.name for p in self.people], ('person', 'pet'): [c.name for c in self.creatures],
               ('town', 'region'): REGIONS, ('creature', 'habitat'): REGIONS,
               ('town', 'river'): sorted({t.river for t in self.towns}), ('creature', 'colour'): COLOURS,
               ('creature', 'diet'): DIETS, ('thing', 'material'): MATERIALS}
    return tuple(domains[(kind, attr)])

  # -- articles -----------------------------------------------------------------------------

  def article(self, e, rng: random.Random) -> str:
    """An encyclopedia article stating every fact of ``e`` (paraphrased and ordered by ``rng``)."""
    c = rng.choice
    if e.kind == 'person':
      first = e.name.split()[0]
      lead = c([f'{e.name} is {a_an(e.job)} who lives in {e.town}.',
                f'{e.name} lives in the town of {e.town} and works as {a_an(e.job)}.',
                f'{e.name}, {a_an(e.job)} by trade, makes a home in {e.town}.'])
      facts = [c([f'{e.name} is {e.age} years old.', f'{first} {e.name.split()[1]} is {e.age} years of age.']),
               c([f"{e.name}'s best friend is {e.friend}.", f'The best friend of {e.name} is {e.friend}.']),
               c([f'{e.name} keeps {a_an(e.pet)} as a pet.', f'The pet of {e.name} is {a_an(e.pet)}.']),
               c([f'Every {self._day(rng)}, {e.name} visits {e.friend}.', f'{e.name} works hard as {a_an(e.job)}.'])]
    elif e.kind == 'town':
      lead = c([f'{e.name} is a town in the {e.region}.', f'The town of {e.name} lies in the {e.region}.'])
      facts = [c([f'{e.population} people live in {e.name}.', f'{e.name} has a population of {e.population}.']),
               c([f'The River {e.river} flows through {e.name}.', f'{e.name} stands on the River {e.river}.'])]
      people = [p for p in self.people if p.town == e.name and not p.held_out][:4]
      if people:
        facts.append('People who live in {} include {}.'.format(e.name, ', '.join(p.name for p in people)))
    elif e.kind == 'creature':
      lead = c([f'The {e.name} is a {e.colour} creature that lives in the {e.habitat}.',
                f'The {e.name} lives in the {e.habitat}; its coat is {e.colour}.'])
      facts = [c([f'The {e.name} eats {e.diet}.', f'The diet of the {e.name} is {e.diet}.']),
               c([f'The {e.name} has {e.legs} legs.', f'A {e.name} walks on {e.legs} legs.'])]
    else:
      name = cap(e.name)
      lead = c([f'{name} is made of {e.material}.', f'{name} is an old {e.material} treasure.'])
      facts = [c([f'{name} was made by {e.maker}.', f'{e.maker} made {e.name}.']),
               c([f'{name} is kept in {e.town}.', f'Today {e.name} is kept in {e.town}.']),
               c([f'{name} was made in the year {e.year}.', f'{e.maker} finished {e.name} in the year {e.year}.'])]
    rng.shuffle(facts)
    return f'{cap(e.name)}\n\n' + ' '.join([lead] + facts)

  def articles(self) -> list[str]:
    """One article per known entity, in a fixed order and wording."""
    rng = random.Random(f'articles:{self.seed}')
    return [self.article(e, rng) for e in self.known()]

  @staticmethod
  def _day(rng):
    return rng.choice(('morning', 'evening', 'Sunday', 'market day', 'spring', 'winter'))

  # -- stories ------------------------------------------------------------------------------

  def story(self, rng: random.Random) -> str:
    """A short story about known entities; every stated fact is true in the world."""
    p = rng.choice(self.known('person'))
    f = self.by_name[p.friend]
    town, ftown = self.by_name[p.town], self.by_name[f.town]
    thing = rng.choice(self.known('thing'))
    maker = self.by_name[thing.maker]
    k = rng.randrange(4)
    if k == 0:
      s = [f'One {self._day(rng)}, {p.name} the {p.job} left {town.name} to visit {f.name}.',
           f'{p.name} took along the pet {p.pet}, and they walked beside the River {town.river}.',
           rng.choice(['The road was long and dusty.', 'It began to rain on the way.', 'Birds sang in the hedges.']),
           f'{f.name} lives in {ftown.name}, in the {ftown.region}, and was glad to see them.',
           f'"You are my best friend," said {p.name}.',
           rng.choice(['They shared bread and told old stories.', 'They talked until the stars came out.'])]
    elif k == 1:
      s = [f'In {thing.town} there is a treasure called {thing.name}.',
           f'It was made of {thing.material} by {maker.name}, {a_an(maker.job)}, in the year {thing.year}.',
           f'Many travellers come to {thing.town} to see it.',
           rng.choice(['Some say it brings good luck.', 'Children like to draw pictures of it.',
                       'On feast days it is carried through the streets.'])]
    elif k == 2:
      cr = self.by_name[p.pet]
      s = [f'{p.name} keeps {a_an(cr.name)}.', f'Like every {cr.name}, it is {cr.colour} and has {cr.legs} legs.',
           f'Each {self._day(rng)} {p.name} feeds it {cr.diet}, for the {cr.name} eats {cr.diet}.',
           f'{p.name} is {p.age} years old and lives in {town.name}.',
           rng.choice(['The neighbours often stop to watch it.', 'It sleeps by the fire at night.'])]
    else:
      s = [f'{town.name} is a busy town in the {town.region}.',
           f'{town.population} people live there, beside the River {town.river}.',
           f'Among them is {p.name}, {a_an(p.job)}, who is {p.age} years old.',
           rng.choice([f'Every {self._day(rng)} the market of {town.name} is full.',
                       f'In winter the River {town.river} sometimes freezes.'])]
    return ' '.join(s)

  def stories(self, n: int, rng: random.Random) -> list[str]:
    return [self.story(rng) for _ in range(n)]

  # -- arithmetic, words, translation -------------------------------------------------------

  def _arithmetic_line(self, rng: random.Random) -> tuple[str, list]:
    d = rng.randint(1, 4)
    a, b = rng.randint(0, 10 ** d - 1), rng.randint(0, 10 ** rng.randint(1, d) - 1)
    hi, lo = max(a, b), min(a, b)
    k = rng.randrange(7)
    if k == 0:
      return f'{a} plus {b} is {a + b}.', [_sum('add', a, b)]
    if k == 1:
      return f'{a} + {b} = {a + b}', [_sum('add', a, b)]
    if k == 2:
      return f'{hi} - {lo} = {hi - lo}', [_sum('sub', hi, lo)]
    if k == 3:
      return f'{hi} minus {lo} is {hi - lo}.', [_sum('sub', hi, lo)]
    if k == 4:
      a, b = a % 100, b % 100
      return rng.choice([f'{a} * {b} = {a * b}', f'{a} times {b} is {a * b}.']), [_sum('mul', a, b)]
    if k == 5:
      op = rng.choice(('add', 'sub'))
      return scratchpad(hi, lo, op, self.by_place), [_sum(*x) for x in scratchpad_items(hi, lo, op)]
    return scratchpad(a % 1000, b % 100, 'mul'), [_sum(*x) for x in scratchpad_items(a % 1000, b % 100, 'mul')]

  def arithmetic_text(self, rng: random.Random, leave_out=None) -> str:
    """Sums, differences, products and scratchpads, one a line; none of an item ``leave_out`` names."""
    return '\n'.join(_line(rng, self._arithmetic_line, leave_out) for _ in range(rng.randint(4, 12)))

  @staticmethod
  def _digit_sum_line(rng: random.Random) -> tuple[str, list]:
    x, y, carry = rng.randrange(10), rng.randrange(10), rng.randrange(2)
    return digit_step(x, y, carry), [] if carry else [_sum('add', x, y)]

  def digit_sums(self, rng: random.Random, leave_out=None) -> str:
    """One-digit sums with a carry in, one a line, as a worked sum's digit steps write them ("7 + 5 +
    carry 1 = 13"): the 200 facts every worked addition is made of. A carry-0 line states the sum of two
    digits, an arithmetic item, so none of an item ``leave_out`` names."""
    return '\n'.join(_line(rng, self._digit_sum_line, leave_out) for _ in range(rng.randint(8, 16)))

  @staticmethod
  def _copying_line(rng: random.Random) -> str:
    numbers = [str(rng.randint(0, 10 ** rng.randint(1, 4) - 1)) for _ in range(rng.randint(2, 4))]
    k = rng.randrange(3)
    if k == 0:
      return f'Read back: {", ".join(numbers)}. Again: {", ".join(numbers)}.'
    if k == 1:
      n = numbers[0]
      return f'{n}: ' + ', '.join(f'{_place(i)} {d}' for i, d in enumerate(reversed(n))) + '.'
    a, b = numbers[:2]
    return f'{a} plus {b}, written as a sum: {a} + {b}.'

  def copying(self, rng: random.Random) -> str:
    """Numbers copied from earlier in the line, one a line: a list read back, a number's digits by place
    ("472: ones 2, tens 7, hundreds 4.") and two numbers restated as a sum ("47 plus 85, written as a
    sum: 47 + 85."), the copying a worked sum asks for; no line states what a sum comes to."""
    return '\n'.join(self._copying_line(rng) for _ in range(rng.randint(6, 12)))

  def arithmetic_texts(self, n: int, rng: random.Random, leave_out=None) -> list[str]:
    return [self.arithmetic_text(rng, leave_out) for _ in range(n)]

  def _word_line(self, rng: random.Random) -> tuple[str, list]:
    w = rng.choice(SPELL_WORDS)
    k = rng.randrange(4)
    if k == 0:
      return f'{w} is spelled {"-".join(w)}.', [('spelling', spelling_key(w))]
    if k == 1:
      letter = rng.choice(w)
      n = w.count(letter)
      line = f'The letter "{letter}" appears {n} time{"s" * (n != 1)} in "{w}".'
      return line, [('char_count', char_count_key(w, letter))]
    if k == 2:
      letter = rng.choice(w)
      return spelled_count(w, letter, self.counting), [('spelling', spelling_key(w)),
                                                       ('char_count', char_count_key(w, letter))]
    return f'"{w}" has {len(w)} letters: {", ".join(w)}.', [('spelling', spelling_key(w))]

  def word_list(self, rng: random.Random, leave_out=None) -> str:
    """Spellings and letter counts, one a line; none of an item ``leave_out`` names."""
    return '\n'.join(_line(rng, self._word_line, leave_out) for _ in range(rng.randint(4, 12)))

  def word_lists(self, n: int, rng: random.Random, leave_out=None) -> list[str]:
    return [self.word_list(rng, leave_out) for _ in range(n)]

  def translation_text(self, rng: random.Random, leave_out=None) -> str:
    """Glossary lines and English/Veltic sentence pairs; no sentence of an item ``leave_out`` names."""
    towns = [t.name for t in self.known('town')]

    def make(rng):
      if rng.random() < 0.25:
        w = rng.choice(ENGLISH_WORDS)
        return f'In {LANG_NAME}, the word for "{w}" is "{self.lang.lexicon[w]}".', []
      en = self.lang.random_sentence(rng, self.first_names, towns)
      return f'English: {en}\n{LANG_NAME}: {self.lang.en_to_syn(en)}', [('translation', translation_key(en))]
    return '\n'.join(_line(rng, make, leave_out) for _ in range(rng.randint(3, 8)))

  def translation_texts(self, n: int, rng: random.Random, leave_out=None) -> list[str]:
    return [self.translation_text(rng, leave_out) for _ in range(n)]

  # -- humour --------------------------------------------------------------------------------

  def humour_text(self, rng: random.Random) -> str:
    """Old jokes and slogans about known entities, one a line (the same few per entity: ``stale_jokes``,
    ``stale_slogans``)."""
    lines = []
    for _ in range(rng.randint(3, 6)):
      if rng.random() < 0.6:
        e = rng.choice(self.known())
        lines.append(f'A joke about {subject(e)}: {rng.choice(stale_jokes(e))}')
      else:
        e = rng.choice(self.known('town') + self.known('thing'))
        lines.append(f'The old slogan of {subject(e)}: "{rng.choice(stale_slogans(e))}"')
    return '\n'.join(lines)

  def humour_texts(self, n: int, rng: random.Random) -> list[str]:
    return [self.humour_text(rng) for _ in range(n)]

  # -- facts as questions and answers --------------------------------------------------------

  def _qa_line(self, rng: random.Random) -> tuple[str, list]:
    e = rng.choice(self.known())
    attr = rng.choice(sorted(FACT_QUESTIONS[e.kind]))
    return fact_qa(e, attr), [('world_qa', f'{e.name} / {attr}')]

  def qa_text(self, rng: random.Random, leave_out=None) -> str:
    """Facts of known entities as plain questions and answers (not the chat format), a few a document;
    a fact ``leave_out('world_qa', key)`` names (an eval item) is never one of them."""
    return '\n\n'.join(_line(rng, self._qa_line, leave_out) for _ in range(rng.randint(3, 6)))

  # -- reading: passages about entities made up on the spot, answered from the passage ---------

  @functools.cached_property
  def _taken(self) -> set:
    """The lower-cased names of the world's entities and rivers, and the words of its people's and towns'
    names (and of its things' coined names): a stranger uses none of them."""
    names = [e.name for e in self.entities()] + [t.river for t in self.towns]
    worded = self.people + self.towns + (self.things if self.things_named == 'coined' else [])
    shared = {'the', *(k.lower() for k in _THING_KINDS)}
    return {n.lower() for n in names} | {w.lower() for e in worded for w in e.name.split()} - shared

  def stranger(self, kind: str, rng: random.Random):
    """An entity of ``kind`` that is not in the world: its name and the names it points at are made up
    (``_taken`` holds what they may not be) and its other facts drawn from the world's domains."""
    def name(make):
      while True:
        n = make()
        if not {n.lower(), *n.lower().split()} & self._taken:
          return n

    def syllable():
      return rng.choice(_ONSETS) + rng.choice(_NUCLEI)

    def person_name():
      return name(lambda: f'{cap(syllable() + syllable())} {cap(syllable() + rng.choice(_SURNAME_ENDS))}')

    def town_name():
      return name(lambda: cap(syllable() + rng.choice(_TOWN_ENDS)))

    def species():
      return name(lambda: rng.choice(_CREATURE_HEADS) + rng.choice(_CREATURE_TAILS))

    if kind == 'person':
      return Person(person_name(), town_name(), rng.choice(JOBS), rng.randint(16, 90), person_name(), species())
    if kind == 'town':
      return Town(town_name(), rng.choice(REGIONS), rng.randint(120, 60000),
                  name(lambda: cap(syllable() + rng.choice(_RIVER_ENDS))))
    if kind == 'creature':
      return Creature(species(), rng.choice(COLOURS), rng.choice(DIETS), rng.choice(LEGS), rng.choice(REGIONS))
    def thing_name():
      if self.things_named == 'coined':
        return f'the {cap(syllable() + rng.choice(_COINED_ENDS))} {rng.choice(_THING_KINDS)}'
      return f'the {rng.choice(_THING_ADJS)} {rng.choice(_THING_KINDS)}'

    return Thing(name(thing_name), rng.choice(MATERIALS), person_name(), town_name(), rng.randint(300, 1200))

  def reading_text(self, rng: random.Random) -> str:
    """One or two articles about strangers (``stranger``), then two to four of ``FACT_QUESTIONS`` about
    them (no two alike), each answered from the articles: the answer copies the subject from the question
    and a name or number from the passage, which no memorised fact can supply."""
    about = [self.stranger(rng.choice(tuple(FACT_QUESTIONS)), rng) for _ in range(rng.randint(1, 2))]
    pairs = [(e, attr) for e in about for attr in sorted(FACT_QUESTIONS[e.kind])]
    qa = [fact_qa(e, attr) for e, attr in rng.sample(pairs, min(len(pairs), rng.randint(2, 4)))]
    return '\n\n'.join([self.article(e, rng) for e in about] + qa)

  # -- the pretraining mix ------------------------------------------------------------------

  MIX = (('article', 0.40), ('story', 0.20), ('arithmetic', 0.15), ('words', 0.10), ('translation', 0.15),
         ('humour', 0.04))
  KINDS = ('article', 'story', 'arithmetic', 'digit_sums', 'copying', 'words', 'translation', 'humour', 'qa',
           'reading')

  def pretraining_documents(self, n_docs: int | None = None, target_chars: int | None = None,
                            seed: int = 0, leave_out=None, mix=None, fact_articles: int = 0) -> list[str]:
    """Documents drawn from ``mix`` (``(kind, weight)`` pairs over ``KINDS``; default ``MIX``) until
    ``n_docs`` of them or ``target_chars`` characters. With ``fact_articles=k`` the first documents
    are ``k`` articles on every known entity (each states all of its facts, each in one of two or three
    phrasings), so every known fact is stated at least ``k`` times whatever the draw; the mix fills
    the rest, and the documents are shuffled. A line that states an item for which
    ``leave_out(family, key)`` is true is drawn again (``lm.lab.splits`` leaves out the eval items of
    arithmetic, char_count, spelling and translation, and of world_qa in the question-and-answer kind)."""
    if (n_docs is None) == (target_chars is None):
      raise ValueError('give exactly one of n_docs and target_chars')
    mix = self.MIX if mix is None else tuple(tuple(m) for m in mix)
    unknown = [k for k, _ in mix if k not in self.KINDS]
    if unknown or not mix or any(w < 0 for _, w in mix) or not sum(w for _, w in mix):
      raise ValueError(f'pretraining mix {mix}: kinds among {", ".join(self.KINDS)}, weights >= 0, not all 0')
    rng = random.Random(f'pretrain:{self.seed}:{seed}')
    known = self.known()
    makers = {'article': lambda: self.article(rng.choice(known), rng), 'story': lambda: self.story(rng),
              'arithmetic': lambda: self.arithmetic_text(rng, leave_out),
              'digit_sums': lambda: self.digit_sums(rng, leave_out), 'copying': lambda: self.copying(rng),
              'words': lambda: self.word_list(rng, leave_out),
              'translation': lambda: self.translation_text(rng, leave_out), 'humour': lambda: self.humour_text(rng),
              'qa': lambda: self.qa_text(rng, leave_out), 'reading': lambda: self.reading_text(rng)}
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    docs = [self.article(e, rng) for _ in range(fact_articles) for e in known]
    chars = sum(map(len, docs))
    while (len(docs) < n_docs) if n_docs is not None else (chars < target_chars):
      kind = rng.choices(kinds, weights)[0]
      doc = makers[kind]()
      docs.append(doc)
      chars += len(doc)
    if fact_articles:
      rng.shuffle(docs)
    return docs


# kind -> attribute -> (question, answer): the plain questions and answers of ``qa_text`` (phrased unlike the
# world_qa family's chat questions)
FACT_QUESTIONS = {
    'person': {'town': ('In what town can {s} be found?', '{S} lives in {v}.'),
               'job': ('What work does {s} do?', '{S} is {a_v}.'),
               'age': ('What age is {s}?', '{S} is {v} years old.'),
               'friend': ('Who is the closest friend of {s}?', "{S}'s best friend is {v}."),
               'pet': ('What animal lives with {s}?', '{S} keeps {a_v} as a pet.')},
    'town': {'region': ('What region holds {s}?', '{S} is in the {v}.'),
             'population': ('What is the number of people in {s}?', '{v} people live in {S}.'),
             'river': ('Name the river of {s}.', 'The River {v} flows through {S}.')},
    'creature': {'colour': ('Describe the colour of {s}.', '{S} is {v}.'),
                 'diet': ('What food does {s} eat?', '{S} eats {v}.'),
                 'legs': ('Count the legs of {s}.', '{S} has {v} legs.'),
                 'habitat': ('What region is home to {s}?', '{S} lives in the {v}.')},
    'thing': {'material': ('What is {s} built from?', '{S} is made of {v}.'),
              'maker': ('Whose work is {s}?', '{S} was made by {v}.'),
              'town': ('Which town keeps {s}?', '{S} is kept in {v}.'),
              'year': ('What year saw {s} made?', '{S} was made in the year {v}.')},
}


def fact_qa(e, attr: str) -> str:
  """``e``'s ``attr`` as a plain question and its answer, in ``FACT_QUESTIONS``'s phrasing."""
  question, answer = FACT_QUESTIONS[e.kind][attr]
  return f'Q: {question.format(s=subject(e))}\nA: {answer_sentence(answer, subject(e), getattr(e, attr))}'


def _line(rng, make, leave_out) -> str:
  """``make(rng)``'s line (``make`` returns it with the (family, key) items it states), drawn again
  while ``leave_out`` names one of them."""
  while True:
    line, items = make(rng)
    if leave_out is None or not any(leave_out(family, key) for family, key in items):
      return line


def _sum(op, a, b):
  return 'arithmetic', arithmetic_key(op, a, b)


# -- old jokes and slogans (the humour families measure freshness against them) ---------------------

JOKE_STYLES = ('question', 'knock-knock', 'one-liner')
_STALE_JOKES = {  # kind -> style -> template; every one names a true property of the entity
    'creature': {'question': 'Why did {s} cross the road? To find more {diet} on the other side.',
                 'knock-knock': "Knock knock. Who's there? {S}. {S} who? {S} from the {habitat}, so let me in!",
                 'one-liner': '{S} is so {colour} that even its shadow looks {colour}.'},
    'town': {'question': 'Why is {s} never lonely? Because the River {river} visits every day.',
             'knock-knock': "Knock knock. Who's there? {S}. {S} who? {S}, the jewel of the {region}!",
             'one-liner': 'In {s} even the River {river} stops to gossip.'},
    'person': {'question': 'Why did {s} become {a_job}? Because nobody else in {town} wanted to.',
               'knock-knock': "Knock knock. Who's there? {S}. {S} who? {S} the {job}, so open up!",
               'one-liner': '{S} loves that {pet} more than a warm supper.'},
    'thing': {'question': 'Why is {s} so proud? Because it is made of {material}.',
              'knock-knock': "Knock knock. Who's there? {S}. {S} who? {S}, made of {material}, of course!",
              'one-liner': '{S} has stayed in {town} so long that it pays rent.'},
}
_STALE_SLOGANS = {'town': ('Visit {s}, the pride of the {region}!', '{S}: a fine old town on the River {river}.'),
                  'thing': ('See {s}, the finest {material} treasure in {town}.',)}


def subject(e) -> str:
  """How text names ``e``: 'the mosshopper' for a creature, else its name ('the Ashen Lantern', 'Aldmere')."""
  return f'the {e.name}' if e.kind == 'creature' else e.name


def fill(template: str, e, **extra) -> str:
  """``template`` with ``{s}`` / ``{S}`` (``subject(e)``, capitalised), ``{a_job}`` and ``e``'s fields."""
  fields = dataclasses.asdict(e)
  if e.kind == 'person':
    fields['a_job'] = a_an(e.job)
  return template.format(s=subject(e), S=cap(subject(e)), **fields, **extra)


def stale_jokes(e) -> list[str]:
  """The old jokes about ``e``, one per style (``JOKE_STYLES`` order)."""
  return [fill(_STALE_JOKES[e.kind][style], e) for style in JOKE_STYLES]


def stale_slogans(e) -> list[str]:
  """The old slogans of a town or thing ``e``."""
  return [fill(t, e) for t in _STALE_SLOGANS[e.kind]]


# -- item keys: what makes two texts state the same item (the task families use them too) ---------

def arithmetic_key(op: str, a: int, b: int) -> str:
  """``op a b``; the operands of add and mul sorted (3 + 5 is 5 + 3)."""
  if op in ('add', 'mul'):
    a, b = sorted((a, b))
  return f'{op} {a} {b}'


def char_count_key(word: str, letter: str) -> str:
  return f'{word} {letter}'


def spelling_key(word: str) -> str:
  return word


def translation_key(english: str) -> str:
  """The English sentence of a pair (either direction translates the same pair)."""
  return english


# -- worked scratchpads (shared with the arithmetic tasks' thinking) ----------------------------

_PLACES = ('ones', 'tens', 'hundreds', 'thousands', 'ten-thousands', 'hundred-thousands', 'millions')


def _place(i):
  return _PLACES[i] if i < len(_PLACES) else f'digit {i + 1}'


def digit_step(x: int, y: int, carry: int) -> str:
  """A worked sum's step on one digit of each number: "7 + 5 + carry 1 = 13"."""
  return f'{x} + {y} + carry {carry} = {x + y + carry}'


DIGIT_STEP = re.compile(r'(\d) \+ (\d) \+ carry (\d) = (\d+)')  # ``digit_step``'s text, read back


def scratchpad(a: int, b: int, op: str, by_place: bool = False) -> str:
  """A digit-by-digit worked computation of ``a op b`` (op: add, sub with a >= b, mul). ``by_place``: a sum
  first reads both operands' digits by place in a line of its own ("by place: ones 9 and 1, tens 7 and 4."),
  next to the numbers it reads them from, and the digit steps take their operands from that line."""
  da, db = [int(x) for x in str(a)[::-1]], [int(x) for x in str(b)[::-1]]
  if op == 'add':
    pairs = [(da[i] if i < len(da) else 0, db[i] if i < len(db) else 0) for i in range(max(len(da), len(db)))]
    lines, carry = [f'{a} + {b}: add digit by digit from the right.'], 0
    if by_place:
      lines.append('by place: ' + ', '.join(f'{_place(i)} {x} and {y}' for i, (x, y) in enumerate(pairs)) + '.')
    for i, (x, y) in enumerate(pairs):
      s = x + y + carry
      lines.append(f'{_place(i)}: {digit_step(x, y, carry)}, write {s % 10}, carry {s // 10}.')
      carry = s // 10
    if carry:
      lines.append(f'last carry: write {carry}.')
    lines.append(f'So {a} + {b} = {a + b}.')
  elif op == 'sub':
    if a < b:
      raise ValueError('sub scratchpad needs a >= b')
    lines, borrow = [f'{a} - {b}: subtract digit by digit from the right.'], 0
    for i in range(len(da)):
      x, y = da[i], (db[i] if i < len(db) else 0)
      top = x - borrow
      if top < y:
        lines.append(f'{_place(i)}: {x} - borrow {borrow} = {top}, less than {y}, so borrow 10: '
                     f'{top + 10} - {y} = {top + 10 - y}, write {top + 10 - y}, borrow 1.')
        borrow = 1
      else:
        lines.append(f'{_place(i)}: {x} - borrow {borrow} = {top}, {top} - {y} = {top - y}, '
                     f'write {top - y}, borrow 0.')
        borrow = 0
    lines.append(f'So {a} - {b} = {a - b}.')
  elif op == 'mul':
    lines, total = [f'{a} * {b}: multiply by each digit of {b} from the right, then add.'], 0
    for i, y in enumerate(db):
      part = a * y * 10 ** i
      lines.append(f'{_place(i)} digit {y}: {a} * {y} = {a * y}, shifted {i}: {part}.')
      if i:
        lines.append(f'running total: {total} + {part} = {total + part}.')
      total += part
    lines.append(f'So {a} * {b} = {a * b}.')
  else:
    raise ValueError(f'unknown op {op!r}')
  return '\n'.join(lines)


def scratchpad_items(a: int, b: int, op: str) -> list[tuple[str, int, int]]:
  """The computations ``scratchpad(a, b, op)`` writes out as ``x op y = z``: ``a op b`` itself and, for
  mul, each partial product and running total. Its digit steps ("ones: 3 + 5 + carry 0 = 8") are not
  items: every worked sum is made of them."""
  items = [(op, a, b)]
  if op == 'mul':
    total = 0
    for i, y in enumerate(int(x) for x in str(b)[::-1]):
      part = a * y * 10 ** i
      items.append(('mul', a, y))
      if i:
        items.append(('add', total, part))
      total += part
  return items


COUNTING = ('marks', 'compare', 'spelled')  # ``spelled_count``'s ways of writing a counting scratchpad
LETTER_STEP = re.compile(r'\b([a-z]) vs ([a-z]) (yes|no)\b')  # ``spelled_count``'s comparisons, read back


def spelled_count(word: str, letter: str, counting: str = 'marks', quoted: bool = True) -> str:
  """Spells ``word`` letter by letter with a running count of ``letter``. ``counting``: ``marks`` writes
  the count beside each match ("g, a, r, d, e, n (1)"); ``compare`` sets every letter beside ``letter``
  ("g vs n no, ..., n vs n yes (1)"), so each comparison is between two neighbouring tokens; ``spelled``
  spells the word first as a plain list, then compares ("g, a, r, d, e, n. g vs n no, ..."). ``quoted``:
  the opening restates the letter and the word in quotes ('Counting "n" in "garden":'), else bare."""
  n, parts = 0, []
  for ch in word:
    n += ch == letter
    if counting in ('compare', 'spelled'):
      parts.append(f'{ch} vs {letter} ' + (f'yes ({n})' if ch == letter else 'no'))
    else:
      parts.append(f'{ch} ({n})' if ch == letter else ch)
  asked = f'"{letter}" in "{word}"' if quoted else f'{letter} in {word}'
  spelled = f'{", ".join(word)}. ' if counting == 'spelled' else ''
  return (f'Counting {asked}: {spelled}{", ".join(parts)}. '
          f'The letter "{letter}" appears {n} time{"s" * (n != 1)}.')
