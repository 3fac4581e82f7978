"""Packing documents into fixed-length rows, and a deterministic, resumable batch order.

A row holds ``seq_len + 1`` tokens from consecutive documents (each ending in EOS); ``inputs`` and
``targets`` are the row shifted by one. ``segment_ids`` number the documents within a row from 1
(0 is padding), ``positions`` restart at 0 at each document, and ``loss_mask`` drops the one
target that would cross from one document into the next.

Batch ``i`` is a pure function of ``(seed, i)``: resuming needs only the step count.
"""

import numpy as np

from lm.data import chat


def pack(docs_tokens, seq_len: int, eos_id: int) -> dict[str, np.ndarray]:
  """Concatenates tokenised documents (+EOS) and cuts them into ``[rows, seq_len]`` training rows."""
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


def cut_share(docs_tokens, seq_len: int) -> float:
  """The share of ``pack``'s input tokens that sit in a row their document began before: they cannot attend
  to their document's start (a question cut off from the passage it asks about, a sum's later steps from
  its operands)."""
  lengths = np.array([len(d) + 1 for d in docs_tokens])
  n_tokens = ((lengths.sum() - 1) // seq_len) * seq_len
  doc_starts = np.repeat(np.cumsum(lengths) - lengths, lengths)[:n_tokens]
  return float(np.mean(doc_starts < np.arange(n_tokens) // seq_len * seq_len)) if n_tokens else 0.0


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


def pack_conversations(rendered, seq_len: int, pad_id: int = 0, one_per_row: bool = False) -> dict[str, np.ndarray]:
  """Packs rendered conversations (``(ids [L], loss_mask [L])`` from ``lm.chat.render``) into
  ``[rows, seq_len]`` rows by best fit: each conversation, in order, goes to the row whose free space
  it fills most tightly, or starts a new row when none has room (``one_per_row``: every conversation
  does, i.e. padding instead of packing). Rows keep the order they were started in, and a row's
  conversations their order; the lab's SFT rows are 98% tokens this way, against 84% when a
  conversation that does not fit the last row starts a new one.

  A conversation of L tokens takes L - 1 slots (inputs ``ids[:-1]``, targets ``ids[1:]``, loss on
  the targets the chat mask marks); longer ones are cut to ``seq_len + 1`` tokens. The rest of a
  row is padding: segment 0, no loss. Segments never join: each has its own id and positions.
  """
  rows = []
  rows_by_free = [[] for _ in range(seq_len + 1)]   # free slots -> the rows with that many, oldest first
  for ids, mask in rendered:
    ids, mask = np.asarray(ids)[:seq_len + 1], np.asarray(mask)[:seq_len + 1]
    n = len(ids) - 1
    if n < 1:
      continue
    free = next((f for f in range(n, seq_len + 1) if rows_by_free[f]), None) if not one_per_row else None
    if free is None:
      rows.append([])
      r, free = len(rows) - 1, seq_len
    else:
      r = rows_by_free[free].pop(0)
    rows[r].append((ids, mask))
    if free > n:
      rows_by_free[free - n].append(r)
  out = {k: np.zeros((len(rows), seq_len), np.int32) for k in ('inputs', 'targets', 'positions', 'segment_ids')}
  out['inputs'][:] = pad_id
  out['loss_mask'] = np.zeros((len(rows), seq_len), np.float32)
  for r, convs in enumerate(rows):
    t = 0
    for s, (ids, mask) in enumerate(convs):
      n = len(ids) - 1
      out['inputs'][r, t:t + n] = ids[:-1]
      out['targets'][r, t:t + n] = ids[1:]
      out['loss_mask'][r, t:t + n] = mask[1:]
      out['positions'][r, t:t + n] = np.arange(n)
      out['segment_ids'][r, t:t + n] = s + 1
      t += n
  return out


def preference_arrays(prompts_ids, responses_ids, rankings, seq_len: int, pad_id: int = 0,
                      responses_masks=None) -> dict[str, np.ndarray]:
  """Prompt + each of R responses as ``[B, R, seq_len]`` token rows for a reward model or DPO.

  ``prompts_ids[n]`` are a prompt's ids, ``responses_ids[n][k]`` the ids of response k (ending in
  its end-of-turn id), ``rankings[n]`` response indices best first; ``responses_masks[n][k]`` (same
  length as the response; default all 1) marks the tokens the model wrote (0 on tool results).
  Returns ``tokens``, ``segment_ids`` and ``positions`` (one segment per row), ``response_mask``
  (the response's model-written tokens), ``last_index`` ``[B, R]`` (the response's last token,
  where the reward is read) and ``ranks`` ``[B, R]`` (0 = best). A prompt too long to leave room
  for its longest response loses its oldest tokens; a response longer than ``seq_len`` is cut.
  """
  B, R = len(responses_ids), len(responses_ids[0])
  tokens = np.full((B, R, seq_len), pad_id, np.int32)
  response_mask = np.zeros((B, R, seq_len), np.float32)
  last_index = np.zeros((B, R), np.int32)
  ranks = np.zeros((B, R), np.int32)
  for n in range(B):
    if len(responses_ids[n]) != R:
      raise ValueError(f'preference record {n}: {len(responses_ids[n])} responses, expected {R}')
    if sorted(rankings[n]) != list(range(R)):
      raise ValueError(f'preference record {n}: ranking {list(rankings[n])} is not a permutation of 0..{R - 1}')
    longest = min(max(len(r) for r in responses_ids[n]), seq_len - 1)
    prompt = np.asarray(prompts_ids[n])[-(seq_len - longest):]
    for k, response in enumerate(responses_ids[n]):
      room = seq_len - len(prompt)
      mask = np.ones(len(response)) if responses_masks is None else np.asarray(responses_masks[n][k])
      response, mask = np.asarray(response)[:room], mask[:room]
      row = np.concatenate([prompt, response])
      tokens[n, k, :len(row)] = row
      response_mask[n, k, len(prompt):len(row)] = mask
      last_index[n, k] = len(row) - 1
    ranks[n, np.asarray(rankings[n])] = np.arange(R)
  filled = np.arange(seq_len)[None, None, :] <= last_index[..., None]
  return {'tokens': tokens, 'segment_ids': filled.astype(np.int32),
          'positions': (np.arange(seq_len)[None, None, :] * filled).astype(np.int32),
          'response_mask': response_mask, 'last_index': last_index, 'ranks': ranks}


def preference_rows(tok, records, seq_len: int, ranking: str = 'panel') -> dict[str, np.ndarray]:
  """``PreferenceRankings`` records as ``preference_arrays`` rows (``[B, R, seq_len]``), ranked by the
  panel's Borda ``ranking`` or the ``gold`` ranking, with the records' ``gold_utilities`` ``[B, R]``.
  Each response is rendered after its prompt (``lm.data.chat``); its model-written tokens are its
  loss mask there."""
  if ranking not in ('panel', 'gold'):
    raise ValueError(f'preference ranking {ranking!r}; valid: panel, gold')
  prompts, responses, masks = [], [], []
  for i, r in enumerate(records):
    prompt_ids = chat.render_prompt(tok, r['prompt'])
    prompts.append(prompt_ids)
    ids_k, masks_k = [], []
    for resp in r['responses']:
      ids, mask = chat.render(tok, r['prompt'] + resp)
      if not np.array_equal(ids[:len(prompt_ids)], prompt_ids):
        raise ValueError(f'preference record {i}: a response does not continue its prompt\'s rendering')
      ids_k.append(ids[len(prompt_ids):])
      masks_k.append(mask[len(prompt_ids):])
    responses.append(ids_k)
    masks.append(masks_k)
  order = [r['ranking'] if ranking == 'panel' else r['gold_ranking'] for r in records]
  rows = preference_arrays(prompts, responses, order, seq_len, tok.pad_id, masks)
  rows['gold_utilities'] = np.stack([np.asarray(r['gold_utilities'], np.float32) for r in records])
  return rows


def pack_rankings(tokens_BxRxT, lengths_BxR, n_rows: int) -> dict[str, np.ndarray]:
  """The ``B x R`` sequences (``tokens[n, k, :lengths[n, k]]``) packed into ``n_rows`` rows of ``T`` by
  first-fit decreasing: ``tokens``, ``segment_ids`` (1, 2, ... within a row; 0 is padding) and
  ``positions`` ``[n_rows, T]``, and ``last_index`` ``[B, R]``: each sequence's last token as a flat
  position ``row * T + t`` (``lm.steps.reward.sequence_rewards`` reads the reward there)."""
  B, R, T = tokens_BxRxT.shape
  tokens = np.zeros((n_rows, T), np.int32)
  segment_ids = np.zeros((n_rows, T), np.int32)
  positions = np.zeros((n_rows, T), np.int32)
  last_index = np.zeros((B, R), np.int32)
  used, segments = np.zeros(n_rows, np.int64), np.zeros(n_rows, np.int32)
  for flat in np.argsort(-lengths_BxR.reshape(-1), kind='stable'):
    n, k = divmod(int(flat), R)
    length = int(lengths_BxR[n, k])
    fits = np.flatnonzero(used + length <= T)
    if not len(fits):
      raise ValueError(f'{B} x {R} responses do not fit {n_rows} packed rows of {T} tokens')
    r, start = int(fits[0]), int(used[fits[0]])
    segments[r] += 1
    tokens[r, start:start + length] = tokens_BxRxT[n, k, :length]
    segment_ids[r, start:start + length] = segments[r]
    positions[r, start:start + length] = np.arange(length)
    last_index[n, k] = r * T + start + length - 1
    used[r] += length
  return {'tokens': tokens, 'segment_ids': segment_ids, 'positions': positions, 'last_index': last_index}


def rows_to_pack(lengths_BxR, T: int) -> int:
  """How many rows of ``T`` first-fit decreasing needs for these sequence lengths."""
  used = []
  for length in sorted(lengths_BxR.reshape(-1).tolist(), reverse=True):
    row = next((i for i, u in enumerate(used) if u + length <= T), None)
    if row is None:
      used.append(length)
    else:
      used[row] += length
  return len(used)


def row_counts(needs, shapes: int = 1, multiple: int = 1) -> list[int]:
  """The packed row counts batches that need ``needs`` rows run at, ascending: the most any needs and,
  with ``shapes`` 2, a smaller one where it saves a tenth of all the rows (the one that leaves the fewest
  rows in all; a batch runs at the smallest count it fits). Each is a compiled program of its own.
  Multiples of ``multiple`` (the mesh's batch shards)."""
  rounded = [-(-n // multiple) * multiple for n in needs]
  top = max(rounded)
  if shapes < 2:
    return [top]
  total = lambda q: sum(q if n <= q else top for n in rounded)
  q = min(sorted(set(rounded)), key=total)
  return [q, top] if total(q) <= 0.9 * top * len(rounded) else [top]


class PackedRankings:
  """``Batches`` of ``preference_rows`` (``[B, R, T]`` rows) whose ``batch_size x R`` responses are
  packed into rows of ``T`` (``pack_rankings``), as many as ``row_counts`` picks for the first ``steps``
  batches (the smallest of them each batch fits; ``shapes`` of them at most): ``tokens``,
  ``segment_ids``, ``positions`` ``[M, T]``, ``last_index``, ``ranks``, ``gold_utilities`` ``[batch, R]``.
  Batch ``i`` holds the same prompts as ``Batches(rows, batch_size, seed).host_batch(i)``. One process
  only (several hosts would each need their rows' offsets)."""

  def __init__(self, rows: dict[str, np.ndarray], batch_size: int, seed: int, steps: int, shuffle: bool = True,
               multiple: int = 1, shapes: int = 1):
    self.batches = Batches(rows, batch_size, seed, shuffle)
    self.rows, self.T = rows, rows['tokens'].shape[-1]
    self.row_counts = row_counts([self._need(i) for i in range(max(steps, 1))], shapes, multiple)

  def _need(self, i: int) -> int:
    return rows_to_pack(self.rows['last_index'][self.batches.row_indices(i)] + 1, self.T)

  def host_batch(self, i: int, host_slice: slice = slice(None)) -> dict[str, np.ndarray]:
    if host_slice != slice(None) and (host_slice.start, host_slice.stop) != (0, self.batches.batch_size):
      raise ValueError('packed rankings are fed by one process')
    idx = self.batches.row_indices(i)
    need = self._need(i)
    n_rows = next((n for n in self.row_counts if n >= need), self.row_counts[-1])  # too few: pack_rankings says so
    out = pack_rankings(self.rows['tokens'][idx], self.rows['last_index'][idx] + 1, n_rows)
    out.update({k: self.rows[k][idx] for k in ('ranks', 'gold_utilities') if k in self.rows})
    return out
