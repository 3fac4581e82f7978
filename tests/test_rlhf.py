"""The rlhf stage on a tiny world: every arm runs through the learner, logs its metrics and report;
runs resume, SIGTERM saves and the resumed run logs the uninterrupted metrics, a non-finite grad
norm stops the run with the last good checkpoint kept.

The SFT policy and the reward model are randomly initialised tiny transformers saved as their
stages would save them (the scalar head made non-zero so that rewards differ).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoint, metrics, tokenizer, train
from lm import config as lm_config
from lm import outputs as lm_outputs
from lm.cli import launch
from lm.config import ConfigError
from lm.configs import base, models
from lm.data import builders, chat
from lm.model.transformer import ModelConfig, Transformer
from lm.rl import algorithms, losses, online, reward_model, rollouts
from lm.stages import common, rlhf

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

TIMINGS = ('sample_s', 'score_s', 'gold_s', 'update_s', 'tokens_per_s')


def _save(directory, params):
  mgr = checkpoint.manager(directory)
  checkpoint.save(mgr, 1, {'params': params}, {'step': 1})
  mgr.wait_until_finished()
  mgr.close()
  return str(directory)


def _config():
  c = base.get_config()
  c.data.pretrain_chars, c.data.sft_examples, c.data.eval_examples = 30_000, 100, 2
  c.data.preferences.n_prompts = 24
  c.tokenizer.vocab_size = 512
  c.model = models.get('test', vocab_size=512, n_layers=1, max_seq_len=128)
  c.rlhf = base.rlhf_section(iterations=2, prompts_per_iteration=8, n_prompts=80, eval_prompts=8, eval_every=2,
                             max_prompt_len=48, max_new_tokens=8, epochs=1, minibatch_size=8, checkpoint_every=1,
                             best_of_n=(1, 2), preference=dict(beta=0.1, pairs='all', ranking='panel', seq_len=128,
                                                               batch_size=8, steps_per_iteration=2))
  return c


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  """data and tokenizer stages, plus SFT and reward outputs holding random tiny models."""
  config = _config()
  config.stages = ('data', 'tokenizer')
  root = tmp_path_factory.mktemp('rlhf_inputs')
  outputs = launch.run_stages(config, root)
  policy = Transformer(ModelConfig.from_config(config.model))
  init = lambda m, seed: jax.jit(lambda r: nn.unbox(m.init(r, jnp.zeros((1, 8), jnp.int32))['params']))(
      jax.random.key(seed))
  rm_config = dict(config.model, lm_head=False, scalar_head=True)
  rm_params = init(Transformer(ModelConfig.from_config(rm_config)), 1)
  rm_params['scalar_head'] = jax.random.normal(jax.random.key(2), rm_params['scalar_head'].shape)
  tok_path = outputs['tokenizer'].path
  outputs['sft'] = lm_outputs.Model(checkpoint_dir=_save(root / 'sft', init(policy, 0)), tokenizer=tok_path,
                                    model=dict(config.model))
  outputs['reward'] = lm_outputs.Reward(checkpoint_dir=_save(root / 'reward', rm_params), tokenizer=tok_path,
                                        model=rm_config, reward_mean=0.5, reward_std=2.0)
  return outputs


def _run(inputs, workdir, **overrides):
  config = lm_config.with_overrides(_config(), {'rlhf': overrides})
  return config, rlhf.run(config, workdir, inputs)


@pytest.fixture(scope='module')
def ppo(inputs, tmp_path_factory):
  """One uninterrupted PPO run of two iterations: ``(config, outputs, workdir)``."""
  workdir = tmp_path_factory.mktemp('ppo')
  return *_run(inputs, workdir), workdir


def _without_timings(rows):
  return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def test_ppo_logs_every_measure_and_writes_a_report(inputs, ppo):
  config, out, tmp_path = ppo
  rows = metrics.read(tmp_path, 'rlhf')
  assert [r['step'] for r in rows] == [1, 2]
  first = rows[0]
  for key in ('proxy_reward', 'gold_reward', 'kl', 'kl_k3', 'response_length', 'finished', 'harmful_refusal_rate',
              'over_refusal_rate', 'policy_loss', 'value_loss', 'entropy', 'clip_fraction', 'kl_coef', 'sample_s',
              'score_s', 'update_s', 'tokens_per_s'):
    assert key in first, key
  assert any(k.startswith('acc[') for k in first)
  assert 'eval_gold_reward' in rows[1] and 'eval_gold_reward' not in rows[0]
  # the first rollouts come from the reference itself: no KL, and the sampler agrees with the training forward
  assert first['kl'] == 0.0 and first['kl_k3'] == 0.0 and first['sampler_logprob_gap'] < 1e-4
  assert rows[1]['kl'] != 0.0  # the policy moved
  report = (tmp_path / 'rlhf' / 'report.md').read_text()
  assert '| proxy_reward |' in report and '![rlhf](rlhf.png)' in report
  assert (tmp_path / 'rlhf' / 'rlhf.png').stat().st_size > 0
  # the eval stage loads the policy like an SFT model's
  model = common.model_from_config(config)
  mesh, rules = common.mesh_and_rules(config)
  policy = common.load_params(out, model, mesh, rules)
  ref = common.load_params(inputs['sft'], model, mesh, rules)
  assert not np.allclose(policy['layer_0']['wo'], ref['layer_0']['wo'])
  assert out.algorithm == 'ppo' and out.tokenizer == inputs['sft'].tokenizer and 'gold_reward' in out.metrics
  json.dumps(lm_outputs.to_json(out))


def test_eval_prompts_run_through_the_rollouts_programs(inputs, tmp_path, monkeypatch):
  """24 eval prompts, rollouts of 16 rows: two batches of 16 (the second filled with its first prompt) through
  the rollouts' sampler; each prompt measured once, the filler in no metric."""
  from lm.inference import sample
  rows_sampled = []
  real = sample.sample_jit
  monkeypatch.setattr(sample, 'sample_jit', lambda p, m, prompt, *a, **k: rows_sampled.append(len(prompt)) or
                      real(p, m, prompt, *a, **k))
  _run(inputs, tmp_path, iterations=1, prompts_per_iteration=16, minibatch_size=16, eval_prompts=24, eval_every=1)
  assert rows_sampled == [16, 16, 16]  # the iteration's rollouts, then the eval's two batches
  logged = [json.loads(line) for line in (tmp_path / 'rlhf' / 'rollouts.jsonl').read_text().splitlines()]
  assert len(logged) == 24 and len({json.dumps(r['prompt']) for r in logged}) == 24
  row = metrics.read(tmp_path, 'rlhf')[0]
  assert row['eval_gold_reward'] == pytest.approx(np.mean([r['gold_reward'] for r in logged]))
  assert row['eval_proxy_reward'] == pytest.approx(np.mean([r['proxy_reward'] for r in logged]))
  assert row['eval_kl'] == pytest.approx(np.mean([r['kl_total'] for r in logged]))


def test_prompts_are_padded_to_the_runs_longest_and_measure_as_at_the_cap(inputs):
  """The rollouts' prompt width is the run's longest prompt rounded up to 8: the same responses, rewards and KL
  as prompts padded to rlhf.max_prompt_len, on fewer slots."""
  config = lm_config.with_overrides(_config(), {'rlhf': {'max_prompt_len': 120}})
  c = config.rlhf
  tok = tokenizer.load(inputs['tokenizer'].path)
  train_examples, eval_examples = rlhf.prompt_sets(config, tok)
  every = train_examples + eval_examples
  longest = max(len(chat.render_prompt(tok, e.prompt)) for e in every)
  width = rollouts.prompt_width(tok, every, c.max_prompt_len)
  assert width == -(-longest // 8) * 8 < c.max_prompt_len and rollouts.prompt_width(tok, every, 12) == 12
  model = common.model_from_config(config, tok, c.max_prompt_len + c.max_new_tokens)
  mesh, rules = common.mesh_and_rules(config)
  ref = common.load_params(inputs['sft'], model, mesh, rules)
  rm_params, reward_fn = reward_model.load(inputs['reward'], mesh, rules)

  def measure(w):
    rollout = rollouts.Rollouts(c, tok, model, reward_fn, ref, rm_params, mesh, rules, 1, width=w)
    _, stats, rows, _ = rollout({'policy': ref}, eval_examples[:8], jax.random.key(0), train=False)
    return stats, [r['response'] for r in rows]

  (narrow, said), (wide, said_wide) = measure(width), measure(c.max_prompt_len)
  assert said == said_wide
  for k in ('proxy_reward', 'kl', 'response_length', 'sampler_logprob_gap'):
    np.testing.assert_allclose(narrow[k], wide[k], rtol=1e-5, atol=1e-5, err_msg=k)
  slots = lambda w: w + c.max_new_tokens
  np.testing.assert_allclose(narrow['non_padding'] * slots(width), wide['non_padding'] * slots(c.max_prompt_len),
                             rtol=1e-6)  # the same tokens in fewer slots
  with pytest.raises(ValueError, match=r'prompt 0 has \d+ tokens, more than the rollouts\' width 8 \(rlhf.max_prompt'):
    rollouts.Rollouts(c, tok, model, reward_fn, ref, rm_params, mesh, rules, 1, width=8)(
        {'policy': ref}, eval_examples[:8], jax.random.key(0), train=False)


def test_grpo_resumes_from_its_last_checkpoint(inputs, tmp_path):
  _, first = _run(inputs, tmp_path, algorithm='grpo', iterations=1, group_size=2, eval_every=0)
  logged = metrics.read(tmp_path, 'rlhf')
  _, again = _run(inputs, tmp_path, algorithm='grpo', iterations=2, group_size=2, eval_every=0)
  rows = metrics.read(tmp_path, 'rlhf')
  assert [r['step'] for r in rows] == [1, 2] and rows[0] == logged[0] and again.get('iterations') == 2
  assert rows[1]['kl'] != 0.0 and rows[1]['kl_loss'] != 0.0  # GRPO's KL is a loss term
  assert checkpoint.manager(again.checkpoint_dir).all_steps() == [1, 2]


@pytest.mark.parametrize('algorithm', ['dpo', 'best_of_n'])
def test_offline_arms_run(inputs, tmp_path, algorithm):
  _, out = _run(inputs, tmp_path, algorithm=algorithm, iterations=1, eval_every=int(algorithm == 'best_of_n'))
  rows = metrics.read(tmp_path, 'rlhf')
  if algorithm == 'best_of_n':
    assert [r['n'] for r in rows] == [1, 2] and rows[1]['kl'] == pytest.approx(np.log(2) - 0.5)
    for prefix in ('', 'eval_'):  # the best of 2 includes the first
      assert rows[1][f'{prefix}proxy_reward'] >= rows[0][f'{prefix}proxy_reward']
    assert out.checkpoint_dir == inputs['sft'].checkpoint_dir
    assert out.get('eval_kl') == rows[1]['kl'] and out.get('eval_gold_reward') == rows[1]['eval_gold_reward']
  else:
    assert [r['step'] for r in rows] == [1] and rows[0]['loss'] > 0 and 0 <= rows[0]['accuracy'] <= 1
  assert out.algorithm == algorithm and (tmp_path / 'rlhf' / 'report.md').exists()


def test_config_errors_name_the_key(inputs, tmp_path):
  with pytest.raises(ConfigError, match="rlhf.algorithm='ppo2'; valid: ppo, grpo, rloo, dapo, dr_grpo, gspo, "
                                       "reinforce_pp, dpo, ipo, best_of_n"):
    _run(inputs, tmp_path, algorithm='ppo2')
  with pytest.raises(ConfigError, match='rlhf.algorithm=rloo needs rlhf.group_size >= 2'):
    _run(inputs, tmp_path, algorithm='rloo')
  with pytest.raises(ConfigError, match=r'rollout batch 12 .* multiples of the mesh batch shards \(8\)'):
    _run(inputs, tmp_path, prompts_per_iteration=12)
  with pytest.raises(ConfigError, match='rlhf needs the reward stage'):
    rlhf.run(_config(), tmp_path, {k: v for k, v in inputs.items() if k != 'reward'})


class _KeepsFirstBatch:
  """``inner`` that keeps its first iteration's rollout batch (on the host)."""

  def __init__(self, inner):
    self.inner, self.batches = inner, []

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def make_update(self, learner):
    update = self.inner.make_update(learner)

    def keep_first(state, iteration, batch, rng):
      if iteration == 0:
        self.batches.append(jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(batch)))
      return update(state, iteration, batch, rng)

    return keep_first


@pytest.mark.parametrize('algorithm', ['dapo', 'dr_grpo', 'gspo', 'reinforce_pp'])
def test_new_objectives_run_through_the_learner(inputs, tmp_path, monkeypatch, algorithm):
  """One optimiser step per iteration (the minibatch is the rollout batch): the first starts at the
  reference, every ratio is 1, so the logged policy loss is minus the advantages aggregated as the
  algorithm does, by hand from the batch it trained on; then the policy has moved."""
  group = 1 if algorithm == 'reinforce_pp' else 2
  keeper = _KeepsFirstBatch(algorithms.ALGORITHMS[algorithm])
  monkeypatch.setitem(algorithms.ALGORITHMS, algorithm, keeper)
  _run(inputs, tmp_path, algorithm=algorithm, group_size=group, minibatch_size=8 * group, eval_every=0)
  rows = metrics.read(tmp_path, 'rlhf')
  assert [r['step'] for r in rows] == [1, 2] and rows[0]['kl'] == 0.0
  b = keeper.batches[0]
  adv, mask = b['advantages'], b['mask']
  lengths = mask.sum(1)
  if algorithm == 'dapo':  # groups whose advantages are all 0 (equal scores) are out of the loss
    keep_G = np.any(adv.reshape(-1, 2 * adv.shape[1]) != 0, axis=1)
    mask = mask * np.repeat(keep_G, 2)[:, None]
    assert rows[0]['dropped_group_fraction'] == pytest.approx(1 - keep_G.mean())
  if algorithm in ('dapo', 'reinforce_pp'):  # token mean
    weight, want = mask.sum(), -(adv * mask).sum() / mask.sum()
  elif algorithm == 'dr_grpo':  # sum over tokens / max_new_tokens, mean over responses
    weight, want = len(mask), -((adv * mask).sum(1) / 8).mean()
  else:  # gspo: mean over responses of the response's advantage
    weight, want = len(mask), -((adv * mask).sum(1) / lengths).mean()
  assert rows[0]['weight'] == weight and rows[0]['clip_fraction'] == 0.0
  if algorithm == 'reinforce_pp':  # normalised over every token of the batch
    assert np.mean(adv[b['mask'] > 0]) == pytest.approx(0.0, abs=1e-5)
    assert np.std(adv[b['mask'] > 0]) == pytest.approx(1.0, rel=1e-3)
  else:  # one advantage per response, centred in its group
    per_response = adv[:, 0]
    np.testing.assert_allclose(adv, per_response[:, None] * b['mask'], atol=1e-6)
    np.testing.assert_allclose(per_response.reshape(-1, 2).sum(1), 0.0, atol=1e-5)
  assert rows[0]['policy_loss'] == pytest.approx(want, rel=1e-4, abs=1e-6)
  assert rows[1]['kl_k3'] > 0.0  # the policy moved


class _SigtermDuringFirstUpdate(online.Online):
  """PPO whose first update sends this process a SIGTERM (as a preemption would)."""

  def make_update(self, learner):
    update = super().make_update(learner)

    def sigterm_first(state, iteration, batch, rng):
      if iteration == 0:
        os.kill(os.getpid(), signal.SIGTERM)
      return update(state, iteration, batch, rng)

    return sigterm_first


def test_sigterm_saves_and_the_resumed_run_logs_the_uninterrupted_metrics(inputs, ppo, tmp_path, monkeypatch):
  _, straight_out, straight_dir = ppo
  monkeypatch.setitem(algorithms.ALGORITHMS, 'ppo_sigterm', _SigtermDuringFirstUpdate(estimator='gae'))
  with pytest.raises(train.Preempted, match=r'rlhf: SIGTERM at step 1; checkpoint saved in .*run the same command '
                                            r'again to resume'):
    _run(inputs, tmp_path, algorithm='ppo_sigterm', checkpoint_every=10)
  assert checkpoint.manager(tmp_path / 'rlhf' / 'checkpoints').all_steps() == [1]  # saved for the SIGTERM alone
  assert [r['step'] for r in metrics.read(tmp_path, 'rlhf')] == [1]
  _, resumed = _run(inputs, tmp_path, checkpoint_every=10)
  straight = metrics.read(straight_dir, 'rlhf')
  got = metrics.read(tmp_path, 'rlhf')
  assert [r['step'] for r in got] == [1, 2] and 'eval_gold_reward' in got[1]
  # same programs, restored state and KL coefficient, same seeds: exactly the uninterrupted numbers
  assert _without_timings(got) == _without_timings(straight)
  assert resumed.metrics == straight_out.metrics


def test_a_non_finite_grad_norm_stops_with_the_last_good_checkpoint(inputs, tmp_path, monkeypatch):
  def nan_gradient(policy_model, value_model, c):  # PPO's objective plus sqrt(0 * |embed|^2): value 0, gradient NaN
    ppo_sums = losses.get('ppo')(policy_model, value_model, c)

    def loss_sums(params, batch, rng):
      objective, sums = ppo_sums(params, batch, rng)
      return objective + jnp.sqrt(0.0 * jnp.sum(jnp.square(params['policy']['embed']))), sums

    return loss_sums

  monkeypatch.setitem(losses.LOSSES, 'nan_gradient', nan_gradient)
  monkeypatch.setitem(algorithms.ALGORITHMS, 'ppo_nan', online.Online(estimator='gae', loss='nan_gradient'))
  _run(inputs, tmp_path, iterations=1, eval_every=0)
  logged = metrics.read(tmp_path, 'rlhf')
  with pytest.raises(train.Diverged, match=r'rlhf: grad_norm is nan at step 2; stopped\. '
                                           r'Last good checkpoint: step 1 in .*rlhf/checkpoints'):
    _run(inputs, tmp_path, algorithm='ppo_nan', iterations=2, eval_every=0)
  assert checkpoint.manager(tmp_path / 'rlhf' / 'checkpoints').all_steps() == [1]
  assert metrics.read(tmp_path, 'rlhf') == logged  # the bad iteration is not logged


def _rows(workdir):
  return [{k: v for k, v in r.items() if k not in TIMINGS} for r in metrics.read(workdir, 'rlhf')]


ROUNDS = dict(algorithm='ppo', iterations=2, rounds=2, eval_every=0, checkpoint_every=1)
RANKINGS = {'n_prompts': 8, 'max_new_tokens': 12, 'batch_size': 32}


def _rounds_config():
  return lm_config.with_overrides(_config(), {'rlhf': ROUNDS, 'rankings': RANKINGS})


@pytest.fixture(scope='module')
def rounds(inputs, tmp_path_factory):
  """One uninterrupted run of two rounds: ``(outputs, workdir)``."""
  workdir = tmp_path_factory.mktemp('rounds')
  return rlhf.run(_rounds_config(), workdir, inputs), workdir


def test_rounds_rank_the_policy_and_retrain_the_reward_model(inputs, rounds):
  out, workdir = rounds
  config = _rounds_config()
  rows = _rows(workdir)
  assert [(r['step'], r['round']) for r in rows] == [(1, 0), (2, 1)]
  second = lm_outputs.load(workdir / 'reward_round1' / 'outputs.json')
  assert second.get('round') == 1 and second.get('new_rankings') == RANKINGS['n_prompts']
  ranked = [r for s in ('train', 'validation')
            for r in builders.read(builders.PreferenceRankings,
                                               workdir / 'reward_round1' / 'rankings', s)]
  assert {r['origin']['policy'] for r in ranked} == {'rlhf'} and {r['origin']['round'] for r in ranked} == {1}
  mesh, rules = common.mesh_and_rules(config)
  first_params = reward_model.load(inputs['reward'], mesh, rules)[0]
  second_params = reward_model.load(second, mesh, rules)[0]
  assert not np.allclose(first_params['scalar_head'], second_params['scalar_head'])  # it trained on
  assert out.get('iterations') == 2 and checkpoint.manager(out.checkpoint_dir).latest_step() == 2


CHILD = """
import json, sys
from lm import config as lm_config, outputs
from lm.stages import rlhf
sys.path.insert(0, {tests!r})
import test_rlhf
inputs = {{k: outputs.from_json(v) for k, v in json.loads(open({inputs!r}).read()).items()}}
rlhf.run(test_rlhf._rounds_config(), {workdir!r}, inputs)
"""


def test_rounds_resume_after_kill_9_with_identical_metrics(inputs, rounds, tmp_path):
  (tmp_path / 'inputs.json').write_text(json.dumps({k: lm_outputs.to_json(v) for k, v in inputs.items()}))
  killed = tmp_path / 'killed'
  code = CHILD.format(tests=str(Path(__file__).parent), inputs=str(tmp_path / 'inputs.json'), workdir=str(killed))
  child = subprocess.Popen([sys.executable, '-c', code], env=os.environ.copy(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
  marker = killed / 'reward_round1' / 'outputs.json'  # round 0 done, round 1's reward model trained
  deadline = time.time() + 600
  while not marker.exists() and child.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert marker.exists(), child.stderr.read().decode()[-2000:] if child.poll() is not None else 'timed out'
  os.kill(child.pid, signal.SIGKILL)
  child.wait()
  assert not (killed / 'rlhf' / 'checkpoints' / '2').exists()  # killed inside round 1
  rlhf.run(_rounds_config(), killed, inputs)
  assert _rows(killed) == _rows(rounds[1])
