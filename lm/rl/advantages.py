"""Advantage estimators, registered by name so that an ablation is a config string.

  est = ESTIMATORS['grpo']
  advantages_BxN, returns_BxN = est.fn(rollout, cfg)   # returns_BxN is None without a critic

A ``Rollout`` holds what every estimator may need: ``scores`` [B] (the reward model's score after the
unfinished-response penalty), ``kl`` [B, N] (per-token ``k1`` against the reference), ``mask`` [B, N],
``values`` [B, N] (None without a critic), ``kl_coef`` (scalar) and ``group_size`` (rows
``g * n .. g * n + n - 1`` answer the same prompt). Each estimator says whether it needs a critic
and where the KL penalty goes (``kl='reward'``: in the reward; ``'loss'``: a k3 term in the loss).

  gae   PPO (Schulman et al.): token rewards (score at the end, ``-kl_coef * k1`` per token),
        GAE(gamma, lambda) against the value model, advantages whitened over the batch.
  grpo  GRPO (Shao et al. 2024, DeepSeekMath): each response's score minus its group's mean,
        divided by the group's standard deviation (unbiased, ``+ eps``; ``scale_by_std=False`` keeps
        the difference, as in Dr. GRPO); the same advantage at every token; KL in the loss.
  rloo  RLOO (Ahmadian et al. 2024): the sequence reward ``score - kl_coef * sum_t k1`` minus the
        mean of the other ``n - 1`` responses to the same prompt; the same advantage at every token.
  dapo  DAPO (Yu et al. 2025): GRPO's advantages, exactly 0 for a group whose scores are all equal
        (no signal: ``lm.rl.dapo`` masks such groups out of the loss); KL in the loss (the paper
        trains without it: ``rlhf.kl_coef=0``).
  dr_grpo  Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): the score minus its
        group's mean, not divided by the std; KL in the loss.
  reinforce_pp  REINFORCE++ (Hu 2025): token rewards (score at the last token, ``-kl_coef * k1`` per
        token), returns-to-go with ``gamma``, normalised over every token of the batch (mean 0,
        std 1); no critic, no group.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from lm.rl import ppo


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
  gamma: float = 1.0
  lam: float = 0.95
  whiten: bool = True         # gae: whiten advantages over the batch
  scale_by_std: bool = True   # grpo: divide by the group's std
  eps: float = 1e-4           # grpo: added to the std


@dataclasses.dataclass
class Rollout:
  scores: jnp.ndarray
  kl: jnp.ndarray
  mask: jnp.ndarray
  values: jnp.ndarray | None = None
  kl_coef: float = 0.0
  group_size: int = 1


@dataclasses.dataclass(frozen=True)
class Estimator:
  name: str
  fn: Callable     # (Rollout, EstimatorConfig) -> (advantages [B, N], returns [B, N] or None)
  critic: bool     # needs a value model
  kl: str          # 'reward' or 'loss'


ESTIMATORS: dict[str, Estimator] = {}


def register(name: str, critic: bool, kl: str):
  def deco(fn):
    ESTIMATORS[name] = Estimator(name, fn, critic, kl)
    return fn
  return deco


def get(name: str) -> Estimator:
  if name not in ESTIMATORS:
    raise ValueError(f'unknown advantage estimator {name!r}; valid: {", ".join(ESTIMATORS)}')
  return ESTIMATORS[name]


def groups(x_B, group_size: int):
  """``[B] -> [G, n]``: row ``g * n + j`` is the j-th response to prompt g."""
  if x_B.shape[0] % group_size:
    raise ValueError(f'rollout batch {x_B.shape[0]} is not a multiple of group_size={group_size}')
  return x_B.reshape(-1, group_size)


def grpo_advantages(rewards_B, group_size: int, scale_by_std: bool = True, eps: float = 1e-4):
  """``(r - group mean) / (group std + eps)``, std unbiased (n - 1); ``[B]``."""
  if group_size < 2:
    raise ValueError(f'group advantages need group_size >= 2 (a baseline from the other responses), got {group_size}')
  r_GxN = groups(rewards_B, group_size)
  centred = r_GxN - jnp.mean(r_GxN, axis=1, keepdims=True)
  if scale_by_std:
    centred = centred / (jnp.std(r_GxN, axis=1, keepdims=True, ddof=1) + eps)
  return centred.reshape(-1)


def rloo_advantages(rewards_B, group_size: int):
  """``r_i`` minus the mean reward of the other responses to the same prompt; ``[B]``."""
  if group_size < 2:
    raise ValueError('rloo needs group_size >= 2 (a leave-one-out baseline)')
  r_GxN = groups(rewards_B, group_size)
  others = (jnp.sum(r_GxN, axis=1, keepdims=True) - r_GxN) / (group_size - 1)
  return (r_GxN - others).reshape(-1)


def dapo_advantages(rewards_B, group_size: int, scale_by_std: bool = True, eps: float = 1e-4):
  """``grpo_advantages``, set to exactly 0 in every group whose rewards are all equal; ``[B]``."""
  r_GxN = groups(rewards_B, group_size)
  flat_G = jnp.max(r_GxN, axis=1) == jnp.min(r_GxN, axis=1)
  adv_GxN = grpo_advantages(rewards_B, group_size, scale_by_std, eps).reshape(r_GxN.shape)
  return jnp.where(flat_G[:, None], 0.0, adv_GxN).reshape(-1)


def reinforce_pp_advantages(scores_B, kl_BxN, mask_BxN, kl_coef, gamma: float = 1.0, eps: float = 1e-8):
  """REINFORCE++: returns-to-go of the token rewards ``-kl_coef * kl`` (plus the score at each row's last
  masked token), ``G_t = r_t + gamma * G_t'`` with ``t'`` the next masked token (tokens off the mask,
  e.g. tool results, are skipped), whitened over every masked token of the batch; ``[B, N]``."""
  mask = mask_BxN.astype(jnp.float32)
  N = mask.shape[1]
  last_B = jnp.max(jnp.where(mask > 0, jnp.arange(N)[None, :], -1), axis=1)
  last_BxN = (jnp.arange(N)[None, :] == last_B[:, None]).astype(jnp.float32)
  rewards_BxN = (-kl_coef * kl_BxN + scores_B[:, None] * last_BxN) * mask

  def back(next_return_B, xs):
    r_B, m_B = xs
    g_B = jnp.where(m_B > 0, r_B + gamma * next_return_B, next_return_B)
    return g_B, g_B

  _, returns_NxB = jax.lax.scan(back, jnp.zeros(mask.shape[:1]), (rewards_BxN.T, mask.T), reverse=True)
  return ppo.whiten(returns_NxB.T * mask, mask, eps=eps)


def _per_token(adv_B, mask_BxN):
  return adv_B[:, None] * mask_BxN.astype(jnp.float32)


@register('gae', critic=True, kl='reward')
def gae_estimator(r: Rollout, cfg: EstimatorConfig):
  rewards_BxN = ppo.token_rewards(r.scores, r.kl, r.mask, r.kl_coef)
  advantages, returns = ppo.gae(rewards_BxN, r.values, r.mask, cfg.gamma, cfg.lam)
  return (ppo.whiten(advantages, r.mask) if cfg.whiten else advantages), returns


@register('grpo', critic=False, kl='loss')
def grpo_estimator(r: Rollout, cfg: EstimatorConfig):
  return _per_token(grpo_advantages(r.scores, r.group_size, cfg.scale_by_std, cfg.eps), r.mask), None


@register('rloo', critic=False, kl='reward')
def rloo_estimator(r: Rollout, cfg: EstimatorConfig):
  rewards_B = r.scores - r.kl_coef * jnp.sum(r.kl * r.mask, axis=1)
  return _per_token(rloo_advantages(rewards_B, r.group_size), r.mask), None


@register('dapo', critic=False, kl='loss')
def dapo_estimator(r: Rollout, cfg: EstimatorConfig):
  return _per_token(dapo_advantages(r.scores, r.group_size, cfg.scale_by_std, cfg.eps), r.mask), None


@register('dr_grpo', critic=False, kl='loss')
def dr_grpo_estimator(r: Rollout, cfg: EstimatorConfig):
  return _per_token(grpo_advantages(r.scores, r.group_size, scale_by_std=False), r.mask), None


@register('reinforce_pp', critic=False, kl='reward')
def reinforce_pp_estimator(r: Rollout, cfg: EstimatorConfig):
  return reinforce_pp_advantages(r.scores, r.kl, r.mask, r.kl_coef, cfg.gamma), None
