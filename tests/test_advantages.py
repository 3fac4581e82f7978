"""Group baselines (GRPO, RLOO) by hand, the estimator registry, and best-of-n's KL."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lm.rl import advantages, best_of_n


def test_registry_names_critics_and_kl_placement():
  assert set(advantages.ESTIMATORS) >= {'gae', 'grpo', 'rloo'}
  assert advantages.get('gae').critic and not advantages.get('grpo').critic and not advantages.get('rloo').critic
  assert [advantages.get(n).kl for n in ('gae', 'grpo', 'rloo')] == ['reward', 'loss', 'reward']
  with pytest.raises(ValueError, match="unknown advantage estimator 'ppo2'; valid: gae, grpo, rloo"):
    advantages.get('ppo2')


def test_grpo_by_hand():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0])  # two groups of 4
  got = np.asarray(advantages.grpo_advantages(r, 4, eps=0.0))
  s1, s2 = np.std([1, 0, 0, 1], ddof=1), np.std([2, 4, 6, 8], ddof=1)
  want = np.array([0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, -3 / s2, -1 / s2, 1 / s2, 3 / s2])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(advantages.grpo_advantages(r, 4, scale_by_std=False), [.5, -.5, -.5, .5, -3, -1, 1, 3])
  # a group where every response scores the same has no signal
  np.testing.assert_array_equal(advantages.grpo_advantages(jnp.ones(4), 4), 0.0)


def test_rloo_by_hand():
  r = jnp.array([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two groups of 3
  # 1 - (2 + 6) / 2 = -3; 2 - 3.5 = -1.5; 6 - 1.5 = 4.5; 0 - 1.5; 0 - 1.5; 3 - 0
  np.testing.assert_allclose(advantages.rloo_advantages(r, 3), [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
  with pytest.raises(ValueError, match='group_size >= 2'):
    advantages.rloo_advantages(r, 1)


def test_estimators_spread_the_sequence_advantage_over_the_response():
  mask = jnp.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], jnp.float32)
  kl = jnp.array([[0.5, 0.5, 0], [1.0, 0, 0], [0, 0, 0], [0.25, 0.25, 0]])
  rollout = advantages.Rollout(jnp.array([1.0, 2.0, 0.0, 1.0]), kl, mask, kl_coef=0.5, group_size=2)
  cfg = advantages.EstimatorConfig()
  adv, returns = advantages.get('rloo').fn(rollout, cfg)
  # sequence rewards: 1 - 0.5 = 0.5, 2 - 0.5 = 1.5 | 0, 1 - 0.25 = 0.75
  np.testing.assert_allclose(adv, [[-1, -1, 0], [1, 0, 0], [-0.75, -0.75, -0.75], [0.75, 0.75, 0]])
  assert returns is None
  adv, _ = advantages.get('grpo').fn(rollout, advantages.EstimatorConfig(scale_by_std=False))
  np.testing.assert_allclose(adv, [[-0.5, -0.5, 0], [0.5, 0, 0], [-0.5, -0.5, -0.5], [0.5, 0.5, 0]])


def test_gae_estimator_whitens_over_the_batch():
  mask = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
  rollout = advantages.Rollout(jnp.array([1.0, -1.0]), jnp.zeros((2, 3)), mask, jnp.zeros((2, 3)), 0.0)
  adv, returns = advantages.get('gae').fn(rollout, advantages.EstimatorConfig(gamma=1.0, lam=1.0))
  np.testing.assert_allclose(returns, [[1, 1, 1], [-1, -1, 0]])  # zero values: returns = rewards-to-go
  vals = np.array([1, 1, 1, -1, -1])
  np.testing.assert_allclose(np.asarray(adv)[mask > 0], (vals - vals.mean()) / vals.std(), rtol=1e-5)


def _exact_best_of_n_kl(m: int, n: int) -> float:
  """KL(best-of-n || uniform over m outcomes with distinct rewards): the i-th best of m is picked
  with probability (i/m)^n - ((i-1)/m)^n."""
  i = np.arange(1, m + 1, dtype=np.float64)
  p = (i / m) ** n - ((i - 1) / m) ** n
  p = p[p > 0]
  return float(np.sum(p * np.log(p * m)))


def test_best_of_n_kl_formula():
  assert best_of_n.kl(1) == 0.0
  assert best_of_n.kl(4) == pytest.approx(math.log(4) - 0.75)
  for n in (2, 4, 16):  # the formula is the limit of many distinct outcomes, and bounds it from above
    exact = _exact_best_of_n_kl(100_000, n)
    assert exact <= best_of_n.kl(n) and exact == pytest.approx(best_of_n.kl(n), abs=1e-3)
  with pytest.raises(ValueError, match='n >= 1'):
    best_of_n.kl(0)


def test_best_of_n_picks_the_highest_score_among_the_first_n():
  scores = np.array([[0.1, 0.9, 0.5, 2.0], [1.0, 0.0, 3.0, -1.0]])
  gold = np.array([[10, 11, 12, 13], [20, 21, 22, 23]])
  np.testing.assert_array_equal(best_of_n.select(gold, scores, 1), [10, 20])
  np.testing.assert_array_equal(best_of_n.select(gold, scores, 2), [11, 20])
  np.testing.assert_array_equal(best_of_n.select(gold, scores, 4), [13, 22])
  with pytest.raises(ValueError, match='n=5 must be in 1..4'):
    best_of_n.pick(scores, 5)
