"""Offline preference objectives from R-way rankings: DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023).

A record ranks R responses to one prompt (``ranks`` [B, R], 0 = best). Pairs (winner, loser):
  all        every pair of responses with different ranks, R (R - 1) / 2 per record (as InstructGPT
             trains its reward model), each pair weighted 1;
  best       the best response against each of the R - 1 others.
With ``h = (log pi(w) - log ref(w)) - (log pi(l) - log ref(l))`` (sums of log-probs over each
response's tokens, under the policy and the frozen reference):
  DPO   ``-log sigmoid(beta * h)``
  IPO   ``(h - 1 / (2 beta))^2``   (beta is IPO's tau; log-probs summed, not length-averaged)
The weight is the number of pairs, so the loss and metrics are means per pair.

Batch (``make_loss_sums``): ``tokens``, ``segment_ids``, ``positions``, ``response_mask`` [B, R, T]
(prompt + response rows; the mask is 1 on the response tokens the policy wrote), ``ranks`` [B, R],
``ref_logprobs`` [B, R] (precomputed with ``sequence_logprobs`` of the reference).
"""

import jax
import jax.numpy as jnp

from lm.rl import ppo

PAIRS = ('all', 'best')
LOSSES = ('dpo', 'ipo')


def pair_mask(ranks_BxR, pairs: str = 'all'):
  """``[B, R, R]``: 1 where response i is the winner and j the loser of a training pair."""
  if pairs not in PAIRS:
    raise ValueError(f'preference pairs={pairs!r}; valid: {", ".join(PAIRS)}')
  better = ranks_BxR[:, :, None] < ranks_BxR[:, None, :]
  if pairs == 'best':
    better = better & (ranks_BxR[:, :, None] == 0)
  return better.astype(jnp.float32)


def pair_losses(h_BxRxR, loss: str, beta: float):
  """The loss of every ordered pair given the log-ratio differences ``h[n, i, j]`` (winner i, loser j)."""
  if loss == 'dpo':
    return -jax.nn.log_sigmoid(beta * h_BxRxR)
  if loss == 'ipo':
    return jnp.square(h_BxRxR - 1.0 / (2.0 * beta))
  raise ValueError(f'preference loss={loss!r}; valid: {", ".join(LOSSES)}')


def preference_sums(logp_BxR, ref_logp_BxR, ranks_BxR, loss: str, beta: float, pairs: str = 'all'):
  """``(objective_sum, sums)``: loss, accuracy (policy prefers the winner more than the reference
  does), mean margin ``h``, and ``weight`` = number of pairs."""
  ratio_BxR = logp_BxR - ref_logp_BxR
  h_BxRxR = ratio_BxR[:, :, None] - ratio_BxR[:, None, :]
  mask = pair_mask(ranks_BxR, pairs)
  total = jnp.sum(pair_losses(h_BxRxR, loss, beta) * mask)
  return total, {'loss': total, 'accuracy': jnp.sum((h_BxRxR > 0) * mask), 'margin': jnp.sum(h_BxRxR * mask),
                 'weight': jnp.sum(mask)}


def sequence_logprobs(model, params, tokens_BxRxT, segment_ids_BxRxT, positions_BxRxT, response_mask_BxRxT):
  """Sum of the log-probs of each row's response tokens: ``[B, R]``."""
  B, R, T = tokens_BxRxT.shape
  flat = lambda x: x.reshape(B * R, T)
  logp, _ = ppo.response_logprobs(model, params, flat(tokens_BxRxT), flat(segment_ids_BxRxT),
                                  flat(positions_BxRxT), start=1)
  mask = flat(response_mask_BxRxT)[:, 1:].astype(jnp.float32)
  return jnp.sum(logp * mask, axis=1).reshape(B, R)


def make_loss_sums(model, loss: str, beta: float, pairs: str = 'all'):
  """``loss_sums(params, batch, rng)`` (params ``{'policy'}``) for ``lm.steps.common.make_train_step``."""
  pair_losses(jnp.zeros((1, 1, 1)), loss, beta)   # an unknown loss fails now
  pair_mask(jnp.zeros((1, 1), jnp.int32), pairs)

  def loss_sums(params, batch, rng):
    del rng
    logp_BxR = sequence_logprobs(model, params['policy'], batch['tokens'], batch['segment_ids'],
                                 batch['positions'], batch['response_mask'])
    return preference_sums(logp_BxR, batch['ref_logprobs'], batch['ranks'], loss, beta, pairs)

  return loss_sums
