"""Repeated random strings as pretraining documents: each is a string then itself, in text ids, adding the
share of tokens asked for after the lab's rows, which stay as they were."""

from pathlib import Path

import numpy as np
import pytest

from lm import config as lm_config
from lm import probes, tokenizer
from lm.cli import launch
from lm.data import induction
from lm.stages import pretrain

REPO = Path(__file__).resolve().parents[1]


class Vocab:
  vocab_size = 1024


def test_each_string_is_followed_by_itself_in_text_ids():
  repeated = induction.strings(50, Vocab, np.random.default_rng(3))
  assert len(repeated) == 50 and len({tuple(s) for s in repeated}) == 50
  for s in repeated:
    assert len(s) == 2 * induction.LENGTH and s[:induction.LENGTH] == s[induction.LENGTH:]
    assert tokenizer.FIRST_TEXT_ID <= min(s) and max(s) < Vocab.vocab_size
  small = Vocab()
  small.vocab_size = 400  # few pieces: byte ids too
  assert min(min(s) for s in induction.strings(50, small, np.random.default_rng(3))) < tokenizer.FIRST_TEXT_ID


def test_strings_are_added_after_the_documents_as_the_share_of_tokens_asked():
  docs = [[7] * 99] * 30  # 3,000 tokens with their EOS
  mixed = induction.add_to(docs, 0.25, Vocab, seed=0)
  assert mixed[:30] == docs
  added = sum(len(d) + 1 for d in mixed[30:])
  assert len(mixed) - 30 == round(0.25 * 3000 / 0.75 / 61) == 16  # 976 of 3,976 tokens: 0.245
  assert added / (added + 3000) == pytest.approx(0.25, abs=61 / 3000)
  assert induction.add_to(docs, 0.25, Vocab, seed=0) == mixed and induction.add_to(docs, 0.25, Vocab, 1) != mixed
  assert induction.add_to(docs, 0.0, Vocab, seed=0) == docs
  # never the copy probe's strings
  probe = {tuple(s) for s in induction.strings(64, Vocab, np.random.default_rng(0))}
  assert not probe & {tuple(s) for s in mixed[30:]}
  for share in (1.0, -0.1):
    with pytest.raises(ValueError, match=rf'pretrain.induction_share={share}: the share of pretraining tokens'):
      induction.add_to(docs, share, Vocab, seed=0)


def test_the_pretrain_stage_trains_on_the_lab_rows_and_the_strings(tmp_path):
  config = lm_config.load(str(REPO / 'experiments/pretrain_tiny.py:smoke'))
  out = launch.launch(lm_config.with_overrides(config, {'stages': ('data', 'tokenizer')}), tmp_path)
  tok, tfds_dir = tokenizer.load(out['tokenizer'].path), out['data'].tfds_dir
  plain, held, cut = pretrain.in_memory(tok, tfds_dir, config.pretrain, seed=0)
  c = lm_config.with_overrides(config, {'pretrain': {'induction_share': 0.2}}).pretrain
  mixed, held_mixed, cut_mixed = pretrain.in_memory(tok, tfds_dir, c, seed=0)
  n = plain.n_rows  # the lab's rows, then rows of strings
  for key in plain.rows:
    np.testing.assert_array_equal(mixed.rows[key][:n], plain.rows[key][:n])
    np.testing.assert_array_equal(held_mixed.rows[key], held.rows[key])  # eval rows: the lab's alone
  assert mixed.n_rows / plain.n_rows == pytest.approx(1 / 0.8, abs=0.02) and cut_mixed == cut
  stream = mixed.rows['inputs'][n + 1:].ravel()  # consecutive rows: one token stream
  ends = np.flatnonzero(stream == tok.eos_id)
  strings = [stream[a + 1:b] for a, b in zip(ends[:-1], ends[1:])]
  assert len(strings) > 10
  for s in strings:
    assert len(s) == 2 * induction.LENGTH and (s[:induction.LENGTH] == s[induction.LENGTH:]).all()
  probe = {tuple(r[:2 * induction.LENGTH]) for r in probes.probe_rows(tok, 8)[0][8:]}
  assert not probe & {tuple(s) for s in strings}

  streamed = lm_config.with_overrides(config, {'stages': ('data', 'tokenizer', 'pretrain'),
                                               'data': {'pretrain_stream': True},
                                               'pretrain': {'induction_share': 0.2}})
  with pytest.raises(ValueError, match=r'pretrain.induction_share=0.2 needs the in-memory corpus'):
    launch.launch(streamed, tmp_path)
