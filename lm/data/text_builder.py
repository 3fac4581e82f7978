"""A tfds builder for a plain-text corpus, written as array_record and read without TensorFlow.

Source: ``<source_dir>/<split>.jsonl`` with one ``{"text": ...}`` per line. Read back with
``TextCorpus(data_dir=...).as_data_source(split)`` (random access, no TensorFlow needed).
"""

import json
from pathlib import Path

import tensorflow_datasets as tfds

SPLITS = ('train', 'validation')


class TextCorpus(tfds.core.GeneratorBasedBuilder):
  """Documents of text; one example per document."""

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, source_dir=None, **kwargs):
    self._source_dir = source_dir
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._source_dir is None:
      raise ValueError('TextCorpus needs source_dir to build')
    return {split: self._generate_examples(Path(self._source_dir) / f'{split}.jsonl') for split in SPLITS}

  def _generate_examples(self, path):
    with open(path) as f:
      for i, line in enumerate(f):
        try:
          text = json.loads(line)['text']
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise ValueError(f'{path}: record {i} is not a JSON object with a "text" field ({e})') from None
        yield i, {'text': text}


def write_source(source_dir, split_docs: dict) -> None:
  Path(source_dir).mkdir(parents=True, exist_ok=True)
  for split, docs in split_docs.items():
    with open(Path(source_dir) / f'{split}.jsonl', 'w') as f:
      for doc in docs:
        f.write(json.dumps({'text': doc}) + '\n')


def build(source_dir, data_dir) -> TextCorpus:
  tfds.disable_progress_bar()
  builder = TextCorpus(source_dir=str(source_dir), data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def read_texts(data_dir, split: str) -> list[str]:
  """All documents of a split, in a fixed order (sorted by their original index is not kept by tfds)."""
  source = TextCorpus(data_dir=str(data_dir)).as_data_source(split)
  return [_as_str(source[i]['text']) for i in range(len(source))]


def _as_str(x) -> str:
  return x.decode('utf-8') if isinstance(x, bytes) else str(x)
