"""The train loop through the launcher: loss falls, checkpoints round-trip, kill -9 / SIGTERM resume
reproduce the uninterrupted losses, a diverging run stops with its last good checkpoint kept."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoint, metrics, sharding, tokenizer, train
from lm import config as lm_config
from lm import outputs as lm_outputs
from lm.cli import launch
from lm.data import builders, pipeline
from lm.model.transformer import ModelConfig
from lm.train import Diverged

REPO = Path(__file__).resolve().parents[1]
SMOKE = 'experiments/pretrain_tiny.py:smoke'


def smoke_config(**pretrain):
  config = lm_config.load(str(REPO / SMOKE))
  return lm_config.with_overrides(config, {'pretrain': pretrain})


def losses_by_step(workdir):
  return {r['step']: r['loss'] for r in metrics.read(workdir, 'pretrain') if 'loss' in r}


@pytest.mark.slow  # the data, tokenizer and pretraining stages through the launcher, twice
def test_loss_falls_and_every_output_is_written(tmp_path):
  out = launch.launch(smoke_config(), tmp_path)
  rows = metrics.read(tmp_path, 'pretrain')
  train_rows = [r for r in rows if 'loss' in r]
  eval_rows = [r for r in rows if 'eval_loss' in r]
  assert [r['step'] for r in train_rows] == [5, 10, 15, 20]
  assert all({'stage', 'step', 'loss', 'tokens', 'tokens_per_s', 'grad_norm', 'lr'} <= set(r) for r in train_rows)
  assert train_rows[-1]['loss'] < train_rows[0]['loss'] - 0.8, train_rows
  assert eval_rows[-1]['eval_loss'] < eval_rows[0]['eval_loss'] - 0.8, eval_rows
  assert out['pretrain'].get('eval_loss') == pytest.approx(eval_rows[-1]['eval_loss'])
  c = smoke_config()
  assert out['pretrain'].get('tokens_seen') == train_rows[-1]['tokens_seen']
  assert out['pretrain'].get('tokens_seen') == 20 * c.pretrain.batch_size * c.pretrain.seq_len  # packed: no padding
  assert out['pretrain'].get('params') == ModelConfig.from_config(c.model).n_params()
  tok = tokenizer.load(out['tokenizer'].path)
  docs = [tok.encode(r['text']) for r in builders.read(builders.PretrainCorpus, out['data'].tfds_dir, 'train')]
  assert out['pretrain'].get('cut_from_doc_start') == pipeline.cut_share(docs, c.pretrain.seq_len) > 0
  ckpts = sorted(int(p.name) for p in (tmp_path / 'pretrain' / 'checkpoints').iterdir() if p.name.isdigit())
  assert ckpts == [10, 15, 20]  # keep_checkpoints=3
  assert list((tmp_path / 'tensorboard' / 'pretrain').glob('events.out.tfevents.*'))
  assert json.loads((tmp_path / 'config.json').read_text())['pretrain']['steps'] == 20
  # the same command again: every stage is complete, nothing is retrained
  again = launch.launch(smoke_config(), tmp_path)
  assert again['pretrain'] == lm_outputs.from_json(json.loads(json.dumps(lm_outputs.to_json(out['pretrain']))))
  assert metrics.read(tmp_path, 'pretrain') == rows


def test_checkpoint_round_trip_keeps_values_and_shardings(tmp_path):
  mesh = sharding.make_mesh((2, 2, 2))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('fsdp', 'tensor'))
  state = {'params': {'w': jax.device_put(jnp.arange(32.0).reshape(4, 8), spec)},
           'step': jnp.asarray(7, jnp.int32)}
  mgr = checkpoint.manager(tmp_path / 'ckpt')
  checkpoint.save(mgr, 7, state, {'data_position': 7})
  mgr.wait_until_finished()
  abstract = checkpoint.abstract_like(jax.eval_shape(lambda: state), {'params': {'w': spec},
                                                                       'step': sharding.replicated(mesh)})
  restored, meta = checkpoint.restore(mgr, 7, abstract)
  np.testing.assert_array_equal(restored['params']['w'], state['params']['w'])
  assert restored['params']['w'].sharding == spec and int(restored['step']) == 7 and meta['data_position'] == 7
  wrong = {'params': {'w': jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=spec)}, 'step': abstract['step']}
  with pytest.raises(ValueError, match=r"params/w has shape \(4, 8\) but the model expects \(8, 8\)"):
    checkpoint.restore(mgr, 7, wrong)
  mgr.close()


def _start(workdir, *overrides):
  cmd = [sys.executable, '-m', 'lm.launch', f'--config={SMOKE}', f'--workdir={workdir}',
         '--config.pretrain.steps=60', '--config.pretrain.log_every=1', '--config.pretrain.checkpoint_every=4',
         '--config.pretrain.eval_every=1000', *overrides]
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(workdir, proc, at_least: int, timeout=240):
  ckpt_dir = Path(workdir) / 'pretrain' / 'checkpoints'
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [int(p.name) for p in ckpt_dir.glob('*') if p.name.isdigit()] if ckpt_dir.exists() else []
    if steps and max(steps) >= at_least:
      return max(steps)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.05)
  raise AssertionError('no checkpoint appeared in time')


@pytest.mark.slow
def test_kill_9_and_sigterm_resume_give_the_uninterrupted_losses(tmp_path):
  reference = smoke_config(steps=60, log_every=1, checkpoint_every=4, eval_every=1000)
  launch.launch(reference, tmp_path / 'straight')
  expected = losses_by_step(tmp_path / 'straight')
  assert sorted(expected) == list(range(1, 61))

  work = tmp_path / 'interrupted'
  proc = _start(work)
  _wait_for_checkpoint(work, proc, at_least=8)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(losses_by_step(work))
  assert killed_at < 60, 'the run finished before it was killed: the test proved nothing'

  proc = _start(work)
  first = _wait_for_checkpoint(work, proc, at_least=killed_at + 4)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err
  assert 'SIGTERM at step' in err and 'run the same command again to resume' in err
  assert first < 60

  proc = _start(work)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  got = losses_by_step(work)
  assert sorted(got) == list(range(1, 61))
  rows = [r for r in metrics.read(work, 'pretrain') if 'compile_s' in r]
  assert len(rows) == 3 and rows[1]['step'] > 1 and rows[2]['step'] > rows[1]['step']  # two real resumes
  # Same compiled program, same data order, restored state: CPU XLA is deterministic, so exact.
  np.testing.assert_array_equal([got[s] for s in range(1, 61)], [expected[s] for s in range(1, 61)])
  seen = [lm_outputs.load(w / 'pretrain' / 'outputs.json').get('tokens_seen') for w in (work, tmp_path / 'straight')]
  assert seen[0] == seen[1] > 0  # counted across the resumes


@pytest.mark.slow  # the pretraining stage through the launcher (the next test: the guard alone)
def test_divergence_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
  config = smoke_config(checkpoint_every=1, log_every=1, optim={'lr': 1e30, 'clip_norm': 0.0, 'warmup_steps': 0})
  with pytest.raises(Diverged, match=r'at step \d+; stopped\. Last good checkpoint: step \d+') as info:
    launch.launch(config, tmp_path)
  bad_step = int(str(info.value).split('at step ')[1].split(';')[0])
  kept = int(str(info.value).split('checkpoint: step ')[1].split()[0])
  assert kept == bad_step - 1
  assert (tmp_path / 'pretrain' / 'checkpoints' / str(kept)).is_dir()
  assert not (tmp_path / 'pretrain' / 'outputs.json').exists()


def test_the_guard_stops_on_a_non_finite_grad_norm_and_keeps_the_last_checkpoint(tmp_path):
  state = {'w': jnp.arange(3.0)}
  with train.Guard('loop', tmp_path, steps=5, checkpoint_every=2, keep=3) as guard:
    guard.start(0)
    for step in (1, 2):
      guard.check(step, {'loss': 1.0, 'grad_norm': 0.5})
      guard.log(step, {'loss': 1.0})
      if guard.due(step):
        guard.save(step, state, {'step': step})
    assert not guard.due(3) and guard.due(5)  # every checkpoint_every steps and at the last
    with pytest.raises(Diverged, match=r'loop: grad_norm is inf at step 3; stopped\. Last good checkpoint: step 2 in '):
      guard.check(3, {'loss': 1.0, 'grad_norm': float('inf')})
    with pytest.raises(Diverged, match=r'loop: loss is nan at step 3'):
      guard.check(3, {'loss': float('nan'), 'grad_norm': float('nan')})
  assert [r['step'] for r in metrics.read(tmp_path, 'loop')] == [1, 2]
  with train.Guard('loop', tmp_path, steps=5, checkpoint_every=2, keep=3) as guard:
    restored, meta = guard.restore(jax.eval_shape(lambda: state))
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert meta['step'] == 2
