"""The minimal data path: corpus -> tfds array_record -> sentencepiece -> packed rows -> batches."""

import json

import numpy as np
import pytest

from lm import tokenizer
from lm.data import corpus, pipeline, text_builder


def test_pack_by_hand():
  # docs [5,6,7] and [8,9] with EOS=1 -> stream 5 6 7 1 8 9 1 ; rows of 3 (+1 shifted target)
  rows = pipeline.pack([[5, 6, 7], [8, 9]], seq_len=3, eos_id=1)
  np.testing.assert_array_equal(rows['inputs'], [[5, 6, 7], [1, 8, 9]])
  np.testing.assert_array_equal(rows['targets'], [[6, 7, 1], [8, 9, 1]])
  np.testing.assert_array_equal(rows['segment_ids'], [[1, 1, 1], [1, 2, 2]])
  np.testing.assert_array_equal(rows['positions'], [[0, 1, 2], [0, 0, 1]])
  # EOS of doc 0 must not be trained to predict doc 1's first token
  np.testing.assert_array_equal(rows['loss_mask'], [[1, 1, 1], [0, 1, 1]])


def test_pack_too_short_is_an_error():
  with pytest.raises(ValueError, match='seq_len=64'):
    pipeline.pack([[1, 2]], seq_len=64, eos_id=3)


def test_batches_deterministic_epochs_and_host_slices():
  rows = {'inputs': np.arange(10)[:, None] * np.ones((1, 4), np.int32)}
  b = pipeline.Batches(rows, batch_size=4, seed=7)
  seen = np.concatenate([b.row_indices(i) for i in range(5)])  # 20 samples = 2 epochs
  assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
  np.testing.assert_array_equal(b.row_indices(3), pipeline.Batches(rows, 4, seed=7).row_indices(3))
  assert not np.array_equal(b.row_indices(0), pipeline.Batches(rows, 4, seed=8).row_indices(0))
  full = b.host_batch(2)['inputs']
  halves = [b.host_batch(2, slice(0, 2))['inputs'], b.host_batch(2, slice(2, 4))['inputs']]
  np.testing.assert_array_equal(np.concatenate(halves), full)


def test_corpus_is_deterministic():
  assert corpus.documents(50, seed=3) == corpus.documents(50, seed=3)
  assert corpus.documents(50, seed=3) != corpus.documents(50, seed=4)


def test_tfds_builder_round_trip_and_tokenizer(tmp_path):
  docs = corpus.documents(300, seed=0) + ['multi\nline ü text']
  text_builder.write_source(tmp_path / 'src', {'train': docs, 'validation': docs[:5]})
  text_builder.build(tmp_path / 'src', tmp_path / 'tfds')
  back = text_builder.read_texts(tmp_path / 'tfds', 'train')
  assert sorted(back) == sorted(docs)
  assert sorted(text_builder.read_texts(tmp_path / 'tfds', 'validation')) == sorted(docs[:5])

  tok = tokenizer.train(back, tmp_path / 'tok.model', vocab_size=400)
  assert tok.vocab_size == 400
  again = tokenizer.Tokenizer(tmp_path / 'tok.model')
  for text in docs[:20] + ['unseen words: Zyx 12345 ✓']:
    ids = again.encode(text)
    assert again.decode(ids) == text  # byte fallback: nothing is out of vocabulary
    assert tokenizer.EOS_ID not in ids and tokenizer.PAD_ID not in ids
  assert [again.sp.id_to_piece(i) for i in again.encode('12345')] == ['1', '2', '3', '4', '5']  # digits split


def test_bad_source_record_names_file_and_record(tmp_path):
  src = tmp_path / 'src'
  text_builder.write_source(src, {'train': ['a', 'b'], 'validation': ['c']})
  with open(src / 'train.jsonl', 'a') as f:
    f.write(json.dumps({'txt': 'oops'}) + '\n')
  with pytest.raises(Exception, match=r'train.jsonl: record 2 is not'):
    text_builder.build(src, tmp_path / 'tfds')


def test_missing_tokenizer_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.model'):
    tokenizer.Tokenizer(tmp_path / 'nope.model')
