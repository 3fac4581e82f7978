"""tpu/tpu.py: dry runs print the exact gcloud commands; bad arguments are one-line errors."""

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('tpu_cli', REPO / 'tpu' / 'tpu.py')
tpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tpu)

WHERE = ['--zone=us-east5-a', '--project=lab']


def with_dry_run(argv) -> list[str]:
  cut = argv.index('--') if '--' in argv else len(argv)
  return [*argv[:cut], '--dry-run', *argv[cut:]]


def dry_run(capsys, *argv) -> list[list[str]]:
  assert tpu.main(with_dry_run(list(argv))) == 0
  return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def remote_of(cmd: list[str]) -> str:
  [command] = [a for a in cmd if a.startswith('--command=')]
  return command[len('--command='):]


@pytest.mark.parametrize('accelerator,gcloud_type,runtime,chips,hosts', [
    ('v5e-8', 'v5litepod-8', 'v2-alpha-tpuv5-lite', 8, 1),
    ('v5litepod-16', 'v5litepod-16', 'v2-alpha-tpuv5-lite', 16, 4),
    ('v5p-8', 'v5p-8', 'v2-alpha-tpuv5', 4, 1),       # v5p counts TensorCores: 2 per chip
    ('v5p-32', 'v5p-32', 'v2-alpha-tpuv5', 16, 4),
    ('v5p-256', 'v5p-256', 'v2-alpha-tpuv5', 128, 32),
    ('v6e-8', 'v6e-8', 'v2-alpha-tpuv6e', 8, 1),
    ('v6e-256', 'v6e-256', 'v2-alpha-tpuv6e', 256, 64),
])
def test_slice_types(accelerator, gcloud_type, runtime, chips, hosts):
  assert tpu.parse_type(accelerator) == {'type': gcloud_type, 'runtime': runtime, 'chips': chips, 'hosts': hosts}


def test_create_tpu_vm_and_queued(capsys):
  assert dry_run(capsys, 'create', 'lm-v5e', '--zone=us-east5-a', '--project=lab', '--type=v5e-8') == [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'lm-v5e', *WHERE, '--accelerator-type=v5litepod-8',
       '--version=v2-alpha-tpuv5-lite']]
  assert dry_run(capsys, 'create', 'lm-v6e', '--zone=us-east5-a', '--project=lab', '--type=v6e-256', '--queued',
                 '--spot', '--valid-until=6h') == [
      ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'lm-v6e', '--node-id=lm-v6e', *WHERE,
       '--accelerator-type=v6e-256', '--runtime-version=v2-alpha-tpuv6e', '--valid-until-duration=6h', '--spot']]


def test_setup_copies_the_commit_and_installs_on_every_worker(capsys):
  archive, scp, ssh = dry_run(capsys, 'setup', 'lm-v5p', '--zone=us-east5-a', '--project=lab', '--ref=main')
  assert archive == ['git', 'archive', '--format=tar.gz', '--output=/tmp/lm-lm-v5p.tar.gz', 'main']
  assert scp == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', '/tmp/lm-lm-v5p.tar.gz', 'lm-v5p:lm.tar.gz', *WHERE,
                 '--worker=all']
  assert ssh[:9] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'lm-v5p', *WHERE, '--worker=all']
  remote = remote_of(ssh)
  jax_pin = next(l for l in (REPO / 'pyproject.toml').read_text().splitlines() if l.strip().startswith('"jax=='))
  assert f"'jax[tpu]=={jax_pin.split('==')[1].split(chr(34))[0]}'" in remote
  assert "-e '.[tf]'" in remote and 'gcsfuse' in remote and 'uv venv --python 3.11 .venv' in remote
  assert subprocess.run(['bash', '-n', '-c', remote]).returncode == 0


def test_launch_mounts_the_bucket_and_starts_every_worker(capsys):
  [ssh] = dry_run(capsys, 'launch', 'lm-v5p', '--zone=us-east5-a', '--project=lab',
                  '--config=experiments/pretrain_tiny.py:smoke', '--workdir=gs://lm-runs/pretrain/a',
                  '--tfds-dir=gs://lm-data/tfds', '--', '--config.pretrain.steps=5', '--config.mesh.shape=(1,-1,1)')
  assert ssh[:9] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'lm-v5p', *WHERE, '--worker=all']
  remote = remote_of(ssh)
  assert 'mountpoint -q $HOME/gcs/lm-runs || gcsfuse --implicit-dirs lm-runs $HOME/gcs/lm-runs' in remote
  assert ("TFDS_DATA_DIR=gs://lm-data/tfds setsid nohup .venv/bin/python -m lm.launch "
          "--config=experiments/pretrain_tiny.py:smoke --config.pretrain.steps=5 '--config.mesh.shape=(1,-1,1)' "
          "--workdir=$HOME/gcs/lm-runs/pretrain/a > $HOME/lm.log 2>&1 < /dev/null & echo $! > $HOME/lm.pid") in remote
  assert subprocess.run(['bash', '-n', '-c', remote]).returncode == 0


def test_logs_stop_status_delete(capsys):
  [logs] = dry_run(capsys, 'logs', 'lm-v5p', '--zone=us-east5-a', '--project=lab')
  assert logs == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'lm-v5p', *WHERE, '--worker=0',
                  '--command=tail -n 200 -F $HOME/lm.log']
  [stop] = dry_run(capsys, 'stop', 'lm-v5p', '--zone=us-east5-a', '--project=lab')
  assert 'kill -TERM $(cat $HOME/lm.pid)' in remote_of(stop) and '--worker=all' in stop
  assert subprocess.run(['bash', '-n', '-c', remote_of(stop)]).returncode == 0
  assert dry_run(capsys, 'status', 'lm-v6e', '--zone=us-east5-a', '--queued') == [
      ['gcloud', 'compute', 'tpus', 'queued-resources', 'describe', 'lm-v6e', '--zone=us-east5-a']]
  assert dry_run(capsys, 'delete', 'lm-v6e', '--zone=us-east5-a', '--queued') == [
      ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', 'lm-v6e', '--zone=us-east5-a', '--force', '--quiet']]
  assert dry_run(capsys, 'delete', 'lm-v5e', '--zone=us-east5-a') == [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'lm-v5e', '--zone=us-east5-a', '--quiet']]


@pytest.mark.parametrize('argv,message', [
    (['create', 'LM', '--zone=us-east5-a', '--type=v5p-32'], "NAME='LM': lowercase letters"),
    (['create', 'lm', '--zone=east', '--type=v5p-32'], "--zone='east': expected a zone"),
    (['create', 'lm', '--zone=us-east5-a', '--type=v5p-12'], '--type=v5p-12: v5p slices come in sizes multiple of 8'),
    (['create', 'lm', '--zone=us-east5-a', '--type=v7-8'], '--type=v7-8: expected FAMILY-SIZE'),
    (['create', 'lm', '--zone=us-east5-a', '--type=v6e-12'], '--type=v6e-12: v6e slices come in sizes 1, 4, 8'),
    (['launch', 'lm', '--zone=us-east5-a', '--config=experiments/none.py', '--workdir=gs://b/x'],
     'experiments/none.py is not a file of this repository'),
    (['launch', 'lm', '--zone=us-east5-a', '--config=experiments/pretrain_tiny.py', '--workdir=runs/x'],
     "--workdir='runs/x': expected gs://BUCKET[/PATH]"),
    (['launch', 'lm', '--zone=us-east5-a', '--config=experiments/pretrain_tiny.py', '--workdir=gs://bucket'],
     'name a directory inside the bucket'),
    (['launch', 'lm', '--zone=us-east5-a', '--config=experiments/pretrain_tiny.py', '--workdir=gs://bkt/x', '--',
      '--steps=5'], '--steps=5: only --config.KEY=VALUE overrides may follow --'),
    (['logs', 'lm', '--zone=us-east5-a', '--worker=first'], '--worker=first: a worker number'),
    (['stop', 'lm', '--zone=us-east5-a', '--', '--config.a=1'], 'only launch takes --config.KEY=VALUE overrides'),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
  assert tpu.main(with_dry_run(argv)) == 2
  out = capsys.readouterr()
  assert out.out == '' and message in out.err and out.err.count('\n') == 1, out.err


def test_cli_dry_run_runs_nothing():
  """The script as users run it: commands on stdout, exit 0, nothing executed (no gcloud here)."""
  result = subprocess.run([sys.executable, 'tpu/tpu.py', 'create', 'lm', '--zone=us-east5-a', '--type=v5p-32',
                           '--dry-run'], cwd=REPO, capture_output=True, text=True, env={'PATH': '/nonexistent'})
  assert result.returncode == 0, result.stderr
  assert result.stdout == ('gcloud compute tpus tpu-vm create lm --zone=us-east5-a --accelerator-type=v5p-32 '
                           '--version=v2-alpha-tpuv5\n')


def test_launcher_refuses_a_url_workdir():
  """Workers get the gcsfuse mount; a gs:// workdir given to lm.launch directly is a one-line error."""
  result = subprocess.run([sys.executable, '-m', 'lm.launch', '--config=experiments/pretrain_tiny.py:smoke',
                           '--workdir=gs://lm-runs/x'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      'lm.launch: error: --workdir=gs://lm-runs/x: a local or mounted path, not a URL (on TPU VMs tpu/tpu.py '
      'launch mounts gs://BUCKET with gcsfuse and passes the mount)']
  assert not (REPO / 'gs:').exists()
