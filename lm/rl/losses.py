"""RL losses registered by name, so that an algorithm names its loss and an ablation is a string.

  loss_sums = get('ppo')(policy_model, value_model, c)   # c: the rlhf config section
  objective_sum, sums = loss_sums(params, batch, rng)     # for lm.steps.common.make_train_step

  ppo   the clipped surrogate over rollout tokens (``lm.rl.ppo.make_loss_sums``): clipped value loss
        when there is a value model, entropy bonus, and a k3 KL term where the estimator puts the
        KL in the loss (GRPO); the batch is ``lm.rl.rollouts.make_score``'s
  dpo   DPO on pairs from K-way rankings (``lm.rl.preference``): ``-log sigmoid(beta h)``
  ipo   IPO on the same pairs: ``(h - 1 / (2 beta))^2``
"""

from typing import Callable

from lm.rl import ppo, preference

LOSSES: dict[str, Callable] = {}  # name -> (policy_model, value_model | None, c) -> loss_sums


def register(name: str):
  def deco(build):
    LOSSES[name] = build
    return build
  return deco


def get(name: str) -> Callable:
  if name not in LOSSES:
    raise ValueError(f'unknown RL loss {name!r}; valid: {", ".join(LOSSES)}')
  return LOSSES[name]


@register('ppo')
def clipped_surrogate(policy_model, value_model, c):
  cfg = ppo.LossConfig(clip_ratio=c.ppo.clip_ratio, value_clip=c.ppo.value_clip, vf_coef=c.ppo.vf_coef,
                       entropy_coef=c.ppo.entropy_coef, temperature=c.temperature)
  return ppo.make_loss_sums(policy_model, value_model, cfg)


@register('dpo')
def dpo(policy_model, value_model, c):
  del value_model
  return preference.make_loss_sums(policy_model, 'dpo', c.preference.beta, c.preference.pairs)


@register('ipo')
def ipo(policy_model, value_model, c):
  del value_model
  return preference.make_loss_sums(policy_model, 'ipo', c.preference.beta, c.preference.pairs)
