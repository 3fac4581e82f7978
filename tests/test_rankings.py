"""Rankings of a model's own samples: deterministic, gold-scored like candidates, ranked by the panel; the
reward model trained on them reports its accuracy per source."""

import random
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as lm_config
from lm import tokenizer
from lm.cli import launch
from lm.data import builders, chat, human
from lm.inference import sample
from lm.lab import raters, splits, tasks
from lm.lab.world import World
from lm.model.transformer import ModelConfig, Transformer
from lm.rl import rankings, reward_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
  world = World(seed=0, n_people=40, n_towns=10, n_creatures=8, n_objects=12)
  texts = world.pretraining_documents(n_docs=300, seed=0)
  tok = tokenizer.train(texts, tmp_path_factory.mktemp('tok') / 'bpe.model', vocab_size=512)
  model = Transformer(ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64,
                                  max_seq_len=128))
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  examples = splits.draw_mix(world, (('world_qa', 'direct', 1.0), ('manners', 'direct', 1.0)), 6, 'preferences')
  return world, tok, model, params, examples


def test_samples_are_scored_and_ranked_like_candidates(policy):
  world, tok, model, params, examples = policy
  plan = rankings.SamplingPlan(k=3, temperature=1.0, max_new_tokens=12, batch_size=8)
  unbiased = raters.Panel(n_raters=3, seed=0)  # no bias, no noise: the panel is gold
  records = rankings.collect(params, model, tok, examples, plan, unbiased, seed=1, policy='sft', round_=2)
  again = rankings.collect(params, model, tok, examples, plan, unbiased, seed=1, policy='sft', round_=2)
  assert records == again  # deterministic in the seed
  assert records != rankings.collect(params, model, tok, examples, plan, unbiased, seed=2)
  for r, ex in zip(records, examples):
    assert len(r['responses']) == 3 and r['kinds'] == ['policy'] * 3
    assert r['origin'] == {'source': 'policy', 'policy': 'sft', 'round': 2, 'temperature': 1.0}
    assert r['gold_scores'] == [tasks.score(ex, resp) for resp in r['responses']]
    assert r['features'] == [raters.features(resp) for resp in r['responses']]
    utilities = np.asarray(r['gold_utilities'])
    # a panel without bias or noise reproduces the gold ranking (ties in presentation order)
    assert r['ranking'] == r['gold_ranking'] == list(np.argsort(-utilities, kind='stable'))


def test_samples_are_drawn_one_set_after_another_and_kept_with_their_prompt(policy, monkeypatch):
  world, tok, model, params, examples = policy
  assert len({(ex.family, ex.variant) for ex in examples[:3]}) > 1  # the sets interleaved
  batches = []

  def echo(params, model, tok, prompts, cfg, rng, mesh=None, **kwargs):  # samples the question asked
    batches.append([(p[-1]['content'], int(jax.random.key_data(rng)[-1])) for p in prompts])
    return [{'role': 'assistant', 'content': p[-1]['content'], 'ids': [], 'finished': True} for p in prompts]

  monkeypatch.setattr(rankings.sample, 'complete_chats', echo)
  plan = rankings.SamplingPlan(k=3, temperature=1.0, max_new_tokens=12, batch_size=4)
  records = rankings.collect(params, model, tok, examples, plan, raters.Panel(n_raters=3, seed=0), seed=1)
  for r, ex in zip(records, examples):
    assert [m[0]['content'] for m in r['responses']] == [ex.prompt[-1]['content']] * 3
  set_of = {ex.prompt[-1]['content']: (ex.family, ex.variant) for ex in examples}
  order = [set_of[q] for batch in batches for q, _ in batch]
  assert order == sorted(order) and len(order) == 3 * len(examples)
  assert len({key for batch in batches for _, key in batch[:1]}) == len(batches)  # a key per batch


def test_every_batch_shares_one_sampler_program(policy):
  """Batches whose longest prompts fall in different prompt buckets are padded to the longest prompt of
  all: one sampling program for the whole collection."""
  world, tok, model, params, _ = policy
  examples = splits.draw_mix(world, (('world_qa', 'direct', 1.0), ('safety', 'direct', 1.0)), 8, 'preferences')
  for ex in examples:
    ex.prompt = tasks.without_tools(ex.prompt)
  plan = rankings.SamplingPlan(k=2, temperature=1.0, max_new_tokens=4, batch_size=4)
  flat = sorted((ex for ex in examples for _ in range(2)), key=lambda ex: (ex.family, ex.variant))
  lengths = [len(chat.render_prompt(tok, ex.prompt)) for ex in flat]
  assert len({sample.prompt_bucket(max(lengths[i:i + 4])) for i in range(0, len(flat), 4)}) > 1
  before = sample.compile_count()
  rankings.collect(params, model, tok, examples, plan, raters.Panel(n_raters=3, seed=0), seed=5)
  assert sample.compile_count() - before == 1


def test_pairwise_accuracy_by_hand():
  rewards = np.array([[3.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
  ranks = np.array([[0, 1, 2], [0, 1, 2]])         # first is best
  # row 0: pairs (0>1 yes, 0>2 yes, 1>2 no); row 1: all three wrong -> 2 of 6
  assert reward_model.pairwise_accuracy(rewards, ranks_BxR=ranks) == pytest.approx(2 / 6)
  gold = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 1.0]])  # tied utilities make no pair
  # row 0: (0>1 yes, 0>2 yes); row 1: (2>0 yes, 2>1 yes) -> 4 of 4
  assert reward_model.pairwise_accuracy(rewards, gold_BxR=gold) == 1.0
  # identical samples get identical rewards: such a pair counts half, not wrong
  assert reward_model.pairwise_accuracy(np.array([[1.0, 1.0, 0.0]]), ranks_BxR=np.array([[0, 1, 2]])) == 2.5 / 3


@pytest.fixture(scope='module')
def sft_run(tmp_path_factory):
  """data .. sft of the lifecycle smoke config, once; the tests reuse these stages."""
  config = lm_config.load(str(REPO / 'experiments/lifecycle.py:smoke'))
  config.stages = ('data', 'tokenizer', 'pretrain', 'sft')
  workdir = tmp_path_factory.mktemp('sft_run')
  launch.run_stages(config, workdir)
  return workdir


def _config(sft_run, **raters):
  config = lm_config.load(str(REPO / 'experiments/lifecycle.py:smoke'))
  config.reuse.workdir, config.reuse.stages = str(sft_run), ('data', 'tokenizer', 'pretrain', 'sft')
  config.stages = ('preferences', 'reward')
  config.raters.update(raters)
  return config


@pytest.mark.slow
def test_reward_model_on_policy_samples_reports_accuracy_per_source(sft_run, tmp_path):
  config = _config(sft_run)
  config.rankings.n_prompts, config.rankings.max_new_tokens = 24, 12
  config.reward.data = 'mix'
  out = launch.run_stages(config, tmp_path)
  prefs = out['preferences']
  assert prefs.get('policy_prompts') == 24
  records = [r for s in ('train', 'validation') for r in builders.read(builders.PreferenceRankings, prefs.tfds_dir, s)]
  sources = [reward_model.source_of(r) for r in records]
  assert sources.count('policy') == 24 and sources.count('candidates') == config.data.preferences.n_prompts
  reward = out['reward']
  for source in ('candidates', 'policy'):
    assert 0.0 <= reward.get(f'heldout_{source}_panel_accuracy') <= 1.0
    assert reward.get(f'heldout_{source}_prompts') > 0
  assert reward.get('train_prompts_policy') > 0 and reward.get('train_prompts_candidates') > 0


@pytest.mark.slow
def test_human_rankings_join_or_replace_the_panel(sft_run, tmp_path):
  world = World(seed=0, **lm_config.load(str(REPO / 'experiments/lifecycle.py:smoke')).data.world)
  examples = splits.draw_mix(world, (('world_qa', 'direct', 1.0), ('arithmetic', 'direct', 1.0)), 12, 'preferences',
                             purpose='a person')
  people = tmp_path / 'served'
  for i, ex in enumerate(examples):  # what the ranking page appends: the reference and three wrong answers
    responses = [ex.reference] + [m for _, m in tasks.TASKS[ex.family].wrong(world, ex, random.Random(i))][:3]
    cands = [raters.candidate(ex, 'sample:sft', m) for m in responses]
    ranking = list(range(len(cands)))[::-1] if i % 2 else list(range(len(cands)))  # half of them upside down
    human.append(people, {
        'prompt': ex.prompt, 'responses': responses, 'ranking': ranking, 'rater_rankings': [ranking],
        'gold_ranking': raters.gold_ranking(cands).tolist(), 'gold_scores': [c.gold_score for c in cands],
        'gold_utilities': [c.utility for c in cands], 'kinds': [c.kind for c in cands],
        'features': [c.features for c in cands], 'family': ex.family, 'variant': ex.variant,
        'meta': ex.meta, 'rater': 'tester', 'time': 0.0, 'ties': [], 'panel_ranking': [], 'stage': 'sft'})
  beside = launch.run_stages(_config(sft_run, human=str(people)), tmp_path / 'beside')['preferences']
  assert beside.get('human_prompts') == 12
  smoke = lm_config.load(str(REPO / 'experiments/lifecycle.py:smoke'))
  assert beside.get('preference_prompts') == 12 + smoke.data.preferences.n_prompts + smoke.rankings.n_prompts
  instead = _config(sft_run, human=str(people), human_mode='instead')
  instead.reward.data = 'policy'
  out = launch.run_stages(instead, tmp_path / 'instead')
  records = [r for s in ('train', 'validation')
             for r in builders.read(builders.PreferenceRankings, out['preferences'].tfds_dir, s)]
  assert len(records) == 12 and {r['origin']['human'] for r in records} == {'tester'}
  pairs = lambda rs: sorted((tasks.prompt_key(r['prompt']), list(r['ranking'])) for r in rs)
  assert pairs(records) == pairs(human.read_rankings(people))  # the person's rankings, not the panel's
  assert out['reward'].get('train_prompts_policy') == len(builders.read(builders.PreferenceRankings,
                                                                        out['preferences'].tfds_dir, 'train'))
