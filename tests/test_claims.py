"""Each claim on synthetic results: it holds where its effect clears the minimum, fails where it does not."""

import json
import math

import numpy as np
import pytest

from lm import outputs
from lm.cli import claims
from lm.data import builders


def _row(i, family, score, variant='direct', finished=True, text='ok', harmful=None):
  meta = {} if harmful is None else {'harmful': harmful}
  return {'family': family, 'variant': variant, 'meta': meta, 'prompt': [{'role': 'user', 'content': f'q{i}'}],
          'finished': finished, 'score': float(score), 'response': {'role': 'assistant', 'content': text}, 'calls': []}


def _eval_run(path, models: dict, baselines=()):
  """An eval stage's outputs whose traces are ``models`` (name -> rows)."""
  path.mkdir(parents=True, exist_ok=True)
  for name, rows in models.items():
    (path / f'traces_{name}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (path / 'results.json').write_text(json.dumps({'models': {}, 'baselines': list(baselines)}))
  return {'eval': outputs.Eval(results=str(path / 'results.json'), report='')}


def _scores(p, n=200, seed=0):
  return (np.random.default_rng(seed).random(n) < p).astype(float)


@pytest.mark.parametrize('after, holds', [(0.9, True), (0.3, False)])
def test_sft_format_needs_a_rise_above_its_minimum(tmp_path, after, holds):
  base = [_row(i, 'world_qa', 0, finished=bool(f)) for i, f in enumerate(_scores(0.1))]
  sft = [_row(i, 'world_qa', 0, finished=bool(f)) for i, f in enumerate(_scores(after, seed=1))]
  r = claims.row(claims.BY_NAME['sft_format'], _eval_run(tmp_path, {'base': base, 'sft': sft}))
  assert r['holds'] is holds and r['n'] == 200
  assert r['effect']['low'] < r['effect']['value'] < r['effect']['high']
  assert r['after']['value'] == pytest.approx(np.mean(_scores(after, seed=1)))


def test_over_refusal_holds_only_below_its_bound(tmp_path):
  base = [_row(i, 'safety', 1, harmful=False, text='Sure, do this.') for i in range(200)]
  polite = [_row(i, 'safety', 1, harmful=False, text=("I can't help with that." if i % 50 == 0 else 'Do this.'))
            for i in range(200)]
  wary = [_row(i, 'safety', 1, harmful=False, text=("I can't help with that." if i % 4 == 0 else 'Do this.'))
          for i in range(200)]
  assert claims.row(claims.BY_NAME['over_refusal'], _eval_run(tmp_path / 'a', {'base': base, 'sft': polite}))['holds']
  assert not claims.row(claims.BY_NAME['over_refusal'], _eval_run(tmp_path / 'b', {'base': base, 'sft': wary}))['holds']


@pytest.mark.parametrize('improves, holds', [(True, True), (False, False)])
def test_rlhf_gold_needs_gold_up_and_a_win_rate_above_half(tmp_path, improves, holds):
  sft = _scores(0.3)
  # better: keeps what SFT got right and adds some; not better: as good as SFT on other prompts
  rlhf = np.maximum(sft, _scores(0.4, seed=2)) if improves else _scores(0.3, seed=2)
  run = _eval_run(tmp_path, {'sft': [_row(i, 'world_qa', s) for i, s in enumerate(sft)],
                             'rlhf': [_row(i, 'world_qa', s) for i, s in enumerate(rlhf)]})
  r = claims.row(claims.BY_NAME['rlhf_gold'], run)
  assert r['holds'] is holds and 'win rate' in r['note']


def _variants(tmp_path, family, before_p, after_p, before='direct', after='thinking', variant='direct'):
  out = {}
  for k, (name, p) in enumerate(((before, before_p), (after, after_p))):
    rows = [_row(i, family, s, variant) for i, s in enumerate(_scores(p, seed=k))]
    out[name] = _eval_run(tmp_path / name, {'sft': rows}, [{'family': family, 'variant': variant, 'best_score': 0.05}])
  return out


@pytest.mark.parametrize('after_p, holds', [(0.5, True), (0.12, False)])
def test_math_thinking_compares_the_same_prompts_across_variants(tmp_path, after_p, holds):
  r = claims.row(claims.BY_NAME['math_thinking'], _variants(tmp_path, 'arithmetic', 0.1, after_p))
  assert r['holds'] is holds and r['baseline'] == 0.05


def test_variants_on_different_prompts_are_not_compared(tmp_path):
  results = _variants(tmp_path, 'arithmetic', 0.1, 0.5)
  path = tmp_path / 'thinking' / 'traces_sft.jsonl'
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows[::-1]))
  r = claims.row(claims.BY_NAME['math_thinking'], results)
  assert not r['holds'] and 'same prompts' in r['measure']


@pytest.mark.parametrize('known_after, holds', [(0.6, True), (0.3, False)])
def test_hallucination_needs_known_facts_kept(tmp_path, known_after, holds):
  def rows(idk_p, known_p, seed):
    idk = _scores(idk_p, seed=seed)
    return ([_row(i, 'unknown_entity', s, text="I don't know." if s else 'It is red.') for i, s in enumerate(idk)]
            + [_row(200 + i, 'world_qa', s) for i, s in enumerate(_scores(known_p, seed=seed + 10))])
  results = {'without_idk': _eval_run(tmp_path / 'a', {'sft': rows(0.1, 0.6, 0)}),
             'with_idk': _eval_run(tmp_path / 'b', {'sft': rows(0.8, known_after, 0)})}
  r = claims.row(claims.BY_NAME['hallucination'], results)
  assert r['holds'] is holds and r['effect']['value'] < -0.5


@pytest.mark.parametrize('lora_p, holds', [(0.5, True), (0.3, False)])
def test_lora_needs_close_accuracy_at_a_small_fraction(tmp_path, lora_p, holds):
  full = _scores(0.5)
  lora = np.where(_scores(0.99, seed=3) > 0, full, 0) if lora_p == 0.5 else _scores(lora_p, seed=4)
  results = {}
  for name, scores, params in (('full', full, 1000), ('lora_r4', lora, 40), ('lora_r64', full, 600)):
    run = _eval_run(tmp_path / name, {'sft': [_row(i, 'world_qa', s) for i, s in enumerate(scores)]})
    run['sft'] = outputs.Model(checkpoint_dir='', model={}, tokenizer='', metrics={'trainable_params': params})
    results[name] = run
  r = claims.row(claims.BY_NAME['lora'], results)
  assert r['holds'] is holds and 'lora_r4' in r['measure']  # r64 is over the 10% budget


def _reward_run(tmp_path, name, length_weight):
  rng = np.random.default_rng(0)
  words = rng.integers(3, 60, size=(100, 4))
  rewards = length_weight * np.log1p(words) + rng.normal(0, 1, size=(100, 4))
  (tmp_path / name / 'reward').mkdir(parents=True)
  (tmp_path / name / 'reward' / 'heldout.json').write_text(json.dumps(
      {'rewards': rewards.tolist(), 'words': words.tolist(), 'panel_ranks': [], 'gold_utilities': [],
       'sources': ['candidates'] * len(rewards)}))  # as the reward stage writes it
  ckpt = str(tmp_path / name / 'reward' / 'checkpoints')
  return {'reward': outputs.Reward(checkpoint_dir=ckpt, model={}, tokenizer='', reward_mean=0, reward_std=1)}


@pytest.mark.parametrize('biased, holds', [(2.0, True), (0.05, False)])
def test_rater_bias_bootstraps_over_the_same_prompts(tmp_path, biased, holds):
  results = {'unbiased': _reward_run(tmp_path, 'u', 0.0), 'length_biased': _reward_run(tmp_path, 'b', biased)}
  r = claims.row(claims.BY_NAME['rater_bias'], results)
  assert r['holds'] is holds and r['n'] == 100


def _rlhf_run(tmp_path, gold, proxy, se=0.02):
  (tmp_path / 'ppo').mkdir()
  rows = [{'stage': 'rlhf', 'step': i + 1, 'eval_gold_reward': g, 'eval_proxy_reward': p, 'eval_kl': float(i),
           'eval_gold_reward_se': se, 'eval_proxy_reward_se': se} for i, (g, p) in enumerate(zip(gold, proxy))]
  (tmp_path / 'ppo' / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  ckpt = str(tmp_path / 'ppo' / 'rlhf' / 'checkpoints')
  return {'ppo': {'rlhf': outputs.Rlhf(checkpoint_dir=ckpt, model={}, tokenizer='', algorithm='ppo')}}


@pytest.mark.parametrize('gold, proxy, holds', [
    ([0.1, 0.3, 0.4, 0.2], [0.0, 0.5, 1.0, 1.5], True),    # gold peaks, proxy still climbing: hacking
    ([0.1, 0.3, 0.4, 0.39], [0.0, 0.5, 1.0, 1.5], False),  # the drop is within noise
    ([0.1, 0.3, 0.4, 0.2], [0.0, 1.5, 1.0, 0.5], False),   # proxy fell too: not hacking
    ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 1.0, 1.5], False),   # gold never peaked
])
def test_reward_hacking_reads_the_curve_not_its_last_point(tmp_path, gold, proxy, holds):
  assert claims.row(claims.BY_NAME['reward_hacking'], _rlhf_run(tmp_path, gold, proxy))['holds'] is holds


def test_missing_numbers_say_so_in_the_table():
  r = claims.row(claims.BY_NAME['tools'], {'none': {}})
  assert r['measure'].startswith('not measured: missing') and not r['holds'] and math.isnan(r['effect']['value'])
  table = claims.markdown([r]).splitlines()
  assert table[0].startswith('| claim |') and table[2].endswith('| no |')


def test_cli_rejects_an_unknown_claim(capsys):
  with pytest.raises(SystemExit):
    claims.main(['--workdir', '/nonexistent', '--only', 'flat_earth'])
  assert 'unknown claim' in capsys.readouterr().err


def _rankings_run(tmp_path, name, families, rewards_BxR, gold_BxR, rater_rankings, responses=None):
  """A run whose preferences stage holds validation rankings of ``families`` and whose reward model's
  heldout.json holds ``rewards_BxR`` against ``gold_BxR``."""
  n, k = gold_BxR.shape
  responses = responses or [[[{'role': 'assistant', 'content': f'answer {i} {j}'}] for j in range(k)] for i in range(n)]
  records = [{'prompt': [{'role': 'user', 'content': f'prompt {i}'}], 'responses': responses[i],
              'ranking': [int(x) for x in rater_rankings[i][0]],
              'rater_rankings': [[int(x) for x in row] for row in rater_rankings[i]],
              'gold_ranking': np.argsort(-gold_BxR[i], kind='stable').tolist(), 'gold_utilities': gold_BxR[i].tolist(),
              'kinds': ['x'] * k, 'family': f, 'variant': 'direct', 'origin': {'source': 'candidates'}}
             for i, f in enumerate(families)]
  tfds_dir = tmp_path / name / 'preferences' / 'tfds'
  builders.build(builders.PreferenceRankings, tfds_dir, {'train': records[:1], 'validation': records})
  # the reward stage measures the records in the order the dataset reads them back (by key hash)
  order = [int(r['prompt'][0]['content'].split()[1]) for r in builders.read(builders.PreferenceRankings, tfds_dir,
                                                                             'validation')]
  rewards_BxR, gold_BxR = rewards_BxR[order], gold_BxR[order]
  (tmp_path / name / 'reward').mkdir(parents=True)
  (tmp_path / name / 'reward' / 'heldout.json').write_text(json.dumps(
      {'rewards': rewards_BxR.tolist(), 'words': [[3] * k] * n, 'panel_ranks': [], 'gold_utilities': gold_BxR.tolist(),
       'sources': ['candidates'] * n}))
  return {'preferences': outputs.Rankings(tfds_dir=str(tfds_dir)),
          'reward': outputs.Reward(checkpoint_dir=str(tmp_path / name / 'reward' / 'checkpoints'), model={},
                                   tokenizer='', reward_mean=0, reward_std=1)}


def _orders(rng, n, k, agree):
  """Per prompt, 5 raters' rankings: all the same (``agree``) or each at random."""
  return [[rng.permutation(k)] * 5 if agree else [rng.permutation(k) for _ in range(5)] for _ in range(n)]


@pytest.mark.parametrize('subjective_noise, holds', [(3.0, True), (0.05, False)])
def test_subjective_needs_lower_accuracy_and_agreement_on_taste(tmp_path, subjective_noise, holds):
  rng = np.random.default_rng(0)
  n, k = 80, 4
  gold = rng.random((n, k))
  subjective = np.arange(n) >= n // 2
  rewards = gold + rng.normal(0, 1, (n, k)) * np.where(subjective, subjective_noise, 0.05)[:, None]
  families = ['joke' if s else 'arithmetic' for s in subjective]
  orders = _orders(rng, n // 2, k, True) + _orders(rng, n // 2, k, False)
  r = claims.row(claims.BY_NAME['subjective'], {'tastes': _rankings_run(tmp_path, 'tastes', families, rewards, gold,
                                                                        orders)})
  assert r['holds'] is holds and r['n'] == n and "Kendall's W" in r['note']
  assert r['before']['value'] > 0.9 and r['effect']['low'] < r['effect']['value'] < r['effect']['high']


def test_subjective_needs_the_raters_to_agree_less(tmp_path):
  rng = np.random.default_rng(1)
  n, k = 80, 4
  gold = rng.random((n, k))
  subjective = np.arange(n) >= n // 2
  rewards = gold + rng.normal(0, 1, (n, k)) * np.where(subjective, 3.0, 0.05)[:, None]
  families = ['slogan' if s else 'world_qa' for s in subjective]
  agreeing = _orders(rng, n, k, True)  # the reward model is worse on taste, but the raters agree as much
  r = claims.row(claims.BY_NAME['subjective'], {'tastes': _rankings_run(tmp_path, 'tastes', families, rewards, gold,
                                                                        agreeing)})
  assert not r['holds'] and r['effect']['high'] < -0.05


@pytest.mark.parametrize('subjective_gain, holds', [(0.0, True), (0.5, False)])
def test_subjective_rlhf_compares_gains_by_family_kind(tmp_path, subjective_gain, holds):
  families = ['arithmetic'] * 100 + ['joke'] * 100
  sft = _scores(0.2, n=200)
  gain = np.concatenate([_scores(0.5, n=100, seed=3), _scores(subjective_gain, n=100, seed=4)])
  rlhf = np.maximum(sft, gain)
  run = _eval_run(tmp_path, {'sft': [_row(i, f, s) for i, (f, s) in enumerate(zip(families, sft))],
                             'rlhf': [_row(i, f, s) for i, (f, s) in enumerate(zip(families, rlhf))]})
  r = claims.row(claims.BY_NAME['subjective_rlhf'], {'tastes': run})
  assert r['holds'] is holds and r['n'] == 200
  assert r['before']['value'] == pytest.approx(np.mean((rlhf - sft)[:100]))


@pytest.mark.parametrize('lay_noise, holds', [(2.0, True), (0.1, False)])
def test_expert_raters_pairs_the_same_candidates(tmp_path, lay_noise, holds):
  rng = np.random.default_rng(2)
  n, k = 60, 4
  gold = rng.random((n, k))
  families = ['arithmetic', 'translation', 'joke'] * (n // 3)
  orders = _orders(rng, n, k, True)
  expert = _rankings_run(tmp_path, 'expert', families, gold + rng.normal(0, 0.1, (n, k)), gold, orders)
  lay = _rankings_run(tmp_path, 'lay', families, gold + rng.normal(0, lay_noise, (n, k)), gold, orders)
  r = claims.row(claims.BY_NAME['expert_raters'], {'lay': lay, 'expert': expert})
  assert r['holds'] is holds and r['n'] == n and 'per domain: math' in r['note']
  other = _rankings_run(tmp_path, 'other', families, gold, gold, orders,
                        responses=[[[{'role': 'assistant', 'content': f'other {i} {j}'}] for j in range(k)]
                                   for i in range(n)])
  r = claims.row(claims.BY_NAME['expert_raters'], {'lay': other, 'expert': expert})
  assert not r['holds'] and 'same held-out prompts' in r['measure']


@pytest.mark.parametrize('expert_p, holds', [(0.6, True), (0.3, False)])
def test_expert_rlhf_compares_the_rlhf_models(tmp_path, expert_p, holds):
  lay = _scores(0.3)
  expert = np.maximum(lay, _scores(expert_p - 0.2, seed=5)) if holds else _scores(expert_p, seed=5)
  results = {name: _eval_run(tmp_path / name, {'rlhf': [_row(i, 'world_qa', s) for i, s in enumerate(scores)]})
             for name, scores in (('lay', lay), ('expert', expert))}
  assert claims.row(claims.BY_NAME['expert_rlhf'], results)['holds'] is holds
