"""Shared test set-up: an 8-device CPU platform and tiny model/batch fixtures.

The XLA flags must be in the environment before jax is first imported, which is why this file
touches ``os.environ`` before anything else (pytest imports conftest before the test modules).

One persistent compilation cache for the session, in a fresh temporary folder shared by both
pytest-xdist workers and the runs tests start as subprocesses, removed when the session ends: a program
one test compiled (the tiny model's train step in every stage test) is loaded, not compiled, by the
next. It is keyed by the program, the flags and the jax version, so what runs is what would have
compiled.

Compile time dominates these tests (tiny shapes, many programs), and XLA:CPU's LLVM optimisation
is most of it: ``--xla_backend_optimization_level=0`` cut the compile of a sharded train step
~3x (14 s -> 5 s on a loaded 2-core machine). It changes code generation only, not what is
computed (no fast-math at any level). Set the flag yourself in XLA_FLAGS to test another level.
"""

import functools
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

_DEVICE_FLAG = '--xla_force_host_platform_device_count'
_flags = re.sub(rf'{_DEVICE_FLAG}=\S*', '', os.environ.get('XLA_FLAGS', '')).split()
_flags.append(f'{_DEVICE_FLAG}=8')
if not any(f.startswith('--xla_backend_optimization_level') for f in _flags):
  _flags.append('--xla_backend_optimization_level=0')
os.environ['XLA_FLAGS'] = ' '.join(_flags)
os.environ['JAX_PLATFORMS'] = 'cpu'
# Bytecode is written and reused even where the environment turns it off: every process the suite starts
# (xdist workers, the launcher and kill -9 subprocesses) would otherwise compile jax, flax, orbax and the
# rest from source again (import lm.cli.launch: 8 s -> 4 s).
os.environ.pop('PYTHONDONTWRITEBYTECODE', None)
sys.dont_write_bytecode = False
_CACHE_OWNER = 'LM_TESTS_CACHE_OWNER'  # the pid that made the cache; xdist workers and subprocesses inherit both
if _CACHE_OWNER not in os.environ:  # once a session, also when a test module imports this file again
  os.environ[_CACHE_OWNER] = str(os.getpid())
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lm-test-jax-cache-')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lm.model.transformer import ModelConfig  # noqa: E402

TINY = dict(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=64)


def tiny_config(**overrides) -> ModelConfig:
  return ModelConfig(**{**TINY, **overrides})


@functools.cache
def jitted_logits(model):
  """``model``'s whole forward without a cache, jitted once per model: ``(params, ids_BxT) -> logits_BxTxV``."""
  return jax.jit(lambda params, ids_BxT: model.apply({'params': params}, ids_BxT)['logits'])


def random_packed_batch(batch_size: int, seq_len: int, vocab_size: int = 128, seed: int = 0,
                        max_segments: int = 3, pad_prob: float = 0.5) -> dict:
  """A packed next-token batch, all ``[B, T]`` numpy arrays.

  Each row holds 1..max_segments segments (ids 1, 2, ...) whose positions restart at 0, and
  possibly trailing padding (segment id 0). ``targets`` is the next token of the same segment;
  ``loss_mask`` is 1 exactly where such a target exists.
  """
  rng = np.random.default_rng(seed)
  B, T = batch_size, seq_len
  inputs = rng.integers(0, vocab_size, (B, T)).astype(np.int32)
  segment_ids = np.zeros((B, T), np.int32)
  positions = np.zeros((B, T), np.int32)
  for b in range(B):
    used = T - (int(rng.integers(1, T // 4 + 1)) if rng.random() < pad_prob else 0)
    n_seg = int(rng.integers(1, max_segments + 1))
    cuts = np.sort(rng.choice(np.arange(2, used - 1), size=n_seg - 1, replace=False)) if n_seg > 1 else []
    bounds = [0, *cuts, used]
    for s in range(n_seg):
      lo, hi = bounds[s], bounds[s + 1]
      segment_ids[b, lo:hi] = s + 1
      positions[b, lo:hi] = np.arange(hi - lo)
  targets = np.zeros_like(inputs)
  targets[:, :-1] = inputs[:, 1:]
  loss_mask = np.zeros((B, T), np.int32)
  loss_mask[:, :-1] = (segment_ids[:, :-1] == segment_ids[:, 1:]) & (segment_ids[:, :-1] > 0)
  targets = targets * loss_mask
  return {'inputs': inputs, 'targets': targets, 'loss_mask': loss_mask, 'positions': positions,
          'segment_ids': segment_ids}


@pytest.fixture(scope='session')
def config() -> ModelConfig:
  """The tiny model: vocab 128, d_model 64, 2 layers, 4 heads over 2 kv heads, d_ff 128."""
  return tiny_config()


@pytest.fixture(scope='session')
def make_config():
  return tiny_config


@pytest.fixture(scope='session')
def make_batch():
  return random_packed_batch


@pytest.fixture
def launcher_error(monkeypatch):
  """``args -> message``: what ``python -m lm.launch <args>`` exits with where the config is wrong (a file,
  a key, a value, a stage), run in this process from the repo root: ``sys.exit(message)`` is what the
  process prints to stderr as its last line (``test_bad_input`` runs one such process)."""
  from lm import hardware
  from lm.cli import launch
  monkeypatch.chdir(Path(__file__).resolve().parents[1])
  monkeypatch.setattr(hardware, 'keep_freed_memory', lambda: None)  # the process's malloc, not the test worker's

  def run(*args) -> str:
    monkeypatch.setattr(sys, 'argv', ['lm.launch', *args])
    with pytest.raises(SystemExit) as e:
      launch.main()
    return e.value.code

  return run


def pytest_configure(config):
  if hasattr(config.option, 'loadscopereorder'):  # pytest-xdist: keep the order below, not most tests first
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  """Files with whole-stage tests (marked slow) run first, so that the quick files even out the two
  xdist workers' ends; xdist's own order (files with the most tests first) left the longest file
  (the lifecycle's, ~9 min) to start last."""
  slow_files = {item.path for item in items if item.get_closest_marker('slow')}
  items.sort(key=lambda item: item.path not in slow_files)  # stable: the rest keeps its order


def pytest_unconfigure(config):
  if os.environ.get(_CACHE_OWNER) == str(os.getpid()):  # the process that made it, after every worker
    shutil.rmtree(os.environ.pop('JAX_COMPILATION_CACHE_DIR'), ignore_errors=True)
    del os.environ[_CACHE_OWNER]
