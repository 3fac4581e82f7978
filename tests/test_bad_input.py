"""Bad input, fuzzed with fixed seeds: malformed configs (wrong types, tuples where numbers are,
unknown keys at any depth, counts <= 0, rates and temperatures < 0), malformed records to every
builder, malformed tool calls and malformed chat messages. Each is one line naming what is wrong (the
key, the record's split, index and field, the tool, the message index), and nothing is written: the
workdir (or data directory) lists the same files before and after."""

import copy
import fnmatch
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from lm import config as lm_config
from lm import tokenizer
from lm.cli import launch
from lm.configs import base
from lm.data import builders, chat
from lm.lab.world import World
from lm.tools import ToolResult, run_call
from lm.tools.base import MAX_CALL_CHARS, Tool
from lm.tools.calculator import Calculator

REPO = Path(__file__).resolve().parents[1]
SMOKE = 'experiments/pretrain_tiny.py:smoke'


def listing(directory: Path) -> list:
  """Every path under ``directory`` with its size and modification time (None if it does not exist)."""
  if not directory.exists():
    return None
  return sorted((str(p.relative_to(directory)), p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
                for p in directory.rglob('*'))


def one_line(error: BaseException) -> str:
  text = str(error)
  assert text and '\n' not in text, repr(text)
  return text


# ------------------------------------------------------------------------------ configs

def smoke():
  return lm_config.load(str(REPO / SMOKE))


def leaves(node, prefix=()):
  """``(path, value)`` of every leaf of a config."""
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def sections(node, prefix=()):
  """The path of every section (the root included)."""
  yield prefix
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from sections(value, prefix + (key,))


def nested(path, value) -> dict:
  out = value
  for key in reversed(path):
    out = {key: out}
  return out


WRONG_TYPES = {  # a leaf's kind -> values of other kinds (a tuple where a number is, and so on)
    bool: ['yes', 1, None, (True,)],
    int: ['abc', (1, 2), 2.5, True, None, {'x': 1}],
    float: ['abc', (1.0, 2.0), True, None, [0.5]],
    str: [3, ('a',), None, 1.5, True],
    tuple: [3, 'abc', None, 2.5],
}


def _kind(value):
  return next(k for k in (bool, int, float, str, tuple) if isinstance(value, k))


def wrong_type_cases(n: int, seed: int = 0):
  rng = random.Random(seed)
  typed = [(path, value) for path, value in leaves(smoke()) if value is not None]  # None: a leaf of open type
  for path, value in rng.sample(typed, n):
    yield '.'.join(path), nested(path, rng.choice(WRONG_TYPES[_kind(value)]))


def _violation(rule: str, value):
  """A value of ``value``'s type that breaks ``rule``."""
  if '..' in rule:
    low, high = (float(b) for b in rule.split('..'))
    return high + 0.5 if isinstance(value, float) else int(high) + 1
  op, bound = rule.split()
  bad = float(bound) - (0.5 if op == '>=' else 0.0)
  return bad if isinstance(value, float) else math.floor(bad) if op == '>' else int(float(bound)) - 1


def out_of_range_cases(n: int, seed: int = 0):
  rng = random.Random(seed)
  ranged = []
  for path, value in leaves(smoke()):
    key = '.'.join(path)
    rule = next((r for pattern, r in base.RANGES.items() if fnmatch.fnmatchcase(key, pattern)), None)
    if rule and isinstance(value, (int, float)) and not isinstance(value, bool):
      ranged.append((key, path, value, rule))
  for key, path, value, rule in rng.sample(ranged, n):
    yield key, rule, nested(path, _violation(rule, value))
  yield 'rlhf.best_of_n', '>= 1', {'rlhf': {'best_of_n': (1, 0)}}  # a tuple's numbers too
  yield 'pretrain.optim.lr', '>= 0', {'pretrain': {'optim': {'lr': float('nan')}}}


def unknown_key_cases(seed: int = 0):
  rng = random.Random(seed)
  for path in rng.sample([p for p in sections(smoke()) if p != ('variants',)], 8):
    yield path, f'bogus_{rng.randrange(1000)}'


@pytest.fixture
def workdir(tmp_path):
  """A workdir holding what an earlier run left (a finished stage)."""
  work = tmp_path / 'run'
  (work / 'data').mkdir(parents=True)
  (work / 'data' / 'outputs.json').write_text('{"kind": "Data", "tfds_dir": "x"}\n')
  (work / 'metrics.jsonl').write_text('{"stage": "data", "step": 0}\n')
  return work


def _fails_naming(make_config, workdir, *parts):
  """``launch`` of the config ``make_config()`` fails with one line holding ``parts``, writing nothing."""
  before = listing(workdir)
  with pytest.raises(lm_config.ConfigError) as info:
    launch.launch(make_config(), workdir)
  text = one_line(info.value)
  for part in parts:
    assert part in text, (part, text)
  assert listing(workdir) == before  # nothing written: no config.json, no stage, no outputs.json
  return text


@pytest.mark.parametrize('key, overrides', list(wrong_type_cases(30)))
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_key(workdir, key, overrides):
  text = _fails_naming(lambda: lm_config.with_overrides(smoke(), overrides), workdir, f'config key {key}')
  assert 'expected' in text


@pytest.mark.parametrize('key, rule, overrides', list(out_of_range_cases(25)))
def test_a_config_value_out_of_range_is_one_line_naming_the_key_and_the_range(workdir, key, rule, overrides):
  _fails_naming(lambda: lm_config.with_overrides(smoke(), overrides), workdir, f'config key {key}=',
                f'is out of range: must be {rule}')


@pytest.mark.parametrize('path, name', list(unknown_key_cases()))
def test_an_unknown_key_at_any_depth_is_one_line_naming_it(workdir, path, name):
  config = smoke()
  section = config
  for key in path:
    section = section[key]
  with section.unlocked():  # as an experiment file that replaced a section with one of its own would
    section[name] = 1
  _fails_naming(lambda: config, workdir, f'unknown config key {".".join(path + (name,))}')


def test_a_bad_variant_fails_before_any_stage_runs(workdir):
  config = smoke()
  config.variants = {'fine': {'pretrain': {'steps': 3}}, 'broken': {'pretrain': {'optim': {'lr': -1.0}}}}
  _fails_naming(lambda: config, workdir, "variant 'broken': config key pretrain.optim.lr=-1.0 is out of range")
  config.variants = {'typo': {'pretrain': {'stepz': 3}}}
  with pytest.raises(lm_config.ConfigError, match='unknown config key pretrain.stepz'):
    launch.launch(config, workdir)


def test_a_batch_the_mesh_cannot_split_is_one_line(workdir):
  config = lm_config.with_overrides(smoke(), {'pretrain': {'batch_size': 12}})
  _fails_naming(lambda: config, workdir,
                'pretrain.batch_size=12 must be a multiple of pretrain.microbatches=1 times the mesh batch shards (8')


def test_every_experiment_config_passes_the_checks():
  schema = base.get_config()
  lm_config.validate(schema, schema, base.RANGES)
  checked = 0
  needs = {'sft_from_hf': (), 'human_rlhf': (':runs/served',)}  # a Hugging Face checkpoint; a served run
  for path in sorted((REPO / 'experiments').glob('*.py')):
    for arg in needs.get(path.stem, ('', ':smoke') if "'smoke'" in path.read_text() else ('',)):
      launch.check(lm_config.load(f'{path}{arg}'))
      checked += 1
  assert checked > 20


def run_cli(tmp_path, *args):
  cmd = [sys.executable, '-m', 'lm.launch', f'--config={SMOKE}', f'--workdir={tmp_path / "run"}', *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_launcher_process_exits_with_one_error_line(tmp_path):
  result = run_cli(tmp_path, '--config.pretrain.steps=abc')
  assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1] == ('lm.launch: error: config key pretrain.steps=abc: expected an int like the default 20 '
                       "(invalid literal for int() with base 10: 'abc')"), lines
  assert sum(line.startswith('lm.launch: error') for line in lines) == 1
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('arg, expected', [
    ('--config.pretrain.steps=(1,2)', 'config key pretrain.steps=(1,2): expected an int'),
    ('--config.pretrain.batch_size=-8', 'config key pretrain.batch_size=-8 is out of range: must be >= 1'),
    ('--config.rlhf.temperature=-0.5', 'config key rlhf.temperature=-0.5 is out of range: must be >= 0'),
    ('--config.data.world.n_peple=3', 'unknown config key data.world.n_peple (did you mean data.world.n_people?)'),
])
def test_bad_values_and_keys_are_one_line_naming_the_key(launcher_error, tmp_path, arg, expected):
  message = launcher_error(f'--config={SMOKE}', f'--workdir={tmp_path / "run"}', arg)
  assert message.startswith(f'lm.launch: error: {expected}') and '\n' not in message, message
  assert not (tmp_path / 'run').exists()


# ------------------------------------------------------------------------------ builders

CONVO = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello', 'thinking': 't'}]
GOOD = {
    builders.PretrainCorpus: {'text': 'line one\nline two'},
    builders.SftConversations: {'messages': CONVO, 'family': 'manners', 'variant': 'direct'},
    builders.PreferenceRankings: {
        'prompt': CONVO[:1], 'responses': [CONVO[1:], [{'role': 'assistant', 'content': 'no'}],
                                           [{'role': 'assistant', 'content': 'eh'}]],
        'ranking': [1, 0, 2], 'rater_rankings': [[1, 0, 2], [0, 1, 2]], 'gold_ranking': [0, 1, 2],
        'gold_utilities': [1.0, 0.25, 0.5], 'kinds': ['reference', 'rude', 'short'], 'origin': {'source': 'candidates'},
        'family': 'manners', 'variant': 'direct'},
    builders.EvalSet: {'prompt': CONVO[:1], 'reference': CONVO[1:], 'meta': {'digits': 3, 'answer': [1, 2]},
                       'family': 'arithmetic', 'variant': 'thinking'},
}

_cycle = {}
_cycle['self'] = _cycle
_deep = []
for _ in range(200):
  _deep = [_deep]
NOT_JSON = [{1, 2}, object(), b'bytes', float('nan'), float('inf'), {1: 'a'}, {'a': {'b': {3}}}, _cycle, _deep,
            {'text': '\ud800'}]
BAD_CONVERSATIONS = ['not a list', [{'role': 'robot', 'content': 'x'}], [{'role': 'user', 'content': 3}],
                     [{'role': 'user'}], ['a message'], [{'role': 'tool', 'content': 'x'}]]
BAD_BY_KIND = {
    'text': [3, None, ['a'], b'text', '\ud800 lone surrogate'],
    'json': NOT_JSON,
    'json_list': ['abc', 3, [{1, 2}, [], []]],
    'int32': ['abc', [1.5, 0, 2], [True, 0, 1], [2**40, 0, 1], [[0], 1, 2], {'a': 1}],
    'float32': ['abc', [1.0, 'x', 0.5], [float('nan'), 0.0, 0.0], [True, 1.0, 0.5], [None, 1.0, 0.5]],
}
BAD_BY_FIELD = {  # the checks that know what a field holds
    'messages': BAD_CONVERSATIONS, 'prompt': BAD_CONVERSATIONS, 'reference': BAD_CONVERSATIONS,
    'responses': [[CONVO[1:]], [CONVO[1:], [{'role': 'robot', 'content': 'x'}], CONVO[1:]]],
    'ranking': [[0, 1], [0, 0, 1], [0, 1, 3], [0, 1, 2, 3]], 'gold_ranking': [[2, 1], [1, 1, 1]],
    'rater_rankings': ['abc', [[0, 1]], [[0, 1, 'x']], [3]], 'gold_utilities': [[1.0, 0.5], [1.0, 0.5, 0.1, 0.2]],
    'kinds': [['a'], 'abc'], 'origin': ['candidates', [1]], 'meta': [[1, 2], 'digits'],
}


def builder_cases():
  rng = random.Random(0)
  for cls, good in GOOD.items():
    for field, kind in cls.FIELDS.items():
      for bad in BAD_BY_KIND[kind] + BAD_BY_FIELD.get(field, []):
        yield cls, field, {**good, field: bad}, rng.randrange(6), rng.choice(['train', 'validation'])
      yield cls, field, {k: v for k, v in good.items() if k != field}, rng.randrange(6), 'train'
    for bad in ('not a dict', None, [good]):
      yield cls, None, bad, rng.randrange(6), 'train'


@pytest.mark.parametrize('cls, field, bad, index, split', list(builder_cases()))
def test_a_malformed_record_is_one_line_naming_split_index_and_field(tmp_path, cls, field, bad, index, split):
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  (data_dir / 'keep.txt').write_text('an earlier file\n')
  before = listing(data_dir)
  records = [copy.deepcopy(GOOD[cls]) for _ in range(6)]
  records.insert(index, bad)
  splits = {'train': [GOOD[cls]], 'validation': [GOOD[cls]], split: records}
  with pytest.raises(ValueError) as info:
    builders.build(cls, data_dir, splits)
  text = one_line(info.value)
  assert text.startswith(f'{cls.name} {split} record {index}: '), text
  if field is None:
    assert 'expected a dict' in text
  elif field not in bad:
    assert f'missing field {field!r}' in text
  else:
    assert f'field {field!r}' in text, text
  assert listing(data_dir) == before


def test_rankings_of_different_lengths_in_one_dataset_are_an_error(tmp_path):
  two = {**GOOD[builders.PreferenceRankings], 'responses': [CONVO[1:], CONVO[1:]], 'ranking': [0, 1],
         'rater_rankings': [[1, 0]], 'gold_ranking': [1, 0], 'gold_utilities': [1.0, 0.0], 'kinds': ['a', 'b']}
  with pytest.raises(ValueError, match=r'^preference_rankings train record 2: 2 responses, but record 0 has 3'):
    builders.build(builders.PreferenceRankings, tmp_path, {'train': [GOOD[builders.PreferenceRankings]] * 2 + [two]})
  assert listing(tmp_path) == []


def test_good_records_still_round_trip(tmp_path):
  for cls, good in GOOD.items():
    builders.build(cls, tmp_path, {'train': [good, good], 'validation': [good]})
    back = builders.read(cls, tmp_path, 'train')
    assert len(back) == 2
    for field, value in good.items():
      got = back[0][field]
      assert (got.tolist() if hasattr(got, 'tolist') else got) == value, (cls.name, field)


# ------------------------------------------------------------------------------ tool calls

class Spy(Tool):
  """A tool that records what it runs."""
  name, parameters = 'spy', {'text': (str, True), 'n': (int, False)}

  def __init__(self):
    super().__init__()
    self.ran = []

  def run(self, arguments):
    self.ran.append(arguments)
    return ToolResult('ran', True)


def tool_call_cases(seed: int = 0):
  """``(call, words the error must hold)``: bad JSON text, huge, unknown, non-dict and nested garbage."""
  rng = random.Random(seed)
  text = json.dumps({'name': 'spy', 'arguments': {'text': 'hello', 'n': 3}})
  for cut in sorted(rng.sample(range(1, len(text) - 1), 12)):  # JSON cut short anywhere
    yield text[:cut], ['not valid JSON']
  for _ in range(4):  # random garbage text
    yield ''.join(rng.choice('{}[]":,abc 123\\') for _ in range(rng.randrange(1, 40))), ['tool call']
  yield 'x' * (MAX_CALL_CHARS + 1), ['characters long']
  yield '[' * 100_000 + ']' * 100_000, ['characters long']
  yield '[' * 20_000 + ']' * 20_000, ['nested too deep']
  yield '{"name": "spy", "arguments": {"text": ' + '[' * 500 + ']' * 500 + '}}', ['spy: arguments are not plain JSON',
                                                                                  'nested too deep']
  yield {'name': 'spy', 'arguments': {'text': 'y' * MAX_CALL_CHARS}}, ['spy:', 'characters of JSON']
  for _ in range(4):
    name = ''.join(rng.choice('abcxyz_') for _ in range(rng.randrange(1, 12)))
    yield {'name': name, 'arguments': {}}, [f'unknown tool {name!r}; available: calculator, spy']
  yield {'name': 'q' * 10_000, 'arguments': {}}, ['unknown tool', '...']
  for arguments in (['hello'], 'hello', 3, None, True):
    yield {'name': 'spy', 'arguments': arguments}, ['spy: arguments must be a JSON object']
  deep = 'x'
  for _ in range(64):
    deep = {'a': [deep]}
  cycle = {}
  cycle['again'] = cycle
  for arguments in ({'text': {1, 2}}, {'text': 'a', 1: 'b'}, {'text': float('nan')}, {'text': object()},
                    {'text': deep}, cycle, {'text': [[[b'bytes']]]}, {'text': '\ud800'}):
    yield {'name': 'spy', 'arguments': arguments}, ['spy: arguments are not plain JSON']
  for arguments in ({'text': 3}, {'text': ['a']}, {'text': {'a': 'b'}}, {'n': 2}, {'text': 'a', 'extra': 1},
                    {'text': 'a', 'n': 2.5}, {'text': 'a', 'n': True}):
    yield {'name': 'spy', 'arguments': arguments}, ['spy: ']
  for call in (['spy'], 'null', '3', '"spy"'):
    yield call, ['tool call must be a JSON object']
  yield {'arguments': {}}, ['tool call has no "name" string']
  yield {'name': ['spy'], 'arguments': {}}, ['tool call has no "name" string']
  yield {'name': 'spy', 'arguments': {}, 'id': 1, 2: 3}, ['tool call has unknown field']


@pytest.mark.parametrize('call, words', list(tool_call_cases()))
def test_a_malformed_tool_call_is_a_one_line_error_result_and_never_runs(call, words):
  spy = Spy()
  result = run_call({'spy': spy, 'calculator': Calculator()}, call)
  assert not result.ok and '\n' not in result.text and len(result.text) < 400, result
  for word in words:
    assert word in result.text, (word, result.text)
  assert spy.ran == []


def test_good_tool_calls_still_run():
  spy = Spy()
  tools = {'spy': spy, 'calculator': Calculator()}
  assert run_call(tools, '{"name": "calculator", "arguments": {"expression": "6*7"}}') == ToolResult('42', True)
  assert run_call(tools, {'name': 'spy', 'arguments': {'text': 'ü' * 100, 'n': 2}}) == ToolResult('ran', True)
  assert spy.ran == [{'text': 'ü' * 100, 'n': 2}]


# ------------------------------------------------------------------------------ chat messages

CALL = {'name': 'calculator', 'arguments': {'expression': '17*23'}}
CONVERSATION = [
    {'role': 'system', 'content': 'Be brief.'},
    {'role': 'user', 'content': 'What is 17*23?'},
    {'role': 'assistant', 'content': '', 'thinking': 'use the tool', 'tool_calls': [CALL]},
    {'role': 'tool', 'name': 'calculator', 'content': '391'},
    {'role': 'assistant', 'content': 'It is 391.'},
]


def message_mutations(m: dict, rng: random.Random):
  """Ways to break message ``m`` on its own (so that the error is at its index)."""
  bad_roles = ['robot', None, 3, ['user'], {'role': 'user'}, 'User', '']
  yield {**m, 'role': rng.choice(bad_roles)}
  yield {**m, 'content': rng.choice([3, ['a list', 'of strings'], {'text': 'x'}, 2.5, b'bytes'])}
  if m['role'] != 'assistant':
    yield {k: v for k, v in m.items() if k != 'content'}
    yield {**m, 'content': None}
  else:
    yield {**m, 'thinking': rng.choice([['a'], 7, {'x': 1}])}
    yield {**m, 'tool_calls': rng.choice([CALL, 'calculator', 3])}
    yield {**m, 'tool_calls': [rng.choice(['calculator', None, {'arguments': {}}, {'name': ['calculator']},
                                           {'name': ''}])]}
    garbage = rng.choice([[1, 2], 'expression', {'x': {1, 2}}, {1: 'a'}, {'x': float('nan')}, {'x': object()}])
    yield {**m, 'tool_calls': [{'name': 'calculator', 'arguments': garbage}]}
  yield rng.choice(['a message', ['role', 'user'], None, 3])


def chat_cases(seed: int = 0):
  rng = random.Random(seed)
  for i, m in enumerate(CONVERSATION):
    for bad in message_mutations(m, rng):
      yield i, CONVERSATION[:i] + [bad] + CONVERSATION[i + 1:]


@pytest.fixture(scope='module')
def char_tok():
  return tokenizer.CharTokenizer.train(World(seed=0).pretraining_documents(n_docs=50))


@pytest.mark.parametrize('index, messages', list(chat_cases()))
def test_a_malformed_message_is_one_line_naming_its_index(char_tok, index, messages):
  chat.render(char_tok, CONVERSATION)  # the conversation itself is fine
  with pytest.raises(ValueError) as info:
    chat.render(char_tok, messages)
  text = one_line(info.value)
  assert text.startswith(f'message {index}: '), text
  with pytest.raises(ValueError) as checked:  # the same check without a tokenizer (what builders use)
    chat.check(messages)
  assert str(checked.value) == text


@pytest.mark.parametrize('messages', [[], None, 'hello', {'role': 'user', 'content': 'hi'}, 3])
def test_a_conversation_that_is_not_a_list_of_messages_is_one_line(char_tok, messages):
  with pytest.raises(ValueError, match=r'^conversation is empty \(or not a list of messages\)$'):
    chat.render(char_tok, messages)
