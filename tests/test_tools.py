"""Tools: the call runner, the exact calculator, BM25, the knowledge base and search (the python sandbox:
test_sandbox.py)."""

import json
import math
import random
import re
from fractions import Fraction

import numpy as np
import pytest

from lm import tools
from lm.lab import tasks
from lm.lab.bm25 import BM25Index
from lm.lab.world import World
from lm.tools import ToolResult, run_call
from lm.tools.calculator import Calculator, evaluate
from lm.tools.knowledge import KnowledgeBase
from lm.tools.search import Hit, LocalIndex, Search, SearxngBackend

# -- the interface ------------------------------------------------------------------------------------

def test_registry_and_run_call_errors():
  assert tools.available() == ['calculator', 'knowledge_base', 'python', 'search']
  with pytest.raises(ValueError, match="unknown tool 'calc'; available: calculator, knowledge_base, python, search"):
    tools.get('calc')
  ts = {'calculator': Calculator()}
  assert run_call(ts, {'name': 'calculator', 'arguments': {'expression': '6*7'}}) == ToolResult('42', True)
  cases = [({'name': 'python', 'arguments': {}}, "unknown tool 'python'; available: calculator"),
           ({'arguments': {}}, 'tool call has no "name" string'),
           (['calculator'], 'tool call must be a JSON object, got list'),
           ({'name': 'calculator', 'arguments': {'expression': '1', 'x': 2}},
            "calculator: unknown argument 'x' (expected: expression)"),
           ({'name': 'calculator', 'arguments': {}}, "calculator: missing argument 'expression'"),
           ({'name': 'calculator', 'arguments': {'expression': 12}},
            "calculator: argument 'expression' must be str, got int"),
           ({'name': 'calculator', 'arguments': '1+1'}, 'calculator: arguments must be a JSON object, got str'),
           ({'name': 'calculator', 'arguments': {'expression': '1'}, 'id': 3},
            'tool call has unknown field \'id\' (expected "name" and "arguments")')]
  for call, text in cases:
    assert run_call(ts, call) == ToolResult(text, False), call


def test_exceptions_become_results_and_text_is_truncated():
  class Broken(tools.Tool):
    name, parameters = 'broken', {}

    def run(self, arguments):
      raise KeyError('lost')

  class Long(tools.Tool):
    name, parameters = 'long', {'n': (int, True)}

    def run(self, arguments):
      return ToolResult('x' * arguments['n'], True)

  assert Broken()({}) == ToolResult("broken failed: KeyError: 'lost'", False)
  assert Long(max_chars=100)({'n': 100}).text == 'x' * 100
  out = Long(max_chars=100)({'n': 1000})
  assert out.ok and len(out.text) <= 100
  kept = out.text.index('\n')
  assert out.text == 'x' * kept + f'\n[... truncated: {1000 - kept} more characters]'
  assert Long()({'n': True}) == ToolResult("long: argument 'n' must be int, got bool", False)


# -- calculator ---------------------------------------------------------------------------------------

# precedence as in Python: + - (1), * / (2), unary minus (3), ** (4, right-associative)
def _random_tree(rng, depth):
  if depth == 0 or rng.random() < 0.25:
    if rng.random() < 0.7:
      return ('num', str(rng.randint(0, rng.choice([2, 10 ** rng.randint(1, 6)]))))  # small ones: zeros happen
    whole, frac = str(rng.randint(0, 999)), str(rng.randint(0, 999)).zfill(rng.randint(1, 3))
    return ('num', rng.choice([f'{whole}.{frac}', f'.{frac}', f'{whole}.']))
  k = rng.random()
  if k < 0.15:
    return ('neg', _random_tree(rng, depth - 1))
  if k < 0.3:
    exponent = ('num', str(rng.randint(0, 3)))
    return ('**', _random_tree(rng, depth - 1), ('neg', exponent) if rng.random() < 0.3 else exponent)
  return (rng.choice('+-*/'), _random_tree(rng, depth - 1), _random_tree(rng, depth - 1))


def _prec(node):
  return {'num': 5, 'neg': 3, '**': 4, '+': 1, '-': 1, '*': 2, '/': 2}[node[0]]


def _show(node, rng):
  """The expression with only the parentheses its tree needs (sometimes more), random spaces."""
  def wrap(child, needed):
    text = _show(child, rng)
    return f'({text})' if needed or rng.random() < 0.1 else text
  sp = lambda: rng.choice(['', ' '])  # noqa: E731
  op = node[0]
  if op == 'num':
    return node[1]
  if op == 'neg':
    return '-' + wrap(node[1], _prec(node[1]) < 3)
  if op == '**':
    return wrap(node[1], _prec(node[1]) <= 4) + sp() + '**' + sp() + wrap(node[2], _prec(node[2]) < 3)
  p = _prec(node)
  return wrap(node[1], _prec(node[1]) < p) + sp() + op + sp() + wrap(node[2], _prec(node[2]) <= p)


def _value(node):
  op = node[0]
  if op == 'num':
    return Fraction(node[1])
  if op == 'neg':
    return -_value(node[1])
  a, b = _value(node[1]), _value(node[2])
  if op == '**':
    return a ** int(b)  # ZeroDivisionError for 0 to a negative power
  return {'+': lambda: a + b, '-': lambda: a - b, '*': lambda: a * b, '/': lambda: a / b}[op]()


def test_calculator_equals_fractions_on_random_expressions():
  rng = random.Random(0)
  calc = Calculator()
  checked = zero_division = 0
  for _ in range(400):
    tree = _random_tree(rng, rng.randint(1, 4))
    text = _show(tree, rng)
    as_python = re.sub(r'(\d+\.?\d*|\.\d+)', r"Fraction('\1')", text)
    try:
      want = _value(tree)
    except ZeroDivisionError:
      with pytest.raises(ZeroDivisionError):
        eval(as_python)  # the printed string means the same tree to Python
      result = calc({'expression': text})
      assert not result.ok and result.text.startswith('calculator: division by zero'), (text, result)
      zero_division += 1
      continue
    assert eval(as_python) == want, text
    assert evaluate(text) == want, text
    result = calc({'expression': text})
    assert result.ok
    if want.denominator == 1:
      assert result.text == str(want.numerator)
    else:
      assert result.text.startswith(f'{want.numerator}/{want.denominator} (~')
      assert math.isclose(float(result.text.split('~')[1][:-1]), float(want), rel_tol=1e-9)
    checked += 1
  assert checked > 300 and zero_division > 0


@pytest.mark.parametrize('expression, message', [
    ('1/0', 'division by zero at position 1'),
    ('4 / (3 - 3)', 'division by zero at position 2'),
    ('0 ** -1', 'division by zero: 0 to a negative power at position 2'),
    ('(1 + 2', 'unbalanced parentheses: "(" at position 0 is never closed'),
    ('1 + 2)', 'unbalanced parentheses: unexpected ")" at position 5'),
    ('2 $ 3', "unknown character '$' at position 2"),
    ('x + 1', "unknown character 'x' at position 0"),
    ('', 'empty expression'),
    ('1 +', 'expression ends early at position 3: a number or "(" is missing'),
    ('2 3', "unexpected '3' at position 2"),
    ('1.2.3', "malformed number '1.2.3' at position 0"),
    ('2 ** 0.5', 'exponent 1/2 at position 2 is not an integer'),
    ('2 ** 100000', 'exponent 100000 at position 2 is too large (limit 10000)'),
    ('7 ** 5000', 'result of the power at position 2 is too large (over 1000 digits)'),
    ('9' * 1001, 'number at position 0 is too large (over 1000 digits)'),
    ('10 ** 600 * 10 ** 600', 'intermediate result is too large (over 1000 digits)'),
    ('(' * 150 + '1' + ')' * 150, 'expression is nested too deeply (over 100 levels) at position 100'),
    ('-' * 500 + '1', 'expression is nested too deeply (over 100 levels) at position 100'),
])
def test_calculator_errors(expression, message):
  assert Calculator()({'expression': expression}) == ToolResult(f'calculator: {message}', False)


def test_calculator_formats():
  calc = Calculator()
  assert calc({'expression': '2 ** 10 / 3'}) == ToolResult('1024/3 (~341.3333333)', True)
  assert calc({'expression': '0.1 + 0.2'}) == ToolResult('3/10 (~0.3)', True)
  assert calc({'expression': '-2 ** 2 + 2 ^ 3 ^ 0'}) == ToolResult('-2', True)
  assert calc({'expression': '12.5 * 4'}) == ToolResult('50', True)
  assert calc({'expression': '2 ** 3000 / 3'}).text == f'{2 ** 3000}/3'  # no float holds it: no approximation


# -- BM25, knowledge base, search ---------------------------------------------------------------------

def test_bm25_matches_a_hand_computation():
  docs = ['the cat sat', 'the dog sat on the cat', 'a bird']
  index = BM25Index(docs, k1=1.5, b=0.75)
  avgdl = (3 + 6 + 2) / 3
  idf_cat = idf_sat = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # in 2 of 3 documents
  idf_dog = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))

  def term(idf, tf, length):
    return idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * length / avgdl))
  want = [term(idf_cat, 1, 3) + term(idf_sat, 1, 3),
          term(idf_cat, 1, 6) + term(idf_sat, 1, 6) + term(idf_dog, 1, 6),
          0.0]
  np.testing.assert_allclose(index.scores('Cat sat, dog!'), want, rtol=1e-12)
  np.testing.assert_allclose(index.scores('cat cat unicorn'), index.scores('cat'), rtol=1e-12)
  assert [i for i, _ in index.top('cat sat dog', k=5)] == [1, 0]
  assert index.top('unicorn', k=3) == []


@pytest.fixture(scope='module')
def world():
  return World.from_config({})


def test_knowledge_base_finds_facts_never_seen_in_pretraining(world):
  kb = KnowledgeBase(world=world)
  assert [text for _, text in kb.encyclopedia.passages[:len(world.known())]] == [
      a.split('\n\n', 1)[1] for a in world.articles()]
  examples = tasks.sample(world, 'unknown_entity', 200, seed=1)
  top1 = top3 = 0
  for ex in examples:
    titles = [title for title, _, _ in kb.encyclopedia.search(ex.prompt[-1]['content'], 3)]
    top1 += titles[0] == tasks.cap(ex.meta['subject'])
    top3 += tasks.cap(ex.meta['subject']) in titles
  assert top3 == 200 and top1 >= 190, (top1, top3)
  ex = examples[0]
  result = kb({'query': ex.prompt[-1]['content'], 'k': 1})
  subject = tasks.cap(ex.meta['subject'])
  assert result.ok and result.text.startswith(f'[1] {subject}: ') and str(ex.meta['answer']) in result.text
  without = KnowledgeBase(world=world, include_held_out=False)
  assert all(title != subject for title, _, _ in without.encyclopedia.search(ex.prompt[-1]['content'], 10))
  assert kb({'query': 'zzzz qqqq'}) == ToolResult('no passages match the query', True)
  assert kb({'query': 'x', 'k': 11}) == ToolResult('knowledge_base: k must be between 1 and 10, got 11', False)


def test_local_search_over_a_directory(tmp_path):
  (tmp_path / 'otters.txt').write_text('Otters float on their backs. They hold hands while sleeping.')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'pages.jsonl').write_text(
      json.dumps({'title': 'Herons', 'text': 'Herons stand still in shallow water. They eat fish.',
                  'url': 'https://h.example'})
      + '\n\n' + json.dumps({'text': 'Beavers build dams from sticks.'}) + '\n')
  index = LocalIndex.from_directory(str(tmp_path))
  assert index.search('what do herons eat', 2) == [Hit('Herons', 'They eat fish.', 'https://h.example')]
  assert index.search('beavers dams', 1) == [Hit('pages.jsonl:3', 'Beavers build dams from sticks.',
                                                 f'file://{tmp_path}/sub/pages.jsonl#3')]
  tool = Search(backend=index, k=1)
  assert tool({'query': 'sleeping otters'}) == ToolResult(
      f'[1] otters (file://{tmp_path}/otters.txt)\nThey hold hands while sleeping.', True)
  assert tool({'query': 'volcano'}) == ToolResult('no results', True)
  (tmp_path / 'bad.jsonl').write_text('{"title": "no text"}\n')
  with pytest.raises(ValueError, match=f'search index: {tmp_path}/bad.jsonl line 1 has no "text" string'):
    LocalIndex.from_directory(str(tmp_path))


def test_search_backends_are_pluggable(world):
  class Fixed:
    def search(self, query, k):
      return [Hit(f'{query} {i}', 'snip', f'https://x.example/{i}') for i in range(k)]

  class Down:
    def search(self, query, k):
      raise ConnectionError('no route to the search service')

  assert Search(backend=Fixed())({'query': 'q', 'k': 2}) == ToolResult(
      '[1] q 0 (https://x.example/0)\nsnip\n[2] q 1 (https://x.example/1)\nsnip', True)
  assert Search(backend=Down())({'query': 'q'}) == ToolResult(
      'search failed: ConnectionError: no route to the search service', False)
  with pytest.raises(ValueError, match="search: unknown backend 'bing'; known: local, searxng, world"):
    Search(backend='bing')
  # a web backend, fed canned responses: never a network call in tests
  asked = []
  canned = {'results': [{'title': 'A', 'content': 'alpha', 'url': 'https://a.example'},
                        {'title': 'B', 'content': 'beta', 'url': 'https://b.example'}]}
  web = SearxngBackend('https://searx.example/', fetch=lambda url: asked.append(url) or json.dumps(canned).encode())
  result = Search(backend=web)({'query': 'otters & herons', 'k': 1})
  assert result == ToolResult('[1] A (https://a.example)\nalpha', True)
  assert asked == ['https://searx.example/search?q=otters+%26+herons&format=json']
  # the default backend: the world's pages
  held = world.held_out('thing')[0]
  title = held.name[0].upper() + held.name[1:]
  result = tools.get('search')({'query': f'Who made {held.name}?', 'k': 1})
  assert result.ok and result.text.startswith(f'[1] {title} (lab://world/{title.lower().replace(" ", "_")})\n')
