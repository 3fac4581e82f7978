"""tfds builders (array_record, no TensorFlow) and the SFT / preference array layouts."""

import tempfile

import numpy as np
import pytest

from lm.data import builders, pipeline


def test_every_builder_round_trips(tmp_path):
  convo = [{'role': 'user', 'content': 'hi <|end|> ü'}, {'role': 'assistant', 'content': 'hello', 'thinking': 't'}]
  records = {
      builders.PretrainCorpus: [{'text': 'line one\nline two ü'}, {'text': ''}],
      builders.SftConversations: [{'messages': convo, 'family': 'manners', 'variant': 'direct'}],
      builders.PreferenceRankings: [{'prompt': convo[:1],
                                     'responses': [convo[1:], [{'role': 'assistant', 'content': 'no'}]],
                                     'ranking': [1, 0], 'rater_rankings': [[1, 0], [0, 1]], 'gold_ranking': [0, 1],
                                     'gold_utilities': [1.0, 0.25], 'kinds': ['reference', 'rude'],
                                     'origin': {'source': 'candidates'}, 'family': 'manners', 'variant': 'direct'}],
      builders.EvalSet: [{'prompt': convo[:1], 'reference': convo[1:], 'meta': {'digits': 3, 'answer': [1, 2]},
                          'family': 'arithmetic', 'variant': 'thinking'}],
  }
  for cls, recs in records.items():
    builders.build(cls, tmp_path, {'train': recs, 'validation': recs[:1]})
    back = builders.read(cls, tmp_path, 'train')
    key = next(iter(cls.FIELDS))
    back = sorted(back, key=lambda r: str(r[key]))
    want = sorted(recs, key=lambda r: str(r[key]))
    for got, exp in zip(back, want, strict=True):
      for field, value in exp.items():
        if isinstance(got[field], np.ndarray):
          np.testing.assert_allclose(got[field], value)
        else:
          assert got[field] == value, (cls.__name__, field)
    assert len(builders.read(cls, tmp_path, 'validation')) == 1


def test_building_and_reading_leave_no_temporary_directory(tmp_path, monkeypatch):
  temp = tmp_path / 'temp'
  temp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(temp))
  builders.build(builders.PretrainCorpus, tmp_path / 'data', {'train': [{'text': 'a line'}]})
  assert [r['text'] for r in builders.read(builders.PretrainCorpus, tmp_path / 'data', 'train')] == ['a line']
  assert sorted(p.name for p in temp.iterdir()) == []


@pytest.mark.parametrize('bad, message', [
    ({'family': 'x', 'variant': 'y'}, "SftConversations train record 2: missing field 'messages'"),
    ({'messages': [], 'family': 3, 'variant': 'y'}, "train record 2: field 'family' must be a string, got int"),
    ('not a dict', 'train record 2: expected a dict, got str'),
])
def test_malformed_record_is_named_by_split_and_index(tmp_path, bad, message):
  good = {'messages': [], 'family': 'x', 'variant': 'y'}
  with pytest.raises(ValueError) as info:
    builders.build(builders.SftConversations, tmp_path, {'train': [good, good, bad]})
  assert message.replace('SftConversations', 'sft_conversations') in str(info.value)


def test_pack_conversations_by_hand():
  a = (np.array([4, 10, 11, 6, 20, 7]), np.array([0, 0, 0, 0, 1, 1]))   # user: 10 11; assistant: 20 end
  b = (np.array([4, 12, 6, 21, 22, 7]), np.array([0, 0, 0, 1, 1, 1]))
  c = (np.array([4, 13, 6, 23, 7]), np.array([0, 0, 0, 1, 1]))
  rows = pipeline.pack_conversations([a, b, c], seq_len=10, pad_id=0)
  # a takes 5 slots, b 5 -> row 0 full; c (4 slots) starts row 1, padded
  np.testing.assert_array_equal(rows['inputs'],
                                [[4, 10, 11, 6, 20, 4, 12, 6, 21, 22], [4, 13, 6, 23, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(rows['targets'],
                                [[10, 11, 6, 20, 7, 12, 6, 21, 22, 7], [13, 6, 23, 7, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(rows['loss_mask'], [[0, 0, 0, 1, 1, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(rows['segment_ids'], [[1] * 5 + [2] * 5, [1] * 4 + [0] * 6])
  np.testing.assert_array_equal(rows['positions'], [[0, 1, 2, 3, 4] * 2, [0, 1, 2, 3, 0, 0, 0, 0, 0, 0]])


def test_packing_fills_the_tightest_row_first():
  def conv(n, token):  # n + 1 tokens: n slots
    return np.full(n + 1, token), np.ones(n + 1)
  # slots 6, 7, 3, 4, 2 into rows of 10: 6 and 7 start rows 0 and 1; 3 fits only row 1 (3 free) and
  # fills it; 4 fills row 0; 2 starts row 2. Filling the last row only would take four rows.
  rows = pipeline.pack_conversations([conv(6, 10), conv(7, 11), conv(3, 12), conv(4, 13), conv(2, 14)], seq_len=10)
  np.testing.assert_array_equal(rows['inputs'], [[10] * 6 + [13] * 4, [11] * 7 + [12] * 3, [14] * 2 + [0] * 8])
  np.testing.assert_array_equal(rows['segment_ids'], [[1] * 6 + [2] * 4, [1] * 7 + [2] * 3, [1] * 2 + [0] * 8])
  # among rows with the same free space, the oldest
  rows = pipeline.pack_conversations([conv(5, 10), conv(8, 11), conv(8, 12), conv(2, 13)], seq_len=10)
  np.testing.assert_array_equal(rows['inputs'][:, -2:], [[0, 0], [13, 13], [0, 0]])


def test_one_conversation_per_row_pads():
  a = (np.array([4, 10, 6, 20, 7]), np.array([0, 0, 0, 1, 1]))
  rows = pipeline.pack_conversations([a, a], seq_len=6, one_per_row=True)
  np.testing.assert_array_equal(rows['segment_ids'], [[1, 1, 1, 1, 0, 0]] * 2)
  np.testing.assert_array_equal(rows['loss_mask'], [[0, 0, 1, 1, 0, 0]] * 2)


def test_packing_never_joins_segments():
  rng = np.random.default_rng(0)
  convs = [(rng.integers(14, 100, n), (rng.random(n) > 0.5).astype(np.float32)) for n in rng.integers(2, 30, 200)]
  rows = pipeline.pack_conversations(convs, seq_len=32)
  seg, pos = rows['segment_ids'], rows['positions']
  starts = np.concatenate([np.ones((len(seg), 1), bool), seg[:, 1:] != seg[:, :-1]], axis=1)
  assert np.all(pos[starts & (seg > 0)] == 0)                      # each segment starts at position 0
  inside = (~starts) & (seg > 0)
  assert np.all(pos[:, 1:][inside[:, 1:]] == pos[:, :-1][inside[:, 1:]] + 1)  # consecutive inside a segment
  assert np.all(rows['loss_mask'][seg == 0] == 0)                  # padding carries no loss
  total_targets = sum(min(len(i), 33) - 1 for i, _ in convs)
  assert int((seg > 0).sum()) == total_targets                      # nothing dropped, nothing duplicated


def test_preference_arrays_by_hand():
  out = pipeline.preference_arrays(
      prompts_ids=[[1, 2, 3, 4, 5]], responses_ids=[[[7, 8], [9], [10, 11, 12]]], rankings=[[2, 0, 1]], seq_len=6)
  # the longest response has 3 tokens, so the prompt keeps its last 3
  np.testing.assert_array_equal(out['tokens'][0], [[3, 4, 5, 7, 8, 0], [3, 4, 5, 9, 0, 0], [3, 4, 5, 10, 11, 12]])
  np.testing.assert_array_equal(out['response_mask'][0], [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1]])
  np.testing.assert_array_equal(out['last_index'], [[4, 3, 5]])
  np.testing.assert_array_equal(out['ranks'], [[1, 2, 0]])
  with pytest.raises(ValueError, match=r'preference record 0: ranking \[0, 0, 1\] is not a permutation'):
    pipeline.preference_arrays([[1]], [[[2], [3], [4]]], [[0, 0, 1]], seq_len=4)
