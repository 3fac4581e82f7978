"""The claims table: each claim's before/after/effect read from results as the launcher returns them."""

import math

import pytest

from lm.cli import claims


def test_single_run_claims_read_the_eval_headline():
  results = {'eval': {'base.format_following': 0.1, 'sft.format_following': 0.9, 'sft.accuracy': 0.3,
                      'rlhf.accuracy': 0.25, 'base.harmful_refusal_rate': 0.0, 'sft.harmful_refusal_rate': 0.8,
                      'sft.over_refusal_rate': 0.05}}
  fmt = claims.row(claims.BY_NAME['sft_format'], results)
  assert (fmt['before'], fmt['after'], fmt['holds']) == (0.1, 0.9, True)
  assert fmt['effect'] == pytest.approx(0.8)
  gold = claims.row(claims.BY_NAME['rlhf_gold'], results)
  assert gold['effect'] == pytest.approx(-0.05) and not gold['holds']  # reported, not hidden
  assert claims.row(claims.BY_NAME['over_refusal'], results)['holds']  # 0.05 <= 0.1


def test_variant_claims_and_lower_is_better():
  halluc = claims.row(claims.BY_NAME['hallucination'], {
      'with_idk': {'eval': {'sft.hallucination_rate': 0.2}}, 'without_idk': {'eval': {'sft.hallucination_rate': 0.9}}})
  assert (halluc['before'], halluc['after'], halluc['holds']) == (0.9, 0.2, True)
  math_row = claims.row(claims.BY_NAME['math_thinking'], {
      'direct': {'eval': {'sft.acc[arithmetic:digits=1]': 0.5, 'sft.acc[arithmetic:digits=2]': 0.1, 'sft.accuracy': 1}},
      'thinking': {'eval': {'sft.acc[arithmetic:digits=1]': 0.7, 'sft.acc[arithmetic:digits=2]': 0.5}}})
  assert math_row['before'] == pytest.approx(0.3) and math_row['after'] == pytest.approx(0.6)
  hack = claims.row(claims.BY_NAME['reward_hacking'], {'ppo': {'overoptimization': {
      'gold_gain_at_kl_max': 0.1, 'gold_gain_best': 0.3}}})
  assert hack['holds']


def test_missing_numbers_say_so_in_the_table():
  r = claims.row(claims.BY_NAME['tools'], {'none': {'eval': {}}})
  assert r['measure'].startswith('not measured: missing') and not r['holds'] and math.isnan(r['effect'])
  table = claims.markdown([r]).splitlines()
  assert table[0].startswith('| claim |') and '| no |' in table[2]


def test_cli_rejects_an_unknown_claim(capsys):
  with pytest.raises(SystemExit):
    claims.main(['--workdir', '/nonexistent', '--only', 'flat_earth'])
  assert 'unknown claim' in capsys.readouterr().err
