"""The train loop every stage uses: state on the mesh, one compiled step, metrics, eval, checkpoints.

A stage hands ``run`` a ``Task`` (how to init params, its objective, its batches) and a train config
section (``steps``, ``batch_size``, ``microbatches``, ``optim``, cadences). The loop resumes from
the latest checkpoint in ``<workdir>/<task.name>/checkpoints``, saves on SIGTERM (preemption) and
stops on a non-finite loss, keeping the last good checkpoint.
"""

import dataclasses
import signal
import time
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from lm import checkpoint, metrics, optim, sharding
from lm.steps.common import make_train_step


class Preempted(Exception):
  """SIGTERM arrived: a checkpoint was saved; running the same command again resumes."""


class Diverged(Exception):
  """The loss became NaN or infinite; the message names the step and the checkpoint kept."""


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


def _new_state(params, tx, rng):
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
          'rng': jax.random.key_data(jax.random.fold_in(rng, 1))}


def _with_frozen(fn, frozen):
  """``fn`` taking the frozen params as its last argument, or ``fn`` itself when there are none."""
  if frozen is None:
    return lambda *args: fn(*args[:-1])
  return fn


def abstract_state(task: Task, tx, mesh, rules, seed: int = 0):
  """The train state without allocating it: ``(init, abstract_state, state_shardings)``, where
  ``abstract_state`` holds ShapeDtypeStructs carrying the shardings the rules give."""
  init = lambda rng: _new_state(task.init_params(rng), tx, rng)
  abstract_boxed = jax.eval_shape(init, jax.random.key(seed))
  state_shardings = nn.unbox(sharding.logical_shardings(abstract_boxed, mesh, rules))
  return init, checkpoint.abstract_like(nn.unbox(abstract_boxed), state_shardings), state_shardings


def jit_train_step(task: Task, cfg, tx, schedule, mesh, state_shardings):
  """The step the loop compiles once: ``(state, batch, frozen) -> (state, metrics)``, jitted with
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
  stage_dir = Path(workdir) / task.name
  tx, schedule = optim.make_optimizer(cfg.optim, cfg.steps)
  rng = jax.random.key(seed)
  init, abstract, state_shardings = abstract_state(task, tx, mesh, rules, seed)

  mgr = checkpoint.manager(stage_dir / 'checkpoints', keep=cfg.keep_checkpoints)
  start = mgr.latest_step()
  with sharding.use_mesh(mesh, rules):
    if start is None:
      start = 0
      if task.load_params is None:
        state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=state_shardings)(rng)
      else:
        params = task.load_params(state_shardings['params'])
        state = jax.jit(lambda p, r: _new_state(p, tx, r), out_shardings=state_shardings)(params, rng)
    else:
      state, meta = checkpoint.restore(mgr, start, abstract)
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

    host_slice = sharding.host_batch_slice(cfg.batch_size)
    example = task.train_batches.host_batch(start, host_slice)
    token_rows = example['inputs'] if 'inputs' in example else example['tokens']  # [B, T] or [B, K, T]
    tokens_per_step = cfg.batch_size * int(np.prod(token_rows.shape[1:]))
    t0 = time.time()
    compiled = step_fn.lower(state, sharding.place_batch(example, mesh), frozen).compile()
    compile_s = time.time() - t0

    loop = _Loop(task, cfg, workdir, mesh, mgr, eval_fn, start, tokens_per_step, compile_s, frozen)
    try:
      state = loop.train(compiled, state, host_slice)
    finally:
      mgr.wait_until_finished()
      mgr.close()
      loop.close()
  return {'checkpoint_dir': str(mgr.directory), 'step': cfg.steps, **loop.last}


class _Loop:
  """The mutable bits of a run: pending metrics, the progress bar, the SIGTERM flag."""

  def __init__(self, task, cfg, workdir, mesh, mgr, eval_fn, start, tokens_per_step, compile_s, frozen):
    self.task, self.cfg, self.mesh, self.mgr, self.eval_fn = task, cfg, mesh, mgr, eval_fn
    self.frozen = frozen
    self.start, self.tokens_per_step, self.compile_s = start, tokens_per_step, compile_s
    self.writer = metrics.Writer(workdir, task.name, resume_step=start)
    self.pending = []
    self.last = {}  # final metrics; a resumed run starts from what it logged before
    for row in metrics.read(workdir, task.name):
      self.last.update({k: v for k, v in row.items() if k in ('loss', 'tokens_per_s') or k.startswith('eval_')})
    self.stop_requested = False
    self.bar = tqdm(total=cfg.steps, initial=start, desc=task.name, disable=jax.process_index() != 0,
                    dynamic_ncols=True)

  def train(self, compiled, state, host_slice):
    # One process: a SIGTERM handler sets the flag. Under jax.distributed, jax's preemption service
    # catches SIGTERM on any host and names one step at which every host stops and saves (a host
    # stopping alone would leave the others waiting in the checkpoint's collectives).
    synced = jax.distributed.is_initialized()
    previous = None if synced else signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      self.t_last = time.time()
      for i in range(self.start, self.cfg.steps):
        batch = sharding.place_batch(self.task.train_batches.host_batch(i, host_slice), self.mesh)
        state, step_metrics = compiled(state, batch, self.frozen)
        step = i + 1
        if synced and multihost_utils.reached_preemption_sync_point(step):
          self.stop_requested = True
        self.pending.append((step, step_metrics))
        last = step == self.cfg.steps
        if len(self.pending) >= self.cfg.log_every or last:
          self._flush()
        if self.eval_fn is not None and (step % self.cfg.eval_every == 0 or last):
          self._evaluate(step, state['params'])
        if step % self.cfg.checkpoint_every == 0 or last or self.stop_requested:
          self._flush()
          checkpoint.save(self.mgr, step, state, {'step': step, 'data_position': step, 'stage': self.task.name})
        if self.stop_requested:
          raise Preempted(f'{self.task.name}: SIGTERM at step {step}; checkpoint saved in {self.mgr.directory}; '
                          'run the same command again to resume')
    finally:
      if not synced:
        signal.signal(signal.SIGTERM, previous)
    return state

  def _on_sigterm(self, *_):
    self.stop_requested = True

  def _flush(self):
    """Fetches pending step metrics, stops on a non-finite loss, writes one averaged line."""
    if not self.pending:
      return
    fetched = [(s, jax.device_get(m)) for s, m in self.pending]
    n, self.pending = len(fetched), []
    for s, m in fetched:
      bad = [k for k in ('loss', 'grad_norm') if not np.isfinite(m[k])]
      if bad:
        self.mgr.wait_until_finished()
        raise Diverged(f'{self.task.name}: {bad[0]} is {float(m[bad[0]])} at step {s}; stopped. '
                       f'Last good checkpoint: step {self.mgr.latest_step()} in {self.mgr.directory}')
    now = time.time()
    row = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}
    row['tokens_per_s'] = n * self.tokens_per_step / max(now - self.t_last, 1e-9)
    row['tokens_seen'] = fetched[-1][0] * self.tokens_per_step
    if fetched[0][0] == self.start + 1:
      row['compile_s'] = self.compile_s
    self.t_last = now
    step = fetched[-1][0]
    self.writer.write(step, row)
    self.last.update(loss=row['loss'], tokens_per_s=row['tokens_per_s'])
    self.bar.update(step - self.bar.n)
    self.bar.set_postfix(loss=f'{row["loss"]:.3f}', tok_s=f'{row["tokens_per_s"]:.0f}')

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
    self.writer.write(step, row)
    self.last.update(row)
    self.t_last = time.time()  # eval time is not training throughput

  def close(self):
    self.bar.close()
    self.writer.close()
