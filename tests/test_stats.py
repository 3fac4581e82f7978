"""Intervals against references: Wilson by hand, bootstrap against a normal approximation, pairing."""

import math

import numpy as np
import pytest

from lm import stats


def test_wilson_by_hand():
  # 7 of 10 at 95%: z = 1.959964; centre (0.7 + z^2/20) / (1 + z^2/10), half z sqrt(0.021 + z^2/400) / (1 + z^2/10)
  z = 1.959963985
  centre = (0.7 + z * z / 20) / (1 + z * z / 10)
  half = z * math.sqrt(0.7 * 0.3 / 10 + z * z / 400) / (1 + z * z / 10)
  assert stats.wilson(7, 10) == pytest.approx((centre - half, centre + half), abs=1e-7)
  low, high = stats.wilson(0, 50)
  assert low == 0.0 and high == pytest.approx(0.0713, abs=1e-4)  # not [0, 0]: no successes is not certainty


def test_a_binary_mean_uses_wilson_and_others_the_bootstrap():
  est = stats.mean([1] * 7 + [0] * 3)
  assert (est.value, est.n) == (0.7, 10) and (est.low, est.high) == pytest.approx(stats.wilson(7, 10))
  x = np.random.default_rng(1).normal(2.0, 1.0, size=400)
  est = stats.mean(x)
  se = x.std(ddof=1) / math.sqrt(len(x))
  assert est.low == pytest.approx(x.mean() - 1.96 * se, abs=0.02)  # the CLT interval, within resampling noise
  assert est.high == pytest.approx(x.mean() + 1.96 * se, abs=0.02)
  assert stats.mean([]).n == 0 and str(stats.mean([])) == '-'


def test_paired_difference_removes_what_the_prompts_share():
  rng = np.random.default_rng(0)
  difficulty = rng.normal(0, 3, size=200)           # a large per-prompt effect common to both models
  before = difficulty + rng.normal(0, 0.1, size=200)
  after = difficulty + 0.2 + rng.normal(0, 0.1, size=200)
  paired = stats.paired_difference(before, after)
  assert paired.value == pytest.approx(np.mean(after - before)) and paired.clears(0.1)
  unpaired_se = math.sqrt(before.var() / 200 + after.var() / 200)
  assert paired.high - paired.low < 0.2 * (2 * 1.96 * unpaired_se)  # far tighter than comparing two means
  with pytest.raises(ValueError, match='not the same prompts'):
    stats.paired_difference([1, 2], [1, 2, 3])


def test_clears_needs_the_whole_interval_past_the_minimum():
  assert stats.Estimate(0.3, 0.11, 0.5, 100).clears(0.1)
  assert not stats.Estimate(0.3, 0.09, 0.5, 100).clears(0.1)
  assert stats.Estimate(-0.3, -0.5, -0.11, 100).clears(-0.1) and not stats.Estimate(-0.3, -0.5, -0.09, 100).clears(-0.1)


def test_win_rate_counts_ties_half():
  est = stats.win_rate([0, 1, 1, 0], [1, 1, 0, 0])
  assert est.value == pytest.approx((1 + 0.5 + 0 + 0.5) / 4) and est.n == 4
