"""tfds builders for the lab's datasets, written as array_record and read without TensorFlow.

Each builder takes its records per split at build time (the lab generates them) and checks every
record, so a malformed one is an error naming its split and index. Nested fields (conversations,
metadata) are stored as JSON text and parsed back by ``read``.

  PretrainCorpus       text
  SftConversations     messages (JSON), family, variant
  PreferenceRankings   prompt, responses (JSON each), ranking (the panel's), rater_rankings, gold_ranking,
                       gold_utilities, kinds (what each response is), family, variant
  EvalSet              prompt (JSON), reference (JSON), meta (JSON), family, variant

Real tfds datasets by name (c4, tiny_shakespeare, gsm8k, ...) go through ``read_named`` on a
machine with the ``[tf]`` extra and internet; nothing here downloads otherwise.
"""

import json

import numpy as np
import tensorflow_datasets as tfds

_TEXT, _JSON = 'text', 'json'


class _Records(tfds.core.GeneratorBasedBuilder):
  """Examples from in-memory records per split; ``FIELDS`` maps field -> kind."""

  VERSION = tfds.core.Version('1.0.0')
  FIELDS: dict = {}

  def __init__(self, *, splits: dict | None = None, **kwargs):
    self._splits = splits
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self):
    features = {name: _feature(kind) for name, kind in self.FIELDS.items()}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._splits is None:
      raise ValueError(f'{self.name}: nothing to build from (pass splits=...)')
    return {split: self._generate_examples(split, records) for split, records in self._splits.items()}

  def _generate_examples(self, split, records):
    for i, record in enumerate(records):
      yield i, self._encode(split, i, record)

  def _encode(self, split, i, record):
    where = f'{self.name} {split} record {i}'
    if not isinstance(record, dict):
      raise ValueError(f'{where}: expected a dict, got {type(record).__name__}')
    missing = sorted(set(self.FIELDS) - set(record))
    if missing:
      raise ValueError(f'{where}: missing field {missing[0]!r} (fields: {", ".join(self.FIELDS)})')
    out = {}
    for name, kind in self.FIELDS.items():
      value = record[name]
      if kind == _TEXT and not isinstance(value, str):
        raise ValueError(f'{where}: field {name!r} must be a string, got {type(value).__name__}')
      out[name] = json.dumps(value, ensure_ascii=False) if kind == _JSON else (
          [json.dumps(v, ensure_ascii=False) for v in value] if kind == 'json_list' else value)
    return out


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


class PreferenceRankings(_Records):
  """K responses to one prompt; rankings are response indices, best first (panel, each rater, gold)."""
  FIELDS = {'prompt': _JSON, 'responses': 'json_list', 'ranking': 'int32', 'rater_rankings': _JSON,
            'gold_ranking': 'int32', 'gold_utilities': 'float32', 'kinds': _JSON, 'family': _TEXT, 'variant': _TEXT,
            'origin': _JSON}  # {'source': 'candidates'} or {'source': 'policy', 'policy', 'round', 'temperature'}


class EvalSet(_Records):
  """Prompts with reference answers and what the gold scorer needs."""
  FIELDS = {'prompt': _JSON, 'reference': _JSON, 'meta': _JSON, 'family': _TEXT, 'variant': _TEXT}


BUILDERS = {b.__name__: b for b in (PretrainCorpus, SftConversations, PreferenceRankings, EvalSet)}


def build(builder_cls, data_dir, splits: dict):
  """Writes ``splits`` (split -> records) as an array_record dataset under ``data_dir``."""
  tfds.disable_progress_bar()
  builder = builder_cls(splits=splits, data_dir=str(data_dir))
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
