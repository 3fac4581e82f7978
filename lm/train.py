"""The supervised train loop, and the run guard every loop (supervised and RL) runs on.

``Guard`` is what a loop needs around its steps: the checkpoint manager of ``<workdir>/<name>/checkpoints``
(resume from the newest readable step; unreadable ones set aside with a warning; a failed save stops
the run naming the step), SIGTERM (one process: a handler; under ``jax.distributed``: jax's
preemption sync point, so that every host stops and saves at the same step), divergence (a
non-finite loss or grad norm stops the run naming the step and the last good checkpoint, which is
kept), the progress bar and the metrics writer.

``run`` trains a ``Task`` (how to init params, its objective, its batches) with a train config
section (``steps``, ``batch_size``, ``microbatches``, ``optim``, cadences) on that guard.
"""

import contextlib
import dataclasses
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from lm import checkpoint, metrics, optim, sharding
from lm.steps.common import init_state, make_train_step


class Preempted(Exception):
  """SIGTERM arrived: a checkpoint was saved; running the same command again resumes."""


class Diverged(Exception):
  """The loss or the grad norm became NaN or infinite; the message names the step and the checkpoint kept."""


class Guard:
  """Checkpoints, SIGTERM, divergence, progress bar and metrics of one loop named ``name``.

    with Guard(name, workdir, steps, checkpoint_every, keep) as guard:
      restored = guard.restore(abstract_state)        # (state, meta) of the newest readable checkpoint, or None
      guard.start(first_step)                         # writer, bar, SIGTERM handling
      for step in ...:
        guard.check(step, step_metrics)               # Diverged on a non-finite loss or grad_norm
        guard.log(step, row)
        if guard.due(step):                           # call it every step (the multi-host sync point)
          guard.save(step, state, meta)               # Preempted after a SIGTERM, once saved

  Leaving the ``with`` waits for the last save and closes everything.
  """

  def __init__(self, name: str, workdir, steps: int, checkpoint_every: int, keep: int):
    self.name, self.workdir, self.steps, self.checkpoint_every = name, workdir, steps, checkpoint_every
    self.mgr = checkpoint.manager(Path(workdir) / name / 'checkpoints', keep=keep)
    self.stop_requested = False
    self._saving = None  # the step whose asynchronous save may still be in flight
    self.writer = self.bar = None
    # One process: a SIGTERM handler sets the flag. Under jax.distributed, jax's preemption service
    # catches SIGTERM on any host and names one step at which every host stops and saves (a host
    # stopping alone would leave the others waiting in the checkpoint's collectives).
    self.synced = jax.distributed.is_initialized()
    self._previous_handler = None

  @property
  def directory(self) -> str:
    return str(self.mgr.directory)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *_):
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
    try:
      try:
        self._wait()
      except checkpoint.SaveFailed as e:
        if exc_type is None:
          raise
        self._warn(str(e).removeprefix(f'{self.name}: '))  # the error already on its way out is the one raised
      finally:
        with contextlib.suppress(Exception):  # orbax raises a failed save again here: raised or reported above
          self.mgr.close()
    finally:
      if self.bar is not None:
        self.bar.close()
      if self.writer is not None:
        self.writer.close()

  def restore(self, abstract_state):
    """``(state, meta)`` of the newest readable checkpoint onto ``abstract_state``'s shardings, or None.

    Saves that never finished (the run killed, or the disk full, while writing them) are removed, and
    a step that cannot be read (a file removed or cut short, its metadata missing) is moved to
    ``<workdir>/<name>/bad_checkpoints/``, each with a one-line warning; then the step before it is
    tried, so the run resumes from the newest good step and nothing before it is lost. A checkpoint
    of another model's shapes is an error, not a fallback: every step of it would fail alike."""
    for path in checkpoint.unfinished(self.directory):
      self._warn(f'removed {path}: a save that never finished (the run stopped while writing it)')
      if jax.process_index() == 0:
        shutil.rmtree(path, ignore_errors=True)
    for step in sorted(self.mgr.all_steps(), reverse=True):
      try:
        return checkpoint.restore(self.mgr, step, abstract_state)
      except checkpoint.Unreadable as e:
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: checkpoint.Unreadable) -> None:
    """Moves the unreadable ``step`` out of the checkpoints (kept for inspection), with a warning."""
    aside = Path(self.directory).parent / 'bad_checkpoints'
    dest = aside / str(step)
    n = 0
    while dest.exists():
      n += 1
      dest = aside / f'{step}.{n}'
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      checkpoint.step_dir(self.mgr, step).rename(dest)
    self._warn(f'{error}; moved to {dest}; resuming from the newest readable step before it')
    if self.synced:
      multihost_utils.sync_global_devices(f'{self.name}: set aside step {step}')
    self.mgr.reload()

  def _warn(self, message: str) -> None:
    if jax.process_index() == 0:
      print(f'{self.name}: warning: {message}', file=sys.stderr, flush=True)

  def _wait(self) -> None:
    """Waits for the save in flight; its failure (e.g. a full disk) is ``SaveFailed`` naming the step
    (once: the run stops there)."""
    if self._saving is None:
      return
    try:
      self.mgr.wait_until_finished()
    except Exception as e:  # noqa: BLE001  (orbax re-raises what its writer threads hit)
      step, self._saving = self._saving, None
      raise self._save_failed(step, e) from e
    self._saving = None

  def _save_failed(self, step, error) -> checkpoint.SaveFailed:
    kept = max((s for s in self.mgr.all_steps() if s != step), default=None)
    where = f'step {kept}' if kept is not None else 'none'
    return checkpoint.SaveFailed(f'{self.name}: saving checkpoint step {step} in {self.directory} failed '
                                 f'({checkpoint.reason(error)}); the last good checkpoint: {where}. Run the same '
                                 'command again to resume from it once the cause is fixed')

  def start(self, first_step: int) -> None:
    """Opens the metrics writer (rows past ``first_step`` dropped) and the bar; catches SIGTERM."""
    self.writer = metrics.Writer(self.workdir, self.name, resume_step=first_step)
    self.bar = tqdm(total=self.steps, initial=first_step, desc=self.name, disable=jax.process_index() != 0,
                    dynamic_ncols=True)
    if not self.synced:
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, *_):
    self.stop_requested = True

  def check(self, step: int, step_metrics: dict) -> None:
    """Stops the run when ``loss`` or ``grad_norm`` of ``step`` is not finite."""
    bad = [k for k in ('loss', 'grad_norm') if not np.isfinite(step_metrics[k])]
    if bad:
      with contextlib.suppress(checkpoint.SaveFailed):  # a step whose save failed is not a good checkpoint
        self._wait()
      kept = self.mgr.latest_step()
      where = f'step {kept} in {self.mgr.directory}' if kept is not None else f'none in {self.mgr.directory}'
      raise Diverged(f'{self.name}: {bad[0]} is {float(step_metrics[bad[0]])} at step {step}; stopped. '
                     f'Last good checkpoint: {where}')

  def log(self, step: int, row: dict) -> None:
    self.writer.write(step, row)

  def progress(self, step: int, **postfix) -> None:
    self.bar.update(step - self.bar.n)
    self.bar.set_postfix(**postfix)

  def due(self, step: int) -> bool:
    """Whether to save after ``step``: every ``checkpoint_every`` steps, at the last, and after SIGTERM."""
    if self.synced and multihost_utils.reached_preemption_sync_point(step):
      self.stop_requested = True
    return step % self.checkpoint_every == 0 or step == self.steps or self.stop_requested

  def save(self, step: int, state, meta: dict) -> None:
    """Saves ``state`` (asynchronously); after a SIGTERM, stops the run with ``Preempted``. A save that
    fails (this one, or the one before it, in the background) stops the run with ``SaveFailed``."""
    self._wait()
    try:
      checkpoint.save(self.mgr, step, state, meta)
    except Exception as e:  # noqa: BLE001  (a full disk is an OSError here, a ValueError from tensorstore)
      raise self._save_failed(step, e) from e
    self._saving = step
    if self.stop_requested:
      raise Preempted(f'{self.name}: SIGTERM at step {step}; checkpoint saved in {self.mgr.directory}; '
                      'run the same command again to resume')


# ------------------------------------------------------------------------------ the supervised loop

@dataclasses.dataclass
class Task:
  name: str                          # stage name: checkpoints and metrics go under it
  init_params: Callable              # rng -> boxed (logically partitioned) params
  loss_sums: Callable                # (params, batch, rng) -> (objective_sum, sums incl. 'weight')
  train_batches: object              # .host_batch(i, host_slice) -> dict of [B_host, ...] arrays
  eval_step: Callable | None = None  # (params, batch) -> {'loss': sum, 'weight': sum}
  eval_batches: list | None = None   # global host batches (every process holds all rows)
  weight_name: str = 'weight'        # what the objective's normaliser counts, for the metrics
  load_params: Callable | None = None  # shardings -> params to start from (e.g. another stage's checkpoint)
  frozen: object = None              # params on the mesh that do not train (a LoRA base); when set,
                                     # loss_sums and eval_step take them as a last argument
  probe: Callable | None = None      # (params, frozen) -> metrics at each eval (e.g. skills by sampling)


def _with_frozen(fn, frozen):
  """``fn`` taking the frozen params as its last argument, or ``fn`` itself when there are none."""
  if frozen is None:
    return lambda *args: fn(*args[:-1])
  return fn


def state_layout(init_params: Callable, tx, mesh, rules, seed: int = 0):
  """The train state of the params ``init_params(rng)`` returns boxed, without allocating it:
  ``(init, abstract_state, state_shardings)``, where ``init(rng)`` builds the boxed state and
  ``abstract_state`` holds ShapeDtypeStructs carrying the shardings the rules give."""
  init = lambda rng: init_state(init_params(rng), tx, rng)
  abstract_boxed = jax.eval_shape(init, jax.random.key(seed))
  state_shardings = nn.unbox(sharding.logical_shardings(abstract_boxed, mesh, rules))
  return init, checkpoint.abstract_like(nn.unbox(abstract_boxed), state_shardings), state_shardings


def abstract_state(task: Task, tx, mesh, rules, seed: int = 0):
  """``state_layout`` of ``task``'s params."""
  return state_layout(task.init_params, tx, mesh, rules, seed)


def jit_train_step(task: Task, cfg, tx, schedule, mesh, state_shardings):
  """The step the loop compiles per batch shape: ``(state, batch, frozen) -> (state, metrics)``, jitted with
  the state's and the batch's shardings, the state donated. (``benchmarks/aot_plan.py`` lowers
  the same function on abstract arguments.)"""
  frozen_shardings = jax.tree.map(lambda x: x.sharding, task.frozen)
  loss_sums = _with_frozen(task.loss_sums, task.frozen)

  def step(state, batch, frozen):
    objective = lambda params, b, rng: loss_sums(params, b, rng, frozen)
    return make_train_step(objective, tx, schedule, cfg.microbatches, task.weight_name)(state, batch)

  return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh), frozen_shardings),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


def run(task: Task, cfg, workdir, mesh, rules, seed: int = 0) -> dict:
  """Trains ``task`` for ``cfg.steps`` steps and returns its outputs (checkpoint dir, final metrics)."""
  tx, schedule = optim.make_optimizer(cfg.optim, cfg.steps)
  rng = jax.random.key(seed)
  init, abstract, state_shardings = abstract_state(task, tx, mesh, rules, seed)
  guard = Guard(task.name, workdir, cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints)
  with guard, sharding.use_mesh(mesh, rules):
    restored = guard.restore(abstract)
    if restored is None:
      start = 0
      if task.load_params is None:
        state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=state_shardings)(rng)
      else:
        params = task.load_params(state_shardings['params'])
        state = jax.jit(lambda p, r: init_state(p, tx, r), out_shardings=state_shardings)(params, rng)
    else:
      state, meta = restored
      start = int(meta['data_position'])

    # The frozen params are a jit argument with their own shardings, not a constant in the program.
    frozen = task.frozen
    frozen_shardings = jax.tree.map(lambda x: x.sharding, frozen)
    step_fn = jit_train_step(task, cfg, tx, schedule, mesh, state_shardings)
    batch_shard = sharding.batch_sharding(mesh)
    eval_fn = None
    if task.eval_step is not None and task.eval_batches:
      eval_fn = jax.jit(_with_frozen(task.eval_step, frozen),
                        in_shardings=(state_shardings['params'], batch_shard, frozen_shardings))

    guard.start(start)
    loop = _Loop(task, cfg, guard, mesh, eval_fn, start, frozen, step_fn)
    loop.train(state, sharding.host_batch_slice(cfg.batch_size))
  return {'checkpoint_dir': guard.directory, 'step': cfg.steps, **loop.last}


def _shapes(batch: dict) -> tuple:
  return tuple((k, tuple(v.shape)) for k, v in sorted(batch.items()))


def token_counts(host_batch: dict) -> tuple[int, int]:
  """``(real, slots)`` tokens of a batch over every process: real ones are in a segment (``segment_ids``
  > 0), slots count the padding too."""
  segments = host_batch['segment_ids']
  return (int(np.count_nonzero(segments)) * jax.process_count(), int(segments.size) * jax.process_count())


class _Loop:
  """The supervised steps on a started guard: pending metrics (fetched every ``log_every`` steps), eval.
  The step is compiled once per batch shape (one for most tasks; packed rankings can have two)."""

  def __init__(self, task, cfg, guard: Guard, mesh, eval_fn, start, frozen, step_fn):
    self.task, self.cfg, self.guard, self.mesh, self.eval_fn = task, cfg, guard, mesh, eval_fn
    self.frozen, self.step_fn, self.programs = frozen, step_fn, {}
    self.start, self.compile_s, self.compiled_since_log = start, 0.0, False
    self.pending = []
    self.tokens_seen = 0  # real (non-padding) tokens trained on, up to ``start`` from what was logged
    self.last = {}  # final metrics; a resumed run starts from what it logged before
    for row in metrics.read(guard.workdir, task.name):
      if row['step'] <= start:
        self.last.update({k: v for k, v in row.items()
                          if k in ('loss', 'tokens_per_s', 'tokens_seen') or k.startswith('eval_')})
        self.tokens_seen = row.get('tokens_seen', self.tokens_seen)

  def train(self, state, host_slice):
    self.t_last = time.time()
    for i in range(self.start, self.cfg.steps):
      host_batch = self.task.train_batches.host_batch(i, host_slice)
      batch = sharding.place_batch(host_batch, self.mesh)
      state, step_metrics = self._program(state, batch)(state, batch, self.frozen)
      step = i + 1
      self.pending.append((step, step_metrics, *token_counts(host_batch)))
      last = step == self.cfg.steps
      if len(self.pending) >= self.cfg.log_every or last:
        self._flush()
      if self.eval_fn is not None and (step % self.cfg.eval_every == 0 or last):
        self._evaluate(step, state['params'])
      if self.guard.due(step):
        self._flush()  # a checkpoint follows only steps checked finite
        self.guard.save(step, state, {'step': step, 'data_position': step, 'stage': self.task.name})
    return state

  def _program(self, state, batch):
    """The step compiled for ``batch``'s shapes; compiling a new one counts in ``compile_s``, not in the
    interval's throughput (the steps dispatched before it finish first: they do not run during it)."""
    key = _shapes(batch)
    if key not in self.programs:
      jax.block_until_ready(state)
      t0 = time.time()
      self.programs[key] = self.step_fn.lower(state, batch, self.frozen).compile()
      seconds = time.time() - t0
      self.compile_s, self.t_last, self.compiled_since_log = self.compile_s + seconds, self.t_last + seconds, True
    return self.programs[key]

  def _flush(self):
    """Fetches pending step metrics, stops on a non-finite loss or grad norm, writes one averaged line."""
    if not self.pending:
      return
    fetched = [(s, jax.device_get(m), real, slots) for s, m, real, slots in self.pending]
    self.pending = []
    for s, m, _, _ in fetched:
      self.guard.check(s, m)
    now = time.time()
    row = {k: float(np.mean([m[k] for _, m, _, _ in fetched])) for k in fetched[-1][1]}
    real, slots = sum(f[2] for f in fetched), sum(f[3] for f in fetched)
    self.tokens_seen += real
    row['tokens_per_s'] = real / max(now - self.t_last, 1e-9)  # real tokens: padding is not throughput
    row['non_padding'] = real / max(slots, 1)
    row['tokens_seen'] = self.tokens_seen
    if self.compiled_since_log:
      row['compile_s'] = self.compile_s  # all of the stage's step compiles so far
      self.compiled_since_log = False
    self.t_last = now
    step = fetched[-1][0]
    self.guard.log(step, row)
    self.last.update(loss=row['loss'], tokens_per_s=row['tokens_per_s'], tokens_seen=self.tokens_seen)
    self.guard.progress(step, loss=f'{row["loss"]:.3f}', tok_s=f'{row["tokens_per_s"]:.0f}')

  def _evaluate(self, step, params):
    """Pools the eval step's sums over the eval batches: ``eval_<k>`` = sum of k / sum of
    ``<k>_weight`` where the step returns one (e.g. pairs for an accuracy), else of ``weight``."""
    totals = {}
    for global_batch in self.task.eval_batches:
      host_batch = {k: v[sharding.host_batch_slice(len(v))] for k, v in global_batch.items()}
      sums = jax.device_get(self.eval_fn(params, sharding.place_batch(host_batch, self.mesh), self.frozen))
      totals = {k: totals.get(k, 0.0) + float(v) for k, v in sums.items()}
    row = {f'eval_{k}': v / max(totals.get(f'{k}_weight', totals['weight']), 1.0)
           for k, v in totals.items() if k != 'weight' and not k.endswith('_weight')}
    if self.task.probe is not None:
      row.update(self.task.probe(params, self.frozen))
    self.guard.log(step, row)
    self.last.update(row)
    self.t_last = time.time()  # eval time is not training throughput
