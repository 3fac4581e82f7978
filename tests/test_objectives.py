"""DAPO, Dr. GRPO, GSPO, REINFORCE++ and the loss aggregations against float64 numpy references
written from the papers' formulas (never a call of the code under test); the sampler's and the
trainer's log-probs of the same tokens agree in float32."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.config import ConfigError
from lm.configs import base
from lm.inference import sample
from lm.model.transformer import Transformer
from lm.rl import advantages, algorithms, dapo, losses, ppo, rollouts
from tests.conftest import tiny_config

B, P, N = 8, 4, 6
LENGTHS = np.array([6, 3, 1, 5, 6, 2, 4, 0])  # responses right-padded; the last row wrote nothing


def _init(model, seed):
  return jax.jit(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))['params']))(jax.random.key(seed))


@pytest.fixture(scope='module')
def policy():
  model = Transformer(tiny_config(n_layers=1))
  return model, _init(model, 0)


def _mask(lengths=LENGTHS, n=N):
  return (np.arange(n)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


@pytest.fixture(scope='module')
def rows(policy):
  """Prompt + response rows of the tiny model and its float64 log-probs of the response tokens."""
  model, params = policy
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 128, (B, P + N)), jnp.int32)
  mask = _mask()
  seq = ppo.layout(tokens[:, :P], jnp.ones((B, P), jnp.int32), tokens[:, P:], jnp.asarray(mask, jnp.int32))
  logp, _ = jax.jit(ppo.response_logprobs, static_argnums=(0, 5))(model, params, seq['tokens'], seq['segment_ids'],
                                                                    seq['positions'], P)
  return seq, np.asarray(logp, np.float64) * mask, mask


def _batch(seq, mask, old_logp, adv, ref_logp=None, kl_coef=0.0):
  ref_logp = old_logp if ref_logp is None else ref_logp
  return {'tokens': seq['tokens'], 'segment_ids': seq['segment_ids'], 'positions': seq['positions'],
          'mask': jnp.asarray(mask, jnp.float32), 'old_logprobs': jnp.asarray(old_logp * mask, jnp.float32),
          'advantages': jnp.asarray(adv * mask, jnp.float32), 'ref_logprobs': jnp.asarray(ref_logp * mask, jnp.float32),
          'kl_coef': jnp.full((mask.shape[0],), kl_coef, jnp.float32)}


def _mean_loss(loss_sums, params, batch):
  objective, sums = jax.jit(loss_sums)({'policy': params}, batch, None)
  weight = float(sums['weight'])
  return float(objective) / weight, {k: float(v) / weight for k, v in sums.items() if k != 'weight'}, weight


def _token_surrogate(ratio, adv, low, high):
  """Clipped surrogate per token: minus the smaller of ``r A`` and ``clip(r, 1 - low, 1 + high) A``."""
  return -np.minimum(ratio * adv, np.clip(ratio, 1 - low, 1 + high) * adv)


def _group_stats(r, n):
  g = np.asarray(r, np.float64).reshape(-1, n)
  return g, g.mean(1, keepdims=True), g.std(1, ddof=1, keepdims=True)


# ------------------------------------------------------------------------------ the registries

def test_the_new_algorithms_are_registered_with_their_estimators_and_losses():
  names = {'dapo': ('dapo', 'dapo'), 'dr_grpo': ('dr_grpo', 'dr_grpo'), 'gspo': ('grpo', 'gspo'),
           'reinforce_pp': ('reinforce_pp', 'ppo')}
  for name, (estimator, loss) in names.items():
    algo = algorithms.ALGORITHMS[name]
    assert (algo.estimator, algo.loss, algo.online) == (estimator, loss, True), name
    assert not advantages.get(estimator).critic and loss in losses.LOSSES
  assert [advantages.get(n).kl for n in ('dapo', 'dr_grpo', 'reinforce_pp')] == ['loss', 'loss', 'reward']
  c = base.rlhf_section(algorithm='dapo', prompts_per_iteration=8, minibatch_size=8)
  with pytest.raises(ConfigError, match='rlhf.algorithm=dapo needs rlhf.group_size >= 2'):
    algorithms.ALGORITHMS['dapo'].check(c)
  c = base.rlhf_section(algorithm='reinforce_pp', prompts_per_iteration=8, minibatch_size=8, loss_agg='seq_sum')
  with pytest.raises(ConfigError, match="rlhf.loss_agg='seq_sum'; valid: token_mean, seq_mean_token_sum, "):
    algorithms.ALGORITHMS['reinforce_pp'].check(c)
  with pytest.raises(ValueError, match="loss aggregation 'seq_sum'"):
    ppo.LossConfig(agg='seq_sum')


def test_loss_agg_defaults_to_each_losses_own_and_overrides_it():
  c = base.rlhf_section()
  assert c.loss_agg == ''
  assert losses.loss_config(c, 'token_mean') == ppo.LossConfig(
      clip_ratio=c.ppo.clip_ratio, value_clip=c.ppo.value_clip, vf_coef=c.ppo.vf_coef,
      entropy_coef=c.ppo.entropy_coef, temperature=c.temperature)  # the ppo loss's settings before the key
  c.loss_agg = 'seq_mean_token_mean'
  assert losses.loss_config(c, 'token_mean').agg == 'seq_mean_token_mean'


# ------------------------------------------------------------------------------ loss aggregation

def test_aggregations_against_float64(policy, rows):
  model, params = policy
  seq, logp, mask = rows
  rng = np.random.default_rng(1)
  old = logp - rng.uniform(-0.4, 0.4, logp.shape)
  ref = logp - rng.uniform(-0.3, 0.3, logp.shape)
  adv = rng.normal(size=logp.shape)
  batch = _batch(seq, mask, old, adv, ref, kl_coef=0.1)
  ratio = np.exp(logp - old)
  k3 = np.exp(ref - logp) - 1 - (ref - logp)
  term = _token_surrogate(ratio, adv, 0.2, 0.2) + 0.1 * k3
  n = mask.sum(1)
  has = n > 0
  want = {'token_mean': (term * mask).sum() / mask.sum(),
          'seq_mean_token_sum': (term * mask).sum(1)[has].mean(),
          'seq_mean_token_mean': ((term * mask).sum(1)[has] / n[has]).mean(),
          'seq_mean_token_sum_norm': ((term * mask).sum(1)[has] / N).mean()}
  for agg, value in want.items():
    loss_sums = ppo.make_loss_sums(model, None, ppo.LossConfig(agg=agg))
    got, sums, weight = _mean_loss(loss_sums, params, batch)
    assert got == pytest.approx(value, rel=1e-5, abs=1e-6), agg
    assert weight == (mask.sum() if agg == 'token_mean' else has.sum()), agg
    # microbatches: sums over two halves divided by the summed weight are the whole batch's
    halves = [jax.jit(loss_sums)({'policy': params}, jax.tree.map(lambda x: x[i::2], batch), None) for i in (0, 1)]
    total = sum(float(h[0]) for h in halves) / sum(float(h[1]['weight']) for h in halves)
    assert total == pytest.approx(value, rel=1e-5, abs=1e-6), agg
  assert want['token_mean'] != pytest.approx(want['seq_mean_token_mean'], rel=1e-2)  # the choice matters here


# ------------------------------------------------------------------------------ DAPO

def test_dapo_advantages_zero_flat_groups_exactly():
  r = np.array([0.1, 0.1, 0.1, 0.1, 1.0, 0.0, 0.0, 1.0, -1.0, -1.0, -1.0, -1.0, 2.0, 4.0, 6.0, 9.0], np.float32)
  got = np.asarray(advantages.dapo_advantages(jnp.asarray(r), 4))
  g, mean, std = _group_stats(r, 4)
  want = ((g - mean) / (std + 1e-4)).reshape(-1)
  want[:4] = want[8:12] = 0.0
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got[:4] == 0.0) and np.all(got[8:12] == 0.0)
  assert np.all(got[4:8] != 0.0) and np.all(got[12:] != 0.0)


def test_dapo_masks_groups_without_signal_and_clips_higher(policy, rows):
  """Groups of 2: rewards equal in groups 1 and 3. The loss is the token mean over the kept groups' tokens
  of the surrogate clipped to [0.8, 1.28]; the dropped fraction is logged."""
  model, params = policy
  seq, logp, mask = rows
  scores = np.array([1.0, 0.0, 0.5, 0.5, -1.0, 2.0, 0.3, 0.3], np.float32)
  rollout = advantages.Rollout(jnp.asarray(scores), jnp.zeros((B, N)), jnp.asarray(mask), group_size=2)
  adv, _ = advantages.get('dapo').fn(rollout, advantages.EstimatorConfig())
  c = base.rlhf_section(algorithm='dapo', group_size=2)
  rng = np.random.default_rng(2)
  old = logp - rng.uniform(-0.35, 0.35, logp.shape)  # ratios 0.70 .. 1.42: both sides of both clips
  prepared, extra = jax.jit(lambda b: algorithms.ALGORITHMS['dapo'].prepare(c, b))(
      _batch(seq, mask, old, np.asarray(adv, np.float64)))
  assert float(extra['dropped_group_fraction']) == 0.5
  got, sums, weight = _mean_loss(losses.get('dapo')(model, None, c), params, prepared)

  g, mean, std = _group_stats(scores, 2)
  adv64 = np.repeat(((g - mean) / (std + 1e-4)).reshape(-1)[:, None], N, 1)
  keep = np.repeat([1.0, 0.0, 1.0, 0.0], 2)[:, None] * mask
  ratio = np.exp(logp - old)
  term = _token_surrogate(ratio, adv64, 0.2, 0.28)
  assert weight == keep.sum()
  assert got == pytest.approx((term * keep).sum() / keep.sum(), rel=1e-5)
  clipped = (np.clip(ratio, 0.8, 1.28) * adv64 < ratio * adv64) * keep
  assert sums['clip_fraction'] == pytest.approx(clipped.sum() / keep.sum(), abs=1e-6)
  symmetric = _token_surrogate(ratio, adv64, 0.2, 0.2)
  assert (term * keep).sum() != pytest.approx((symmetric * keep).sum(), rel=1e-3)  # clip-higher changed it


def test_dapo_signal_rows_by_hand():
  adv = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(dapo.signal_rows(adv, 2), [0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(dapo.signal_rows(adv, 3), [0, 0, 0, 1, 1, 1])


# ------------------------------------------------------------------------------ Dr. GRPO

def test_dr_grpo_drops_the_std_and_the_length_normalisation(policy, rows):
  model, params = policy
  seq, logp, mask = rows
  scores = np.array([1.0, 0.0, 3.0, 0.5, -1.0, 2.0, 0.25, 0.75], np.float32)
  rollout = advantages.Rollout(jnp.asarray(scores), jnp.zeros((B, N)), jnp.asarray(mask), group_size=4)
  adv, _ = advantages.get('dr_grpo').fn(rollout, advantages.EstimatorConfig(scale_by_std=True))
  g, mean, _ = _group_stats(scores, 4)
  adv64 = np.repeat((g - mean).reshape(-1)[:, None], N, 1) * mask
  np.testing.assert_allclose(adv, adv64, rtol=1e-6, atol=1e-7)

  rng = np.random.default_rng(3)
  old = logp - rng.uniform(-0.3, 0.3, logp.shape)
  c = base.rlhf_section(algorithm='dr_grpo', group_size=4, max_new_tokens=N)
  got, _, weight = _mean_loss(losses.get('dr_grpo')(model, None, c), params, _batch(seq, mask, old, adv64))
  per_response = (_token_surrogate(np.exp(logp - old), adv64, 0.2, 0.2) * mask).sum(1) / N
  assert weight == 7  # responses with a token
  assert got == pytest.approx(per_response[LENGTHS > 0].mean(), rel=1e-5)


# ------------------------------------------------------------------------------ GSPO

def test_gspo_clips_the_sequence_ratio(policy, rows):
  """Token ratios far from 1 (zero-mean noise of +-0.5 in log space) around sequence log-ratios of
  +-1e-4 (inside GSPO's [1 - 3e-4, 1 + 4e-4]) and +-6e-4 (outside): the loss and its gradient are the
  sequences', by hand."""
  model, params = policy
  seq, logp, mask = rows
  rng = np.random.default_rng(4)
  n = np.maximum(mask.sum(1), 1)
  noise = rng.uniform(-0.5, 0.5, logp.shape) * mask
  noise = (noise - (noise.sum(1) / n)[:, None]) * mask
  log_s = np.array([1e-4, -6e-4, 6e-4, -1e-4, 6e-4, -6e-4, 1e-4, 0.0])
  old = logp - (log_s[:, None] + noise) * mask
  adv_B = np.array([1.0, -1.0, 1.0, -0.5, -2.0, 0.5, 0.7, 0.0])
  adv = np.repeat(adv_B[:, None], N, 1) * mask
  c = base.rlhf_section(algorithm='gspo', group_size=2)
  loss_sums = losses.get('gspo')(model, None, c)
  batch = _batch(seq, mask, old, adv)
  got, sums, weight = _mean_loss(loss_sums, params, batch)

  s = np.exp(((logp - old) * mask).sum(1) / n)
  per_response = -np.minimum(s * adv_B, np.clip(s, 1 - 3e-4, 1 + 4e-4) * adv_B)
  has = LENGTHS > 0
  assert weight == has.sum()
  assert got == pytest.approx(per_response[has].mean(), rel=1e-5)
  active = (np.clip(s, 1 - 3e-4, 1 + 4e-4) * adv_B < s * adv_B) & has
  assert active.sum() == 2 and sums['clip_fraction'] == pytest.approx(active.sum() / has.sum(), abs=1e-6)

  # d s / d theta = s * mean_t d log pi_t: only the unclipped responses pull, each with -A s
  pull = np.where(active | ~has, 0.0, -adv_B * s) / has.sum()

  def by_hand(p):
    lp, _ = ppo.response_logprobs(model, p['policy'], seq['tokens'], seq['segment_ids'], seq['positions'], P)
    return jnp.sum(jnp.asarray(pull, jnp.float32) * jnp.sum(lp * batch['mask'], axis=1) / jnp.asarray(n, jnp.float32))

  grads = jax.jit(jax.grad(lambda p: loss_sums(p, batch, None)[0] / weight))({'policy': params})
  want = jax.jit(jax.grad(by_hand))({'policy': params})
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-3, atol=1e-6)


# ------------------------------------------------------------------------------ REINFORCE++

def _reinforce_pp_loop(scores, kl, mask, beta, gamma):
  """Token rewards and discounted returns over each row's masked tokens, then whitened over the batch."""
  returns = np.zeros(mask.shape)
  for b in range(mask.shape[0]):
    idx = np.flatnonzero(mask[b])
    g = 0.0
    for j, t in enumerate(reversed(idx)):
      g = -beta * kl[b, t] + (scores[b] if j == 0 else 0.0) + gamma * g
      returns[b, t] = g
  vals = returns[mask > 0]
  return (returns - vals.mean()) / np.sqrt(vals.var() + 1e-8) * mask


@pytest.mark.parametrize('gamma', [1.0, 0.9])
def test_reinforce_pp_returns_with_token_kl_normalised_over_the_batch(gamma):
  rng = np.random.default_rng(5)
  mask = _mask([6, 3, 1, 5, 6, 2])
  mask[4, 2:4] = 0  # tokens the model did not write (a tool's result) in the middle of a response
  scores, kl = rng.normal(size=6), rng.normal(scale=0.2, size=mask.shape) * mask
  rollout = advantages.Rollout(jnp.asarray(scores, jnp.float32), jnp.asarray(kl, jnp.float32), jnp.asarray(mask),
                               kl_coef=0.3)
  adv, returns = advantages.get('reinforce_pp').fn(rollout, advantages.EstimatorConfig(gamma=gamma))
  assert returns is None
  np.testing.assert_allclose(adv, _reinforce_pp_loop(scores, kl, mask, 0.3, gamma), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ sampler vs trainer

def test_sampler_and_trainer_log_probs_agree_in_float32():
  """The same tiny float32 model samples (prefill + cached decode) and scores (one training forward) at
  temperature 1: the mean per-token |difference| is below 1e-5; scored at another temperature it is not."""
  model = Transformer(tiny_config(n_layers=2, dtype='float32'))
  params = _init(model, 3)
  rng = np.random.default_rng(6)
  lengths = [5, 3, 7, 1, 6, 4, 2, 7]
  prompt, pmask = sample.left_pad([rng.integers(5, 128, n) for n in lengths], 8, 8)
  sampling = sample.SamplingConfig(temperature=1.0, max_new_tokens=12, stop_ids=())
  out = sample.sample_jit(params, model, jnp.asarray(prompt), jnp.asarray(pmask), jax.random.key(0), sampling)
  sampled = {'tokens': out['tokens'], 'mask': out['mask'], 'response_mask': out['mask'], 'done': out['done'],
             'logprobs': out['logprobs']}
  reward_fn = lambda rm, tokens, segment_ids, positions, last_index: jnp.zeros(tokens.shape[0])

  def gap(temperature):
    score = jax.jit(rollouts.make_score(model, None, reward_fn, None, temperature=temperature))
    _, stats = score({'policy': params}, params, None, jnp.asarray(prompt), jnp.asarray(pmask), sampled,
                     jnp.zeros(8), jnp.float32(0.0))
    return np.asarray(stats['sampler_logprob_gap'])

  assert np.asarray(out['mask']).sum() == 8 * 12
  same = gap(1.0)
  assert same.max() < 1e-5, same
  assert gap(0.7).min() > 1e-2
