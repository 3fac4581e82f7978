"""The optional experiment tracker beside metrics.jsonl and TensorBoard: trackio, local (its SQLite
file under TRACKIO_DIR in the test's directory), gets every scalar at its step, the resolved config,
the RLHF rollouts and eval traces as tables; wandb runs only offline, and only where installed.
Nothing contacts a service."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from lm import metrics
from tests.test_train import REPO

ROLLOUTS = [{'iteration': 1, 'prompt': 'What is 2 + 2?', 'response': '4', 'ids': [5, 6], 'gold_reward': 1.0},
            {'iteration': 1, 'prompt': 'Hi', 'response': 'Hello', 'ids': [7], 'gold_reward': 0.5}]
TRACES = [{'prompt': [{'role': 'user', 'content': 'q'}], 'response': 'a', 'score': 1.0}]
CONFIG = {'seed': 0, 'tracker': 'trackio', 'pretrain': {'steps': 3, 'optim': {'lr': 0.001}}}

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from lm import metrics
    workdir = Path(sys.argv[1])
    writer = metrics.Writer(workdir, 'rlhf')
    for step in (1, 2, 3):
      writer.write(step, {'loss': 1.0 / step, 'kl': 0.1 * step, 'note': 'text is not a scalar'})
    writer.close()
    metrics.log_tables(workdir, 'eval', {'traces_sft': json.loads(sys.argv[2])}, {'sft/accuracy': 0.5})
    from trackio.sqlite_storage import SQLiteStorage
    project = workdir.resolve().name
    print('RESULT ' + json.dumps({stage: {'logs': SQLiteStorage.get_logs(project, stage),
                              'config': SQLiteStorage.get_run_config(project, stage)} for stage in ('rlhf', 'eval')}))
''')


def test_trackio_gets_metrics_config_and_sample_tables_locally(tmp_path):
  pytest.importorskip('trackio')
  workdir = tmp_path / 'run'
  (workdir / 'rlhf').mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps(CONFIG))
  (workdir / 'rlhf' / 'rollouts.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in ROLLOUTS))
  env = {**os.environ, 'TRACKIO_DIR': str(tmp_path / 'trackio'), 'HF_HUB_OFFLINE': '1'}
  proc = subprocess.run([sys.executable, '-c', SCRIPT, str(workdir), json.dumps(TRACES)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  got = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('RESULT '))[7:])
  assert list((tmp_path / 'trackio').glob('run.db'))  # on disk where TRACKIO_DIR says

  logs = got['rlhf']['logs']
  written = metrics.read(workdir, 'rlhf')
  assert [(r['step'], r['loss'], r['kl']) for r in logs if 'loss' in r] == [
      (r['step'], r['loss'], r['kl']) for r in written]  # the numbers of metrics.jsonl, at their steps
  assert all('note' not in r for r in logs)
  assert {k: got['rlhf']['config'][k] for k in CONFIG} == CONFIG  # the resolved config
  table = next(r['rollouts'] for r in logs if 'rollouts' in r)
  assert table['_type'] == 'trackio.table' and next(r['step'] for r in logs if 'rollouts' in r) == 3
  assert table['_value'] == [{**r, 'ids': json.dumps(r['ids'])} for r in ROLLOUTS]  # nested values as JSON

  eval_logs = got['eval']['logs']
  assert next(r['sft/accuracy'] for r in eval_logs if 'sft/accuracy' in r) == 0.5
  traces = next(r['traces_sft'] for r in eval_logs if 'traces_sft' in r)['_value']
  assert traces == [{'prompt': json.dumps(TRACES[0]['prompt']), 'response': 'a', 'score': 1.0}]


def test_no_tracker_by_default_and_an_unknown_one_is_a_one_line_error(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'seed': 0}))
  writer = metrics.Writer(tmp_path, 'pretrain')
  assert writer.tracker is None and metrics.tracker_of(tmp_path) == 'none'
  writer.write(1, {'loss': 1.0})
  writer.close()
  metrics.log_tables(tmp_path, 'eval', {'traces': TRACES})  # nothing to log to: nothing happens
  (tmp_path / 'config.json').write_text(json.dumps({'tracker': 'mlflow'}))
  with pytest.raises(ValueError, match=r"config.json: tracker='mlflow'; valid: none, trackio, wandb$"):
    metrics.Writer(tmp_path, 'sft')


def test_wandb_offline_gets_the_metrics(tmp_path, monkeypatch):
  wandb = pytest.importorskip('wandb')
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_DIR', str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({**CONFIG, 'tracker': 'wandb'}))
  writer = metrics.Writer(tmp_path, 'sft')
  run = writer.tracker.run
  assert run.settings.mode == 'offline' and run.config['pretrain']['steps'] == 3
  for step in (1, 2):
    writer.write(step, {'loss': 1.0 / step})
  assert run.summary['loss'] == 0.5
  writer.close()
  assert wandb.run is None
