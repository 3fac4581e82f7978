"""Reading and writing safetensors checkpoints, one tensor at a time.

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the raw
little-endian tensor bytes, offsets counted from the end of the header. A sharded checkpoint is
several such files plus ``model.safetensors.index.json`` (``{"weight_map": {name: file}}``).

``Reader`` checks every header against its file first (a short, truncated or corrupt file, offsets
out of range or an unknown dtype is a one-line error naming the file and the tensor), then
memory-maps the files and reads a tensor only when asked (``get``), so importing a model never holds
more than the tensors being converted; ``write`` streams tensors into shards of a bounded size.
"""

import json
import math
import mmap
from pathlib import Path

import ml_dtypes
import numpy as np

DTYPES = {
    'F64': np.dtype(np.float64), 'F32': np.dtype(np.float32), 'F16': np.dtype(np.float16),
    'BF16': np.dtype(ml_dtypes.bfloat16), 'I64': np.dtype(np.int64), 'I32': np.dtype(np.int32),
    'I16': np.dtype(np.int16), 'I8': np.dtype(np.int8), 'U8': np.dtype(np.uint8), 'BOOL': np.dtype(np.bool_),
}
CODES = {v: k for k, v in DTYPES.items()}
INDEX = 'model.safetensors.index.json'
SINGLE = 'model.safetensors'


def _read_header(path: Path) -> dict:
  """``{name: (dtype code, shape, begin, end)}`` with absolute byte offsets, every entry checked
  against the file: a short or corrupt file is a one-line error naming it and the tensor."""
  size = path.stat().st_size
  with open(path, 'rb') as f:
    if size < 8:
      raise ValueError(f'{path} is not a safetensors file: {size} bytes, shorter than its 8-byte header length')
    n = int.from_bytes(f.read(8), 'little')
    if n > size - 8:
      raise ValueError(f'{path} is truncated or not a safetensors file: a header of {n} bytes but only '
                       f'{size - 8} bytes follow')
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f'{path} is not a safetensors file (bad header: {e})') from None
  if not isinstance(header, dict):
    raise ValueError(f'{path} is not a safetensors file (its header is a JSON {type(header).__name__}, not an object)')
  header.pop('__metadata__', None)
  start, entries = 8 + n, {}
  for name, info in header.items():
    entries[name] = _entry(path, name, info, start, size)
  return entries


def _entry(path: Path, name: str, info, start: int, size: int) -> tuple:
  def bad(what):
    raise ValueError(f'{path}: tensor {name} {what}')
  if not isinstance(info, dict) or not {'dtype', 'shape', 'data_offsets'} <= info.keys():
    bad('has no dtype, shape and data_offsets in the header')
  code, shape, offsets = info['dtype'], info['shape'], info['data_offsets']
  if code not in DTYPES:
    bad(f'has dtype {code!r}; readable: {", ".join(DTYPES)}')
  if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
    bad(f'has shape {shape!r}, not a list of sizes')
  if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
    bad(f'has data_offsets {offsets!r}, not [begin, end]')
  begin, end = offsets
  nbytes = math.prod(shape) * DTYPES[code].itemsize
  if not 0 <= begin <= end or end - begin != nbytes:
    bad(f'has data_offsets {offsets} but {code} {shape} takes {nbytes} bytes')
  if start + end > size:
    bad(f'needs bytes {begin}..{end} of the data but the file has {size - start} (truncated)')
  return code, tuple(shape), start + begin, start + end


class Reader:
  """The tensors of a Hugging Face checkpoint directory (sharded with an index, or one file); every
  file's header is read and checked when it is created."""

  def __init__(self, directory):
    self.directory = Path(directory)
    index = self.directory / INDEX
    if index.is_file():
      weight_map = _weight_map(index)
      files = sorted(set(weight_map.values()))
    elif (self.directory / SINGLE).is_file():
      weight_map, files = {}, [SINGLE]
    else:
      raise FileNotFoundError(f'{self.directory} has neither {INDEX} nor {SINGLE}')
    self._entries = {}  # name -> (file, dtype code, shape, begin, end)
    for file in files:
      path = self.directory / file
      if not path.is_file():
        raise FileNotFoundError(f'{path} is listed in {INDEX} but does not exist')
      for name, entry in _read_header(path).items():
        self._entries[name] = (file, *entry)
    for name, file in weight_map.items():
      if name not in self._entries or self._entries[name][0] != file:
        raise ValueError(f'{index}: tensor {name} is mapped to {file}, which does not hold it')
    self._maps = {}

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def shape(self, name: str) -> tuple[int, ...]:
    return self._entry(name)[2]

  def _entry(self, name):
    if name not in self._entries:
      raise KeyError(f'{self.directory}: the checkpoint has no tensor {name}')
    return self._entries[name]

  def get(self, name: str, dtype=np.float32) -> np.ndarray:
    """Tensor ``name`` as a numpy array of ``dtype`` (read from the memory map now)."""
    file, code, shape, begin, _ = self._entry(name)
    if file not in self._maps:
      with open(self.directory / file, 'rb') as f:
        self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    raw = np.frombuffer(self._maps[file], DTYPES[code], count=int(np.prod(shape)), offset=begin)
    return raw.reshape(shape).astype(dtype)


def _weight_map(index: Path) -> dict:
  try:
    weight_map = json.loads(index.read_text()).get('weight_map')
  except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
    raise ValueError(f'{index} is not a safetensors index (bad JSON: {e})') from None
  if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
    raise ValueError(f'{index} is not a safetensors index (no "weight_map" of tensor name -> file)')
  return weight_map


def _file_bytes(tensors: list[tuple[str, np.ndarray]]) -> tuple[bytes, int]:
  header, offset = {'__metadata__': {'format': 'pt'}}, 0
  for name, array in tensors:
    header[name] = {'dtype': CODES[array.dtype], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + array.nbytes]}
    offset += array.nbytes
  text = json.dumps(header, separators=(',', ':')).encode()
  text += b' ' * (-len(text) % 8)  # tensor data starts 8-byte aligned
  return len(text).to_bytes(8, 'little') + text, offset


def write(directory, tensors, dtype=np.float32, max_shard_bytes: int = 2 << 30) -> list[Path]:
  """Writes ``(name, array)`` pairs (any iterable, consumed once) as ``dtype`` into ``directory``.

  One ``model.safetensors`` if everything fits in ``max_shard_bytes``, else
  ``model-0000i-of-0000n.safetensors`` shards and the index. Returns the files written.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  dtype = np.dtype(dtype)
  shards, current, size = [], [], 0
  for name, array in tensors:
    array = np.ascontiguousarray(np.asarray(array).astype(dtype))
    if current and size + array.nbytes > max_shard_bytes:
      shards.append(_write_shard(directory, len(shards), current))
      current, size = [], 0
    current.append((name, array))
    size += array.nbytes
  shards.append(_write_shard(directory, len(shards), current))
  n = len(shards)
  for old in list(directory.glob('model*.safetensors')) + [directory / INDEX]:
    old.unlink(missing_ok=True)
  paths, weight_map, total = [], {}, 0
  for i, (tmp, names, nbytes) in enumerate(shards):
    final = directory / (SINGLE if n == 1 else f'model-{i + 1:05d}-of-{n:05d}.safetensors')
    tmp.replace(final)
    paths.append(final)
    weight_map.update({name: final.name for name in names})
    total += nbytes
  if n > 1:
    (directory / INDEX).write_text(json.dumps({'metadata': {'total_size': total}, 'weight_map': weight_map}, indent=2))
  return paths


def _write_shard(directory: Path, i: int, tensors) -> tuple[Path, list[str], int]:
  head, nbytes = _file_bytes(tensors)
  tmp = directory / f'.shard-{i}.tmp'
  with open(tmp, 'wb') as f:
    f.write(head)
    for _, array in tensors:
      f.write(array.tobytes())
  return tmp, [name for name, _ in tensors], nbytes
