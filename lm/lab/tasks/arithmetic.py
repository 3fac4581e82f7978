"""Numbers:

  arithmetic      add / sub / mul of ``digits``-digit numbers (variants direct, thinking, tool; with
                  tools offered, 1-digit sums are still answered directly).
  word_problem    multi-step problems about the world's people and towns (direct, thinking, tool).
                  Both: 1 iff the last number in the answer is the gold number.

Keys: arithmetic, the op and operands (``lm.lab.world.arithmetic_key``: 3 + 5 is 5 + 3); word_problem,
the expression it computes (the template and every number in it; the person and the goods do not
change the question). Eval sets of both hold no gold number on more than ``ANSWER_SHARE`` of their items.
"""

from lm.lab.tasks.base import (
  ANSWER_SHARE,
  Example,
  Family,
  answer_messages,
  ask,
  final_text,
  last_number,
  numeric_wrongs,
)
from lm.lab.world import a_an, arithmetic_key, scratchpad

VARIANTS = ('direct', 'thinking', 'tool')
_OPS = {'add': ('+', 'plus'), 'sub': ('-', 'minus'), 'mul': ('*', 'times')}
_ITEMS = ('loaves', 'candles', 'apples', 'nails', 'jars of honey', 'baskets', 'ropes', 'cups')


def score_number(ex, response):
  """1 iff the last number of the final answer is the gold number."""
  return float(last_number(final_text(response)) == ex.meta['answer'])


def wrong_numbers(world, ex, rng):
  return numeric_wrongs(ex, ex.meta['answer'])


# -- arithmetic --------------------------------------------------------------------------------------

def _rand_digits(rng, d):
  return rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1)


def make_arithmetic(world, rng, variant, op=None, digits=None, ops=(), digit_range=()):
  """A sum, difference or product (``op``, else one of ``ops``, else any) of two ``digits``-digit numbers
  (else a length drawn from ``digit_range``, inclusive; else 1-5, products 1-3)."""
  op = op or rng.choice(tuple(ops) or tuple(_OPS))
  d = digits or rng.randint(*(digit_range or (1, 3 if op == 'mul' else 5)))
  a, b = _rand_digits(rng, d), _rand_digits(rng, d)
  if op == 'sub' and a < b:
    a, b = b, a
  ans = {'add': a + b, 'sub': a - b, 'mul': a * b}[op]
  sym, word = _OPS[op]
  q = rng.choice([f'What is {a} {sym} {b}?', f'Compute {a} {sym} {b}.', f'What is {a} {word} {b}?',
                  f'Calculate {a} {sym} {b}.'])
  how = 'direct' if variant == 'tool' and d == 1 else variant  # a 1-digit sum needs no calculator
  ref = answer_messages(how, f'{a} {sym} {b} = {ans}', scratchpad(a, b, op), f'{a}{sym}{b}', ans)
  return Example('arithmetic', variant, ask(variant, q), ref, dict(op=op, a=a, b=b, digits=d, answer=ans))


def key_arithmetic(ex):
  return arithmetic_key(ex.meta['op'], ex.meta['a'], ex.meta['b'])


ARITHMETIC = Family('arithmetic', make_arithmetic, score_number, wrong_numbers, key_arithmetic, VARIANTS,
                    answer_share=ANSWER_SHARE, domain='math')


# -- word_problem ------------------------------------------------------------------------------------

def _word_problem(world, rng):
  """(question, steps as (expression, value, note), final expression, answer sentence with {ans})."""
  p = rng.choice(world.known('person'))
  item = rng.choice(_ITEMS)
  k = rng.randrange(4)
  if k == 0:
    a, d = rng.randint(3, 40), rng.randint(2, 9)
    s = rng.randint(1, a * d - 1)
    q = (f'{p.name} is {a_an(p.job)} in {p.town}. Each day {p.name} makes {a} {item}. After {d} days, '
         f'{p.name} has sold {s} of them. How many {item} are left?')
    steps = [(f'{a} * {d}', a * d, f'{item} made'), (f'{a * d} - {s}', a * d - s, f'{item} left')]
    return q, steps, f'{a}*{d}-{s}', f'{p.name} has {{ans}} {item} left.'
  if k == 1:
    n, c = rng.randint(2, 12), rng.randint(2, 30)
    m = n * c + rng.randint(1, 100)
    q = (f'{p.name} buys {n} {item} at {c} coins each and pays with {m} coins. '
         f'How many coins of change does {p.name} get?')
    steps = [(f'{n} * {c}', n * c, 'coins spent'), (f'{m} - {n * c}', m - n * c, 'coins of change')]
    return q, steps, f'{m}-{n}*{c}', f'{p.name} gets {{ans}} coins of change.'
  if k == 2:
    t = world.by_name[p.town]
    x, y = rng.randint(1, min(500, t.population - 1)), rng.randint(1, 500)
    q = (f'{t.name} has {t.population} people. In spring, {x} people move away and {y} new people arrive. '
         f'How many people live in {t.name} after spring?')
    steps = [(f'{t.population} - {x}', t.population - x, 'after some move away'),
             (f'{t.population - x} + {y}', t.population - x + y, 'after the new people arrive')]
    return q, steps, f'{t.population}-{x}+{y}', f'After spring, {t.name} has {{ans}} people.'
  m = rng.randint(2, 6)
  n, per = rng.randint(2, 9), m * rng.randint(1, 8)
  q = (f'{p.name} has {n} crates with {per} {item} in each, and shares them equally among {m} friends. '
       f'How many {item} does each friend get?')
  steps = [(f'{n} * {per}', n * per, f'{item} in all'), (f'{n * per} / {m}', n * per // m, f'{item} each')]
  return q, steps, f'{n}*{per}/{m}', f'Each friend gets {{ans}} {item}.'


def make_word_problem(world, rng, variant):
  q, steps, expr, sentence = _word_problem(world, rng)
  ans = steps[-1][1]
  thinking = '\n'.join(f'Step {i + 1}: {e} = {v} ({note}).' for i, (e, v, note) in enumerate(steps))
  thinking += f'\nSo the answer is {ans}.'
  ref = answer_messages(variant, sentence.format(ans=ans), thinking, expr, ans)
  return Example('word_problem', variant, ask(variant, q), ref, dict(answer=ans, steps=len(steps), expression=expr))


def key_word_problem(ex):
  return ex.meta['expression']


WORD_PROBLEM = Family('word_problem', make_word_problem, score_number, wrong_numbers, key_word_problem, VARIANTS,
                      answer_share=ANSWER_SHARE, domain='math')
