"""Answers of a set length:

  length_control  "describe X in exactly N words" / "a poem of N lines about X":
                  max(0, 1 - |count - N| / N); 0 when X is not mentioned or the answer repeats
                  the request (``echoes``: a run of 5 of its words).

Key: the kind (words, lines), the topic X and N: the same request in another template is the same item.

``poem`` also writes the references of ``creative``.
"""

from lm.lab.tasks.base import (
  Example,
  Family,
  contains,
  count_lines,
  count_words,
  echoes,
  final_text,
  question,
  say,
  user,
)
from lm.lab.world import cap

_TOWN_FILLERS = ('Its market is busy on most days.', 'The streets are narrow and old.',
                 'Travellers often stop there to rest.', 'The bread there is famous.',
                 'Many families have lived there for generations.', 'Its houses have red roofs.',
                 'The people there are friendly to strangers.', 'Bells ring in the square at noon.')
_POEM_LINES = ('the {c} wakes before the sun', 'it wanders where the cold winds run',
               'through grass and stone it makes its way', 'it rests beneath the clouds of grey',
               'the {c} is {colour} as the dawn', 'it eats its {diet} and carries on',
               'on {legs} legs it crosses hills', 'it drinks from quiet mountain rills',
               'the night is long, the stars are near', 'the {c} sleeps without a fear',
               'across the {habitat} it roams', 'and every path becomes its home')
_PADS = ('Lovely.', 'Visit soon.', 'It is lovely.', 'Everyone should visit it.', 'It is worth a visit.',
         'Many people like to visit it.')


def poem(world, rng, creature, n_lines, extra=None):
  """``n_lines`` lines about ``creature``; ``extra`` words are woven in round-robin ('with w, w')."""
  c = world.by_name[creature]
  lines = [cap(_POEM_LINES[0].format(c=c.name))] + [
      cap(rng.choice(_POEM_LINES[1:]).format(c=c.name, colour=c.colour, diet=c.diet, legs=c.legs, habitat=c.habitat))
      for _ in range(n_lines - 1)]
  for i, w in enumerate(extra or []):
    j = i % n_lines
    lines[j] += f', by the {w}' if w[0].islower() else f', in {w}'
  return '\n'.join(line + ',' for line in lines[:-1]) + '\n' + lines[-1] + '.'


def _exactly(sentences, n):
  """Whole sentences (in order, skipping those that overflow) topped up to exactly ``n`` words."""
  out, used = [], 0
  for s in sentences:
    k = count_words(s)
    if used + k <= n:
      out.append(s)
      used += k
  while used < n:
    pad = _PADS[min(n - used, len(_PADS)) - 1]
    out.append(pad)
    used += count_words(pad)
  return ' '.join(out)


def make_length_control(world, rng, variant, kind=None, length=None):
  kind, n = kind or rng.choice(('words', 'lines')), length
  if kind == 'words':
    t = rng.choice(world.known('town'))
    n = n or rng.randint(6, 40)
    q = rng.choice([f'Describe {t.name} in exactly {n} words.', f'In exactly {n} words, tell me about {t.name}.'])
    sentences = [f'{t.name} lies in the {t.region}.', f'The River {t.river} flows through {t.name}.',
                 f'{t.population} people live there.'] + rng.sample(_TOWN_FILLERS, len(_TOWN_FILLERS))
    answer, topic = _exactly(sentences, n), t.name
  else:
    c = rng.choice(world.known('creature'))
    n = n or rng.randint(2, 8)
    q = rng.choice([f'Write a poem of exactly {n} lines about the {c.name}.',
                    f'Write {n} lines of verse about the {c.name}.'])
    answer, topic = poem(world, rng, c.name, n), c.name
  return Example('length_control', variant, user(q), say(answer), dict(kind=kind, n=n, topic=topic))


def score_length_control(ex, response):
  text, n = final_text(response), ex.meta['n']
  if not contains(text, ex.meta['topic']) or echoes(text, question(ex)):
    return 0.0
  got = count_words(text) if ex.meta['kind'] == 'words' else count_lines(text)
  return max(0.0, 1.0 - abs(got - n) / n)


def wrong_length_control(world, ex, rng):
  text, sep = final_text(ex.reference), ' ' if ex.meta['kind'] == 'words' else '\n'
  parts = text.split(sep)
  longer = sep.join(parts + parts[-rng.randint(1, 3):])
  outs = [('too_long', say(longer)), ('echo', say(question(ex)))]
  if len(parts) > 2:
    outs.append(('too_short', say(sep.join(parts[:-rng.randint(1, min(3, len(parts) - 2))]))))
  return outs


def key_length_control(ex):
  return f"{ex.meta['kind']} {ex.meta['topic']} {ex.meta['n']}"


LENGTH_CONTROL = Family('length_control', make_length_control, score_length_control, wrong_length_control,
                        key_length_control)
