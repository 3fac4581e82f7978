"""DAPO (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale").

  estimator ``dapo``   GRPO's group-normalised advantages, exactly 0 in a group whose scores are all equal
  loss ``dapo``        the clipped surrogate with a decoupled range ``[1 - rlhf.dapo.clip_low,
                       1 + rlhf.dapo.clip_high]`` (clip-higher: 0.2 and 0.28 in the paper), aggregated
                       over every token of the minibatch (token-level loss, ``token_mean``)
  dynamic sampling     a group whose responses all score the same has zero advantages: it carries no
                       signal. The paper over-samples and resamples until the batch is refilled with
                       groups that do; with static shapes this masks those groups out of the loss and its
                       normaliser instead (zero weight, ``prepare``), so the batch an update sees is
                       smaller, and logs the fraction dropped as ``dropped_group_fraction``. A minibatch
                       left with no group steps with zero gradients (Adam's moments still decay).
The paper trains without a KL term (``rlhf.kl_coef=0``); a non-zero coefficient adds GRPO's k3 term
to the loss. Its overlong reward shaping is not implemented: ``rlhf.penalize_unfinished`` gives an
unfinished response a fixed score.
"""

import jax.numpy as jnp

from lm.rl import advantages, online


def signal_rows(advantages_BxN, group_size: int):
  """``[B]`` 1.0 on the rows of groups with a non-zero advantage (the ``dapo`` estimator writes exactly 0
  in every group whose scores are all equal, and a non-zero value somewhere in every other group)."""
  nonzero_B = jnp.any(advantages_BxN != 0, axis=1)
  keep_G = jnp.any(advantages.groups(nonzero_B, group_size), axis=1)
  return jnp.repeat(keep_G, group_size).astype(jnp.float32)


class Dapo(online.Online):
  """GRPO's arm with DAPO's estimator and loss, and dynamic sampling as masking (``prepare``)."""

  def __init__(self):
    super().__init__(estimator='dapo', loss='dapo', min_group=2)

  def prepare(self, c, batch):
    keep_B = signal_rows(batch['advantages'], c.group_size)
    batch = dict(batch, mask=batch['mask'] * keep_B[:, None])
    return batch, {'dropped_group_fraction': 1.0 - jnp.mean(keep_B)}
