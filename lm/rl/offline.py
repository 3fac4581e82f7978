"""Offline arms: the policy trains on preference rankings, then rollouts measure it like the online arms'.

  dpo, ipo   pairs from the K-way rankings of the preferences stage (else the data stage's), the
             loss of ``lm.rl.preference``; ``rlhf.preference``: beta, pairs all / best, panel or gold
             ranking, rows of ``seq_len`` tokens, ``steps_per_iteration`` optimiser steps of
             ``batch_size`` records per iteration. The reference's log-probs are computed once.
"""

import jax
import numpy as np

from lm import sharding
from lm.config import ConfigError
from lm.data import builders, pipeline
from lm.rl import learner, preference, rollouts
from lm.steps.common import make_train_step

ROW_KEYS = ('tokens', 'segment_ids', 'positions', 'response_mask', 'ranks')


class Offline(learner.Algorithm):
  online = False
  estimator = None

  def __init__(self, loss: str):
    self.loss = loss

  def check(self, c):
    if c.preference.steps_per_iteration < 1:
      raise ConfigError(f'rlhf.preference.steps_per_iteration={c.preference.steps_per_iteration} must be >= 1')

  def optimizer_steps(self, c):
    return c.iterations * c.preference.steps_per_iteration

  def make_update(self, learner):
    c, s, mesh = learner.c.preference, learner.s, learner.mesh
    records = builders.read(builders.PreferenceRankings, s.rankings_dir, 'train')
    try:
      rows = pipeline.preference_rows(s.tok, records, c.seq_len, c.ranking)
    except ValueError as e:
      raise ConfigError(f'rlhf.preference: {e}') from None
    rows = {k: rows[k] for k in ROW_KEYS}
    ref_logprobs = jax.jit(lambda p, b: preference.sequence_logprobs(
        s.model, p, b['tokens'], b['segment_ids'], b['positions'], b['response_mask']))
    rows['ref_logprobs'] = _over_rows(ref_logprobs, s.ref, rows, c.batch_size, mesh)
    batches = pipeline.Batches(rows, c.batch_size, seed=s.seed)
    step_fn = jax.jit(make_train_step(learner.loss_sums, learner.tx, learner.schedule, learner.c.microbatches),
                      out_shardings=(learner.state_shardings, sharding.replicated(mesh)), donate_argnums=0)
    k = c.steps_per_iteration

    def update(state, iteration, batch, rng):
      del batch, rng
      host = sharding.host_batch_slice(c.batch_size)
      for step in range(iteration * k, (iteration + 1) * k):
        state, step_metrics = step_fn(state, sharding.place_batch(batches.host_batch(step, host), mesh))
      return state, step_metrics  # the iteration's last step

    return update


def _over_rows(fn, params, rows, batch_size: int, mesh) -> np.ndarray:
  """``fn(params, batch)`` over every row, in order: ``[N, ...]`` numpy."""
  n = len(rows['ranks'])
  batches = pipeline.Batches(rows, batch_size, seed=0, shuffle=False)
  host = sharding.host_batch_slice(batch_size)
  out = [rollouts.to_host(fn(params, sharding.place_batch(batches.host_batch(i, host), mesh)))
         for i in range(-(-n // batch_size))]
  return np.concatenate(out)[:n]
