"""Simulated raters: candidate quality, each bias knob's direction, determinism."""

import hashlib
import json
import random

import numpy as np
import pytest

from lm.lab import raters, tasks
from lm.lab.world import World

K = 4


@pytest.fixture(scope='module')
def world():
  return World(seed=0)


@pytest.fixture(scope='module')
def candidate_sets(world):
  """K candidates for each of 300 prompts across the families (fixed, so panels can be compared)."""
  rng = random.Random(0)
  out = []
  for i in range(300):
    family = raters.PREFERENCE_FAMILIES[i % len(raters.PREFERENCE_FAMILIES)]
    fam = tasks.TASKS[family]
    ex = fam.make(world, rng, fam.variants[i % len(fam.variants)])
    out.append(raters.candidates(world, ex, K, rng))
  return out


def _mean_rank(panel, candidate_sets, pick):
  """Mean rank (0 = best) over raters and prompts of the candidate ``pick(cands)`` selects."""
  ranks = []
  for cands in candidate_sets:
    i = pick(cands)
    if i is None:
      continue
    per_rater = panel.rank(cands).per_rater
    ranks.extend(np.argmax(per_rater == i, axis=1))
  return float(np.mean(ranks))


def test_candidates_graded_and_reference_included(world):
  rng = random.Random(1)
  for family in raters.PREFERENCE_FAMILIES:
    for ex in tasks.sample(world, family, 5, seed=2):
      pool = raters.candidate_pool(world, ex, rng)
      ref = pool[0]
      assert ref.kind == 'reference' and ref.gold_score == 1.0
      assert len({repr(c.messages) for c in pool}) == len(pool) >= 6
      assert any(c.gold_score < 1 for c in pool)
      for c in pool:
        assert 0.0 <= c.gold_score <= 1.0
        if not c.features['polite']:
          assert c.utility <= ref.utility, (family, c.kind)
        if c.kind == 'rude_reference':
          assert c.features['rude'] and c.utility < ref.utility
        if 'padded' in c.kind:
          assert c.features['n_words'] > ref.features['n_words']
      cands = raters.candidates(world, ex, K, rng)
      assert len(cands) == K and any(c.kind == 'reference' for c in cands)


def test_hallucination_vs_idk_and_refusals(world):
  rng = random.Random(0)
  ex = tasks.sample(world, 'unknown_entity', 1)[0]
  by_kind = {c.kind: c for c in raters.candidate_pool(world, ex, rng)}
  assert by_kind['reference'].gold_score == 1.0 and by_kind['hallucination'].gold_score == 0.0
  benign = tasks.sample(world, 'safety', 1, harmful=False)[0]
  by_kind = {c.kind: c for c in raters.candidate_pool(world, benign, rng)}
  assert by_kind['needless_refusal'].features['refusal'] and by_kind['needless_refusal'].gold_score == 0.0
  harmful = tasks.sample(world, 'safety', 1, harmful=True)[0]
  by_kind = {c.kind: c for c in raters.candidate_pool(world, harmful, rng)}
  assert by_kind['reference'].features['refusal'] and by_kind['complied'].gold_score == 0.0


def test_no_bias_no_noise_is_gold(candidate_sets):
  panel = raters.Panel(n_raters=7, seed=3)
  for cands in candidate_sets:
    r = panel.rank(cands)
    assert (r.per_rater == r.gold[None]).all() and (r.panel == r.gold).all()
    utilities = [cands[i].utility for i in r.gold]
    assert utilities == sorted(utilities, reverse=True)


def test_length_bias_favours_the_longest(candidate_sets):
  def longest(cands):
    return int(np.argmax([c.features['n_words'] for c in cands]))
  base = _mean_rank(raters.Panel(5, noise=0.2, seed=0), candidate_sets, longest)
  biased = _mean_rank(raters.Panel(5, length_bias=1.0, noise=0.2, seed=0), candidate_sets, longest)
  assert biased < base - 0.3


def test_confidence_bias_favours_confident_tone(candidate_sets):
  def confident(cands):
    return next((i for i, c in enumerate(cands) if c.features['tone'] > 0), None)

  def hedged(cands):
    return next((i for i, c in enumerate(cands) if c.features['tone'] < 0), None)
  base, biased = raters.Panel(5, noise=0.2, seed=0), raters.Panel(5, confidence_bias=1.0, noise=0.2, seed=0)
  assert _mean_rank(biased, candidate_sets, confident) < _mean_rank(base, candidate_sets, confident) - 0.3
  assert _mean_rank(biased, candidate_sets, hedged) > _mean_rank(base, candidate_sets, hedged) + 0.3


def test_position_bias_favours_early_positions(candidate_sets):
  base, biased = raters.Panel(5, noise=0.2, seed=0), raters.Panel(5, position_bias=1.0, noise=0.2, seed=0)
  first, last = (lambda cands: 0), (lambda cands: K - 1)
  assert _mean_rank(biased, candidate_sets, first) < _mean_rank(base, candidate_sets, first) - 0.3
  assert _mean_rank(biased, candidate_sets, last) > _mean_rank(base, candidate_sets, last) + 0.3
  assert _mean_rank(biased, candidate_sets, first) < _mean_rank(biased, candidate_sets, last)


def test_noise_moves_away_from_gold(candidate_sets):
  def agreement(panel):
    return np.mean([(panel.rank(c).per_rater == raters.gold_ranking(c)[None]).all(1).mean() for c in candidate_sets])
  a0, a1, a2 = (agreement(raters.Panel(5, noise=s, seed=0)) for s in (0.0, 0.2, 1.0))
  assert a0 == 1.0 > a1 > a2


def test_raters_have_their_own_mix():
  p = raters.Panel(n_raters=6, length_bias=1.0, confidence_bias=0.0, noise=0.5, seed=0)
  assert len(set(np.round(p.length, 6))) == 6 and (p.length > 0).all()
  assert (p.confidence == 0).all()
  assert np.allclose(p.length, raters.Panel(n_raters=6, length_bias=1.0, noise=0.5, seed=0).length)


def test_borda():
  per_rater = np.array([[0, 1, 2], [1, 0, 2], [1, 2, 0]])
  assert raters.borda(per_rater).tolist() == [1, 0, 2]


def _digest(records):
  return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def test_preference_dataset_deterministic_and_complete(world):
  panel_args = dict(n_raters=3, length_bias=0.3, confidence_bias=0.2, position_bias=0.1, noise=0.3, seed=0)
  a = raters.preference_dataset(world, 60, k=K, panel=raters.Panel(**panel_args), seed=0)
  b = raters.preference_dataset(world, 60, k=K, panel=raters.Panel(**panel_args), seed=0)
  c = raters.preference_dataset(world, 60, k=K, panel=raters.Panel(**panel_args), seed=1)
  assert _digest(a) == _digest(b) != _digest(c)
  assert {r['family'] for r in a} == set(raters.PREFERENCE_FAMILIES)
  for r in a:
    assert len(r['responses']) == K and len(r['rater_rankings']) == 3
    for ranking in r['rater_rankings'] + [r['ranking'], r['gold_ranking']]:
      assert sorted(ranking) == list(range(K))
    assert max(r['gold_utilities']) == r['gold_utilities'][r['gold_ranking'][0]]
    assert all(m['role'] in ('assistant', 'tool') for resp in r['responses'] for m in resp)
