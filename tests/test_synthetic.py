"""Synthetic data by rejection sampling: the judge by hand, config errors, and the experiment end to end
(synthetic stage, continued SFT with and without it, eval columns, the report card of the run)."""

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from lm import checkpoint, tokenizer
from lm import config as lm_config
from lm import outputs as lm_outputs
from lm.cli import launch
from lm.cli.launch import STAGES
from lm.config import ConfigError
from lm.data import builders, chat
from lm.lab import splits, tasks
from lm.model.transformer import Transformer
from lm.rl import reward_model
from lm.stages import common, synthetic

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

REPO = Path(__file__).resolve().parents[1]


def _row(family, prompt, answer, score, finished=True, **extra):
  turn = [{'role': 'assistant', 'content': answer, **extra}]
  return {'family': family, 'variant': 'direct', 'prompt': [{'role': 'user', 'content': prompt}], 'turn': turn,
          'finished': finished, 'score': score}


def test_select_keeps_distinct_accepted_turns_per_prompt():
  rows = [_row('a', 'p1', 'x', 1.0), _row('a', 'p1', 'x', 1.0),          # the same turn twice: kept once
          _row('a', 'p1', 'y', 1.0), _row('a', 'p1', 'z', 1.0),          # a third distinct one: over the cap of 2
          _row('a', 'p2', 'w', 0.4), _row('a', 'p2', 'v', 1.0, finished=False),
          _row('b', 'p3', 'u', 0.5), _row('b', 'p3', '', 1.0, tool_call_errors=[{'text': '{', 'error': 'bad'}]),
          _row('b', 'p4', 't', 1.0, tool_calls=[{'name': 'calculator', 'arguments': {}}])]
  kept, counts = synthetic.select(rows, None, 0.5, keep_per_prompt=2)
  assert [r['accepted'] for r in rows] == [True, True, True, True, False, False, True, False, False]
  assert [(k['messages'][0]['content'], k['messages'][1]['content']) for k in kept] == [
      ('p1', 'x'), ('p1', 'y'), ('p3', 'u')]
  assert kept[0] == {'messages': rows[0]['prompt'] + rows[0]['turn'], 'family': 'a', 'variant': 'direct'}
  assert counts == {'a': [6, 4, 2], 'b': [3, 1, 1]}  # sampled, accepted, kept
  # the reward judge reads the rewards, not the gold score
  kept, counts = synthetic.select(rows[:2] + rows[4:5], [0.2, 0.9, 0.6], 0.5, keep_per_prompt=1)
  assert [r['accepted'] for r in rows[:2] + rows[4:5]] == [False, True, True] and rows[1]['reward'] == 0.9
  assert [k['messages'][1]['content'] for k in kept] == ['x', 'w'] and counts == {'a': [3, 2, 2]}


@pytest.fixture(scope='module')
def smoke_config():
  """The smoke experiment, judging at threshold 0: its tiny model writes gibberish that no gold scorer
  passes (lm.lab.tasks), so only then does the run keep conversations for the stages after it."""
  config = lm_config.load(str(REPO / 'experiments/synthetic_data.py:smoke'))
  return lm_config.with_overrides(config, {'synthetic': {'gold_threshold': 0.0}})


@pytest.mark.parametrize('overrides, inputs, message', [
    ({'judge': 'panel'}, ('data', 'sft'), "synthetic.judge='panel'; valid: gold, reward"),
    ({'judge': 'reward'}, ('data', 'sft'), 'synthetic.judge=reward needs the reward stage before it (ran: data, sft)'),
    ({'model': 'rlhf'}, ('data', 'sft'), "synthetic.model='rlhf' needs the rlhf stage before it (ran: data, sft)"),
    ({'temperature': 0.0}, ('data', 'sft'), 'synthetic: temperature=0.0 must be > 0'),
    ({'tools': ('abacus',)}, ('data', 'sft'), "synthetic.tools has 'abacus'; valid: "),
])
def test_config_errors_are_one_line(smoke_config, overrides, inputs, message):
  config = lm_config.with_overrides(smoke_config, {'synthetic': overrides})
  with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    synthetic.run(config, '/nonexistent', {s: {} for s in inputs})
  with pytest.raises(ConfigError, match=r'sft_synthetic needs the synthetic stage before it \(ran: data, sft\)'):
    STAGES['sft_synthetic'](smoke_config, '/nonexistent', {'data': {}, 'sft': {}})


@pytest.mark.parametrize('arg', ['', 'reward', 'smoke'])
def test_experiment_configs_compose(arg):
  config = lm_config.load(str(REPO / f'experiments/synthetic_data.py:{arg}'))
  assert config.stages[-4:] == ('synthetic', 'sft_original', 'sft_synthetic', 'eval')
  assert ('reward' in config.stages) == (arg == 'reward')
  assert config.synthetic.judge == ('reward' if arg == 'reward' else 'gold')
  assert config.eval.models[-2:] == ('sft_original', 'sft_synthetic')
  for family, variant, _ in config.synthetic.mix:
    assert variant in tasks.TASKS[family].variants
  with pytest.raises(ValueError, match="unknown experiments/synthetic_data.py argument 'big'; valid: smoke, reward"):
    lm_config.load(str(REPO / 'experiments/synthetic_data.py:big'))


# ------------------------------------------------------------------ the smoke experiment, once

@pytest.fixture(scope='module')
def run(tmp_path_factory, smoke_config):
  workdir = tmp_path_factory.mktemp('synthetic_run')
  return smoke_config, workdir, launch.launch(smoke_config, workdir)


def test_synthetic_stage_judges_new_prompts_and_writes_what_it_kept(run):
  config, workdir, outputs = run
  out = outputs['synthetic']
  rows = [json.loads(line) for line in Path(out.samples_file).read_text().splitlines()]
  c = config.synthetic
  assert len(rows) == out.get('samples') == out.get('prompts') * c.samples_per_prompt and out.get('source') == 'sft'
  # every verdict by the rule: a finished, well-formed turn whose gold score reaches the threshold
  for r in rows:
    assert r['accepted'] == (r['finished'] and synthetic.well_formed(r['turn']) and r['score'] >= c.gold_threshold)
  by_family = defaultdict(list)
  for r in rows:
    by_family[r['family']].append(r['accepted'])
  assert out.get('accepted') == sum(r['accepted'] for r in rows)
  for family, verdicts in by_family.items():
    assert out.get(f'acceptance[{family}]') == pytest.approx(sum(verdicts) / len(verdicts))
  # the dataset holds the distinct accepted turns, at most keep_per_prompt per prompt (tfds stores records in
  # its own key-hashed order)
  expected, seen = [], defaultdict(list)
  for r in rows:
    key, turn = json.dumps(r['prompt']), json.dumps(r['turn'])
    if r['accepted'] and turn not in seen[key] and len(seen[key]) < c.keep_per_prompt:
      seen[key].append(turn)
      expected.append(r['prompt'] + r['turn'])
  kept = builders.read(builders.SftConversations, out.tfds_dir, 'train')
  assert sorted(json.dumps(k['messages']) for k in kept) == sorted(json.dumps(m) for m in expected)
  assert out.get('kept') == len(expected) > 1
  # new prompts only: none is an eval or SFT prompt, and none shares an item with one (lm.lab.splits)
  tfds_dir = outputs['data'].tfds_dir
  old = {json.dumps(r['prompt'], sort_keys=True) for r in builders.read(builders.EvalSet, tfds_dir, 'test')}
  for split in ('train', 'validation'):
    for r in builders.read(builders.SftConversations, tfds_dir, split):
      first = next(i for i, m in enumerate(r['messages']) if m['role'] == 'assistant')
      old.add(json.dumps(r['messages'][:first], sort_keys=True))
  assert not {json.dumps(r['prompt'], sort_keys=True) for r in rows} & old
  world = common.world(config)
  prompts = synthetic.new_prompts(config)
  assert len(prompts) == out.get('prompts') == c.n_prompts
  assert {splits.split_of(world, e.family, tasks.key(e)) for e in prompts} == {'synthetic'}
  eval_items = {(r['family'], tasks.key(tasks.Example(r['family'], r['variant'], r['prompt'], [], r['meta'])))
                for r in builders.read(builders.EvalSet, tfds_dir, 'test')}
  assert eval_items and not {(e.family, tasks.key(e)) for e in prompts} & eval_items


def test_nothing_accepted_is_a_one_line_error(run, tmp_path):
  config, _, outputs = run
  strict = lm_config.with_overrides(config, {'synthetic': {'gold_threshold': 1.5}})
  n = config.synthetic.n_prompts * config.synthetic.samples_per_prompt
  with pytest.raises(ConfigError, match=rf'^synthetic: no sample of {n} reached synthetic.gold_threshold=1.5 '):
    synthetic.run(strict, tmp_path, {stage: outputs[stage] for stage in ('data', 'sft')})
  assert len((tmp_path / 'synthetic' / 'samples.jsonl').read_text().splitlines()) == n


def test_continued_sft_with_and_without_synthetic_data_is_evaluated(run):
  config, workdir, outputs = run
  for stage in ('sft_original', 'sft_synthetic'):
    assert outputs[stage].get('step') == config.synthetic.sft_steps and outputs[stage].lora is None
  assert outputs['sft_synthetic'].get('train_rows') >= outputs['sft_original'].get('train_rows')
  results = json.loads((workdir / 'eval' / 'results.json').read_text())['models']
  assert list(results) == ['sft+orig', 'sft+synth']
  assert (workdir / 'eval' / 'traces_sft+synth.jsonl').is_file()


def test_the_run_ends_with_its_report_card(run):
  from lm.report import card as report
  from tests.test_report import sections, table  # the markdown readers
  _, workdir, outputs = run
  secs = sections((workdir / 'report.md').read_text())
  assert list(secs) == list(report.SECTIONS)
  assert secs['Reward model'] == ['No reward stage in this run.'] and secs['RLHF'] == ['No rlhf stage in this run.']
  families = table(secs['Synthetic data'], 'family')
  out = outputs['synthetic']
  for family in families:
    if family != 'header':
      assert families[family] == [f'{out.get(f"acceptance[{family}]"):.3f}', str(out.get(f'kept[{family}]'))]
  adds = table(secs['Synthetic data'], 'skill')
  assert adds['header'] == ['skill', 'sft+orig', 'sft+synth', 'difference']
  times = table(secs['Time and throughput'], 'stage')
  assert list(times)[1:] == list(outputs)
  for stage, out in outputs.items():
    assert times[stage][0] == f'{out.wall_s:.1f}'
  assert (workdir / 'loss_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'data:image/png;base64,' in (workdir / 'report.html').read_text()


def test_the_reward_judge_scores_prompt_and_turn_at_its_last_token(run, tmp_path):
  config, _, outputs = run
  tok = tokenizer.load(outputs['sft'].tokenizer)
  rows = [json.loads(line) for line in Path(outputs['synthetic'].samples_file).read_text().splitlines()][:6]
  full = [chat.render(tok, r['prompt'] + r['turn'])[0] for r in rows]
  T = sorted(len(x) for x in full)[len(full) // 2]  # the reward model's seq_len: longer ones keep their last T
  config = lm_config.with_overrides(config, {'reward': {'seq_len': T, 'batch_size': 2}})
  model = Transformer(reward_model.model_config(common.model_from_config(config, tok).config))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), np.zeros((1, 8), np.int32))['params'])
  noise = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (np.asarray(x) + 0.05 * noise.normal(size=x.shape)).astype(np.float32), params)
  mgr = checkpoint.manager(tmp_path / 'checkpoints')
  checkpoint.save(mgr, 1, {'params': params}, {'step': 1})
  mgr.wait_until_finished()
  mgr.close()
  inputs = {'reward': lm_outputs.Reward(model=dataclasses.asdict(model.config), tokenizer='',
                                       checkpoint_dir=str(tmp_path / 'checkpoints'), reward_mean=0.5, reward_std=2.0)}
  mesh, rules = common.mesh_and_rules(config)
  got = synthetic._rewards(config, inputs, tok, rows, mesh, rules)
  # by hand: each conversation's last T tokens, right-padded, the scalar head at its last real token
  ids = [x[-T:] for x in full]
  tokens = np.zeros((len(ids), T), np.int32)
  segments = np.zeros((len(ids), T), np.int32)
  for b, x in enumerate(ids):
    tokens[b, :len(x)], segments[b, :len(x)] = x, 1
  positions = np.tile(np.arange(T), (len(ids), 1))
  scalar = np.asarray(jax.jit(model.apply)({'params': params}, tokens, positions, segments)['scalar'])
  expected = [(scalar[b, len(x) - 1] - 0.5) / 2.0 for b, x in enumerate(ids)]
  assert max(len(x) for x in ids) == T > min(len(x) for x in ids)  # some cut, some padded
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  assert np.ptp(got) > 0
