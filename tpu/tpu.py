"""Cloud TPU VMs and pod slices for lm: create, set up, launch, follow, stop and delete.

  python tpu/tpu.py create NAME --zone=Z --type=v5p-32 [--queued] [--spot] [--project=P]
  python tpu/tpu.py setup  NAME --zone=Z [--ref=HEAD] [--extras=tf]
  python tpu/tpu.py launch NAME --zone=Z --config=experiments/x.py[:arg] --workdir=gs://BUCKET/DIR
                           [--tfds-dir=gs://BUCKET/tfds] [-- --config.a.b=v ...]
  python tpu/tpu.py logs   NAME --zone=Z [--worker=0|all]
  python tpu/tpu.py stop   NAME --zone=Z
  python tpu/tpu.py status NAME --zone=Z [--queued]
  python tpu/tpu.py delete NAME --zone=Z [--queued]

Every command runs the same thing on every worker of a slice (``--worker=all``). ``--dry-run``
prints the exact commands instead of running them. The workdir is a GCS bucket mounted with gcsfuse
at ``~/gcs/BUCKET`` on every worker, so all hosts share it (the launcher, metrics and orbax see a
local path); tfds datasets are read from ``--tfds-dir`` (``TFDS_DATA_DIR``) directly. ``stop``
sends SIGTERM: each process saves a checkpoint and exits with status 143; ``launch`` again resumes.
See tpu/README.md.
"""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# family -> (gcloud accelerator-type prefix, runtime version, allowed sizes, chips per size unit, chips per host)
FAMILIES = {
    'v4': ('v4', 'tpu-ubuntu2204-base', 'multiple of 8', 0.5, 4),
    'v5e': ('v5litepod', 'v2-alpha-tpuv5-lite', (1, 4, 8, 16, 32, 64, 128, 256), 1, 4),
    'v5p': ('v5p', 'v2-alpha-tpuv5', 'multiple of 8', 0.5, 4),
    'v6e': ('v6e', 'v2-alpha-tpuv6e', (1, 4, 8, 16, 32, 64, 128, 256), 1, 4),
}
ALIASES = {'v5litepod': 'v5e'}
SINGLE_HOST_MAX_CHIPS = 8  # v5e and v6e slices of up to 8 chips are one host
LOG, PID = '$HOME/lm.log', '$HOME/lm.pid'
GCSFUSE_INSTALL = (
    'command -v gcsfuse >/dev/null || { '
    'curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg '
    '| sudo gpg --dearmor --yes -o /usr/share/keyrings/gcsfuse.gpg && '
    'echo "deb [signed-by=/usr/share/keyrings/gcsfuse.gpg] https://packages.cloud.google.com/apt '
    'gcsfuse-$(lsb_release -cs) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && '
    'sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }')


class UsageError(ValueError):
  """A bad argument: the message names it and what would be valid."""


def parse_type(accelerator: str) -> dict:
  """``v5p-32`` (or ``v5e-8`` / ``v5litepod-8``) -> the gcloud type, runtime, chips and hosts."""
  m = re.fullmatch(r'([a-z0-9]+)-(\d+)', accelerator)
  family = ALIASES.get(m.group(1), m.group(1)) if m else None
  if family not in FAMILIES:
    raise UsageError(f'--type={accelerator}: expected FAMILY-SIZE with FAMILY one of {", ".join(FAMILIES)} '
                     '(e.g. v5e-8, v5p-32, v6e-256)')
  prefix, runtime, sizes, chips_per_unit, chips_per_host = FAMILIES[family]
  size = int(m.group(2))
  ok = size in sizes if isinstance(sizes, tuple) else size >= 8 and size % 8 == 0
  if not ok:
    valid = ', '.join(map(str, sizes)) if isinstance(sizes, tuple) else sizes
    raise UsageError(f'--type={accelerator}: {family} slices come in sizes {valid}')
  chips = int(size * chips_per_unit)
  single_host = family in ('v5e', 'v6e') and chips <= SINGLE_HOST_MAX_CHIPS
  hosts = 1 if single_host else max(1, chips // chips_per_host)
  return {'type': f'{prefix}-{size}', 'runtime': runtime, 'chips': chips, 'hosts': hosts}


def _check_name(name: str) -> str:
  if not re.fullmatch(r'[a-z]([-a-z0-9]{0,61}[a-z0-9])?', name):
    raise UsageError(f'NAME={name!r}: lowercase letters, digits and hyphens, starting with a letter '
                     '(at most 63 characters)')
  return name


def _check_zone(zone: str) -> str:
  if not re.fullmatch(r'[a-z]+-[a-z]+\d+-[a-z]', zone or ''):
    raise UsageError(f'--zone={zone!r}: expected a zone like us-east5-a or europe-west4-b')
  return zone


def split_gs(url: str, flag: str) -> tuple[str, str]:
  """``gs://bucket/a/b`` -> ``('bucket', 'a/b')``."""
  m = re.fullmatch(r'gs://([a-z0-9][-_.a-z0-9]{1,221}[a-z0-9])(/[^\s]*)?', url or '')
  if not m:
    raise UsageError(f'{flag}={url!r}: expected gs://BUCKET[/PATH] (workers share it through GCS)')
  return m.group(1), (m.group(2) or '').strip('/')


def _where(a) -> list[str]:
  return [f'--zone={a.zone}'] + ([f'--project={a.project}'] if a.project else [])


def _ssh(a, remote: str, worker: str = 'all') -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', a.name, *_where(a), f'--worker={worker}',
          f'--command={remote}']


def create(a) -> list[list[str]]:
  t = parse_type(a.type)
  runtime = a.runtime or t['runtime']
  if a.queued:
    cmd = ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', a.name, f'--node-id={a.name}',
           *_where(a), f'--accelerator-type={t["type"]}', f'--runtime-version={runtime}']
    if a.valid_until:
      cmd.append(f'--valid-until-duration={a.valid_until}')
  else:
    cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', a.name, *_where(a),
           f'--accelerator-type={t["type"]}', f'--version={runtime}']
  return [cmd + (['--spot'] if a.spot else [])]


def setup(a) -> list[list[str]]:
  if not re.fullmatch(r'[-\w.]+(\[[a-z,]*\])?', a.extras or 'x'):
    raise UsageError(f'--extras={a.extras!r}: comma-separated extras of pyproject.toml, e.g. tf')
  jax_pin = re.search(r'"jax==([^"]+)"', (REPO / 'pyproject.toml').read_text()).group(1)
  tarball = f'/tmp/lm-{a.name}.tar.gz'
  package = f'.[{a.extras}]' if a.extras else '.'
  remote = '; '.join([
      'set -e', GCSFUSE_INSTALL,
      'command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh',
      'export PATH=$HOME/.local/bin:$PATH',
      'mkdir -p $HOME/lm',
      'find $HOME/lm -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +',
      'tar xzf $HOME/lm.tar.gz -C $HOME/lm', 'cd $HOME/lm',
      f'[ -d .venv ] || uv venv --python {a.python} .venv',
      f'uv pip install --python .venv/bin/python -e {shlex.quote(package)} {shlex.quote(f"jax[tpu]=={jax_pin}")}',
      '.venv/bin/python -c "import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)"',
  ])
  return [['git', 'archive', '--format=tar.gz', f'--output={tarball}', a.ref],
          ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', tarball, f'{a.name}:lm.tar.gz', *_where(a), '--worker=all'],
          _ssh(a, remote)]


def launch(a) -> list[list[str]]:
  config_file = a.config.split(':', 1)[0]
  if not (REPO / config_file).is_file() or Path(config_file).is_absolute():
    raise UsageError(f'--config={a.config}: {config_file} is not a file of this repository (path relative to it)')
  bucket, path = split_gs(a.workdir, '--workdir')
  if not path:
    raise UsageError(f'--workdir={a.workdir}: name a directory inside the bucket, e.g. gs://{bucket}/runs/x')
  bad = [o for o in a.overrides if not o.startswith('--config.')]
  if bad:
    raise UsageError(f'{bad[0]}: only --config.KEY=VALUE overrides may follow --')
  mount = f'$HOME/gcs/{bucket}'
  env = ''
  if a.tfds_dir:
    split_gs(a.tfds_dir, '--tfds-dir')
    env = f'TFDS_DATA_DIR={shlex.quote(a.tfds_dir)} '
  args = ' '.join(shlex.quote(x) for x in [f'--config={a.config}', *a.overrides])
  remote = '; '.join([
      'set -e',
      f'if [ -f {PID} ] && kill -0 $(cat {PID}) 2>/dev/null; then '
      f'echo "lm is already running (pid $(cat {PID})): tpu.py stop first" >&2; exit 1; fi',
      f'mkdir -p {mount}', f'mountpoint -q {mount} || gcsfuse --implicit-dirs {bucket} {mount}',
      'cd $HOME/lm',
      f'{env}setsid nohup .venv/bin/python -m lm.launch {args} --workdir={mount}/{shlex.quote(path)} '
      f'> {LOG} 2>&1 < /dev/null & echo $! > {PID}',
      f'echo "started on $(hostname): log {LOG}"',
  ])
  return [_ssh(a, remote)]


def logs(a) -> list[list[str]]:
  if a.worker != 'all' and not a.worker.isdigit():
    raise UsageError(f'--worker={a.worker}: a worker number (0 is the one that writes metrics) or all')
  return [_ssh(a, f'tail -n 200 -F {LOG}', worker=a.worker)]


def stop(a) -> list[list[str]]:
  return [_ssh(a, f'if [ -f {PID} ]; then kill -TERM $(cat {PID}) 2>/dev/null || true; rm -f {PID}; fi')]


def status(a) -> list[list[str]]:
  kind = ['queued-resources'] if a.queued else ['tpu-vm']
  return [['gcloud', 'compute', 'tpus', *kind, 'describe', a.name, *_where(a)]]


def delete(a) -> list[list[str]]:
  if a.queued:  # --force deletes the node with the request
    return [['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', a.name, *_where(a), '--force', '--quiet']]
  return [['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', a.name, *_where(a), '--quiet']]


COMMANDS = {'create': create, 'setup': setup, 'launch': launch, 'logs': logs, 'stop': stop, 'status': status,
            'delete': delete}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='tpu.py', description=__doc__.split('\n\n')[0],
                              epilog='launch: --config.KEY=VALUE overrides follow a --')
  sub = p.add_subparsers(dest='command', required=True)
  for name in COMMANDS:
    s = sub.add_parser(name)
    s.add_argument('name', help='TPU (and queued resource) name')
    s.add_argument('--zone', required=True)
    s.add_argument('--project', default='')
    s.add_argument('--dry-run', action='store_true', help='print the commands instead of running them')
    if name in ('create', 'status', 'delete'):
      s.add_argument('--queued', action='store_true', help='a queued resource (waits for capacity)')
    if name == 'create':
      s.add_argument('--type', required=True, help='accelerator type, e.g. v5e-8, v5p-32, v6e-256')
      s.add_argument('--spot', action='store_true')
      s.add_argument('--runtime', default='', help='TPU software version (default: by family)')
      s.add_argument('--valid-until', default='', help='queued: give up after this long, e.g. 6h')
    if name == 'setup':
      s.add_argument('--ref', default='HEAD', help='git revision to install (committed code only)')
      s.add_argument('--extras', default='tf', help='pyproject extras (tf: public tfds datasets)')
      s.add_argument('--python', default='3.11')
    if name == 'launch':
      s.add_argument('--config', required=True)
      s.add_argument('--workdir', required=True, help='gs://BUCKET/DIR, shared by all workers')
      s.add_argument('--tfds-dir', default='', help='gs://BUCKET/DIR for tfds datasets (TFDS_DATA_DIR)')
    if name == 'logs':
      s.add_argument('--worker', default='0')
  return p


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  args = parser().parse_args(argv)
  if overrides and args.command != 'launch':
    print(f'tpu.py {args.command}: error: only launch takes --config.KEY=VALUE overrides after --', file=sys.stderr)
    return 2
  args.overrides = overrides
  try:
    _check_name(args.name)
    _check_zone(args.zone)
    commands = COMMANDS[args.command](args)
  except UsageError as e:
    print(f'tpu.py {args.command}: error: {e}', file=sys.stderr)
    return 2
  for cmd in commands:
    if args.dry_run:
      print(shlex.join(cmd))
      continue
    print('+ ' + shlex.join(cmd), file=sys.stderr, flush=True)
    rc = subprocess.call(cmd, cwd=REPO)  # git archive runs in the repository
    if rc:
      return rc
  return 0


if __name__ == '__main__':
  sys.exit(main())
