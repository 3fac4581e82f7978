"""Checkpoints under faults, in every loop (pretrain, SFT, reward, RLHF): the latest step with a file
removed or cut short or its metadata missing, a full disk while saving, kill -9 during an
asynchronous save. The run resumes from the newest good step with a one-line warning naming the bad
one (set aside under ``bad_checkpoints/``, or an unfinished save removed), nothing before it is lost,
and the resumed metrics equal an uninterrupted run's. Another stage's unreadable checkpoint is a
one-line error naming it; a checkpoint of another model is an error, never a fallback.

The RLHF and SFT/reward runs use tests/test_rlhf.py's tiny fixtures (data, tokenizer, random SFT and
reward models).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler
from test_rlhf import _config as rlhf_config
from test_rlhf import _run as rlhf_run
from test_rlhf import inputs  # noqa: F401  (the fixture)

from lm import checkpoint, metrics, train
from lm import config as lm_config
from lm import outputs as lm_outputs
from lm.cli import launch
from lm.model import params as params_lib
from lm.stages import common, reward, sft

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

REPO = Path(__file__).resolve().parents[1]
TIMINGS = ('tokens_per_s', 'compile_s', 'sample_s', 'score_s', 'gold_s', 'update_s')
PRETRAIN = dict(steps=12, log_every=1, checkpoint_every=4, eval_every=1000, keep_checkpoints=3)


def pretrain_config(reuse: str = ''):
  config = lm_config.load(str(REPO / 'experiments/pretrain_tiny.py:smoke'))
  config = lm_config.with_overrides(config, {'pretrain': PRETRAIN})
  if reuse:  # the data and tokenizer of the straight run
    config = lm_config.with_overrides(config, {'stages': ('pretrain',),
                                               'reuse': {'workdir': reuse, 'stages': ('data', 'tokenizer')}})
  return config


def rows(workdir, stage):
  """The stage's metrics rows without wall-clock timings (those differ between any two runs)."""
  return [{k: v for k, v in r.items() if k not in TIMINGS} for r in metrics.read(workdir, stage)]


def steps_in(directory) -> list[int]:
  return sorted(int(p.name) for p in Path(directory).iterdir() if p.name.isdigit())


# ------------------------------------------------------------------------------ faults, as functions

def _largest_state_file(step_dir: Path) -> Path:
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file()]
  return max(files, key=lambda p: (p.stat().st_size, str(p)))


def remove_data_file(step_dir: Path) -> None:
  _largest_state_file(step_dir).unlink()


def cut_data_file(step_dir: Path) -> None:
  path = _largest_state_file(step_dir)
  with open(path, 'r+b') as f:
    f.truncate(path.stat().st_size // 2)


def remove_meta(step_dir: Path) -> None:
  (step_dir / 'meta' / 'metadata').unlink()


def remove_array_metadata(step_dir: Path) -> None:
  (step_dir / 'state' / '_METADATA').unlink()


CORRUPTIONS = {'data file removed': remove_data_file, 'data file cut short': cut_data_file,
               'meta missing': remove_meta, 'array metadata missing': remove_array_metadata}


def _meta_write_fails_at(step: int, stage: str):
  """orbax's JSON writer that writes half of ``stage``'s meta of ``step`` and then finds the disk full."""
  write = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def full_disk(self, x, directory):
    if x.get('step') == step and x.get('stage') == stage:
      (directory / 'metadata').write_text(json.dumps(x)[:5])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await write(self, x, directory)

  return full_disk


# A child that blocks in the middle of saving ``step`` (after writing a marker) until it is killed.
BLOCKING_SAVE = """
import pathlib, sys, time
from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
write = handler.JsonCheckpointHandler._save_fn
async def blocking(self, x, directory):
  if x.get('step') == {step} and x.get('stage') == {stage!r}:
    pathlib.Path({marker!r}).write_text(str(directory))
    time.sleep(3600)
  return await write(self, x, directory)
handler.JsonCheckpointHandler._save_fn = blocking
sys.path.insert(0, {tests!r})
"""


def kill_9_while_saving(code: str, marker: Path, timeout: float = 600) -> None:
  """Runs ``code`` (a child that blocks while saving, see ``BLOCKING_SAVE``) and kill -9s it once the
  save has started."""
  log = marker.with_suffix('.log')
  with open(log, 'w') as err:  # a file, not a pipe: a full pipe would stall the child before it saves
    child = subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                             stderr=err)
  deadline = time.time() + timeout
  while not marker.exists() and child.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  try:
    assert marker.exists(), log.read_text()[-3000:] if child.poll() is not None else 'timed out'
  finally:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def plain(out_metrics: dict) -> dict:
  return {k: v for k, v in out_metrics.items() if k not in TIMINGS}


def warnings_of(err: str, name: str) -> list[str]:
  return [line for line in err.splitlines() if line.startswith(f'{name}: warning: ')]


# ------------------------------------------------------------------------------ the guard itself

def _tiny_state(value):
  return {'w': jnp.full((64, 64), float(value)), 'step': jnp.asarray(value, jnp.int32)}


def _save_steps(workdir, steps, keep=3):
  with train.Guard('loop', workdir, steps=max(steps), checkpoint_every=1, keep=keep) as guard:
    for s in steps:
      guard.save(s, _tiny_state(s), {'step': s})


def test_the_guard_falls_back_step_by_step_and_keeps_what_it_sets_aside(tmp_path, capfd):
  _save_steps(tmp_path, [1, 2, 3])
  ckpts = tmp_path / 'loop' / 'checkpoints'
  remove_meta(ckpts / '3')
  cut_data_file(ckpts / '2')
  with train.Guard('loop', tmp_path, steps=3, checkpoint_every=1, keep=3) as guard:
    state, meta = guard.restore(jax.eval_shape(lambda: _tiny_state(0)))
    assert guard.mgr.all_steps() == [1]
  assert meta == {'step': 1} and float(state['w'][0, 0]) == 1.0 and int(state['step']) == 1
  lines = warnings_of(capfd.readouterr().err, 'loop')
  assert len(lines) == 2, lines
  assert lines[0].startswith(f'loop: warning: checkpoint {ckpts / "3"} is unreadable (') and \
      lines[0].endswith(f'moved to {tmp_path / "loop" / "bad_checkpoints" / "3"}; resuming from the newest readable '
                        'step before it')
  assert lines[1].startswith(f'loop: warning: checkpoint {ckpts / "2"} is unreadable (')
  assert steps_in(ckpts) == [1] and steps_in(tmp_path / 'loop' / 'bad_checkpoints') == [2, 3]
  # every step bad: a fresh start, everything kept aside (a second bad step 3 does not overwrite the first)
  _save_steps(tmp_path / 'again', [3])
  shutil.rmtree(ckpts / '1')
  shutil.copytree(tmp_path / 'again' / 'loop' / 'checkpoints' / '3', ckpts / '3')
  remove_meta(ckpts / '3')
  with train.Guard('loop', tmp_path, steps=3, checkpoint_every=1, keep=3) as guard:
    assert guard.restore(jax.eval_shape(lambda: _tiny_state(0))) is None
  assert sorted(p.name for p in (tmp_path / 'loop' / 'bad_checkpoints').iterdir()) == ['2', '3', '3.1']


def test_another_models_checkpoint_is_an_error_not_a_fallback(tmp_path):
  _save_steps(tmp_path, [1, 2])
  wrong = {'w': jax.ShapeDtypeStruct((8, 8), jnp.float32), 'step': jax.ShapeDtypeStruct((), jnp.int32)}
  with train.Guard('loop', tmp_path, steps=2, checkpoint_every=1, keep=3) as guard:
    with pytest.raises(ValueError, match=r'step 2: w has shape \(64, 64\) but the model expects \(8, 8\)') as info:
      guard.restore(wrong)
  assert not isinstance(info.value, checkpoint.Unreadable)
  assert steps_in(tmp_path / 'loop' / 'checkpoints') == [1, 2] and not (tmp_path / 'loop' / 'bad_checkpoints').exists()


def test_a_failed_save_stops_the_run_naming_the_step_and_the_last_good_one(tmp_path, monkeypatch):
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', _meta_write_fails_at(2, 'loop'))
  with pytest.raises(checkpoint.SaveFailed) as info:
    with train.Guard('loop', tmp_path, steps=3, checkpoint_every=1, keep=3) as guard:
      for s in (1, 2, 3):
        guard.save(s, _tiny_state(s), {'step': s, 'stage': 'loop'})
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'loop: saving checkpoint step 2 in {tmp_path / "loop" / "checkpoints"} failed (OSError: '
                            'ENOSPC: No space left on device); the last good checkpoint: step 1. Run the same command')
  ckpts = tmp_path / 'loop' / 'checkpoints'
  assert steps_in(ckpts) == [1] and [p.name for p in checkpoint.unfinished(ckpts)] == ['2.orbax-checkpoint-tmp']


def test_an_unreadable_checkpoint_of_another_stage_is_a_one_line_error(inputs, tmp_path):  # noqa: F811
  config = rlhf_config()
  model = common.model_from_config(config)
  mesh, rules = common.mesh_and_rules(config)
  target = params_lib.abstract_params(model, mesh, rules)
  copy = tmp_path / 'sft'
  shutil.copytree(inputs['sft'].checkpoint_dir, copy)
  want = checkpoint.restore_params(copy, target)
  cut_data_file(copy / '1')
  with pytest.raises(checkpoint.Unreadable) as info:
    checkpoint.restore_params(copy, target)
  assert str(info.value).startswith(f'checkpoint {copy / "1"} is unreadable (')
  assert str(info.value).endswith('run the stage that wrote it again') and '\n' not in str(info.value)
  assert steps_in(copy) == [1]  # a finished stage's checkpoint is never moved or replaced by an older one
  # the same through a stage: SFT starting from a pretrain stage whose checkpoint is cut short
  sft_config = lm_config.with_overrides(config, {'sft': dict(steps=2, batch_size=8, seq_len=128, eval_batches=0)})
  broken = lm_outputs.Model(checkpoint_dir=str(copy), tokenizer=inputs['sft'].tokenizer, model=dict(config.model))
  with pytest.raises(checkpoint.Unreadable, match=f'^checkpoint {copy / "1"} is unreadable'):
    sft.run(sft_config, tmp_path / 'run', {**inputs, 'pretrain': broken})
  started = tmp_path / 'run' / 'sft' / 'checkpoints'
  assert not started.exists() or not steps_in(started)
  jax.tree.map(np.testing.assert_array_equal, want, checkpoint.restore_params(inputs['sft'].checkpoint_dir, target))


# ------------------------------------------------------------------------------ pretrain (through the launcher)

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """An uninterrupted pretrain run of 12 steps (checkpoints 4, 8, 12): its workdir and metrics rows."""
  workdir = tmp_path_factory.mktemp('straight')
  launch.launch(pretrain_config(), workdir)
  assert steps_in(workdir / 'pretrain' / 'checkpoints') == [4, 8, 12]
  return workdir, rows(workdir, 'pretrain')


def _copy_unfinished(straight_dir, tmp_path) -> Path:
  """The straight run's workdir as a run killed after its last checkpoint (no outputs.json)."""
  work = tmp_path / 'run'
  shutil.copytree(straight_dir, work, ignore=shutil.ignore_patterns('jax_cache'))
  (work / 'pretrain' / 'outputs.json').unlink()
  return work


@pytest.mark.parametrize('fault', list(CORRUPTIONS))
def test_pretrain_resumes_past_a_corrupted_latest_step(straight, tmp_path, capfd, fault):
  straight_dir, expected = straight
  work = _copy_unfinished(straight_dir, tmp_path)
  ckpts = work / 'pretrain' / 'checkpoints'
  CORRUPTIONS[fault](ckpts / '12')
  capfd.readouterr()
  out = launch.launch(pretrain_config(), work)
  lines = warnings_of(capfd.readouterr().err, 'pretrain')
  assert len(lines) == 1 and lines[0].startswith(f'pretrain: warning: checkpoint {ckpts / "12"} is unreadable ('), lines
  assert f'moved to {work / "pretrain" / "bad_checkpoints" / "12"}' in lines[0]
  assert steps_in(work / 'pretrain' / 'bad_checkpoints') == [12]  # kept for inspection
  assert steps_in(ckpts) == [4, 8, 12]  # nothing earlier lost; 12 written again
  resumed = [r for r in metrics.read(work, 'pretrain') if 'compile_s' in r]
  assert [r['step'] for r in resumed] == [1, 9]  # the straight run's first step, then the resume from step 8
  assert rows(work, 'pretrain') == expected  # CPU XLA is deterministic: the uninterrupted numbers exactly
  assert out['pretrain'].get('loss') == expected[-2]['loss']


def test_pretrain_after_a_full_disk_resumes_from_the_last_good_step(straight, tmp_path, capfd, monkeypatch):
  straight_dir, expected = straight
  work = tmp_path / 'run'
  with monkeypatch.context() as patch:
    patch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', _meta_write_fails_at(8, 'pretrain'))
    with pytest.raises(checkpoint.SaveFailed, match=r'^pretrain: saving checkpoint step 8 in .* failed \(OSError: '
                                                    r'ENOSPC: No space left on device\); the last good checkpoint: '
                                                    r'step 4\. Run the same command again'):
      launch.launch(pretrain_config(reuse=str(straight_dir)), work)
  ckpts = work / 'pretrain' / 'checkpoints'
  assert steps_in(ckpts) == [4] and [p.name for p in checkpoint.unfinished(ckpts)] == ['8.orbax-checkpoint-tmp']
  assert not (work / 'pretrain' / 'outputs.json').exists()
  capfd.readouterr()
  launch.launch(pretrain_config(reuse=str(straight_dir)), work)
  lines = warnings_of(capfd.readouterr().err, 'pretrain')
  assert lines == [f'pretrain: warning: removed {ckpts / "8.orbax-checkpoint-tmp"}: a save that never finished '
                   '(the run stopped while writing it)']
  assert steps_in(ckpts) == [4, 8, 12] and not checkpoint.unfinished(ckpts)
  assert rows(work, 'pretrain') == expected


def test_pretrain_killed_during_an_async_save_resumes_from_the_step_before(straight, tmp_path, capfd):
  straight_dir, expected = straight
  work, marker = tmp_path / 'run', tmp_path / 'saving'
  code = BLOCKING_SAVE.format(step=8, stage='pretrain', marker=str(marker), tests=str(Path(__file__).parent)) + (
      'import test_faults\nfrom lm.cli import launch\n'
      f'launch.launch(test_faults.pretrain_config(reuse={str(straight_dir)!r}), pathlib.Path({str(work)!r}))\n')
  kill_9_while_saving(code, marker)
  ckpts = work / 'pretrain' / 'checkpoints'
  assert steps_in(ckpts) == [4] and [p.name for p in checkpoint.unfinished(ckpts)] == ['8.orbax-checkpoint-tmp']
  capfd.readouterr()
  launch.launch(pretrain_config(reuse=str(straight_dir)), work)
  lines = warnings_of(capfd.readouterr().err, 'pretrain')
  assert lines == [f'pretrain: warning: removed {ckpts / "8.orbax-checkpoint-tmp"}: a save that never finished '
                   '(the run stopped while writing it)']
  assert steps_in(ckpts) == [4, 8, 12]
  assert rows(work, 'pretrain') == expected


# ------------------------------------------------------------------------------ SFT and reward (the same guard)

SFT = dict(steps=8, batch_size=8, seq_len=128, log_every=1, checkpoint_every=4, eval_batches=0,
           optim={'warmup_steps': 2})
REWARD = dict(steps=8, batch_size=8, seq_len=128, log_every=1, checkpoint_every=4, eval_every=1000, eval_batches=1,
              normalize_prompts=8, normalize_max_new_tokens=8, optim={'warmup_steps': 2})


@pytest.mark.parametrize('stage', ['sft', 'reward'])
def test_sft_and_reward_resume_past_a_corrupted_latest_step(inputs, tmp_path, capfd, stage):  # noqa: F811
  config = lm_config.with_overrides(rlhf_config(), {'sft': SFT, 'reward': REWARD})
  stage_inputs = {**inputs, 'pretrain': inputs['sft']} if stage == 'sft' else inputs
  run = {'sft': sft.run, 'reward': reward.run}[stage]
  first = run(config, tmp_path, stage_inputs)
  expected = rows(tmp_path, stage)
  ckpts = tmp_path / stage / 'checkpoints'
  assert steps_in(ckpts) == [4, 8] and [r['step'] for r in expected if 'loss' in r] == list(range(1, 9))
  cut_data_file(ckpts / '8')  # as if the run had been killed after it, and the file cut short since
  capfd.readouterr()
  again = run(config, tmp_path, stage_inputs)
  lines = warnings_of(capfd.readouterr().err, stage)
  assert len(lines) == 1 and lines[0].startswith(f'{stage}: warning: checkpoint {ckpts / "8"} is unreadable ('), lines
  assert steps_in(ckpts) == [4, 8] and steps_in(tmp_path / stage / 'bad_checkpoints') == [8]
  assert [r for r in metrics.read(tmp_path, stage) if 'compile_s' in r][-1]['step'] == 5  # resumed from step 4
  assert rows(tmp_path, stage) == expected
  assert plain(again.metrics) == plain(first.metrics)


# ------------------------------------------------------------------------------ RLHF (lm.rl.learner on the guard)

@pytest.fixture(scope='module')
def rlhf_straight(inputs, tmp_path_factory):  # noqa: F811
  """An uninterrupted PPO run of two iterations, checkpoints 1 and 2: its workdir, outputs and rows."""
  workdir = tmp_path_factory.mktemp('rlhf_straight')
  _, out = rlhf_run(inputs, workdir)
  assert steps_in(workdir / 'rlhf' / 'checkpoints') == [1, 2]
  return workdir, out, rows(workdir, 'rlhf')


@pytest.mark.parametrize('fault', list(CORRUPTIONS))
def test_rlhf_resumes_past_a_corrupted_latest_step(inputs, rlhf_straight, tmp_path, capfd, fault):  # noqa: F811
  straight_dir, straight_out, expected = rlhf_straight
  work = tmp_path / 'run'
  shutil.copytree(straight_dir, work)
  ckpts = work / 'rlhf' / 'checkpoints'
  CORRUPTIONS[fault](ckpts / '2')
  capfd.readouterr()
  _, out = rlhf_run(inputs, work)
  lines = warnings_of(capfd.readouterr().err, 'rlhf')
  assert len(lines) == 1 and lines[0].startswith(f'rlhf: warning: checkpoint {ckpts / "2"} is unreadable ('), lines
  assert steps_in(ckpts) == [1, 2] and steps_in(work / 'rlhf' / 'bad_checkpoints') == [2]
  assert rows(work, 'rlhf') == expected  # iteration 2 again, from the restored state and KL coefficient
  assert plain(out.metrics) == plain(straight_out.metrics)


def test_rlhf_after_a_full_disk_resumes_from_the_last_good_step(inputs, rlhf_straight, tmp_path, capfd,  # noqa: F811
                                                               monkeypatch):
  _, straight_out, expected = rlhf_straight
  with monkeypatch.context() as patch:
    patch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', _meta_write_fails_at(2, 'rlhf'))
    with pytest.raises(checkpoint.SaveFailed, match=r'^rlhf: saving checkpoint step 2 .* the last good checkpoint: '
                                                    r'step 1\.'):
      rlhf_run(inputs, tmp_path)
  ckpts = tmp_path / 'rlhf' / 'checkpoints'
  assert steps_in(ckpts) == [1] and [p.name for p in checkpoint.unfinished(ckpts)] == ['2.orbax-checkpoint-tmp']
  capfd.readouterr()
  _, out = rlhf_run(inputs, tmp_path)
  assert warnings_of(capfd.readouterr().err, 'rlhf') == [
      f'rlhf: warning: removed {ckpts / "2.orbax-checkpoint-tmp"}: a save that never finished (the run stopped while '
      'writing it)']
  assert steps_in(ckpts) == [1, 2] and rows(tmp_path, 'rlhf') == expected
  assert plain(out.metrics) == plain(straight_out.metrics)


def test_rlhf_killed_during_an_async_save_resumes_from_the_step_before(inputs, rlhf_straight, tmp_path,  # noqa: F811
                                                                      capfd):
  _, straight_out, expected = rlhf_straight
  (tmp_path / 'inputs.json').write_text(json.dumps({k: lm_outputs.to_json(v) for k, v in inputs.items()}))
  work, marker = tmp_path / 'run', tmp_path / 'saving'
  code = BLOCKING_SAVE.format(step=2, stage='rlhf', marker=str(marker), tests=str(Path(__file__).parent)) + (
      'import json\nimport test_rlhf\nfrom lm import outputs\nfrom lm.stages import rlhf\n'
      f'records = json.loads(open({str(tmp_path / "inputs.json")!r}).read())\n'
      'inputs = {k: outputs.from_json(v) for k, v in records.items()}\n'
      f'rlhf.run(test_rlhf._config(), {str(work)!r}, inputs)\n')
  kill_9_while_saving(code, marker)
  ckpts = work / 'rlhf' / 'checkpoints'
  assert steps_in(ckpts) == [1] and [p.name for p in checkpoint.unfinished(ckpts)] == ['2.orbax-checkpoint-tmp']
  capfd.readouterr()
  _, out = rlhf_run(inputs, work)
  assert warnings_of(capfd.readouterr().err, 'rlhf') == [
      f'rlhf: warning: removed {ckpts / "2.orbax-checkpoint-tmp"}: a save that never finished (the run stopped while '
      'writing it)']
  assert steps_in(ckpts) == [1, 2] and rows(work, 'rlhf') == expected
  assert plain(out.metrics) == plain(straight_out.metrics)
