"""Packing documents into fixed-length rows, and a deterministic, resumable batch order.

A row holds ``seq_len + 1`` tokens from consecutive documents (each ending in EOS); ``inputs`` and
``targets`` are the row shifted by one. ``segment_ids`` number the documents within a row from 1
(0 is padding), ``positions`` restart at 0 at each document, and ``loss_mask`` drops the one
target that would cross from one document into the next.

Batch ``i`` is a pure function of ``(seed, i)``: resuming needs only the step count.
"""

import numpy as np


def pack(docs_tokens, seq_len: int, eos_id: int) -> dict[str, np.ndarray]:
  """Concatenates tokenised documents (+EOS) and cuts them into ``[N, seq_len]`` training rows."""
  lengths = np.array([len(d) + 1 for d in docs_tokens])
  flat = np.concatenate([np.append(np.asarray(d, np.int32), eos_id) for d in docs_tokens]).astype(np.int32)
  doc_ids = np.repeat(np.arange(len(docs_tokens), dtype=np.int32), lengths)
  n_rows = (len(flat) - 1) // seq_len
  if n_rows == 0:
    raise ValueError(f'corpus of {len(flat)} tokens is shorter than one row of seq_len={seq_len}')
  idx_NxL1 = np.arange(n_rows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  tokens_NxL1, docs_NxL1 = flat[idx_NxL1], doc_ids[idx_NxL1]
  segments_NxL1 = docs_NxL1 - docs_NxL1[:, :1] + 1
  starts = np.concatenate([np.ones((n_rows, 1), bool), segments_NxL1[:, 1:] != segments_NxL1[:, :-1]], axis=1)
  col = np.arange(seq_len + 1)[None, :]
  positions_NxL1 = col - np.maximum.accumulate(np.where(starts, col, 0), axis=1)
  return {
      'inputs': tokens_NxL1[:, :-1],
      'targets': tokens_NxL1[:, 1:],
      'loss_mask': (segments_NxL1[:, 1:] == segments_NxL1[:, :-1]).astype(np.float32),
      'positions': positions_NxL1[:, :-1].astype(np.int32),
      'segment_ids': segments_NxL1[:, :-1].astype(np.int32),
  }


class Batches:
  """Global batch ``i`` = rows of a per-epoch seeded permutation; each host takes its slice."""

  def __init__(self, rows: dict[str, np.ndarray], batch_size: int, seed: int, shuffle: bool = True):
    self.rows, self.batch_size, self.seed, self.shuffle = rows, batch_size, seed, shuffle
    self.n_rows = len(next(iter(rows.values())))

  def row_indices(self, i: int) -> np.ndarray:
    sample = i * self.batch_size + np.arange(self.batch_size)
    epoch, within = sample // self.n_rows, sample % self.n_rows
    if not self.shuffle:
      return within
    perms = {e: np.random.default_rng([self.seed, e]).permutation(self.n_rows) for e in np.unique(epoch)}
    return np.array([perms[e][w] for e, w in zip(epoch, within)])

  def host_batch(self, i: int, host_slice: slice = slice(None)) -> dict[str, np.ndarray]:
    idx = self.row_indices(i)[host_slice]
    return {k: v[idx] for k, v in self.rows.items()}
