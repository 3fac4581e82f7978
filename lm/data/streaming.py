"""Pretraining rows streamed from a corpus too big for memory: documents read one at a time through
grain, globally shuffled, sharded over hosts, tokenised and packed as ``pipeline.pack`` packs them.

Sources (random access, nothing loaded up front): array_record files of UTF-8 documents
(``ArrayRecordTexts``, grain's ``ArrayRecordDataSource``), or a prepared tfds dataset's text field
(``TfdsTexts``: ``tfds.builder(...).as_data_source``, itself array_record; the data stage's
``PretrainCorpus`` or a public one such as ``c4``).

Order: epoch ``e`` visits the documents in grain's global shuffle (``MapDataset.shuffle``, a
permutation of indices computed on the fly, seeded by ``(seed, e)``); host ``h`` of ``H`` takes
positions ``h, h + H, ...`` of it. Each host packs its documents (each followed by EOS) into rows of
``seq_len + 1`` tokens, consecutive rows sharing one token, with the fields of ``pipeline.pack``
(``inputs``, ``targets``, ``loss_mask``, ``positions``, ``segment_ids``); batch ``i`` is each host's
next ``batch_size / H`` rows, hosts in order.

Resume: ``host_batch(i, host_slice)`` is a pure function of ``(source, seed, i)``. The stream's
position before batch ``i`` (epoch, document, token offset: three integers) is appended to
``state_path`` (one JSON line per batch, flushed before the batch is returned, so before any
checkpoint of a step that used it), and a resumed process seeks there directly; a step no line
records is reached by replaying from the nearest one before it. Memory holds one batch and the few
documents a row spans.
"""

import json
from pathlib import Path

import grain
import numpy as np
import tensorflow_datasets as tfds


class ArrayRecordTexts:
  """Documents of array_record files (each record one UTF-8 text), by index."""

  def __init__(self, paths):
    self.paths = [str(p) for p in paths]
    if not self.paths:
      raise ValueError('no array_record files to stream')
    missing = [p for p in self.paths if not Path(p).is_file()]
    if missing:
      raise FileNotFoundError(f'array_record file {missing[0]} does not exist')
    self.source = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> str:
    return bytes(self.source[int(i)]).decode('utf-8')


class TfdsTexts:
  """The ``field`` of a prepared tfds dataset's ``split`` (array_record), by index."""

  def __init__(self, builder, split: str, field: str = 'text'):
    self.source = builder.as_data_source(split)
    self.field, self.name = field, f'{builder.name}:{split}'

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> str:
    value = self.source[int(i)][self.field]
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def named(spec: str, data_dir=None) -> tuple[TfdsTexts, TfdsTexts]:
  """``(train, validation)`` texts of ``data.pretrain_tfds='name[:split[:field]]'`` (``c4:train:text``);
  prepared once (the ``[tf]`` extra and internet, or a ``data_dir`` already holding it), read lazily.
  Validation is the dataset's ``validation`` split, else ``test``."""
  name, split, field = (spec.split(':') + ['train', 'text'])[:3]
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  held = next((s for s in ('validation', 'test') if s in builder.info.splits and s != split), None)
  if held is None:
    raise ValueError(f'data.pretrain_tfds={spec!r}: {name} has no validation or test split to evaluate on')
  return TfdsTexts(builder, split or 'train', field or 'text'), TfdsTexts(builder, held, field or 'text')


def row_fields(tokens_L1: np.ndarray, docs_L1: np.ndarray) -> dict[str, np.ndarray]:
  """The training fields of one packed row of ``seq_len + 1`` tokens and their document numbers."""
  segments = (docs_L1 - docs_L1[0] + 1).astype(np.int32)
  col = np.arange(len(tokens_L1))
  starts = np.concatenate([[True], segments[1:] != segments[:-1]])
  positions = col - np.maximum.accumulate(np.where(starts, col, 0))
  return {'inputs': tokens_L1[:-1], 'targets': tokens_L1[1:],
          'loss_mask': (segments[1:] == segments[:-1]).astype(np.float32),
          'positions': positions[:-1].astype(np.int32), 'segment_ids': segments[:-1]}


class PackedStream:
  """``host_batch(i, host_slice)`` of packed rows from ``texts`` (see the module doc).

  ``tokenize(text) -> ids`` (without EOS); ``shuffle=False`` reads documents in order (eval rows);
  ``epochs`` bounds the passes (None: endless); ``state_path`` (per host) records positions."""

  def __init__(self, texts, tokenize, seq_len: int, eos_id: int, batch_size: int, seed: int = 0,
               shuffle: bool = True, state_path=None, epochs: int | None = None):
    if len(texts) == 0:
      raise ValueError('the corpus to stream has no documents')
    self.texts, self.tokenize, self.seq_len, self.eos_id = texts, tokenize, seq_len, eos_id
    self.batch_size, self.seed, self.shuffle, self.epochs = batch_size, seed, shuffle, epochs
    self.state_path = Path(state_path) if state_path else None
    self._states = {0: (0, 0, 0)}  # batch -> (epoch, document position in the host's order, token offset)
    if self.state_path is not None and self.state_path.is_file():
      for line in self.state_path.read_text().splitlines():
        if line.strip():
          row = json.loads(line)
          self._states[int(row['i'])] = tuple(row['state'])
    self._orders, self._docs, self._last = {}, {}, None
    self._host = None

  # ------------------------------------------------------------------------ documents

  def _order(self, epoch: int):
    """The host's documents in epoch ``epoch``: a lazy grain view (shuffled, then sharded)."""
    if epoch not in self._orders:
      ds = grain.MapDataset.source(self.texts)
      if self.shuffle:
        ds = ds.shuffle(seed=int(np.random.default_rng([self.seed, epoch]).integers(1 << 31)))
      host, hosts = self._host
      self._orders = {epoch: ds[host::hosts]}
    return self._orders[epoch]

  def _doc(self, epoch: int, pos: int) -> np.ndarray:
    """Ids of the host's document ``pos`` of ``epoch``, EOS appended (the last few cached)."""
    key = (epoch, pos)
    if key not in self._docs:
      if len(self._docs) > 64:
        self._docs.clear()
      ids = list(self.tokenize(self._order(epoch)[pos]))
      self._docs[key] = np.asarray(ids + [self.eos_id], np.int32)
    return self._docs[key]

  def _next(self, epoch: int, pos: int) -> tuple[int, int]:
    pos += 1
    if pos >= len(self._order(epoch)):
      epoch, pos = epoch + 1, 0
      if self.epochs is not None and epoch >= self.epochs:
        raise ValueError(f'the corpus ran out after {self.epochs} epoch(s)')
    return epoch, pos

  # ----------------------------------------------------------------------------- rows

  def _row(self, state) -> tuple[dict, tuple]:
    """One row from ``state``, and the state ``seq_len`` tokens later (where the next row starts)."""
    epoch, pos, offset = state
    tokens, docs, n = [], [], 0
    cursor, doc_number, after = (epoch, pos, offset), 0, None
    while n < self.seq_len + 1:
      e, p, o = cursor
      ids = self._doc(e, p)[o:]
      take = ids[:self.seq_len + 1 - n]
      if after is None and n + len(ids) > self.seq_len:  # token seq_len of the row starts the next one
        after = (e, p, o + self.seq_len - n)
      tokens.append(take)
      docs.append(np.full(len(take), doc_number, np.int32))
      n += len(take)
      doc_number += 1
      cursor = (*self._next(e, p), 0)
    return row_fields(np.concatenate(tokens), np.concatenate(docs)), after

  def _batch(self, state, rows: int) -> tuple[dict, tuple]:
    out = []
    for _ in range(rows):
      row, state = self._row(state)
      out.append(row)
    return {k: np.stack([r[k] for r in out]) for k in out[0]}, state

  def host_batch(self, i: int, host_slice: slice = slice(None)) -> dict[str, np.ndarray]:
    """This host's rows of global batch ``i``: ``host_slice`` of ``batch_size`` (one host: all)."""
    start, stop, _ = host_slice.indices(self.batch_size)
    rows = stop - start
    if rows <= 0 or self.batch_size % rows or start % rows:
      raise ValueError(f'host_slice {host_slice} does not split batch_size={self.batch_size} into equal hosts')
    host = (start // rows, self.batch_size // rows)
    if self._host != host:
      self._host, self._orders, self._docs, self._last = host, {}, {}, None
    if self._last is not None and self._last[0] == i:
      return self._last[1]
    known = max(k for k in self._states if k <= i)
    state = self._states[known]
    for k in range(known, i + 1):  # replays only when resuming past what state_path records
      batch, state = self._batch(state, rows)
      self._record(k + 1, state)
    self._last = (i, batch)
    return batch

  def _record(self, i: int, state) -> None:
    if i in self._states:
      return
    self._states[i] = state
    if self.state_path is not None:
      self.state_path.parent.mkdir(parents=True, exist_ok=True)
      with open(self.state_path, 'a') as f:
        f.write(json.dumps({'i': i, 'state': [int(x) for x in state]}) + '\n')
