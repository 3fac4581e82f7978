"""Pretraining rows and batch order; the data and tokenizer stages on the lab's world."""

import json

import numpy as np
import pytest

from lm import config as lm_config
from lm import tokenizer
from lm.data import builders, datasets, pipeline
from lm.lab import splits, tasks
from lm.lab.world import World
from lm.stages import data as data_stage
from lm.stages import tokenizer as tokenizer_stage


def test_pack_by_hand():
  # docs [5,6,7] and [8,9] with EOS=1 -> stream 5 6 7 1 8 9 1 ; rows of 3 (+1 shifted target)
  rows = pipeline.pack([[5, 6, 7], [8, 9]], seq_len=3, eos_id=1)
  np.testing.assert_array_equal(rows['inputs'], [[5, 6, 7], [1, 8, 9]])
  np.testing.assert_array_equal(rows['targets'], [[6, 7, 1], [8, 9, 1]])
  np.testing.assert_array_equal(rows['segment_ids'], [[1, 1, 1], [1, 2, 2]])
  np.testing.assert_array_equal(rows['positions'], [[0, 1, 2], [0, 0, 1]])
  # EOS of doc 0 must not be trained to predict doc 1's first token
  np.testing.assert_array_equal(rows['loss_mask'], [[1, 1, 1], [0, 1, 1]])


def test_cut_share_by_hand_and_against_the_packed_rows():
  # docs of 3, 5 and 2 tokens (+EOS: 4, 6, 3) in rows of 4: rows 0-3, 4-7, 8-11; tokens 8 and 9 belong to
  # the document that began at 4, in the row that begins at 8
  assert pipeline.cut_share([[7] * 3, [7] * 5, [7] * 2], seq_len=4) == 2 / 12
  rng = np.random.default_rng(0)
  docs = [list(rng.integers(2, 50, rng.integers(1, 40))) for _ in range(60)]
  rows = pipeline.pack(docs, seq_len=16, eos_id=1)
  doc_of = np.repeat(np.arange(len(docs)), [len(d) + 1 for d in docs])[:rows['inputs'].size].reshape(-1, 16)
  # a token is cut iff its document is the row's first and also began in an earlier row (or the row before)
  began_before = np.concatenate([[False], doc_of[1:, 0] == doc_of[:-1, -1]])
  cut = (doc_of == doc_of[:, :1]) & began_before[:, None]
  assert pipeline.cut_share(docs, seq_len=16) == pytest.approx(cut.mean())
  assert 0.1 < cut.mean() < 0.9


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


def _smoke_config():
  from pathlib import Path
  return lm_config.load(str(Path(__file__).resolve().parents[1] / 'experiments/pretrain_tiny.py:smoke'))


def _all_records(tfds_dir):
  return {cls.__name__: {split: builders.read(cls, tfds_dir, split) for split in splits}
          for cls, splits in [(builders.PretrainCorpus, ('train', 'validation')),
                              (builders.SftConversations, ('train', 'validation')),
                              (builders.PreferenceRankings, ('train', 'validation')), (builders.EvalSet, ('test',))]}


def test_data_and_tokenizer_stages_are_deterministic_and_keep_evals_apart(tmp_path):
  config = _smoke_config()
  out_a = data_stage.run(config, tmp_path / 'a', {})
  out_b = data_stage.run(config, tmp_path / 'b', {})
  a, b = _all_records(out_a.tfds_dir), _all_records(out_b.tfds_dir)
  assert json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)
  assert out_a.get('pretrain_chars') >= config.data.pretrain_chars
  assert len(a['EvalSet']['test']) == out_a.get('eval_examples') > 0
  eval_prompts = {json.dumps(r['prompt'], sort_keys=True) for r in a['EvalSet']['test']}
  for split in ('train', 'validation'):
    for r in a['SftConversations'][split]:
      n_prompt = next(i for i, m in enumerate(r['messages']) if m['role'] == 'assistant')
      assert json.dumps(r['messages'][:n_prompt], sort_keys=True) not in eval_prompts
  # no item (lm.lab.splits keys) in two of eval, SFT, preferences; validation splits hold whole items
  world = World(seed=config.data.seed, **config.data.world)

  eval_items = {datasets.item(tasks.Example(r['family'], r['variant'], r['prompt'], r['reference'], r['meta']))
                for r in a['EvalSet']['test']}
  sft, prefs = datasets.sft_examples(world, config.data), datasets.preference_prompts(world, config.data)
  sft_rows = a['SftConversations']['train'] + a['SftConversations']['validation']
  assert sorted(json.dumps(r['messages']) for r in sft_rows) == sorted(json.dumps(e.prompt + e.reference) for e in sft)
  pref_rows = a['PreferenceRankings']['train'] + a['PreferenceRankings']['validation']
  assert sorted(json.dumps(r['prompt']) for r in pref_rows) == sorted(json.dumps(e.prompt) for e in prefs)
  sft_item = {json.dumps(e.prompt + e.reference): datasets.item(e) for e in sft}
  pref_item = {json.dumps(e.prompt): datasets.item(e) for e in prefs}  # a prompt names its item
  sft_items = {s: {sft_item[json.dumps(r['messages'])] for r in a['SftConversations'][s]}
               for s in ('train', 'validation')}
  pref_items = {s: {pref_item[json.dumps(r['prompt'])] for r in a['PreferenceRankings'][s]}
                for s in ('train', 'validation')}
  assert sft_items['validation'] and pref_items['validation']
  assert not sft_items['train'] & sft_items['validation'] and not pref_items['train'] & pref_items['validation']
  sft_all, pref_all = set().union(*sft_items.values()), set().union(*pref_items.values())
  assert not eval_items & sft_all and not eval_items & pref_all and not sft_all & pref_all

  other = lm_config.with_overrides(config, {'data': {'seed': 1}})
  c = _all_records(data_stage.run(other, tmp_path / 'c', {}).tfds_dir)
  assert c['PretrainCorpus'] != a['PretrainCorpus']

  tok_a = tokenizer_stage.run(config, tmp_path / 'a', {'data': out_a})
  tok_b = tokenizer_stage.run(config, tmp_path / 'b', {'data': out_b})
  assert tok_a.vocab_size == config.tokenizer.vocab_size
  assert open(tok_a.path, 'rb').read() == open(tok_b.path, 'rb').read()
  tok = tokenizer.load(tok_a.path)
  text = a['PretrainCorpus']['train'][0]['text']
  assert tok.decode(tok.encode(text)) == text


def test_unknown_family_in_the_mix_is_named():
  with pytest.raises(ValueError, match="data mix: unknown task family 'world_q'"):
    splits.draw_mix(World(seed=0), [('world_q', 'direct', 1.0)], 4, 'sft')


def test_a_public_tfds_dataset_replaces_the_world_text(monkeypatch):
  calls = []

  def fake_read_named(name, split, field):  # the real one downloads: not in tests
    calls.append((name, split, field))
    return ['First Citizen:\nBefore we proceed any further, hear me speak.\n' * 200]

  monkeypatch.setattr(builders, 'read_named', fake_read_named)
  c = lm_config.with_overrides(_smoke_config().data, {'pretrain_tfds': 'tiny_shakespeare'})
  pieces = datasets.pretraining_texts(None, c)
  assert calls == [('tiny_shakespeare', 'train', 'text')]
  assert ''.join(pieces) == fake_read_named(None, None, None)[0]
  assert len(pieces) > 1 and all(len(p) <= 4000 for p in pieces)
