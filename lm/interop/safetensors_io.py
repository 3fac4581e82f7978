"""Reading and writing safetensors checkpoints, one tensor at a time.

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the raw
little-endian tensor bytes, offsets counted from the end of the header. A sharded checkpoint is
several such files plus ``model.safetensors.index.json`` (``{"weight_map": {name: file}}``).

``Reader`` memory-maps the files and reads a tensor only when asked (``get``), so importing a model
never holds more than the tensors being converted; ``write`` streams tensors into shards of a
bounded size.
"""

import json
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


def _read_header(path: Path) -> tuple[dict, int]:
  with open(path, 'rb') as f:
    size = int.from_bytes(f.read(8), 'little')
    try:
      header = json.loads(f.read(size))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f'{path} is not a safetensors file (bad header: {e})') from None
  header.pop('__metadata__', None)
  return header, 8 + size


class Reader:
  """The tensors of a Hugging Face checkpoint directory (sharded with an index, or one file)."""

  def __init__(self, directory):
    self.directory = Path(directory)
    index = self.directory / INDEX
    if index.is_file():
      weight_map = json.loads(index.read_text())['weight_map']
      files = sorted(set(weight_map.values()))
    elif (self.directory / SINGLE).is_file():
      files = [SINGLE]
    else:
      raise FileNotFoundError(f'{self.directory} has neither {INDEX} nor {SINGLE}')
    self._entries = {}  # name -> (file, dtype code, shape, begin, end)
    for file in files:
      path = self.directory / file
      if not path.is_file():
        raise FileNotFoundError(f'{path} is listed in {INDEX} but does not exist')
      header, start = _read_header(path)
      for name, info in header.items():
        begin, end = info['data_offsets']
        self._entries[name] = (file, info['dtype'], tuple(info['shape']), start + begin, start + end)
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
    file, code, shape, begin, end = self._entry(name)
    if code not in DTYPES:
      raise ValueError(f'{self.directory / file}: tensor {name} has dtype {code}; readable: {", ".join(DTYPES)}')
    if file not in self._maps:
      with open(self.directory / file, 'rb') as f:
        self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    raw = np.frombuffer(self._maps[file], DTYPES[code], count=int(np.prod(shape)), offset=begin)
    if raw.nbytes != end - begin:
      raise ValueError(f'{self.directory / file}: tensor {name} has {end - begin} bytes, not {raw.nbytes}')
    return raw.reshape(shape).astype(dtype)


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
