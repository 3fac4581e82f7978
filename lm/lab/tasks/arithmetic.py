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
  # after a calculator call the answer is its result, not the sum restated: a model that writes
  # "a + b =" again computes the sum itself (and got 3-digit sums wrong with the right result in view)
  answer = f'The answer is {ans}.' if how == 'tool' else f'{a} {sym} {b} = {ans}'
  call = f'{a} {sym} {b}' if world.calls == 'spaced' else f'{a}{sym}{b}'
  ref = answer_messages(how, answer, scratchpad(a, b, op, world.by_place), call, ans)
  return Example('arithmetic', variant, ask(variant, q), ref, dict(op=op, a=a, b=b, digits=d, answer=ans))


def key_arithmetic(ex):
  return arithmetic_key(ex.meta['op'], ex.meta['a'], ex.meta['b'])


ARITHMETIC = Family('arithmetic', make_arithmetic, score_number, wrong_numbers, key_arithmetic, VARIANTS,
                    answer_share=ANSWER_SHARE, domain='math')


# -- word_problem ------------------------------------------------------------------------------------

def _word_problem(world, rng, steps=2):
  """(question, steps as (expression, value, note), final expression, answer sentence with {ans}): one
  of four stories, asked after its first step, its second (the default) or a third."""
  p = rng.choice(world.known('person'))
  item = rng.choice(_ITEMS)
  k = rng.randrange(4)
  if k == 0:
    a, d = rng.randint(3, 40), rng.randint(2, 9)
    s = rng.randint(1, a * d - 1)
    intro = f'{p.name} is {a_an(p.job)} in {p.town}. Each day {p.name} makes {a} {item}.'
    chain = [(f'{a} * {d}', a * d, f'{item} made', f'{a}*{d}',
              f' How many {item} does {p.name} make in {d} days?', f'{p.name} makes {{ans}} {item}.'),
             (f'{a * d} - {s}', a * d - s, f'{item} left', f'{a}*{d}-{s}',
              f' After {d} days, {p.name} has sold {s} of them. How many {item} are left?',
              f'{p.name} has {{ans}} {item} left.')]
    g = rng.randint(1, 50) if steps > 2 else 0
    chain.append((f'{a * d - s} + {g}', a * d - s + g, f'{item} now', f'{a}*{d}-{s}+{g}',
                  f' After {d} days, {p.name} has sold {s} of them and then makes {g} more. How many {item} '
                  f'are there now?', f'{p.name} has {{ans}} {item} now.'))
  elif k == 1:
    n, c = rng.randint(2, 12), rng.randint(2, 30)
    m = n * c + rng.randint(1, 100)
    intro = f'{p.name} buys {n} {item} at {c} coins each'
    chain = [(f'{n} * {c}', n * c, 'coins spent', f'{n}*{c}', f'. How many coins does {p.name} spend?',
              f'{p.name} spends {{ans}} coins.'),
             (f'{m} - {n * c}', m - n * c, 'coins of change', f'{m}-{n}*{c}',
              f' and pays with {m} coins. How many coins of change does {p.name} get?',
              f'{p.name} gets {{ans}} coins of change.')]
    g = rng.randint(1, m - n * c) if steps > 2 else 0
    chain.append((f'{m - n * c} - {g}', m - n * c - g, 'coins left', f'{m}-{n}*{c}-{g}',
                  f' and pays with {m} coins, then spends {g} coins of the change on bread. How many coins '
                  f'does {p.name} have left?', f'{p.name} has {{ans}} coins left.'))
  elif k == 2:
    t = world.by_name[p.town]
    x, y = rng.randint(1, min(500, t.population - 1)), rng.randint(1, 500)
    intro = f'{t.name} has {t.population} people.'
    chain = [(f'{t.population} - {x}', t.population - x, 'after some move away', f'{t.population}-{x}',
              f' In spring, {x} people move away. How many people live in {t.name} after spring?',
              f'After spring, {t.name} has {{ans}} people.'),
             (f'{t.population - x} + {y}', t.population - x + y, 'after the new people arrive',
              f'{t.population}-{x}+{y}', f' In spring, {x} people move away and {y} new people arrive. '
              f'How many people live in {t.name} after spring?', f'After spring, {t.name} has {{ans}} people.')]
    g = rng.randint(1, 500) if steps > 2 else 0
    chain.append((f'{t.population - x + y} + {g}', t.population - x + y + g, 'after summer',
                  f'{t.population}-{x}+{y}+{g}', f' In spring, {x} people move away and {y} new people arrive; '
                  f'in summer {g} more arrive. How many people live in {t.name} after summer?',
                  f'After summer, {t.name} has {{ans}} people.'))
  else:
    m = rng.randint(2, 6)
    n, per = rng.randint(2, 9), m * rng.randint(1, 8)
    intro = f'{p.name} has {n} crates with {per} {item} in each'
    share = n * per // m
    chain = [(f'{n} * {per}', n * per, f'{item} in all', f'{n}*{per}', f'. How many {item} does {p.name} have?',
              f'{p.name} has {{ans}} {item}.'),
             (f'{n * per} / {m}', share, f'{item} each', f'{n}*{per}/{m}',
              f', and shares them equally among {m} friends. How many {item} does each friend get?',
              f'Each friend gets {{ans}} {item}.')]
    g = rng.randint(1, share - 1) if steps > 2 else 0
    chain.append((f'{share} - {g}', share - g, f'{item} each friend keeps', f'{n}*{per}/{m}-{g}',
                  f', and shares them equally among {m} friends; each friend gives {g} away. How many {item} '
                  f'does each friend keep?', f'Each friend keeps {{ans}} {item}.'))
  chain = chain[:steps]
  return (intro + chain[-1][4], [(e, v, note) for e, v, note, *_ in chain], chain[-1][3], chain[-1][5])


def make_word_problem(world, rng, variant, steps=()):
  """A story problem of ``steps`` steps (one drawn from the tuple; default 2)."""
  q, chain, expr, sentence = _word_problem(world, rng, rng.choice(tuple(steps)) if steps else 2)
  ans = chain[-1][1]
  thinking = '\n'.join(f'Step {i + 1}: {e} = {v} ({note}).' for i, (e, v, note) in enumerate(chain))
  thinking += f'\nSo the answer is {ans}.'
  ref = answer_messages(variant, sentence.format(ans=ans), thinking, expr, ans)
  return Example('word_problem', variant, ask(variant, q), ref, dict(answer=ans, steps=len(chain), expression=expr))


def key_word_problem(ex):
  return ex.meta['expression']


WORD_PROBLEM = Family('word_problem', make_word_problem, score_number, wrong_numbers, key_word_problem, VARIANTS,
                      answer_share=ANSWER_SHARE, domain='math')
