"""PPO for RLHF: log-probs of responses, KL to a frozen reference, GAE, the clipped objective.

A rollout row is a prompt (LEFT-padded to a static ``P``) followed by the sampled response
(``N`` slots, right-padded): ``tokens_BxT`` with ``T = P + N``, ``segment_ids`` 1 on real tokens, 0
on padding, and ``positions`` counting from the first real token (``layout``). Per-token arrays of
the response are ``[B, N]`` and ``mask_BxN`` is 1 on generated tokens. Token ``t`` of the response
is scored with the logits (and the value) of the position before it.

Implementation details adopted from "The N implementation details of RLHF with PPO" (Huang et al.
2024) and Ziegler et al. 2019 / Stiennon et al. 2020:
  - the reward is the reward model's score at the response's last token minus ``kl_coef`` times the
    per-token KL estimate ``k1 = logp - ref_logp`` at every token (``token_rewards``); the reward
    model is normalised on reference-policy samples (mean 0, std 1), rewards are not whitened;
  - a response that never ends (no stop token within the budget) has its score replaced by a fixed
    penalty (``penalize_unfinished``), the "EOS trick";
  - ``kl_coef`` fixed, or adapted by Ziegler's proportional controller (``adaptive_kl_coef``);
  - old log-probs are recomputed with the training forward pass (not taken from the sampler), at the
    sampling temperature (logits divided by it in both, ``response_logprobs``);
  - GAE over the response mask (terminal after the last token), advantages whitened over the
    masked tokens of the whole rollout batch (``whiten``), returns = advantages + values before
    whitening;
  - the value model is a separate transformer with a scalar head initialised from the reward model,
    trained jointly with the policy (one pytree ``{'policy', 'value'}``, one optimiser);
  - clipped surrogate policy loss, clipped value loss (``0.5 * max`` of the two squared errors),
    optional entropy bonus; every token-level term is a masked mean over the minibatch's response
    tokens (the ``weight``; ``LossConfig.agg`` chooses another aggregation, ``loss_weights``), so
    microbatching gives the same update;
  - several epochs of shuffled minibatches per rollout batch (``make_update``);
  - no dropout anywhere (the model has none).
A KL term in the loss (``kl_coef`` per row, with the ``k3`` estimator) serves GRPO (DeepSeekMath);
it is zero for PPO, whose KL is in the reward. The same loss serves the later objectives through
``LossConfig``: a decoupled clip range (DAPO's clip-higher, ``clip_high``), GSPO's sequence-level
ratio (``ratio='sequence'``, ``sequence_policy_loss``) and the aggregations of ``AGGREGATIONS``.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.model import ops
from lm.steps import common

AGGREGATIONS = ('token_mean', 'seq_mean_token_sum', 'seq_mean_token_mean', 'seq_mean_token_sum_norm')
RATIOS = ('token', 'sequence')


@dataclasses.dataclass(frozen=True)
class LossConfig:
  clip_ratio: float = 0.2     # policy ratio clipped to [1 - clip_ratio, 1 + clip_high]
  clip_high: float | None = None  # the upper clip (DAPO's clip-higher); None: clip_ratio (symmetric)
  value_clip: float = 0.2     # value moves at most this far from the rollout's value (0: no clipping)
  vf_coef: float = 0.1        # weight of the value loss
  entropy_coef: float = 0.0   # weight of the entropy bonus
  temperature: float = 1.0    # sampling temperature: log-probs are of logits / temperature
  agg: str = 'token_mean'     # how per-token terms become the loss (``loss_weights``)
  ratio: str = 'token'        # 'sequence': one importance ratio per response (GSPO, ``sequence_policy_loss``)

  def __post_init__(self):
    if self.agg not in AGGREGATIONS:
      raise ValueError(f'loss aggregation {self.agg!r}; valid: {", ".join(AGGREGATIONS)}')
    if self.ratio not in RATIOS:
      raise ValueError(f'importance ratio {self.ratio!r}; valid: {", ".join(RATIOS)}')


# ------------------------------------------------------------------------------ sequences

def layout(prompt_BxP, prompt_mask_BxP, response_BxN, response_mask_BxN) -> dict:
  """Prompt + response rows: ``tokens``, ``segment_ids``, ``positions`` ``[B, P + N]`` and
  ``last_index`` ``[B]`` (the response's last token; where the reward is read)."""
  P = prompt_BxP.shape[1]
  tokens_BxT = jnp.concatenate([prompt_BxP, response_BxN], axis=1).astype(jnp.int32)
  segment_ids_BxT = jnp.concatenate([prompt_mask_BxP, response_mask_BxN], axis=1).astype(jnp.int32)
  positions_BxT = jnp.maximum(jnp.cumsum(segment_ids_BxT, axis=1) - 1, 0) * segment_ids_BxT
  lengths_B = jnp.sum(response_mask_BxN.astype(jnp.int32), axis=1)
  return {'tokens': tokens_BxT, 'segment_ids': segment_ids_BxT, 'positions': positions_BxT.astype(jnp.int32),
          'last_index': P + jnp.maximum(lengths_B, 1) - 1}


def response_logprobs(model, params, tokens_BxT, segment_ids_BxT, positions_BxT, start: int,
                      temperature: float = 1.0):
  """``(logp_BxN, entropy_BxN)`` of ``tokens[:, start:]`` (``N = T - start``) under the model:
  log-softmax of the logits one position earlier, divided by ``temperature``.

  The vocab head runs on the response positions only (the model's own logits over all T
  positions are never used, so XLA drops them): the same head as ``lm.model``'s, softcap included.
  """
  c = model.config
  out = model.apply({'params': params}, tokens_BxT, positions_BxT, segment_ids_BxT)
  h_BxNxD = out['hidden'][:, start - 1:-1]
  B, N, D = h_BxNxD.shape
  head_DxV = params['embed'].T if c.tie_embeddings else params['head']
  logits_BxNxV = ops.linear(h_BxNxD.reshape(B * N, D), head_DxV, c.compute_dtype).reshape(B, N, -1)
  if c.final_softcap:
    logits_BxNxV = c.final_softcap * jnp.tanh(logits_BxNxV / c.final_softcap)
  logits_BxNxV = nn.with_logical_constraint(logits_BxNxV, ('batch', 'length', 'act_vocab')) / temperature
  logp_BxNxV = jax.nn.log_softmax(logits_BxNxV, axis=-1)
  logp_BxN = jnp.take_along_axis(logp_BxNxV, tokens_BxT[:, start:, None], axis=-1)[..., 0]
  entropy_BxN = -jnp.sum(jnp.exp(logp_BxNxV) * logp_BxNxV, axis=-1)
  return logp_BxN, entropy_BxN


def response_values(value_model, params, tokens_BxT, segment_ids_BxT, positions_BxT, start: int):
  """The value model's estimate before each response token: ``scalar`` one position earlier, ``[B, N]``."""
  out = value_model.apply({'params': params}, tokens_BxT, positions_BxT, segment_ids_BxT)
  return out['scalar'][:, start - 1:-1]


# ------------------------------------------------------------------------------ KL and rewards

def kl_k1(logp_BxN, ref_logp_BxN):
  """``log p - log q`` of the sampled token: unbiased for KL(p || q), per token."""
  return logp_BxN - ref_logp_BxN


def kl_k3(logp_BxN, ref_logp_BxN):
  """``(r - 1) - log r`` with ``r = q / p``: unbiased, never negative, lower variance (Schulman)."""
  log_r = ref_logp_BxN - logp_BxN
  return jnp.expm1(log_r) - log_r


def penalize_unfinished(scores_B, finished_B, penalty: float | None):
  """Scores with those of unfinished responses replaced by ``penalty`` (None: unchanged)."""
  if penalty is None:
    return scores_B
  return jnp.where(finished_B, scores_B, jnp.asarray(penalty, scores_B.dtype))


def last_token(mask_BxN):
  """One-hot ``[B, N]`` of each row's last masked token (wherever the gaps or the padding are)."""
  mask = mask_BxN.astype(jnp.float32)
  N = mask.shape[1]
  last_B = N - 1 - jnp.argmax(mask[:, ::-1], axis=1)
  return jax.nn.one_hot(last_B, N) * mask


def token_rewards(scores_B, kl_BxN, mask_BxN, kl_coef):
  """``-kl_coef * kl`` at every response token, plus the score at the last one. ``kl_coef``: scalar or [B]."""
  mask = mask_BxN.astype(jnp.float32)
  last_BxN = last_token(mask)
  kl_coef_B = jnp.broadcast_to(jnp.asarray(kl_coef, jnp.float32), scores_B.shape)
  return (-kl_coef_B[:, None] * kl_BxN + scores_B[:, None] * last_BxN) * mask


def adaptive_kl_coef(kl_coef, kl, n_samples: int, target: float, horizon: float):
  """Ziegler et al.'s controller: ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon``."""
  error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return kl_coef * (1.0 + error * n_samples / horizon)


# ------------------------------------------------------------------------------ advantages

def gae(rewards_BxN, values_BxN, mask_BxN, gamma: float, lam: float):
  """Generalised advantage estimation over each row's response; ``(advantages, returns)`` [B, N].

  ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` zero after the last token (terminal),
  ``A_t = delta_t + gamma * lam * A_{t+1}``, computed backwards by ``lax.scan``; returns ``A + V``.
  ``t + 1`` is the row's next masked token: positions off the mask (padding, tool results inside a
  turn) are not steps of the policy and are passed over. Both are 0 where the mask is 0.
  """
  mask = mask_BxN.astype(jnp.float32)
  values = values_BxN * mask

  def back(carry, xs):
    next_adv_B, next_value_B = carry
    reward_B, value_B, m_B = xs
    delta_B = (reward_B + gamma * next_value_B - value_B) * m_B
    adv_B = (delta_B + gamma * lam * next_adv_B) * m_B
    on = m_B > 0
    return (jnp.where(on, adv_B, next_adv_B), jnp.where(on, value_B, next_value_B)), adv_B

  zeros_B = jnp.zeros(mask.shape[:1])
  _, adv_NxB = jax.lax.scan(back, (zeros_B, zeros_B), (rewards_BxN.T, values.T, mask.T), reverse=True)
  advantages = adv_NxB.T
  return advantages, (advantages + values) * mask


def whiten(x_BxN, mask_BxN, shift_mean: bool = True, eps: float = 1e-8):
  """``(x - mean) / std`` over the masked entries (mean kept when not ``shift_mean``); 0 off the mask."""
  mask = mask_BxN.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(mask), 1.0)
  mean = jnp.sum(x_BxN * mask) / n
  var = jnp.sum(jnp.square(x_BxN - mean) * mask) / n
  out = (x_BxN - mean) * jax.lax.rsqrt(var + eps)
  return (out if shift_mean else out + mean) * mask


# ------------------------------------------------------------------------------ losses (per token)

def policy_loss(logp_BxN, old_logp_BxN, advantages_BxN, clip_ratio: float, clip_high: float | None = None):
  """Clipped surrogate ``max(-A r, -A clip(r, 1 - clip_ratio, 1 + clip_high))`` per token (``clip_high``
  None: ``clip_ratio``), and whether the clip was active."""
  high = clip_ratio if clip_high is None else clip_high
  ratio = jnp.exp(logp_BxN - old_logp_BxN)
  unclipped = -advantages_BxN * ratio
  clipped = -advantages_BxN * jnp.clip(ratio, 1.0 - clip_ratio, 1.0 + high)
  return jnp.maximum(unclipped, clipped), (clipped > unclipped).astype(jnp.float32)


def sequence_policy_loss(logp_BxN, old_logp_BxN, advantages_BxN, mask_BxN, clip_low: float, clip_high: float):
  """GSPO (Zheng et al. 2025): the clipped surrogate of the sequence-level ratio, at every token of the response.

  ``s = exp(mean_t (logp - old_logp))`` over the response's tokens (the geometric mean of the token
  ratios, the length-normalised sequence ratio), ``A`` the response's mean advantage over its tokens,
  loss ``max(-A s, -A clip(s, 1 - clip_low, 1 + clip_high))``; ``[B, N]`` (each row's loss at each of
  its positions: ``seq_mean_token_mean`` aggregates it to the mean over responses) and whether the
  clip was active.
  """
  mask = mask_BxN.astype(jnp.float32)
  n_B = jnp.maximum(jnp.sum(mask, axis=1), 1.0)
  ratio_B = jnp.exp(jnp.sum((logp_BxN - old_logp_BxN) * mask, axis=1) / n_B)
  adv_B = jnp.sum(advantages_BxN * mask, axis=1) / n_B
  unclipped = -adv_B * ratio_B
  clipped = -adv_B * jnp.clip(ratio_B, 1.0 - clip_low, 1.0 + clip_high)
  loss_B, active_B = jnp.maximum(unclipped, clipped), (clipped > unclipped).astype(jnp.float32)
  return jnp.broadcast_to(loss_B[:, None], mask.shape), jnp.broadcast_to(active_B[:, None], mask.shape)


def loss_weights(mask_BxN, agg: str):
  """``(weights_BxN, weight)``: a per-token term ``x`` aggregates to ``sum(x * weights) / weight``.

    token_mean               mask, tokens: the mean over every response token of the batch
    seq_mean_token_sum       mask, responses: the mean over responses of the sum over its tokens
    seq_mean_token_mean      mask / length, responses: the mean over responses of its token mean
    seq_mean_token_sum_norm  mask / N, responses: the sum over tokens divided by the constant N (the
                             response budget), mean over responses (Dr. GRPO)
  Responses count when they hold a token (a row masked out whole is out of the loss and the
  normaliser). Sums over microbatches divided by the summed weight give the same aggregation.
  """
  mask = mask_BxN.astype(jnp.float32)
  if agg == 'token_mean':
    return mask, jnp.sum(mask)
  lengths_B = jnp.sum(mask, axis=1)
  responses = jnp.sum((lengths_B > 0).astype(jnp.float32))
  if agg == 'seq_mean_token_sum':
    return mask, responses
  if agg == 'seq_mean_token_mean':
    return mask / jnp.maximum(lengths_B, 1.0)[:, None], responses
  if agg == 'seq_mean_token_sum_norm':
    return mask / mask.shape[1], responses
  raise ValueError(f'loss aggregation {agg!r}; valid: {", ".join(AGGREGATIONS)}')


def value_loss(values_BxN, old_values_BxN, returns_BxN, value_clip: float):
  """``0.5 * max((V - R)^2, (V_clipped - R)^2)`` per token, ``V_clipped`` within ``value_clip`` of the old value."""
  unclipped = jnp.square(values_BxN - returns_BxN)
  if not value_clip:
    return 0.5 * unclipped
  v_clipped = old_values_BxN + jnp.clip(values_BxN - old_values_BxN, -value_clip, value_clip)
  return 0.5 * jnp.maximum(unclipped, jnp.square(v_clipped - returns_BxN))


def make_loss_sums(policy_model, value_model, cfg: LossConfig):
  """``loss_sums(params, batch, rng)`` of a rollout minibatch for ``lm.steps.common.make_train_step``.

  ``params``: ``{'policy'}``, plus ``'value'`` when ``value_model`` is given. ``batch``: ``tokens``,
  ``segment_ids``, ``positions`` [B, T]; ``mask``, ``old_logprobs``, ``advantages`` [B, N]; with a
  value model ``old_values``, ``returns`` [B, N]; ``ref_logprobs`` [B, N] and ``kl_coef`` [B] for a
  KL term in the loss (k3; zero coefficient for PPO). The weight and the per-token weights are
  ``loss_weights(mask, cfg.agg)`` (default: the number of response tokens); every reported term is
  aggregated as the loss is.
  """

  def loss_sums(params, batch, rng):
    del rng
    mask = batch['mask'].astype(jnp.float32)
    weights, weight = loss_weights(mask, cfg.agg)
    start = batch['tokens'].shape[1] - mask.shape[1]
    seq = (batch['tokens'], batch['segment_ids'], batch['positions'])
    logp, entropy = response_logprobs(policy_model, params['policy'], *seq, start, cfg.temperature)
    if cfg.ratio == 'sequence':
      high = cfg.clip_ratio if cfg.clip_high is None else cfg.clip_high
      pg, clipped = sequence_policy_loss(logp, batch['old_logprobs'], batch['advantages'], mask, cfg.clip_ratio, high)
    else:
      pg, clipped = policy_loss(logp, batch['old_logprobs'], batch['advantages'], cfg.clip_ratio, cfg.clip_high)
    kl_loss = batch['kl_coef'][:, None] * kl_k3(logp, batch['ref_logprobs'])
    per_token = pg - cfg.entropy_coef * entropy + kl_loss
    sums = {'policy_loss': jnp.sum(pg * weights), 'entropy': jnp.sum(entropy * weights),
            'clip_fraction': jnp.sum(clipped * weights),
            'approx_kl': jnp.sum(0.5 * jnp.square(logp - batch['old_logprobs']) * weights),
            'kl_loss': jnp.sum(kl_loss * weights)}
    if value_model is not None:
      values = response_values(value_model, params['value'], *seq, start)
      vf = value_loss(values, batch['old_values'], batch['returns'], cfg.value_clip)
      per_token = per_token + cfg.vf_coef * vf
      sums['value_loss'] = jnp.sum(vf * weights)
    objective = jnp.sum(per_token * weights)
    return objective, {**sums, 'loss': objective, 'weight': weight}

  return loss_sums


# ------------------------------------------------------------------------------ the update

def make_update(loss_sums, tx, schedule, minibatch_size: int, epochs: int, microbatches: int = 1):
  """``update(state, batch, rng) -> (state, metrics)``: ``epochs`` passes over the rollout batch in
  shuffled minibatches of ``minibatch_size`` rows, one optimiser step each (``lax.scan``, one
  program); metrics are the mean over the steps."""
  step = common.make_train_step(loss_sums, tx, schedule, microbatches)

  def update(state, batch, rng):
    B = next(iter(jax.tree.leaves(batch))).shape[0]
    if B % minibatch_size:
      raise ValueError(f'rollout batch {B} is not divisible by minibatch_size={minibatch_size}')
    per_epoch = B // minibatch_size
    perms = jnp.stack([jax.random.permutation(jax.random.fold_in(rng, e), B) for e in range(epochs)])
    order_SxM = perms.reshape(epochs * per_epoch, minibatch_size)

    def one(state, rows_M):
      mb = jax.tree.map(lambda x: nn.with_logical_constraint(x[rows_M], ('batch',) + (None,) * (x.ndim - 1)), batch)
      return step(state, mb)

    state, metrics = jax.lax.scan(one, state, order_SxM)
    return state, jax.tree.map(jnp.mean, metrics)

  return update
