"""Reward model objective: a scalar per response, read at its last token, fit to K-way rankings.

A batch holds N prompts with K responses each: ``tokens``/``segment_ids``/``positions`` ``[N, K, T]``
(or packed, several responses a row: ``[R, T]``), ``last_index`` ``[N, K]``, ``ranks`` ``[N, K]`` (0 = best, from the rater panel) and optionally
``gold_utilities`` ``[N, K]`` (the lab's gold, for accuracy only).

Losses for one prompt with rewards r and the panel's order w_1 > w_2 > ... > w_K:
  plackett_luce   sum_{i<K} [ log sum_{j>=i} exp(r_{w_j} - m [j=i]) - (r_{w_i} - m) ]
                  (the likelihood of the whole ranking, one "pick the best of the rest" per place)
  bradley_terry   mean over the K(K-1)/2 ordered pairs (a above b) of -log sigmoid(r_a - r_b - m)
                  (InstructGPT: every comparison of a ranking, each prompt weighted once)
with margin m (0 by default). For K = 2 the two are the same loss. ``weight`` counts prompts.
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

  Packed rows (``lm.data.pipeline.PackedRankings``: ``tokens`` ``[R, T]``, several responses a row, and
  ``last_index`` ``[N, K]`` a flat position ``row * T + t``) give ``[N, K]``."""
  T = tokens.shape[-1]
  flat = lambda x: x.reshape(-1, T)
  scalar_MxT = model.apply({'params': params}, flat(tokens), flat(positions), flat(segment_ids))['scalar']
  if tokens.ndim == 2 and last_index.ndim == 2:  # packed
    return scalar_MxT.reshape(-1)[last_index]
  rewards_M = jnp.take_along_axis(scalar_MxT, last_index.reshape(-1, 1), axis=1)[:, 0]
  return rewards_M.reshape(tokens.shape[:-1])


def plackett_luce_loss(rewards_NxK, ranks_NxK, margin: float = 0.0):
  """Per-prompt negative log-likelihood of the ranking under Plackett-Luce, ``[N]``."""
  K = rewards_NxK.shape[1]
  order_NxK = jnp.argsort(ranks_NxK, axis=1)  # response indices, best first
  r_NxK = jnp.take_along_axis(rewards_NxK, order_NxK, axis=1)
  rank_NxK = jnp.take_along_axis(ranks_NxK, order_NxK, axis=1)
  # place i picks w_i among the responses ranked the same or below it (ties: Breslow's rule); candidate
  # j's logit is r_j, less the margin when j is the pick
  picked_KxK = jnp.eye(K, dtype=bool)
  rest_NxKxK = rank_NxK[:, None, :] >= rank_NxK[:, :, None]
  logits_NxKxK = r_NxK[:, None, :] - margin * picked_KxK
  lse_NxK = jax.nn.logsumexp(jnp.where(rest_NxKxK, logits_NxKxK, -jnp.inf), axis=-1)
  nll_NxK = lse_NxK - (r_NxK - margin)
  certain_NxK = jnp.sum(rest_NxKxK, axis=-1) == 1  # a pick out of one (the last place) is certain
  return jnp.sum(jnp.where(certain_NxK, 0.0, nll_NxK), axis=1)


def bradley_terry_loss(rewards_NxK, ranks_NxK, margin: float = 0.0):
  """Per-prompt mean over all ordered pairs of -log sigmoid(r_better - r_worse - margin), ``[N]``."""
  better_NxKxK = ranks_NxK[:, :, None] < ranks_NxK[:, None, :]
  diff_NxKxK = rewards_NxK[:, :, None] - rewards_NxK[:, None, :] - margin
  nll = jnp.where(better_NxKxK, -jax.nn.log_sigmoid(diff_NxKxK), 0.0)
  return jnp.sum(nll, axis=(1, 2)) / jnp.maximum(jnp.sum(better_NxKxK, axis=(1, 2)), 1)


def pairwise_agreement(rewards_NxK, prefer_NxKxK):
  """``(agreeing pairs, pairs)``: pairs (a, b) with ``prefer[a, b]`` (a should beat b) where r_a > r_b."""
  right = prefer_NxKxK & (rewards_NxK[:, :, None] > rewards_NxK[:, None, :])
  return jnp.sum(right), jnp.sum(prefer_NxKxK)


def ranking_loss(kind: str):
  if kind not in LOSSES:
    raise ValueError(f'reward.loss={kind!r}; valid: {", ".join(LOSSES)}')
  return {'plackett_luce': plackett_luce_loss, 'bradley_terry': bradley_terry_loss}[kind]


def make_loss_sums(model, loss: str = 'plackett_luce', margin: float = 0.0):
  """``loss_sums(params, batch, rng)`` for ``lm.steps.common.make_train_step``; weight = prompts."""
  loss_fn = ranking_loss(loss)

  def loss_sums(params, batch, rng):
    del rng
    rewards_NxK = sequence_rewards(model, params, batch['tokens'], batch['segment_ids'], batch['positions'],
                                   batch['last_index'])
    nll_N = loss_fn(rewards_NxK, batch['ranks'], margin)
    right, pairs = pairwise_agreement(rewards_NxK, batch['ranks'][:, :, None] < batch['ranks'][:, None, :])
    N = rewards_NxK.shape[0]
    sums = {'loss': jnp.sum(nll_N), 'weight': jnp.asarray(N, jnp.float32),
            # per prompt, so that dividing by the weight gives the fraction of pairs
            'panel_accuracy': N * right / jnp.maximum(pairs, 1),
            'reward_mean': jnp.sum(jnp.mean(rewards_NxK, axis=1)),
            'reward_spread': jnp.sum(jnp.std(rewards_NxK, axis=1))}
    return sums['loss'], sums

  return loss_sums


def make_eval_step(model, loss: str = 'plackett_luce', margin: float = 0.0):
  """``eval_step(params, batch)`` -> sums: loss, and pairs ordered as the panel and as the gold
  ranking orders them (``<k>_weight`` holds the pairs each accuracy is over; gold ties excluded)."""
  loss_fn = ranking_loss(loss)

  def eval_step(params, batch):
    rewards_NxK = sequence_rewards(model, params, batch['tokens'], batch['segment_ids'], batch['positions'],
                                   batch['last_index'])
    panel_right, panel_pairs = pairwise_agreement(rewards_NxK, batch['ranks'][:, :, None] < batch['ranks'][:, None, :])
    gold = batch['gold_utilities']
    gold_right, gold_pairs = pairwise_agreement(rewards_NxK, gold[:, :, None] > gold[:, None, :])
    return {'loss': jnp.sum(loss_fn(rewards_NxK, batch['ranks'], margin)),
            'weight': jnp.asarray(rewards_NxK.shape[0], jnp.float32),
            'panel_accuracy': panel_right, 'panel_accuracy_weight': panel_pairs,
            'gold_accuracy': gold_right, 'gold_accuracy_weight': gold_pairs}

  return eval_step
