"""Offline preference objectives from K-way rankings: DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023).

A record ranks K responses to one prompt (``ranks`` [N, K], 0 = best). Pairs (winner, loser):
  all        every pair of responses with different ranks, K (K - 1) / 2 per record (as InstructGPT
             trains its reward model), each pair weighted 1;
  best       the best response against each of the K - 1 others.
With ``h = (log pi(w) - log ref(w)) - (log pi(l) - log ref(l))`` (sums of log-probs over each
response's tokens, under the policy and the frozen reference):
  DPO   ``-log sigmoid(beta * h)``
  IPO   ``(h - 1 / (2 beta))^2``   (beta is IPO's tau; log-probs summed, not length-averaged)
The weight is the number of pairs, so the loss and metrics are means per pair.

Batch (``make_loss_sums``): ``tokens``, ``segment_ids``, ``positions``, ``response_mask`` [N, K, L]
(prompt + response rows; the mask is 1 on the response tokens the policy wrote), ``ranks`` [N, K],
``ref_logprobs`` [N, K] (precomputed with ``sequence_logprobs`` of the reference).
"""

import jax
import jax.numpy as jnp

from lm.rl import ppo

PAIRS = ('all', 'best')
LOSSES = ('dpo', 'ipo')


def pair_mask(ranks_NxK, pairs: str = 'all'):
  """``[N, K, K]``: 1 where response i is the winner and j the loser of a training pair."""
  if pairs not in PAIRS:
    raise ValueError(f'preference pairs={pairs!r}; valid: {", ".join(PAIRS)}')
  better = ranks_NxK[:, :, None] < ranks_NxK[:, None, :]
  if pairs == 'best':
    better = better & (ranks_NxK[:, :, None] == 0)
  return better.astype(jnp.float32)


def pair_losses(h_NxKxK, loss: str, beta: float):
  """The loss of every ordered pair given the log-ratio differences ``h[n, i, j]`` (winner i, loser j)."""
  if loss == 'dpo':
    return -jax.nn.log_sigmoid(beta * h_NxKxK)
  if loss == 'ipo':
    return jnp.square(h_NxKxK - 1.0 / (2.0 * beta))
  raise ValueError(f'preference loss={loss!r}; valid: {", ".join(LOSSES)}')


def preference_sums(logp_NxK, ref_logp_NxK, ranks_NxK, loss: str, beta: float, pairs: str = 'all'):
  """``(objective_sum, sums)``: loss, accuracy (policy prefers the winner more than the reference
  does), mean margin ``h``, and ``weight`` = number of pairs."""
  ratio_NxK = logp_NxK - ref_logp_NxK
  h_NxKxK = ratio_NxK[:, :, None] - ratio_NxK[:, None, :]
  mask = pair_mask(ranks_NxK, pairs)
  total = jnp.sum(pair_losses(h_NxKxK, loss, beta) * mask)
  return total, {'loss': total, 'accuracy': jnp.sum((h_NxKxK > 0) * mask), 'margin': jnp.sum(h_NxKxK * mask),
                 'weight': jnp.sum(mask)}


def sequence_logprobs(model, params, tokens_NxKxL, segment_ids_NxKxL, positions_NxKxL, response_mask_NxKxL):
  """Sum of the log-probs of each row's response tokens: ``[N, K]``."""
  N, K, L = tokens_NxKxL.shape
  flat = lambda x: x.reshape(N * K, L)
  logp, _ = ppo.response_logprobs(model, params, flat(tokens_NxKxL), flat(segment_ids_NxKxL),
                                  flat(positions_NxKxL), start=1)
  mask = flat(response_mask_NxKxL)[:, 1:].astype(jnp.float32)
  return jnp.sum(logp * mask, axis=1).reshape(N, K)


def make_loss_sums(model, loss: str, beta: float, pairs: str = 'all'):
  """``loss_sums(params, batch, rng)`` (params ``{'policy'}``) for ``lm.steps.common.make_train_step``."""
  pair_losses(jnp.zeros((1, 1, 1)), loss, beta)   # an unknown loss fails now
  pair_mask(jnp.zeros((1, 1), jnp.int32), pairs)

  def loss_sums(params, batch, rng):
    del rng
    logp_NxK = sequence_logprobs(model, params['policy'], batch['tokens'], batch['segment_ids'],
                                 batch['positions'], batch['response_mask'])
    return preference_sums(logp_NxK, batch['ref_logprobs'], batch['ranks'], loss, beta, pairs)

  return loss_sums
