"""Gao et al.'s over-optimisation forms: exact recovery of (alpha, beta), the peak, the stage's points."""

import numpy as np
import pytest

from lm.config import ConfigError
from lm.rl import overoptimization as oo
from lm.stages import overoptimization as stage


@pytest.mark.parametrize('form,alpha,beta', [('rl', 0.8, 0.3), ('bon', 1.2, 0.4)])
def test_fit_recovers_the_coefficients_and_the_peak(form, alpha, beta):
  d = np.linspace(0.1, 4.0, 25)
  noise = np.random.default_rng(0).normal(scale=1e-3, size=d.shape)
  f = oo.fit(np.r_[0.0, d], np.r_[0.0, oo.curve(d, alpha, beta, form) + noise], form)
  np.testing.assert_allclose([f['alpha'], f['beta']], [alpha, beta], rtol=0.02)
  assert f['r2'] > 0.999
  grid = np.linspace(1e-3, 20, 200_001)
  d_best = grid[np.argmax(oo.curve(grid, f['alpha'], f['beta'], form))]
  np.testing.assert_allclose(f['d_peak'], d_best, rtol=1e-3)
  np.testing.assert_allclose(f['kl_peak'], f['d_peak'] ** 2)


def test_a_curve_that_never_turns_down_has_no_peak_and_bad_input_is_named():
  d = np.linspace(0.1, 2, 10)
  assert oo.fit(d, 0.5 * d + 0.1 * d * np.log(d), 'rl')['kl_peak'] == float('inf')  # beta < 0
  with pytest.raises(ValueError, match='form'):
    oo.fit(d, d, 'linear')
  with pytest.raises(ValueError, match='at least 2 points'):
    oo.fit([0.0, 0.5], [0.0, 0.1], 'bon')


def test_points_come_from_eval_rows_or_best_of_n_rows_sorted_by_kl():
  # the k3 estimate (never negative) is the KL axis; k1 (eval_kl) is not read
  rows = [{'step': 1, 'kl': 0.1},
          {'step': 10, 'eval_kl': 0.6, 'eval_kl_k3': 0.5, 'eval_gold_reward': 0.3, 'eval_proxy_reward': 1.0},
          {'step': 5, 'eval_kl': -0.1, 'eval_kl_k3': 0.2, 'eval_gold_reward': 0.2, 'eval_proxy_reward': 0.5},
          {'step': 2, 'eval_kl': -0.2, 'eval_kl_k3': 0.0, 'eval_gold_reward': 0.1, 'eval_proxy_reward': 0.0}]
  p = stage.points(rows, 'ppo')
  np.testing.assert_allclose(p['kl'], [0.0, 0.2, 0.5])
  np.testing.assert_allclose(p['gold'], [0.1, 0.2, 0.3])
  bon = [{'step': n, 'n': n, 'kl': np.log(n) - (n - 1) / n, 'gold_reward': g, 'proxy_reward': 2 * g}
         for n, g in ((1, 0.1), (4, 0.3), (2, 0.2))]
  np.testing.assert_allclose(stage.points(bon, 'best_of_n')['proxy'], [0.2, 0.4, 0.6])
  with pytest.raises(ConfigError, match='needs >= 3'):
    stage.points(rows[:2], 'ppo')
