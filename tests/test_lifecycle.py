"""The lifecycle end to end (smoke sizes) and the RLHF claim experiments, each ending in its table.

One lifecycle smoke run (data -> tokenizer -> pretrain -> SFT -> reward -> PPO -> eval) serves every
test: the claim experiments' ``<workdir>/shared`` is seeded with its stages (the launcher skips a
stage whose outputs.json exists), so only their variants run here.
"""

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as lm_config
from lm import metrics, tokenizer
from lm.cli import claims, launch
from lm.data import builders
from lm.inference import sample
from lm.lab import tasks
from lm.rl import reward_model
from lm.stages import common

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def lifecycle(tmp_path_factory):
  config = lm_config.load(str(REPO / 'experiments/lifecycle.py:smoke'))
  workdir = tmp_path_factory.mktemp('lifecycle')
  return config, workdir, launch.launch(config, workdir)


def test_lifecycle_runs_every_stage_and_reports_every_model(lifecycle):
  config, workdir, out = lifecycle
  assert tuple(out) == config.stages
  for stage in config.stages:
    assert (workdir / stage / 'outputs.json').exists(), stage
  for stage in ('pretrain', 'sft', 'reward'):
    assert out[stage].get('step') == getattr(config, stage).steps
  assert 0 <= out['reward'].get('eval_gold_accuracy') <= 1
  assert [r['step'] for r in metrics.read(workdir, 'rlhf')] == list(range(1, config.rlhf.iterations + 1))
  copying = [r for r in metrics.read(workdir, 'pretrain') if 'copy[random]' in r]  # lm.probes at each eval
  assert [r['step'] for r in copying] == [4, 8, 12] and all(0 <= r['copy[operand]'] <= 1 for r in copying)
  assert 'Copying as pretraining trains' in (workdir / 'report.md').read_text()
  for stage in ('pretrain', 'sft'):  # the fact probe (lm.probes) at each eval: :smoke turns it on
    facts = [r for r in metrics.read(workdir, stage) if 'facts_known[eval]' in r]
    assert [r['step'] for r in facts] == [4, 8, 12] and all(0 <= r['facts_known[other]'] <= 1 for r in facts)
  assert 'World facts known as the model trains' in (workdir / 'report.md').read_text()
  report = (workdir / 'eval' / 'report.md').read_text()
  header = next(line for line in report.splitlines() if line.startswith('|'))
  for column in ('base', 'sft', 'rlhf'):
    assert f' {column} ' in header, header
  for row in ('format', 'harmful'):
    assert row in report, row


def test_reward_stage_starts_from_sft_and_normalises_on_reference_samples(lifecycle):
  config, workdir, out = lifecycle
  rw, sft = out['reward'], out['sft']
  assert rw.model['scalar_head'] and not rw.model['lm_head']
  mesh, rules = common.mesh_and_rules(config)
  params, reward_fn = reward_model.load(rw, mesh, rules)
  # the trunk trained on from the SFT weights: embeddings moved, but not far
  policy = common.load_params(sft, common.model_from_config(config), mesh, rules)
  drift = float(jnp.abs(params['embed'] - policy['embed']).max())
  assert 0 < drift < 0.1, drift
  # rewards of the same reference samples are normalised to mean 0, std 1
  tok = tokenizer.load(sft.tokenizer)
  records = reward_model.select(builders.read(builders.PreferenceRankings, out['preferences'].tfds_dir, 'train'),
                                config.reward.data)
  prompts = [tasks.without_tools(r['prompt']) for r in records[:config.reward.normalize_prompts]]
  sampling = sample.SamplingConfig(temperature=config.reward.normalize_temperature,
                                   max_new_tokens=config.reward.normalize_max_new_tokens)
  samples = reward_model.policy_samples(tok, common.model_from_config(config, tok), policy, prompts, sampling,
                                  config.reward.batch_size * 4, config.seed, mesh, rules)
  rows = reward_model.score_rows(samples, config.reward.seq_len, tok.pad_id)
  rewards = reward_model.batched_rewards(reward_fn, params, rows, 16, mesh, rules)
  np.testing.assert_allclose([rewards.mean(), rewards.std()], [0.0, 1.0], atol=1e-3)


def _claim(name, lifecycle, tmp_path, reuse=None):
  """Runs experiment ``name`` with the lifecycle run's ``reuse`` stages (default: its shared stages) as its own."""
  _, shared_run, _ = lifecycle
  config = lm_config.load(str(REPO / f'experiments/{name}.py:smoke'))
  for stage in config.shared_stages if reuse is None else reuse:
    shutil.copytree(shared_run / stage, tmp_path / 'shared' / stage)
  results = launch.launch(config, tmp_path)
  rows = (tmp_path / 'comparison.md').read_text().splitlines()
  assert rows[0] == '| variant | ' + ' | '.join(config.comparison.columns) + ' |'
  return results, {r.split('|')[1].strip() for r in rows[2:]}


def test_overoptimization_fits_both_forms(lifecycle, tmp_path):
  results, variants = _claim('overoptimization', lifecycle, tmp_path)
  assert variants == {'ppo', 'best_of_n'}
  assert results['ppo']['overoptimization'].get('form') == 'rl'
  assert results['best_of_n']['overoptimization'].get('form') == 'bon'
  assert (tmp_path / 'best_of_n' / 'overoptimization' / 'curves.png').read_bytes()[:4] == b'\x89PNG'


def test_ppo_vs_dpo_vs_grpo_plots_the_frontier(lifecycle, tmp_path):
  results, variants = _claim('ppo_vs_dpo_vs_grpo', lifecycle, tmp_path)
  assert variants == {'ppo_weak_kl', 'dpo_weak_kl'}
  assert results['dpo_weak_kl']['rlhf'].algorithm == 'dpo'
  assert (tmp_path / 'comparison.png').read_bytes()[:4] == b'\x89PNG'


def test_rater_bias_panels_differ_on_the_same_candidates(lifecycle, tmp_path):
  results, _ = _claim('rater_bias', lifecycle, tmp_path)
  biased, unbiased = results['length_biased'], results['unbiased']
  assert biased['preferences'].panel['length_bias'] == 1.0 and unbiased['preferences'].panel['length_bias'] == 0
  # the same candidates: a panel that likes length prefers the longer answers more
  assert biased['reward'].get('length_correlation_panel') > unbiased['reward'].get('length_correlation_panel')
  assert biased['reward'].get('length_correlation_gold') == pytest.approx(
      unbiased['reward'].get('length_correlation_gold'))


def test_expert_raters_rank_the_same_candidates(lifecycle, tmp_path):
  results, variants = _claim('expert_raters', lifecycle, tmp_path, reuse=('tokenizer', 'pretrain'))
  assert variants == {'lay', 'expert', 'mixed'}
  lay, expert = results['lay'], results['expert']
  assert lay['preferences'].panel['experts'] == 0.0 and expert['preferences'].panel['experts'] == 1.0
  # the same candidates, ranked closer to gold by experts; the reward models measured per domain
  assert expert['preferences'].get('panel_gold_accuracy[objective]') > lay['preferences'].get(
      'panel_gold_accuracy[objective]')
  for domain in ('math', 'world', 'veltic', 'safety', 'subjective'):
    assert 0 <= lay['reward'].get(f'heldout_gold_accuracy[domain:{domain}]') <= 1, domain
  row = claims.row(claims.BY_NAME['expert_raters'], results)
  assert row['n'] == lay['reward'].get('heldout_prompts') and 'per domain: math' in row['note']
  # the RLHF models answered the same eval prompts
  assert claims.row(claims.BY_NAME['expert_rlhf'], results)['n'] == len(claims.traces(results, 'rlhf', 'lay')) > 0


def test_subjective_raters_agree_less_where_taste_decides(lifecycle, tmp_path):
  results, variants = _claim('subjective', lifecycle, tmp_path, reuse=('tokenizer', 'pretrain'))
  assert variants == {'tastes', 'critics'}
  tastes, critics = results['tastes']['preferences'], results['critics']['preferences']
  assert tastes.get('kendall_w[domain:subjective]') < tastes.get('kendall_w[objective]')
  assert tastes.get('alpha[domain:subjective]') < critics.get('alpha[domain:subjective]')
  reward = results['tastes']['reward']
  assert reward.get('heldout_prompts[joke]') + reward.get('heldout_prompts[slogan]') == reward.get(
      'heldout_prompts[domain:subjective]') > 0
  row = claims.row(claims.BY_NAME['subjective'], results)
  assert row['n'] == reward.get('heldout_prompts') and "Kendall's W" in row['note']
  families = {r['family'] for r in claims.traces(results, 'rlhf', 'tastes')}
  assert {'joke', 'slogan', 'arithmetic'} <= families
  assert claims.row(claims.BY_NAME['subjective_rlhf'], results)['n'] == len(claims.traces(results, 'sft', 'tastes'))
  assert "Kendall's W" in (tmp_path / 'tastes' / 'report.md').read_text()  # the report card's per-family table


def test_rlhf_vs_rlvr_trains_on_each_reward_and_logs_gold(lifecycle, tmp_path):
  results, variants = _claim('rlhf_vs_rlvr', lifecycle, tmp_path)
  assert variants == {'model', 'gold', 'mix'}
  for name in variants:
    rows = [r for r in metrics.read(tmp_path / name, 'rlhf') if 'train_reward' in r]
    assert rows and all('gold_reward' in r and 'proxy_reward' in r for r in rows)
    if name == 'gold':  # RLVR: the reward trained on is the gold score itself
      assert all(abs(r['train_reward'] - r['gold_reward']) < 1e-6 for r in rows)
    if name == 'model':
      assert all(abs(r['train_reward'] - r['proxy_reward']) < 1e-6 for r in rows)
    if name == 'mix':
      assert all(abs(r['train_reward'] - 0.5 * (r['proxy_reward'] + r['gold_reward'])) < 1e-5 for r in rows)


def test_rlhf_step_size_runs_each_kl_coefficient_and_reports_the_gold_win_rate(lifecycle, tmp_path):
  results, variants = _claim('rlhf_step_size', lifecycle, tmp_path)
  assert variants == {'kl005', 'kl05'}
  for name, beta in (('kl005', 0.05), ('kl05', 0.5)):
    coefs = [r['kl_coef'] for r in metrics.read(tmp_path / name, 'rlhf') if 'kl_coef' in r]
    assert coefs and coefs == pytest.approx([beta] * len(coefs))
    sft, rlhf = (claims.traces(results, model, name) for model in ('sft', 'rlhf'))
    wins = json.loads((tmp_path / name / 'eval' / 'results.json').read_text())['differences']['rlhf - sft']
    expected = np.mean([(b['score'] > a['score']) + 0.5 * (b['score'] == a['score']) for a, b in zip(sft, rlhf)])
    assert wins['gold_win_rate']['value'] == pytest.approx(expected) and wins['gold_win_rate']['n'] == len(sft) > 0


def test_rl_tools_runs_the_calls_inside_the_rollouts(lifecycle, tmp_path):
  results, variants = _claim('rl_tools', lifecycle, tmp_path)
  assert variants == {'tools', 'none'}
  offered = lambda v: [tasks.offers_tools(json.loads(line)['prompt'])
                       for line in (tmp_path / v / 'rlhf' / 'rollouts.jsonl').read_text().splitlines()]
  assert all(offered('tools')) and not any(offered('none'))
  assert all('tool_calls' in r for r in metrics.read(tmp_path / 'tools', 'rlhf') if 'proxy_reward' in r)


def test_lab_scaling_tabulates_accuracy_per_set_against_pretraining_tokens(lifecycle, tmp_path):
  config = lm_config.load(str(REPO / 'experiments/lab_scaling.py:smoke'))
  results, variants = _claim('lab_scaling', lifecycle, tmp_path)
  assert variants == {'xs@12', 's@12'}
  tokens = config.pretrain.steps * config.pretrain.batch_size * config.pretrain.seq_len
  for name in variants:
    m = config.variants[name].model
    d, layers, heads, kv_heads, ff = m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.d_ff
    pretrain = results[name]['pretrain']
    vocab, head = config.tokenizer.vocab_size, d // heads
    per_layer = d * (heads + 2 * kv_heads) * head + heads * head * d + 3 * d * ff + 2 * d
    assert pretrain.get('params') == vocab * d + layers * per_layer + d  # tied embeddings, final norm
    assert 0.9 * tokens <= pretrain.get('tokens_seen') <= tokens  # packed rows: only the tail of a row pads
    for family, variant in config.data.eval_sets:
      key = f'sft.acc[{family}/{variant}]'
      evals = results[name]['eval']
      assert 0.0 <= evals.get(key + '.low') <= evals.get(key) <= evals.get(key + '.high') <= 1.0
    # the lifecycle's breakdowns (sums by digits per variant) carry their intervals too
    digits = [k for k in evals.metrics if k.startswith('sft.acc[arithmetic/thinking:digits=') and k.endswith(']')]
    assert digits
    for key in digits:
      assert 0.0 <= evals.get(key + '.low') <= evals.get(key) <= evals.get(key + '.high') <= 1.0
  assert (tmp_path / 'comparison_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
