"""tfds builders for the lab's datasets, written as array_record and read without TensorFlow.

Each builder takes its records per split at build time (the lab generates them). ``build`` checks
every record before writing anything, so a malformed one is a one-line error naming its split, index
and field, and the data directory is left as it was: text fields must be strings, JSON fields plain
JSON (``lm.tools.base.json_problem``), number lists numbers of their type, conversations valid
(``lm.data.chat.check``), and a preference record's lists as long as its responses (rankings
permutations of them). Nested fields (conversations, metadata) are stored as JSON text and parsed
back by ``read``.

  PretrainCorpus       text
  SftConversations     messages (JSON), family, variant
  PreferenceRankings   prompt, responses (JSON each), ranking (the panel's), rater_rankings, gold_ranking,
                       gold_utilities, kinds (what each response is), family, variant
  EvalSet              prompt (JSON), reference (JSON), meta (JSON), family, variant

Real tfds datasets by name (c4, tiny_shakespeare, gsm8k, ...) go through ``read_named`` on a
machine with the ``[tf]`` extra and internet; nothing here downloads otherwise.
"""

import json
import math
import numbers

import numpy as np
import tensorflow_datasets as tfds

from lm.data import chat
from lm.tools.base import json_problem, short

_TEXT, _JSON = 'text', 'json'
_INT32 = (-2**31, 2**31 - 1)


class _LocalInfo(tfds.core.DatasetInfo):
  """A DatasetInfo that never looks for published metadata: these datasets exist only where they are
  built (tfds's lookup, off without GCS, still left an empty temporary directory per builder made)."""

  def initialize_from_bucket(self) -> None:
    pass


class _Records(tfds.core.GeneratorBasedBuilder):
  """Examples from checked, encoded records per split (``build``); ``FIELDS`` maps field -> kind."""

  VERSION = tfds.core.Version('1.0.0')
  FIELDS: dict = {}

  def __init__(self, *, examples: dict | None = None, **kwargs):
    self._examples = examples
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self):
    features = {name: _feature(kind) for name, kind in self.FIELDS.items()}
    return _LocalInfo(builder=self, features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._examples is None:
      raise ValueError(f'{self.name}: nothing to build from (use builders.build)')
    return {split: self._generate_examples(examples) for split, examples in self._examples.items()}

  def _generate_examples(self, examples):
    yield from enumerate(examples)

  @classmethod
  def encode(cls, split: str, i: int, record) -> dict:
    """Record ``i`` of ``split`` as stored; a ValueError naming the split, index and field if malformed."""
    where = f'{cls.name} {split} record {i}'
    if not isinstance(record, dict):
      raise ValueError(f'{where}: expected a dict, got {type(record).__name__}')
    missing = sorted(set(cls.FIELDS) - set(record))
    if missing:
      raise ValueError(f'{where}: missing field {missing[0]!r} (fields: {", ".join(cls.FIELDS)})')
    out = {}
    for name, kind in cls.FIELDS.items():
      problem, out[name] = _encode_field(kind, record[name])
      if problem:
        raise ValueError(f'{where}: field {name!r} {problem}')
    problem = cls.check(record)
    if problem:
      raise ValueError(f'{where}: {problem}')
    return out

  @classmethod
  def check(cls, record: dict) -> str | None:
    """What is wrong with a record whose fields have their kinds (None when nothing)."""
    return None


def _encode_field(kind, value):
  """``(problem or None, stored value)`` of one field of ``kind``."""
  if kind == _TEXT:
    return json_problem(value) if isinstance(value, str) else f'must be a string, got {type(value).__name__}', value
  if kind == _JSON:
    problem = json_problem(value)
    return (f'is not JSON: {problem}', None) if problem else (None, json.dumps(value, ensure_ascii=False))
  if not isinstance(value, (list, tuple)) and not (isinstance(value, np.ndarray) and value.ndim == 1):
    return f'must be a list, got {type(value).__name__}', None
  if kind == 'json_list':
    problem = next(filter(None, (json_problem(v, where=f'[{j}]') for j, v in enumerate(value))), None)
    return (f'is not JSON: {problem}', None) if problem else (None, [json.dumps(v, ensure_ascii=False) for v in value])
  for j, v in enumerate(value):  # 'int32' or 'float32': numbers
    if kind == 'int32' and not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and
                                _INT32[0] <= v <= _INT32[1]):
      return f'[{j}]={short(v)} is not an int32', None
    if kind == 'float32' and not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)):
      return f'[{j}]={short(v)} is not a finite number', None
  return None, [v.item() if hasattr(v, 'item') else v for v in value]


def _conversation_problem(field: str, messages) -> str | None:
  """What ``chat.check`` finds wrong with a conversation field; an empty list has nothing to check
  (rendering it is the error of whoever renders it)."""
  if isinstance(messages, list) and not messages:
    return None
  try:
    chat.check(messages)
  except ValueError as e:
    return f'field {field}: {e}'
  return None


def _permutation_problem(field: str, ranking, k: int) -> str | None:
  ints = isinstance(ranking, (list, tuple, np.ndarray)) and all(
      isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in ranking)
  if not ints or sorted(ranking) != list(range(k)):
    return f'field {field} {short(ranking)} is not a permutation of 0..{k - 1} (one index per response)'
  return None


def _feature(kind):
  if kind in (_TEXT, _JSON):
    return tfds.features.Text()
  if kind == 'json_list':
    return tfds.features.Sequence(tfds.features.Text())
  return tfds.features.Sequence(np.dtype(kind))  # 'int32', 'float32': a list of numbers


class PretrainCorpus(_Records):
  """Documents of plain text."""
  FIELDS = {'text': _TEXT}


class SftConversations(_Records):
  """Conversations for supervised fine-tuning, one per example, with their task family."""
  FIELDS = {'messages': _JSON, 'family': _TEXT, 'variant': _TEXT}

  @classmethod
  def check(cls, record):
    return _conversation_problem("'messages'", record['messages'])


class PreferenceRankings(_Records):
  """K responses to one prompt; rankings are response indices, best first (panel, each rater, gold)."""
  FIELDS = {'prompt': _JSON, 'responses': 'json_list', 'ranking': 'int32', 'rater_rankings': _JSON,
            'gold_ranking': 'int32', 'gold_utilities': 'float32', 'kinds': _JSON, 'family': _TEXT, 'variant': _TEXT,
            'origin': _JSON}  # {'source': 'candidates'} or {'source': 'policy', 'policy', 'round', 'temperature'}

  @classmethod
  def check(cls, record):
    """K >= 2 responses, each a conversation; rankings permutations of them; a utility and a kind each."""
    k = len(record['responses'])
    if k < 2:
      return f"field 'responses' has {k} response(s); a ranking needs at least 2"
    raters = record['rater_rankings']
    if not isinstance(raters, list):
      return f"field 'rater_rankings' must be a list of rankings, got {type(raters).__name__}"
    if len(record['gold_utilities']) != k:
      return f"field 'gold_utilities' has {len(record['gold_utilities'])} values for {k} responses"
    if not isinstance(record['kinds'], list) or len(record['kinds']) != k:
      return f"field 'kinds' must be a list of {k} (one per response), got {short(record['kinds'])}"
    if record['origin'] is not None and not isinstance(record['origin'], dict):
      return f"field 'origin' must be a dict or None, got {type(record['origin']).__name__}"
    problems = (_conversation_problem("'prompt'", record['prompt']),
                *(_conversation_problem(f"'responses'[{j}]", r) for j, r in enumerate(record['responses'])),
                _permutation_problem("'ranking'", record['ranking'], k),
                _permutation_problem("'gold_ranking'", record['gold_ranking'], k),
                *(_permutation_problem(f"'rater_rankings'[{j}]", r, k) for j, r in enumerate(raters)))
    return next(filter(None, problems), None)

  @classmethod
  def check_split(cls, records: list) -> str | None:
    """One K for the whole dataset (the reward model stacks responses K at a time)."""
    ks = [len(r['responses']) for r in records]
    odd = next((i for i, k in enumerate(ks) if k != ks[0]), None)
    return None if odd is None else f'record {odd}: {ks[odd]} responses, but record 0 has {ks[0]} (one K a dataset)'


class EvalSet(_Records):
  """Prompts with reference answers and what the gold scorer needs."""
  FIELDS = {'prompt': _JSON, 'reference': _JSON, 'meta': _JSON, 'family': _TEXT, 'variant': _TEXT}

  @classmethod
  def check(cls, record):
    if not isinstance(record['meta'], dict):
      return f"field 'meta' must be a dict, got {type(record['meta']).__name__}"
    return (_conversation_problem("'prompt'", record['prompt']) or
            _conversation_problem("'reference'", record['reference']))


BUILDERS = {b.__name__: b for b in (PretrainCorpus, SftConversations, PreferenceRankings, EvalSet)}


def build(builder_cls, data_dir, splits: dict):
  """Writes ``splits`` (split -> records) as an array_record dataset under ``data_dir``, once every
  record is checked: a malformed one is a ValueError naming it, and nothing is written."""
  examples = {split: [builder_cls.encode(split, i, r) for i, r in enumerate(records)]
              for split, records in splits.items()}
  check_split = getattr(builder_cls, 'check_split', None)
  for split, records in splits.items():
    problem = check_split and check_split(list(records))
    if problem:
      raise ValueError(f'{builder_cls.name} {split} {problem}')
  tfds.disable_progress_bar()
  builder = builder_cls(examples=examples, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def read(builder_cls, data_dir, split: str) -> list[dict]:
  """Every record of a split, decoded: text as str, JSON fields parsed, numbers as numpy."""
  source = builder_cls(data_dir=str(data_dir)).as_data_source(split)
  return [_decode(builder_cls.FIELDS, source[i]) for i in range(len(source))]


def _decode(fields, example):
  out = {}
  for name, kind in fields.items():
    value = example[name]
    if kind == _TEXT:
      out[name] = _str(value)
    elif kind == _JSON:
      out[name] = json.loads(_str(value))
    elif kind == 'json_list':
      out[name] = [json.loads(_str(v)) for v in value]
    else:
      out[name] = np.asarray(value, dtype=kind)
  return out


def _str(x) -> str:
  return x.decode('utf-8') if isinstance(x, bytes) else str(x)


def read_named(name: str, split: str, field: str = 'text', data_dir=None) -> list[str]:
  """A text field of a public tfds dataset (``c4``, ``tiny_shakespeare``, ``gsm8k``...).

  Prepares it once as array_record (which needs the ``[tf]`` extra and internet), then reads it
  like the lab's datasets. ``field`` picks the text (gsm8k: ``question`` or ``answer``).
  """
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  source = builder.as_data_source(split)
  return [_str(source[i][field]) for i in range(len(source))]
