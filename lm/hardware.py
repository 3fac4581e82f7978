"""What this host does fast: whether it multiplies bfloat16 natively (the compute dtype
``model.dtype='auto'`` means here), and keeping freed memory for XLA:CPU's next step.

Accelerators (TPU, GPU) always do. On CPU it takes AMX (``amx_bf16``) or AVX512-BF16
(``avx512_bf16``), read from /proc/cpuinfo's flags: elsewhere (AVX2 only, a CPU without
/proc/cpuinfo) bf16 matmuls are emulated and slower than float32 (1.5-1.7x on a 2-core AVX2 EPYC).
"""

import ctypes
import ctypes.util
import functools

import jax

NATIVE_BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')
DTYPES = ('float32', 'bfloat16', 'float16')


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = '/proc/cpuinfo') -> frozenset:
  """The feature flags of the first processor in ``path`` (empty when the file or the line is missing)."""
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'flags':
          return frozenset(value.split())
  except OSError:
    pass
  return frozenset()


def native_bf16_matmul(backend: str | None = None, flags=None) -> bool:
  """True on an accelerator, and on a CPU with one of ``NATIVE_BF16_CPU_FLAGS``."""
  backend = backend or jax.default_backend()
  if backend != 'cpu':
    return True
  flags = cpu_flags() if flags is None else flags
  return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, backend: str | None = None, flags=None) -> str:
  """``dtype``, or for 'auto' bfloat16 where matmuls are natively bf16 and float32 elsewhere."""
  if dtype == 'auto':
    return 'bfloat16' if native_bf16_matmul(backend, flags) else 'float32'
  if dtype not in DTYPES:
    raise ValueError(f'model.dtype={dtype!r}; valid: auto, {", ".join(DTYPES)}')
  return dtype


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
  """Makes glibc's malloc keep freed memory for reuse: one arena, no chunks of their own mapping, no
  trimming below 2 GiB. XLA:CPU allocates an executable's temporaries (760 MB for the tiny model's
  train step) on every run; by default glibc maps such a block afresh each time, and zero-filling
  its pages cost ~25% of the step's CPU time (sys time). Process-wide, so it helps every framework
  in the process; call it at start-up, before JAX starts its threads (their arenas are chosen then):
  ``lm.launch`` does (benchmarks/RESULTS.md: the lifecycle 1,080 -> 885 s on a 2-core EPYC).
  Returns False (and changes nothing) where the C library has no ``mallopt``."""
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  if not hasattr(libc, 'mallopt'):
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1)))
