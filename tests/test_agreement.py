"""Inter-rater agreement: Kendall's W and Krippendorff's ordinal alpha against hand computations and known
values, and the per-family summary of ranking records."""

import itertools

import numpy as np
import pytest

from lm.lab import agreement, raters
from lm.lab.world import World


def _alpha_by_hand(values):
  """Krippendorff's ordinal alpha by the textbook's loops (float64, pairable values only)."""
  units = [[v for v in col if not np.isnan(v)] for col in np.asarray(values, np.float64).T]
  units = [u for u in units if len(u) >= 2]
  cats = sorted({v for u in units for v in u})
  o = {(c, k): 0.0 for c in cats for k in cats}
  for u in units:
    for i, j in itertools.permutations(range(len(u)), 2):
      o[(u[i], u[j])] += 1 / (len(u) - 1)
  n_c = {c: sum(o[(c, k)] for k in cats) for c in cats}
  n = sum(n_c.values())

  def delta(c, k):
    lo, hi = sorted((cats.index(c), cats.index(k)))
    return (sum(n_c[cats[g]] for g in range(lo, hi + 1)) - (n_c[c] + n_c[k]) / 2) ** 2
  observed = sum(o[(c, k)] * delta(c, k) for c in cats for k in cats)
  expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in cats for k in cats)
  return 1 - (n - 1) * observed / expected


def test_kendall_w_by_hand():
  # 3 raters, 4 candidates: rank sums 1, 3, 6, 8 (0-based) around their mean 4.5, S = 12.25 + 2.25 + 2.25 + 12.25
  ranks = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [1, 0, 3, 2]])
  assert agreement.kendall_w(ranks) == pytest.approx(12 * 29 / (3 ** 2 * (4 ** 3 - 4)))
  assert agreement.ranks([[2, 0, 1]]).tolist() == [[1, 2, 0]]  # candidate 2 first, then 0, then 1


def test_identical_raters_agree_fully_and_independent_ones_by_chance():
  rng = np.random.default_rng(0)
  same = np.tile(agreement.ranks([rng.permutation(4)]), (5, 1))
  assert agreement.kendall_w(same) == pytest.approx(1.0)
  assert agreement.krippendorff_alpha(same) == pytest.approx(1.0)
  prompts = [agreement.ranks(np.stack([rng.permutation(4) for _ in range(5)])) for _ in range(3000)]
  w = np.mean([agreement.kendall_w(p) for p in prompts])
  assert w == pytest.approx(1 / 5, abs=0.01)  # E[W] = 1/R for independent raters
  assert agreement.mean_spearman(w, 5) == pytest.approx(0.0, abs=0.015)
  assert agreement.krippendorff_alpha(np.concatenate(prompts, 1)) == pytest.approx(0.0, abs=0.01)
  reversed_pairs = [np.stack([p, 3 - p]) for p in (agreement.ranks([rng.permutation(4)])[0] for _ in range(500))]
  assert agreement.krippendorff_alpha(np.concatenate(reversed_pairs, 1)) < -0.5  # systematic disagreement


def test_krippendorff_alpha_known_value_and_by_hand():
  """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability', the 4 observers x 12 units example
  with missing values: ordinal alpha 0.815."""
  n = np.nan
  values = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
  assert agreement.krippendorff_alpha(values) == pytest.approx(0.815, abs=5e-4)
  rng = np.random.default_rng(1)
  for _ in range(5):
    v = rng.integers(0, 4, size=(4, 9)).astype(float)
    v[rng.random(v.shape) < 0.2] = np.nan
    assert agreement.krippendorff_alpha(v) == pytest.approx(_alpha_by_hand(v), abs=1e-12)


def _record(family, rater_rankings, ranking, gold):
  return {'family': family, 'rater_rankings': rater_rankings, 'ranking': ranking, 'gold_utilities': gold}


def test_summary_per_family_and_domain_by_hand():
  records = [_record('arithmetic', [[0, 1, 2], [0, 1, 2]], [0, 1, 2], [1.0, 0.5, 0.0]),
             _record('arithmetic', [[0, 1, 2], [2, 1, 0]], [1, 0, 2], [1.0, 0.0, 0.0]),
             _record('joke', [[2, 1, 0], [1, 2, 0]], [2, 1, 0], [0.2, 0.5, 0.9]),
             _record('safety', [[0, 1]], [0, 1], [1.0, 0.0])]  # one rater: no agreement to measure
  s = agreement.summary(records)
  w_opposite = agreement.kendall_w(agreement.ranks([[0, 1, 2], [2, 1, 0]]))
  assert w_opposite == pytest.approx(0.0)
  assert s['kendall_w[arithmetic]'] == pytest.approx((1 + w_opposite) / 2)
  assert s['kendall_w[domain:math]'] == s['kendall_w[arithmetic]'] == s['kendall_w[objective]']
  assert s['agreement_prompts'] == 3 and s['agreement_prompts[safety]'] == 0 and np.isnan(s['kendall_w[safety]'])
  # the panel's ranking against gold: arithmetic 3 of 3 pairs, then 1 of 2 (0 ranked below 1); joke 3 of 3
  assert s['panel_gold_accuracy[arithmetic]'] == pytest.approx(4 / 5)
  assert s['panel_gold_accuracy[joke]'] == 1.0 and s['panel_gold_accuracy'] == pytest.approx(7 / 8)
  assert s['alpha[joke]'] == pytest.approx(_alpha_by_hand(agreement.ranks([[2, 1, 0], [1, 2, 0]])))


def test_panel_agreement_falls_with_noise_tastes_and_lay_raters():
  world = World(seed=0)
  families = ('arithmetic', 'world_qa', 'joke', 'slogan')

  def summary(**panel):
    return agreement.summary(raters.preference_dataset(world, 200, k=4, panel=raters.Panel(**panel), seed=0,
                                                       families=families))
  clean, noisy = summary(noise=0.0), summary(noise=1.0)
  assert clean['alpha[objective]'] == pytest.approx(1.0) and clean['panel_gold_accuracy[objective]'] == 1.0
  assert noisy['alpha[objective]'] < clean['alpha[objective]'] - 0.3
  assert clean['alpha[domain:subjective]'] < clean['alpha[objective]'] - 0.15  # tastes differ, even noiseless
  critics, lay = summary(noise=0.1, experts=1.0), summary(noise=0.1, experts=0.0)
  for group in ('objective', 'domain:subjective'):
    assert critics[f'alpha[{group}]'] > lay[f'alpha[{group}]'] + 0.2, group
    assert critics[f'panel_gold_accuracy[{group}]'] > lay[f'panel_gold_accuracy[{group}]'] + 0.05, group
