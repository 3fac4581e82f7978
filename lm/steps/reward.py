"""Reward model objective: a scalar per response, read at its last token, fit to R-way rankings.

A batch holds B prompts with R responses each: ``tokens``/``segment_ids``/``positions`` ``[B, R, T]``
(or packed, several responses a row: ``[M, T]``), ``last_index`` ``[B, R]``, ``ranks`` ``[B, R]`` (0 = best, from
the rater panel) and optionally ``gold_utilities`` ``[B, R]`` (the lab's gold, for accuracy only).

Losses for one prompt with rewards r and the panel's order w_1 > w_2 > ... > w_R:
  plackett_luce   sum_{i<R} [ log sum_{j>=i} exp(r_{w_j} - m [j=i]) - (r_{w_i} - m) ]
                  (the likelihood of the whole ranking, one "pick the best of the rest" per place)
  bradley_terry   mean over the R(R-1)/2 ordered pairs (a above b) of -log sigmoid(r_a - r_b - m)
                  (InstructGPT: every comparison of a ranking, each prompt weighted once)
with margin m (0 by default). For R = 2 the two are the same loss. ``weight`` counts prompts.
Ties (equal ranks, e.g. a person who could not tell two responses apart): neither loss orders tied
responses against each other. Bradley-Terry has no pair for them; in Plackett-Luce each tied
response is picked against every response ranked the same or below it (Breslow's rule), so a tie
of the whole ranking carries no preference either way.
"""

import jax
import jax.numpy as jnp

LOSSES = ('plackett_luce', 'bradley_terry')


def sequence_rewards(model, params, tokens, segment_ids, positions, last_index):
  """Raw scalar-head rewards at ``last_index`` of each row: any leading shape ``[..., T]`` -> ``[...]``.

  Packed rows (``lm.data.pipeline.PackedRankings``: ``tokens`` ``[M, T]``, several responses a row, and
  ``last_index`` ``[B, R]`` a flat position ``row * T + t``) give ``[B, R]``."""
  T = tokens.shape[-1]
  flat = lambda x: x.reshape(-1, T)
  scalar_MxT = model.apply({'params': params}, flat(tokens), flat(positions), flat(segment_ids))['scalar']
  if tokens.ndim == 2 and last_index.ndim == 2:  # packed
    return scalar_MxT.reshape(-1)[last_index]
  rewards_M = jnp.take_along_axis(scalar_MxT, last_index.reshape(-1, 1), axis=1)[:, 0]
  return rewards_M.reshape(tokens.shape[:-1])


def plackett_luce_loss(rewards_BxR, ranks_BxR, margin: float = 0.0):
  """Per-prompt negative log-likelihood of the ranking under Plackett-Luce, ``[B]``."""
  R = rewards_BxR.shape[1]
  order_BxR = jnp.argsort(ranks_BxR, axis=1)  # response indices, best first
  r_BxR = jnp.take_along_axis(rewards_BxR, order_BxR, axis=1)
  rank_BxR = jnp.take_along_axis(ranks_BxR, order_BxR, axis=1)
  # place i picks w_i among the responses ranked the same or below it (ties: Breslow's rule); candidate
  # j's logit is r_j, less the margin when j is the pick
  picked_RxR = jnp.eye(R, dtype=bool)
  rest_BxRxR = rank_BxR[:, None, :] >= rank_BxR[:, :, None]
  logits_BxRxR = r_BxR[:, None, :] - margin * picked_RxR
  lse_BxR = jax.nn.logsumexp(jnp.where(rest_BxRxR, logits_BxRxR, -jnp.inf), axis=-1)
  nll_BxR = lse_BxR - (r_BxR - margin)
  certain_BxR = jnp.sum(rest_BxRxR, axis=-1) == 1  # a pick out of one (the last place) is certain
  return jnp.sum(jnp.where(certain_BxR, 0.0, nll_BxR), axis=1)


def bradley_terry_loss(rewards_BxR, ranks_BxR, margin: float = 0.0):
  """Per-prompt mean over all ordered pairs of -log sigmoid(r_better - r_worse - margin), ``[B]``."""
  better_BxRxR = ranks_BxR[:, :, None] < ranks_BxR[:, None, :]
  diff_BxRxR = rewards_BxR[:, :, None] - rewards_BxR[:, None, :] - margin
  nll = jnp.where(better_BxRxR, -jax.nn.log_sigmoid(diff_BxRxR), 0.0)
  return jnp.sum(nll, axis=(1, 2)) / jnp.maximum(jnp.sum(better_BxRxR, axis=(1, 2)), 1)


def pairwise_agreement(rewards_BxR, prefer_BxRxR):
  """``(agreeing pairs, pairs)``: pairs (a, b) with ``prefer[a, b]`` (a should beat b) where r_a > r_b; a
  tie counts half (identical responses, which a model's samples often are, get identical rewards). Operators
  and methods only: jax arrays in a step, numpy arrays on the host (no program compiled per shape)."""
  diff_BxRxR = rewards_BxR[:, :, None] - rewards_BxR[:, None, :]
  right = prefer_BxRxR * ((diff_BxRxR > 0) + 0.5 * (diff_BxRxR == 0))
  return right.sum(), prefer_BxRxR.sum()


def ranking_loss(kind: str):
  if kind not in LOSSES:
    raise ValueError(f'reward.loss={kind!r}; valid: {", ".join(LOSSES)}')
  return {'plackett_luce': plackett_luce_loss, 'bradley_terry': bradley_terry_loss}[kind]


def make_loss_sums(model, loss: str = 'plackett_luce', margin: float = 0.0):
  """``loss_sums(params, batch, rng)`` for ``lm.steps.common.make_train_step``; weight = prompts."""
  loss_fn = ranking_loss(loss)

  def loss_sums(params, batch, rng):
    del rng
    rewards_BxR = sequence_rewards(model, params, batch['tokens'], batch['segment_ids'], batch['positions'],
                                   batch['last_index'])
    nll_B = loss_fn(rewards_BxR, batch['ranks'], margin)
    right, pairs = pairwise_agreement(rewards_BxR, batch['ranks'][:, :, None] < batch['ranks'][:, None, :])
    B = rewards_BxR.shape[0]
    sums = {'loss': jnp.sum(nll_B), 'weight': jnp.asarray(B, jnp.float32),
            # per prompt, so that dividing by the weight gives the fraction of pairs
            'panel_accuracy': B * right / jnp.maximum(pairs, 1),
            'reward_mean': jnp.sum(jnp.mean(rewards_BxR, axis=1)),
            'reward_spread': jnp.sum(jnp.std(rewards_BxR, axis=1))}
    return sums['loss'], sums

  return loss_sums


def make_eval_step(model, loss: str = 'plackett_luce', margin: float = 0.0):
  """``eval_step(params, batch)`` -> sums: loss, and pairs ordered as the panel and as the gold
  ranking orders them (``<k>_weight`` holds the pairs each accuracy is over; gold ties excluded)."""
  loss_fn = ranking_loss(loss)

  def eval_step(params, batch):
    rewards_BxR = sequence_rewards(model, params, batch['tokens'], batch['segment_ids'], batch['positions'],
                                   batch['last_index'])
    panel_right, panel_pairs = pairwise_agreement(rewards_BxR, batch['ranks'][:, :, None] < batch['ranks'][:, None, :])
    gold = batch['gold_utilities']
    gold_right, gold_pairs = pairwise_agreement(rewards_BxR, gold[:, :, None] > gold[:, None, :])
    return {'loss': jnp.sum(loss_fn(rewards_BxR, batch['ranks'], margin)),
            'weight': jnp.asarray(rewards_BxR.shape[0], jnp.float32),
            'panel_accuracy': panel_right, 'panel_accuracy_weight': panel_pairs,
            'gold_accuracy': gold_right, 'gold_accuracy_weight': gold_pairs}

  return eval_step
