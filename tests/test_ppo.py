"""PPO pieces against hand computations and float64 references, and PPO on a bandit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import optim
from lm.configs import optim as optim_presets
from lm.inference import sample
from lm.model.transformer import Transformer
from lm.rl import advantages, best_of_n, ppo, rollouts
from lm.steps.common import init_state
from tests.conftest import tiny_config


def _init(model, seed):
  return jax.jit(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))['params']))(jax.random.key(seed))


def _prefix_masks(rng, B, N):
  lengths = rng.integers(0, N + 1, B)
  lengths[0], lengths[1] = N, 0
  return (np.arange(N)[None, :] < lengths[:, None]).astype(np.float32)


def _gae_loop(rewards, values, mask, gamma, lam):
  """The textbook backward loop in float64, one row at a time."""
  B, N = rewards.shape
  adv = np.zeros((B, N))
  for b in range(B):
    n = int(mask[b].sum())
    last = 0.0
    for t in reversed(range(n)):
      next_value = values[b, t + 1] if t + 1 < n else 0.0
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      last = delta + gamma * lam * last
      adv[b, t] = last
  returns = (adv + values) * mask
  return adv, returns


def test_gae_matches_a_float64_loop():
  rng = np.random.default_rng(0)
  B, N = 6, 9
  rewards, values = rng.normal(size=(B, N)), rng.normal(size=(B, N))
  mask = _prefix_masks(rng, B, N)
  for gamma, lam in ((1.0, 0.95), (0.9, 0.5), (0.99, 1.0)):
    adv, ret = ppo.gae(jnp.asarray(rewards * mask, jnp.float32), jnp.asarray(values, jnp.float32),
                       jnp.asarray(mask), gamma, lam)
    want_adv, want_ret = _gae_loop(rewards * mask, values, mask, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)


def test_token_rewards_put_the_score_at_the_last_token_and_kl_everywhere():
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], jnp.float32)
  kl = jnp.array([[0.1, 0.2, 0.3, 9.0], [0.5, 9.0, 9.0, 9.0]])
  r = ppo.token_rewards(jnp.array([2.0, -1.0]), kl * mask, mask, 0.5)
  np.testing.assert_allclose(r, [[-0.05, -0.1, 2.0 - 0.15, 0.0], [-1.0 - 0.25, 0, 0, 0]], rtol=1e-6)


def test_unfinished_responses_get_the_penalty():
  scores, finished = jnp.array([0.3, 1.5, -0.2]), jnp.array([True, False, True])
  np.testing.assert_allclose(ppo.penalize_unfinished(scores, finished, -1.0), [0.3, -1.0, -0.2])
  np.testing.assert_allclose(ppo.penalize_unfinished(scores, finished, None), scores)


def test_whiten_uses_masked_entries_only():
  rng = np.random.default_rng(1)
  x, mask = rng.normal(size=(4, 5)), _prefix_masks(rng, 4, 5)
  got = np.asarray(ppo.whiten(jnp.asarray(x, jnp.float32), jnp.asarray(mask)))
  vals = x[mask > 0]
  want = (x - vals.mean()) / np.sqrt(vals.var() + 1e-8) * mask
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  kept = np.asarray(ppo.whiten(jnp.asarray(x, jnp.float32), jnp.asarray(mask), shift_mean=False))
  np.testing.assert_allclose(kept, (want + vals.mean()) * mask, rtol=1e-5, atol=1e-6)


def test_kl_estimates_are_zero_for_identical_policies_and_k3_is_unbiased():
  logp = jnp.log(jnp.array([[0.2, 0.5, 0.3]]))
  np.testing.assert_array_equal(ppo.kl_k1(logp, logp), 0.0)
  np.testing.assert_array_equal(ppo.kl_k3(logp, logp), 0.0)
  # the expectation over p of each estimator is KL(p || q), exactly
  p, q = np.array([0.1, 0.6, 0.3]), np.array([0.3, 0.3, 0.4])
  kl = float(np.sum(p * np.log(p / q)))
  for estimator in (ppo.kl_k1, ppo.kl_k3):
    per_token = np.asarray(estimator(jnp.log(p), jnp.log(q)), np.float64)
    assert abs(float(np.sum(p * per_token)) - kl) < 1e-6
  assert np.all(np.asarray(ppo.kl_k3(jnp.log(p), jnp.log(q))) >= 0)


def test_adaptive_kl_controller_follows_ziegler():
  # KL above target by more than 20%: the error is clipped at 0.2
  coef = lambda kl: float(ppo.adaptive_kl_coef(0.1, kl, 64, target=6.0, horizon=10000))
  assert coef(12.0) == pytest.approx(0.1 * (1 + 0.2 * 64 / 1e4))
  assert coef(5.4) == pytest.approx(0.1 * (1 - 0.1 * 64 / 1e4))


def test_clipped_losses_by_hand():
  adv = jnp.array([[1.0, 1.0, -1.0, -1.0]])
  logp = jnp.log(jnp.array([[1.5, 0.5, 1.5, 0.5]]))  # ratios against old log-prob 0
  loss, clipped = ppo.policy_loss(logp, jnp.zeros((1, 4)), adv, 0.2)
  # A > 0: min(r, clip(r)) A -> 1.2, 0.5; A < 0: max(r, clip(r)) |A| -> 1.5, 0.8
  np.testing.assert_allclose(-loss, [[1.2, 0.5, -1.5, -0.8]], rtol=1e-6)
  np.testing.assert_array_equal(clipped, [[1, 0, 0, 1]])
  v = ppo.value_loss(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.0]), jnp.array([0.0, 1.0]), 0.2)
  # row 0: unclipped (1 - 0)^2 = 1, clipped value 0.7 -> 0.49; max = 1. row 1: both (0 - 1)^2
  np.testing.assert_allclose(v, [0.5, 0.5])
  v = ppo.value_loss(jnp.array([0.0]), jnp.array([0.5]), jnp.array([0.0]), 0.2)
  np.testing.assert_allclose(v, [0.5 * 0.3 ** 2], rtol=1e-6)  # clipped value 0.3 is further from 0


def test_layout_positions_and_last_index():
  prompt = jnp.array([[0, 0, 5, 6], [4, 5, 9, 6]])
  pmask = jnp.array([[0, 0, 1, 1], [1, 1, 1, 1]])
  resp = jnp.array([[11, 7, 0], [12, 13, 14]])
  rmask = jnp.array([[1, 1, 0], [1, 1, 1]])
  seq = ppo.layout(prompt, pmask, resp, rmask)
  np.testing.assert_array_equal(seq['positions'], [[0, 0, 0, 1, 2, 3, 0], [0, 1, 2, 3, 4, 5, 6]])
  np.testing.assert_array_equal(seq['segment_ids'], [[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(seq['last_index'], [5, 6])


@pytest.fixture(scope='module')
def policy():
  model = Transformer(tiny_config(n_layers=1))
  return model, _init(model, 0)


@pytest.mark.parametrize('head', [{}, {'tie_embeddings': False, 'final_softcap': 5.0}])
def test_response_logprobs_match_the_model_logits(head):
  model = Transformer(tiny_config(n_layers=1, **head))
  params = _init(model, 0)
  rng = np.random.default_rng(2)
  tokens = jnp.asarray(rng.integers(0, 128, (2, 10)), jnp.int32)
  seg, pos = jnp.ones((2, 10), jnp.int32), jnp.broadcast_to(jnp.arange(10), (2, 10))
  fn = jax.jit(lambda p: (ppo.response_logprobs(model, p, tokens, seg, pos, start=6, temperature=0.7),
                          model.apply({'params': p}, tokens)['logits']))
  (logp, entropy), logits = fn(params)
  logits = np.asarray(logits, np.float64) / 0.7
  ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = np.take_along_axis(ref[:, 5:9], np.asarray(tokens)[:, 6:, None], -1)[..., 0]
  np.testing.assert_allclose(logp, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(entropy, -(np.exp(ref[:, 5:9]) * ref[:, 5:9]).sum(-1), rtol=1e-4)


def test_at_ratio_one_the_clipped_loss_is_the_policy_gradient_loss(policy):
  model, params = policy
  rng = np.random.default_rng(3)
  B, P, N = 4, 5, 6
  tokens = jnp.asarray(rng.integers(0, 128, (B, P + N)), jnp.int32)
  mask = jnp.asarray(_prefix_masks(rng, B, N)[:, ::-1][:, ::-1])
  seq = ppo.layout(tokens[:, :P], jnp.ones((B, P), jnp.int32), tokens[:, P:], mask)
  adv = jnp.asarray(rng.normal(size=(B, N)), jnp.float32) * mask
  logp, _ = jax.jit(ppo.response_logprobs, static_argnums=(0, 5))(model, params, seq['tokens'], seq['segment_ids'],
                                                                    seq['positions'], P)
  batch = {'tokens': seq['tokens'], 'segment_ids': seq['segment_ids'], 'positions': seq['positions'], 'mask': mask,
           'old_logprobs': logp, 'advantages': adv, 'ref_logprobs': logp, 'kl_coef': jnp.zeros((B,))}
  loss_sums = ppo.make_loss_sums(model, None, ppo.LossConfig(clip_ratio=0.2))

  def pg(p):  # REINFORCE with the advantages: -sum A log pi
    lp, _ = ppo.response_logprobs(model, p['policy'], seq['tokens'], seq['segment_ids'], seq['positions'], P)
    return -jnp.sum(adv * lp * mask)

  value, grads = jax.jit(jax.value_and_grad(lambda p: loss_sums(p, batch, None)[0]))({'policy': params})
  np.testing.assert_allclose(value, -jnp.sum(adv * mask), rtol=1e-5)
  want = jax.jit(jax.grad(pg))({'policy': params})
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6)


def test_ppo_raises_the_probability_of_the_best_response():
  """A one-token bandit: reward 1 for token 20 as the whole response, 0 otherwise."""
  cfg = tiny_config(vocab_size=32, n_layers=1)
  model, value_model = Transformer(cfg), Transformer(tiny_config(vocab_size=32, n_layers=1, lm_head=False,
                                                                 scalar_head=True))
  ref = _init(model, 0)
  target, B, P = 20, 32, 4
  prompt, pmask = jnp.tile(jnp.array([[0, 5, 9, 6]], jnp.int32), (B, 1)), jnp.tile(jnp.array([[0, 1, 1, 1]]), (B, 1))

  def reward_fn(_, tokens, segment_ids, positions, last_index):
    return (tokens[:, P] == target).astype(jnp.float32)

  score = jax.jit(rollouts.make_score(model, value_model, reward_fn, advantages.get('gae'),
                                      advantages.EstimatorConfig(gamma=1.0, lam=0.95)))
  opt = optim_presets.adamw(3e-3, warmup_steps=0, weight_decay=0.0, min_lr_ratio=1.0)
  tx, schedule = optim.make_optimizer(opt, 1000)
  loss_sums = ppo.make_loss_sums(model, value_model, ppo.LossConfig(vf_coef=0.5))
  update = jax.jit(ppo.make_update(loss_sums, tx, schedule, minibatch_size=16, epochs=2))
  state = init_state({'policy': ref, 'value': _init(value_model, 1)}, tx)
  sampling = sample.SamplingConfig(max_new_tokens=1)

  @jax.jit
  def p_target(params):
    logits = model.apply({'params': params}, prompt[:1, 1:])['logits'][0, -1]
    return jax.nn.softmax(logits)[target]

  before = p_target(ref)
  for it in range(12):
    out = sample.sample_jit(state['params']['policy'], model, prompt, pmask, jax.random.key(it), sampling)
    sampled = {**out, 'response_mask': out['mask']}  # no tool results: the model wrote every token
    batch, stats = score(state['params'], ref, None, prompt, pmask, sampled, jnp.zeros((B,)), jnp.float32(0.01))
    np.testing.assert_allclose(stats['non_padding'], 4 / 5, rtol=1e-7)  # 3 prompt tokens + 1 of 5 slots
    state, metrics = update(state, batch, jax.random.key(100 + it))
  after = p_target(state['params']['policy'])
  assert before < 0.1 and after > 0.6, (float(before), float(after))


def test_rewards_and_advantages_follow_the_model_tokens_whatever_the_gaps():
  """A tool result inside a turn (mask 0 between model tokens) and left padding: the score lands on the
  last model token, and GAE steps from model token to model token (here by hand)."""
  mask = np.array([[0, 1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 0]], np.float32)
  scores = np.array([2.0, -1.0], np.float32)
  kl = np.arange(14, dtype=np.float32).reshape(2, 7) / 10
  rewards = np.asarray(ppo.token_rewards(scores, kl, mask, 0.5))
  expected = -0.5 * kl * mask
  expected[0, 5] += 2.0  # the last model token of row 0 is at 5, not at sum(mask) - 1 = 2
  expected[1, 2] += -1.0
  np.testing.assert_allclose(rewards, expected, rtol=1e-6)
  values = np.array([[9, 1.0, 2.0, 9, 9, 3.0, 9], [1.0, 2.0, 3.0, 9, 9, 9, 9]], np.float32)
  gamma, lam = 0.9, 0.8
  adv, ret = (np.asarray(x) for x in ppo.gae(rewards, values, mask, gamma, lam))
  for b, steps in ((0, [1, 2, 5]), (1, [0, 1, 2])):  # the model's tokens, in order
    a_next, v_next = 0.0, 0.0
    for t in reversed(steps):
      delta = rewards[b, t] + gamma * v_next - values[b, t]
      a_next = delta + gamma * lam * a_next
      assert adv[b, t] == pytest.approx(a_next, rel=1e-5), (b, t)
      assert ret[b, t] == pytest.approx(a_next + values[b, t], rel=1e-5)
      v_next = values[b, t]
  assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_a_group_of_one_is_an_error_and_nan_scores_never_win_best_of_n():
  with pytest.raises(ValueError, match='group_size >= 2'):
    advantages.grpo_advantages(np.ones(4, np.float32), 1)
  with pytest.raises(ValueError, match='sample 1 of prompt 0 is not finite'):
    best_of_n.pick(np.array([[0.1, np.nan, 0.3]]), 3)
  assert best_of_n.pick(np.array([[0.1, np.nan, 0.3]]), 1).tolist() == [0]  # only the first is looked at
