"""Online arms: the policy trains on its own rollouts, scored by the reward model.

  ppo    GAE against a value model initialised from the reward model; KL to the reference in the reward
  grpo   ``rlhf.group_size`` (>= 2) responses per prompt, group-normalised baselines, no critic; KL a
         k3 term in the loss
  rloo   leave-one-out baselines over the group, no critic; KL in the reward
  dapo   ``lm.rl.dapo``: GRPO's baselines, clip-higher, token-level loss, groups without signal masked out
  dr_grpo  group-mean baselines without std scaling, the loss summed over tokens over a constant
  gspo   GRPO's baselines, the sequence-level importance ratio clipped per response
  reinforce_pp  REINFORCE++: token-level KL in the reward, returns normalised over the batch, no critic
(the estimators: ``lm.rl.advantages``; the losses: ``lm.rl.losses``). All minimise a clipped
surrogate: ``rlhf.epochs`` passes of shuffled minibatches of ``rlhf.minibatch_size`` rollout rows per
iteration, one compiled program (``lm.rl.ppo.make_update``); ``prepare`` may change the rollout
batch first (inside that program). The KL coefficient is ``rlhf.kl_coef``, or follows Ziegler's
controller when ``rlhf.kl_target > 0``.
"""

import jax

from lm import sharding
from lm.config import ConfigError
from lm.rl import learner, ppo


class Online(learner.Algorithm):
  online = True

  def __init__(self, estimator: str, loss: str = 'ppo', min_group: int = 1):
    self.estimator, self.loss, self.min_group = estimator, loss, min_group

  def check(self, c):
    if c.group_size < self.min_group:
      raise ConfigError(f'rlhf.algorithm={c.algorithm} needs rlhf.group_size >= {self.min_group}, got {c.group_size}')
    rollout = c.prompts_per_iteration * c.group_size
    if rollout % c.minibatch_size:
      raise ConfigError(f'rlhf.minibatch_size={c.minibatch_size} must divide the rollout batch {rollout}')
    if c.loss_agg and c.loss_agg not in ppo.AGGREGATIONS:
      raise ConfigError(f'rlhf.loss_agg={c.loss_agg!r}; valid: {", ".join(ppo.AGGREGATIONS)} (or empty)')

  def optimizer_steps(self, c):
    return c.iterations * (c.prompts_per_iteration * c.group_size // c.minibatch_size * c.epochs)

  def prepare(self, c, batch) -> tuple[dict, dict]:
    """``(batch, metrics)``: the rollout batch as the update trains on it (traced inside the update's
    program) and metrics of the change; unchanged by default."""
    del c
    return batch, {}

  def make_update(self, learner):
    c = learner.c
    update = ppo.make_update(learner.loss_sums, learner.tx, learner.schedule, c.minibatch_size, c.epochs,
                             c.microbatches)

    def prepared(state, batch, rng):
      batch, extra = self.prepare(c, batch)
      state, metrics = update(state, batch, rng)
      return state, {**metrics, **extra}

    step_fn = jax.jit(prepared, out_shardings=(learner.state_shardings, sharding.replicated(learner.mesh)),
                      donate_argnums=0)
    return lambda state, iteration, batch, rng: step_fn(state, batch, rng)

  def next_kl_coef(self, c, kl_coef, row, n_rows):
    if c.kl_target <= 0:
      return kl_coef
    return float(ppo.adaptive_kl_coef(kl_coef, row['kl'], n_rows, c.kl_target, c.kl_horizon))
