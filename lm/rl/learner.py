"""One learner loop for RL from human feedback, on ``lm.train``'s run guard.

Every iteration: prompts -> rollouts (the policy samples) -> scores (the reward model; the lab's
gold scorers beside it) -> advantages (an estimator registered by name, ``lm.rl.advantages``) ->
loss (registered by name, ``lm.rl.losses``) -> update. An algorithm is an ``Algorithm``: the names
of its estimator and loss, and hooks for what differs (its config checks, its optimiser steps, its
update over one iteration, the KL coefficient after one). Online arms (``lm.rl.online``: ppo, grpo,
rloo, dapo, dr_grpo, gspo, reinforce_pp) train on the iteration's rollouts; offline arms
(``lm.rl.offline``: dpo, ipo) train on preference rankings, then rollouts measure the updated policy.
``lm.rl.algorithms.ALGORITHMS`` names them.

Adding an algorithm: one file ``lm/rl/<name>.py`` holding an ``Algorithm`` (a subclass with its own
hooks, or an ``online.Online`` / ``offline.Offline`` with other names), and one line for it in
``lm.rl.algorithms.ALGORITHMS`` (plus its import). A new advantage estimator or loss is a function
registered with ``lm.rl.advantages.register`` / ``lm.rl.losses.register`` in that file.

The guard (``lm.train.Guard``): an interrupted run resumes from its latest checkpoint, SIGTERM saves
and stops (the multi-host sync point under jax.distributed), a non-finite loss or grad norm stops
the run with the last good checkpoint kept. The state in memory is ``{'params': {'policy',
'value'?}, 'opt_state', 'step', 'rng'}`` (``lm.steps.common.init_state``); on disk the policy is
``params`` (later stages load it like SFT's), the value model ``value``, and the checkpoint's meta
holds the KL coefficient. One ``metrics.jsonl`` row per iteration (stage ``rlhf``, step = iteration;
names in ``lm.rl.names``).
"""

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from lm import checkpoint, metrics, optim, outputs, sharding, train
from lm.data import pipeline
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer
from lm.rl import advantages, losses, names, rollouts
from lm.steps.common import init_state


@dataclasses.dataclass
class Setup:
  """What a run trains with, built by the rlhf stage from its typed inputs."""
  c: Any                   # the rlhf config section
  seed: int
  workdir: str
  tok: Any
  model: Transformer       # the policy's (and the reference's) architecture
  ref: Any                 # the reference params on the mesh; the policy starts from them
  reward_fn: Callable      # (rm_params, tokens, segment_ids, positions, last_index) -> normalised rewards [B]
  rm_params: Any
  reward: outputs.Reward   # the reward stage's outputs: a value model starts from its checkpoint
  train_examples: list     # lab Examples: the training prompts
  eval_examples: list      # the fixed eval prompts, measured every rlhf.eval_every iterations
  mesh: Any
  rules: Any
  rankings_dir: str = ''   # preference rankings (tfds) for the offline arms
  tools: dict | None = None  # lm.tools by name: rollouts run the calls (lm.inference.agent), results get no loss
  round_: int = 0          # the round of iterated RLHF the iterations belong to (logged as ``round``)
  prompt_width: int = 0    # prompts are left-padded to it (lm.rl.rollouts.prompt_width); 0: rlhf.max_prompt_len


class Algorithm:
  """An RL algorithm: the names of its estimator and loss, and its hooks (defaults for online arms)."""
  online: bool = True             # trains on the iteration's rollouts (else: updates, then measures)
  estimator: str | None = None    # advantage estimator (lm.rl.advantages); its ``critic`` adds a value model
  loss: str = 'ppo'               # loss (lm.rl.losses)

  def check(self, c) -> None:
    """One-line ``ConfigError`` for a bad setting of the rlhf section ``c`` (before anything is loaded)."""

  def optimizer_steps(self, c) -> int:
    """Optimiser steps over the whole run (the learning-rate schedule's length)."""
    raise NotImplementedError

  def make_update(self, learner: 'Learner') -> Callable:
    """``update(state, iteration, rollout_batch, rng) -> (state, metrics)``, built once under the mesh;
    ``rollout_batch`` is ``None`` for offline arms. ``metrics`` hold ``loss`` and ``grad_norm``."""
    raise NotImplementedError

  def next_kl_coef(self, c, kl_coef: float, row: dict, n_rows: int) -> float:
    """The KL coefficient of the next iteration, given this one's metrics row over ``n_rows`` responses."""
    return kl_coef


def _to_disk(state):
  """The state as checkpointed: the policy as ``params``, the value model (if any) as ``value``."""
  disk = {k: v for k, v in state.items() if k != 'params'}
  disk['params'] = state['params']['policy']
  if 'value' in state['params']:
    disk['value'] = state['params']['value']
  return disk


def _from_disk(disk):
  params = {'policy': disk['params'], **({'value': disk['value']} if 'value' in disk else {})}
  return {'step': disk['step'], 'params': params, 'opt_state': disk['opt_state'], 'rng': disk['rng']}


class Learner:
  """A run of ``algorithm`` on ``setup``: ``Learner(setup, algorithm).run() -> final metrics``."""

  def __init__(self, setup: Setup, algorithm: Algorithm):
    self.s, self.algo, self.c = setup, algorithm, setup.c
    self.mesh, self.rules = setup.mesh, setup.rules
    self.estimator = advantages.get(algorithm.estimator) if algorithm.estimator else None
    self.value_model = None
    if self.estimator is not None and self.estimator.critic:
      self.value_model = Transformer(ModelConfig.from_config(setup.reward.model))
    self.rollout = rollouts.Rollouts(self.c, setup.tok, setup.model, setup.reward_fn, setup.ref, setup.rm_params,
                                     self.mesh, self.rules, self.c.group_size, self.value_model, self.estimator,
                                     setup.tools, width=setup.prompt_width)
    self.tx, self.schedule = optim.make_optimizer(self.c.optim, algorithm.optimizer_steps(self.c))
    self.loss_sums = losses.get(algorithm.loss)(setup.model, self.value_model, self.c)
    self.state_shardings = None

  def _boxed_params(self, rng):
    params = {'policy': params_lib.boxed_init(self.s.model)(rng)}
    if self.value_model is not None:
      params['value'] = params_lib.boxed_init(self.value_model)(rng)
    return params

  def _initial_params(self):
    """The policy starts as the reference; the value model (if any) as the reward model."""
    params = {'policy': self.s.ref}
    if self.value_model is not None:
      target = params_lib.abstract_params(self.value_model, self.mesh, self.rules)
      params['value'] = checkpoint.restore_params(self.s.reward.checkpoint_dir, target)
    return params

  def run(self, until: int | None = None) -> dict:
    """Runs the iterations left up to ``until`` (default: all of ``rlhf.iterations``; a checkpoint is saved
    there); returns ``checkpoint_dir``, ``iterations`` and the last row's ``names.OUTPUTS``."""
    s, c = self.s, self.c
    _, abstract, self.state_shardings = train.state_layout(self._boxed_params, self.tx, self.mesh, self.rules)
    with train.Guard('rlhf', s.workdir, c.iterations, c.checkpoint_every, c.keep_checkpoints) as guard:
      restored = guard.restore(_to_disk(abstract))
      initial = self._initial_params() if restored is None else None  # (abstract params: outside the mesh)
      with sharding.use_mesh(self.mesh, self.rules):
        if restored is None:
          start, kl_coef = 0, float(c.kl_coef)
          state = jax.jit(lambda p: init_state(p, self.tx, jax.random.key(s.seed)),
                          out_shardings=self.state_shardings)(initial)
        else:
          disk, meta = restored
          start, kl_coef, state = int(meta['step']), float(meta['kl_coef']), _from_disk(disk)
        last = self._loop(guard, self.algo.make_update(self), state, start, kl_coef, until or c.iterations)
    if not last:  # resumed after the last iteration: the logged row is the result
      last = (metrics.read(s.workdir, 'rlhf') or [{}])[-1]
    return {'checkpoint_dir': guard.directory, 'iterations': c.iterations,
            **{k: last[k] for k in names.OUTPUTS if k in last}}

  def _loop(self, guard: train.Guard, update, state, start: int, kl_coef: float, until: int) -> dict:
    """Iterations ``start + 1 .. until`` on the guard; the last metrics row (empty if none ran)."""
    s, c, last = self.s, self.c, {}
    prompts = pipeline.Batches({'index': np.arange(len(s.train_examples))}, c.prompts_per_iteration, seed=s.seed)
    guard.start(start)
    self._drop_rollouts_after(start)
    for it in range(start, until):
      examples = [s.train_examples[i] for i in prompts.host_batch(it)['index']]
      state, row, kl_coef = self._iteration(update, state, it, examples, kl_coef)
      step = it + 1
      guard.check(step, row)
      if c.eval_every and (step % c.eval_every == 0 or step == c.iterations):
        row.update(self._evaluate(state, step))
      guard.log(step, row)
      guard.progress(step, proxy=f'{row["proxy_reward"]:.3f}', gold=f'{row["gold_reward"]:.3f}')
      last = row
      if guard.due(step) or step == until:
        guard.save(step, _to_disk(state), {'step': step, 'kl_coef': kl_coef, 'stage': 'rlhf'})
    return last

  def _iteration(self, update, state, it, examples, kl_coef):
    """One iteration: ``(state, metrics row, next KL coefficient)``."""
    rng = jax.random.fold_in(jax.random.key(self.s.seed), it)
    batch = None
    if self.algo.online:  # rollouts -> scores -> advantages: the batch the update trains on
      batch, stats, rows, seconds = self.rollout(state['params'], examples, jax.random.fold_in(rng, 0), kl_coef)
    t0 = time.time()
    state, update_metrics = update(state, it, batch, jax.random.fold_in(rng, 1))
    update_metrics = jax.device_get(update_metrics)
    update_s = time.time() - t0
    if not self.algo.online:  # measure the updated policy the same way
      _, stats, rows, seconds = self.rollout(state['params'], examples, jax.random.fold_in(rng, 0), train=False)
    row = {**rollouts.metrics(rows, stats), **{k: float(v) for k, v in update_metrics.items()}, **seconds,
           'update_s': update_s, 'kl_coef': kl_coef, 'round': self.s.round_}
    row['tokens_per_s'] = float(np.sum(stats['response_length'])) / max(
        seconds['sample_s'] + seconds['score_s'] + update_s, 1e-9)
    return state, row, self.algo.next_kl_coef(self.c, kl_coef, row, len(rows))

  def _drop_rollouts_after(self, step: int) -> None:
    """A resumed run forgets the rollouts a killed one logged past its checkpoint (as metrics.jsonl does)."""
    path = Path(self.s.workdir) / 'rlhf' / 'rollouts.jsonl'
    if jax.process_index() == 0 and path.exists():
      kept = [line for line in path.read_text().splitlines(keepends=True)
              if line.endswith('\n') and json.loads(line)['iteration'] <= step]
      path.write_text(''.join(kept))

  def _evaluate(self, state, step) -> dict:
    """The fixed eval prompts, one response each, measured like the rollouts: ``eval_*`` metrics; the
    responses are appended to ``<workdir>/rlhf/rollouts.jsonl`` (the browser's rollout viewer). They run in
    batches of the rollouts' rows (a short last one filled with its first prompt), through the rollouts'
    compiled sampler and scorer: no programs of their own (two compiles, ~6 s on two cores)."""
    rng = jax.random.fold_in(jax.random.key(self.s.seed + 1), step)
    examples, size = self.s.eval_examples, self.c.prompts_per_iteration * self.c.group_size
    parts, rows = [], []
    for i, start in enumerate(range(0, len(examples), size)):
      chunk = examples[start:start + size]
      _, stats, chunk_rows, _ = self.rollout(state['params'], chunk + chunk[:1] * (size - len(chunk)),
                                             jax.random.fold_in(rng, i), train=self.algo.online, group=1)
      parts.append({k: v[:len(chunk)] for k, v in stats.items()})
      rows += chunk_rows[:len(chunk)]
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if jax.process_index() == 0:
      with open(Path(self.s.workdir) / 'rlhf' / 'rollouts.jsonl', 'a') as f:
        for i, r in enumerate(rows):
          f.write(json.dumps({'iteration': step, 'prompt': r['prompt'], 'response': r['response'], 'ids': r['ids'],
                              'family': r['family'], 'gold_reward': r['score'],
                              'proxy_reward': float(stats['proxy_reward'][i]), 'kl_total': float(stats['kl'][i])},
                             ensure_ascii=False) + '\n')
    return {f'eval_{k}': v for k, v in rollouts.metrics(rows, stats).items()}


def run(setup: Setup, algorithm: Algorithm, until: int | None = None) -> dict:
  """Trains ``algorithm`` on ``setup`` (up to iteration ``until``); the final metrics and the policy's
  ``checkpoint_dir``."""
  return Learner(setup, algorithm).run(until)
