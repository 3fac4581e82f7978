"""RL losses registered by name, so that an algorithm names its loss and an ablation is a string.

  loss_sums = get('ppo')(policy_model, value_model, c)   # c: the rlhf config section
  objective_sum, sums = loss_sums(params, batch, rng)     # for lm.steps.common.make_train_step

  ppo      the clipped surrogate over rollout tokens (``lm.rl.ppo.make_loss_sums``): clipped value loss
           when there is a value model, entropy bonus, and a k3 KL term where the estimator puts the
           KL in the loss (GRPO); the batch is ``lm.rl.rollouts.make_score``'s; token_mean
  dapo     the same with DAPO's decoupled clip range ``[1 - rlhf.dapo.clip_low, 1 + rlhf.dapo.clip_high]``
           (clip-higher); token_mean (DAPO's token-level loss)
  dr_grpo  the clipped surrogate summed over each response's tokens, divided by the constant
           ``rlhf.max_new_tokens``, mean over responses (Dr. GRPO: no length normalisation)
  gspo     GSPO's sequence-level ratio clipped at the sequence level to ``[1 - rlhf.gspo.clip_low,
           1 + rlhf.gspo.clip_high]`` (``lm.rl.ppo.sequence_policy_loss``); seq_mean_token_mean, the
           mean over responses
  dpo      DPO on pairs from K-way rankings (``lm.rl.preference``): ``-log sigmoid(beta h)``
  ipo      IPO on the same pairs: ``(h - 1 / (2 beta))^2``

The policy-gradient losses aggregate per-token terms as above unless ``rlhf.loss_agg`` names one of
``lm.rl.ppo.AGGREGATIONS`` (``lm.rl.ppo.loss_weights``).
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


def loss_config(c, agg: str, **overrides) -> ppo.LossConfig:
  """The clipped surrogate's settings from the rlhf section ``c``: ``agg`` unless ``rlhf.loss_agg`` is set."""
  cfg = dict(clip_ratio=c.ppo.clip_ratio, value_clip=c.ppo.value_clip, vf_coef=c.ppo.vf_coef,
             entropy_coef=c.ppo.entropy_coef, temperature=c.temperature, agg=c.loss_agg or agg)
  return ppo.LossConfig(**{**cfg, **overrides})


@register('ppo')
def clipped_surrogate(policy_model, value_model, c):
  return ppo.make_loss_sums(policy_model, value_model, loss_config(c, 'token_mean'))


@register('dapo')
def dapo(policy_model, value_model, c):
  cfg = loss_config(c, 'token_mean', clip_ratio=c.dapo.clip_low, clip_high=c.dapo.clip_high)
  return ppo.make_loss_sums(policy_model, value_model, cfg)


@register('dr_grpo')
def dr_grpo(policy_model, value_model, c):
  return ppo.make_loss_sums(policy_model, value_model, loss_config(c, 'seq_mean_token_sum_norm'))


@register('gspo')
def gspo(policy_model, value_model, c):
  cfg = loss_config(c, 'seq_mean_token_mean', clip_ratio=c.gspo.clip_low, clip_high=c.gspo.clip_high,
                    ratio='sequence')
  return ppo.make_loss_sums(policy_model, value_model, cfg)


@register('dpo')
def dpo(policy_model, value_model, c):
  del value_model
  return preference.make_loss_sums(policy_model, 'dpo', c.preference.beta, c.preference.pairs)


@register('ipo')
def ipo(policy_model, value_model, c):
  del value_model
  return preference.make_loss_sums(policy_model, 'ipo', c.preference.beta, c.preference.pairs)
