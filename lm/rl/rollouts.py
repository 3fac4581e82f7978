"""Rollouts for RL from human feedback: prompts -> sampled responses -> proxy and gold scores.

  rollout = Rollouts(c, tok, model, reward_fn, ref, rm_params, mesh, rules, group, value_model, estimator, tools,
                     width=prompt_width(tok, every_prompt, c.max_prompt_len))
  batch, stats, rows, seconds = rollout(params, examples, rng, kl_coef)

``Rollouts`` left-pads the chat prompts (``lm.inference.sample.left_pad``), samples the policy
(``sample_jit``; with ``tools``, ``lm.inference.agent.run``: the calls run and their results are written
into the KV cache), the lab's gold scorers score the parsed turns (``gold_rows``) and ``make_score``
scores the samples in one compiled program: the policy's and the reference's log-probs of the
sampled tokens (training forward, at the sampling temperature), the value model's estimates, the
reward model's score at the last token (normalised by the reward stage), the reward the run trains
on (``rlhf.reward``: the reward model's, the gold score, or ``rlhf.reward_weights`` of both;
unfinished responses penalised), the per-token KL and, given an estimator (``lm.rl.advantages``),
advantages and returns: the train batch of ``lm.rl.ppo.make_loss_sums``. Tool results are in the
rows the model attends to but carry no loss, KL or advantage (``response_mask``: 1 only on tokens
the model wrote). ``stats`` are per-row numbers for the metrics (``metrics``).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lm import evals, sharding
from lm.data import chat
from lm.inference import agent, sample
from lm.lab import tasks
from lm.rl import advantages as advantages_lib
from lm.rl import ppo


def prompt_width(tok, examples, cap: int, multiple: int = 8) -> int:
  """The width prompts are left-padded to: the longest of ``examples``' rendered prompts rounded up to
  ``multiple``, at most ``cap`` (``rlhf.max_prompt_len``). Computed once from every prompt a run samples (the
  lifecycle's: 44 tokens, so rows of 48 + 96 slots instead of 64 + 96)."""
  longest = max(len(chat.render_prompt(tok, e.prompt)) for e in examples)
  return min(cap, -(-longest // multiple) * multiple)


class Rollouts:
  """Sampling and scoring of prompt batches for the rlhf section ``c``: one compiled program each, for the
  whole run. ``group`` responses per prompt; ``estimator`` (and ``value_model`` when it needs a critic)
  turn the scores into advantages for training, without them the rollouts only measure. Prompts are
  left-padded to ``width`` tokens (``prompt_width``; default ``rlhf.max_prompt_len``)."""

  def __init__(self, c, tok, model, reward_fn, ref, rm_params, mesh, rules, group: int, value_model=None,
               estimator: advantages_lib.Estimator | None = None, tools: dict | None = None,
               width: int | None = None):
    self.c, self.tok, self.model, self.mesh, self.rules, self.group = c, tok, model, mesh, rules, group
    self.width = width or c.max_prompt_len
    self.ref, self.rm_params, self.tools = ref, rm_params, tools or {}
    self.sampling = sample.SamplingConfig(temperature=c.temperature, max_new_tokens=c.max_new_tokens)
    self.agent_cfg = agent.AgentConfig(max_calls=c.max_tool_calls, result_tokens=c.result_tokens)
    est_cfg = advantages_lib.EstimatorConfig(gamma=c.ppo.gamma, lam=c.ppo.lam, whiten=c.ppo.whiten_advantages,
                                             scale_by_std=c.grpo.scale_by_std)
    penalty = c.unfinished_penalty if c.penalize_unfinished else None
    weights = reward_weights(c)
    self.score_fn = jax.jit(make_score(model, value_model, reward_fn, estimator, est_cfg, c.temperature, penalty,
                                       group, weights))
    self.measure_fn = jax.jit(make_score(model, None, reward_fn, None, est_cfg, c.temperature, penalty, 1, weights))

  def _sample(self, params, prompt_BxP, mask_BxP, rng):
    """The policy's turns: ``{'tokens', 'mask', 'response_mask', 'done', 'logprobs'}`` ``[B, N]`` on the
    mesh, and each row's tool calls (empty without tools)."""
    if not self.tools:
      out = sample.sample_jit(params['policy'], self.model, prompt_BxP, mask_BxP, rng, self.sampling,
                              mesh=self.mesh, rules=self.rules)
      sampled = {k: out[k] for k in ('tokens', 'mask', 'done', 'logprobs')}
      sampled['response_mask'] = sampled['mask']
      return sampled, [[] for _ in range(prompt_BxP.shape[0])]
    out = agent.run(params['policy'], self.model, self.tok, prompt_BxP, mask_BxP, self.sampling, rng, self.tools,
                    self.agent_cfg, self.mesh, self.rules)
    done = np.asarray([stopped is None for stopped in out['stopped']])
    put = lambda x: jax.device_put(x, sharding.batch_sharding(self.mesh, np.ndim(x)))
    sampled = {'tokens': put(out['tokens']), 'mask': put(out['mask']), 'response_mask': put(out['response_mask']),
               'done': put(done), 'logprobs': put(out['logprobs'].astype(np.float32))}
    return sampled, out['calls']

  def __call__(self, params, examples, rng, kl_coef=0.0, train: bool = True, group: int | None = None):
    """``(batch, stats, rows, seconds)`` for ``examples`` (each repeated ``group`` times) sampled from
    ``params['policy']``; ``train=False`` measures only (no advantages)."""
    group = self.group if group is None else group
    examples = [e for e in examples for _ in range(group)]
    ids = [chat.render_prompt(self.tok, e.prompt) for e in examples]
    for b, row in enumerate(ids):
      if len(row) > self.width:
        raise ValueError(f'prompt {b} has {len(row)} tokens, more than the rollouts\' width {self.width} '
                         f'(rlhf.max_prompt_len={self.c.max_prompt_len})')
    prompt_BxP, mask_BxP = sample.left_pad(ids, self.width, len(ids))
    put = lambda x: jax.device_put(x, sharding.batch_sharding(self.mesh, x.ndim))
    prompt_BxP, mask_BxP = put(prompt_BxP), put(mask_BxP)
    t0 = time.time()
    sampled, calls = self._sample(params, prompt_BxP, mask_BxP, rng)
    jax.block_until_ready(sampled)
    t1 = time.time()
    rows = gold_rows(self.tok, examples, to_host(sampled['tokens']), to_host(sampled['mask']).sum(1),
                     to_host(sampled['done']), calls)
    gold_B = put(np.asarray([r['score'] for r in rows], np.float32))
    t2 = time.time()
    with sharding.use_mesh(self.mesh, self.rules):
      fn = self.score_fn if train else self.measure_fn
      batch, stats = fn(params, self.ref, self.rm_params, prompt_BxP, mask_BxP, sampled, gold_B, jnp.float32(kl_coef))
      stats = {k: to_host(v) for k, v in stats.items()}
    bad = np.flatnonzero(~np.isfinite(stats['train_reward']))
    if len(bad):
      raise ValueError(f'rlhf: the reward of response {bad[0]} is {stats["train_reward"][bad[0]]} (prompt: '
                       f'{examples[bad[0]].prompt[-1]["content"]!r})')
    stats['tool_calls'] = np.asarray([len(c) for c in calls], np.float32)
    seconds = {'sample_s': t1 - t0, 'gold_s': t2 - t1, 'score_s': time.time() - t2}
    return batch, stats, rows, seconds


REWARDS = ('model', 'gold', 'mix')


def reward_weights(c) -> tuple[float, float]:
  """``(reward model, gold)`` weights of the reward a run trains on (``rlhf.reward``, ``rlhf.reward_weights``)."""
  if c.reward not in REWARDS:
    raise ValueError(f'rlhf.reward={c.reward!r}; valid: {", ".join(REWARDS)}')
  return {'model': (1.0, 0.0), 'gold': (0.0, 1.0), 'mix': tuple(float(w) for w in c.reward_weights)}[c.reward]


def make_score(policy_model, value_model, reward_fn, estimator: advantages_lib.Estimator | None,
               estimator_cfg: advantages_lib.EstimatorConfig = advantages_lib.EstimatorConfig(),
               temperature: float = 1.0, unfinished_penalty: float | None = None, group_size: int = 1,
               weights: tuple[float, float] = (1.0, 0.0)):
  """``score(params, ref_params, rm_params, prompt_BxP, prompt_mask_BxP, sampled, gold_B, kl_coef) -> (batch, stats)``.

  ``params`` is ``{'policy'}`` plus ``'value'`` when the estimator needs a critic; ``sampled`` is
  the sampler's output (``tokens``, ``mask`` on every real token, ``response_mask`` on the tokens the
  model wrote, ``done``, ``logprobs``); ``gold_B`` the lab's score of each turn. The reward trained on
  is ``weights[0]`` x the reward model's + ``weights[1]`` x gold. Without an estimator the batch has
  no advantages (measurement only). ``stats`` (all ``[B]``): ``proxy_reward`` (the reward model's
  normalised score), ``train_reward`` (what the run trains on), ``score`` (after the unfinished
  penalty), ``kl`` and ``kl_k3`` (summed over the model's tokens), ``response_length`` (the model's
  tokens), ``finished``, ``non_padding`` (the row's share of slots holding a prompt or response token:
  what the scoring and the update compute on), ``sampler_logprob_gap`` (mean |sampler - training|
  log-prob per token: 0 up to numerics at temperature 1).
  """
  critic = estimator is not None and estimator.critic
  if critic and value_model is None:
    raise ValueError(f'estimator {estimator.name!r} needs a value model')

  def score(params, ref_params, rm_params, prompt_BxP, prompt_mask_BxP, sampled, gold_B, kl_coef):
    mask_BxN = sampled['response_mask'].astype(jnp.float32)  # the model's tokens: loss, KL, advantages
    seq = ppo.layout(prompt_BxP, prompt_mask_BxP, sampled['tokens'], sampled['mask'])
    args = (seq['tokens'], seq['segment_ids'], seq['positions'])
    P = prompt_BxP.shape[1]
    logp, _ = ppo.response_logprobs(policy_model, params['policy'], *args, P, temperature)
    ref_logp, _ = ppo.response_logprobs(policy_model, ref_params, *args, P, temperature)
    logp, ref_logp = logp * mask_BxN, ref_logp * mask_BxN
    reward_B = reward_fn(rm_params, *args, seq['last_index'])
    train_B = weights[0] * reward_B + weights[1] * gold_B
    score_B = ppo.penalize_unfinished(train_B, sampled['done'], unfinished_penalty)
    kl_BxN = ppo.kl_k1(logp, ref_logp) * mask_BxN
    lengths = jnp.sum(mask_BxN, axis=1)
    real_B = jnp.sum(prompt_mask_BxP, axis=1) + jnp.sum(sampled['mask'], axis=1)
    stats = {'proxy_reward': reward_B, 'train_reward': train_B, 'score': score_B, 'kl': jnp.sum(kl_BxN, axis=1),
             'kl_k3': jnp.sum(ppo.kl_k3(logp, ref_logp) * mask_BxN, axis=1), 'response_length': lengths,
             'finished': sampled['done'].astype(jnp.float32),
             'non_padding': real_B.astype(jnp.float32) / seq['tokens'].shape[1],
             'sampler_logprob_gap': jnp.sum(jnp.abs(sampled['logprobs'] - logp) * mask_BxN, axis=1)
                                    / jnp.maximum(lengths, 1.0)}
    batch = {'tokens': seq['tokens'], 'segment_ids': seq['segment_ids'], 'positions': seq['positions'],
             'mask': mask_BxN, 'old_logprobs': logp, 'ref_logprobs': ref_logp}
    if estimator is None:
      return batch, stats
    values = ppo.response_values(value_model, params['value'], *args, P) * mask_BxN if critic else None
    rollout = advantages_lib.Rollout(score_B, kl_BxN, mask_BxN, values, kl_coef, group_size)
    advantages, returns = estimator.fn(rollout, estimator_cfg)
    loss_kl = kl_coef if estimator.kl == 'loss' else 0.0
    batch.update(advantages=advantages, kl_coef=jnp.full(score_B.shape, loss_kl, jnp.float32))
    if critic:
      batch.update(old_values=values, returns=returns)
    return batch, stats

  return score


def gold_rows(tok, examples, tokens_BxN, lengths_B, finished_B, calls=None) -> list[dict]:
  """Each turn parsed and scored by the lab's gold scorer (which reads the final answer), as
  ``lm.evals`` rows (``family``, ``variant``, ``meta``, ``prompt``, ``response``, ``turn``, ``calls``,
  ``finished``, ``score``, and the turn's token ``ids``); ``finished`` is True when the turn ended within
  the budget."""
  rows = []
  calls = calls or [[] for _ in examples]
  for ex, tokens, n, done, row_calls in zip(examples, np.asarray(tokens_BxN), np.asarray(lengths_B),
                                            np.asarray(finished_B), calls):
    turn = chat.parse_turn(tok, [int(t) for t in tokens[:int(n)]])
    answer = next((m for m in reversed(turn) if m['role'] == 'assistant'), {'role': 'assistant', 'content': ''})
    rows.append(dict(family=ex.family, variant=ex.variant, meta=ex.meta, prompt=ex.prompt, response=answer,
                     turn=turn, calls=row_calls, finished=bool(done), score=tasks.score(ex, turn),
                     ids=[int(t) for t in tokens[:int(n)]]))
  return rows


def metrics(rows, stats) -> dict:
  """One flat dict for a batch of rollouts: means of ``stats`` (proxy reward, KL, length, ...), the
  gold reward, refusal and over-refusal rates and accuracy per task family."""
  out = {k: float(np.mean(np.asarray(v))) for k, v in stats.items()}
  gold = np.asarray([r['score'] for r in rows], np.float64)
  out['gold_reward'] = float(np.mean(gold))
  for name, values in (('gold_reward', gold), ('proxy_reward', np.asarray(stats['proxy_reward'], np.float64))):
    out[f'{name}_se'] = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float('nan')
  out.update(evals.refusal_rates(rows))
  families = sorted({r['family'] for r in rows})
  out.update({f'acc[{f}]': float(np.mean([r['score'] for r in rows if r['family'] == f])) for f in families})
  return out


def to_host(x) -> np.ndarray:
  """A global array as numpy on every process."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
