"""The one launcher: runs the stages an experiment config lists, in order, in a workdir.

  python -m lm.launch --config=experiments/<x>.py[:arg] --workdir=<dir> [--config.a.b=v ...]

Each stage's outputs go to ``<workdir>/<stage>/outputs.json``; a stage with that file is skipped, so
the same command after a crash or ``kill -9`` resumes (an interrupted stage resumes from its latest
checkpoint). A config with ``variants`` runs each under ``<workdir>/<variant>/`` and ends in one
comparison table (``<workdir>/comparison.md``). Stages listed in ``shared_stages`` (those that the
varied keys do not touch, e.g. data, tokenizer, pretrain) run once in ``<workdir>/shared/`` and
their outputs go to every variant, which runs only the remaining stages. Each stage's outputs also
record its ``wall_s``, ``compile_s`` (``lm.compile_time``) and ``devices``; every run ends with its
report card (``lm.report``: ``report.md``, PNGs, ``report.html``), a sweep with one per variant and one
linking them.
"""

import functools
import re
import sys
import time
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lm import checkpoint, compile_time, hardware, outputs, sharding, train
from lm import config as lm_config
from lm.configs import base
from lm.model.transformer import ModelConfig
from lm.report import card, comparison
from lm.stages import (
    data,
    eval,
    hf_import,
    overoptimization,
    preferences,
    pretrain,
    reward,
    rlhf,
    sft,
    synthetic,
    tokenizer,
)

# the stages by name, as configs list them in ``stages``
STAGES = {
    'data': data.run,
    'tokenizer': tokenizer.run,
    'pretrain': pretrain.run,
    'import': hf_import.run,
    'sft': sft.run,
    'preferences': preferences.run,
    'reward': reward.run,
    'rlhf': rlhf.run,
    'overoptimization': overoptimization.run,
    'synthetic': synthetic.run,
    'sft_original': sft.run_original,
    'sft_synthetic': sft.run_synthetic,
    'eval': eval.run,
}

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config: path/to/file.py[:arg].')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and reports go.')


def _is_chief() -> bool:
  return jax.process_index() == 0


def _say(message: str) -> None:
  """A progress line, from process 0 only (every host runs the same stages)."""
  if _is_chief():
    print(message, flush=True)


def _devices() -> dict:
  return {'count': jax.device_count(), 'kind': jax.devices()[0].device_kind}


def _report(workdir: Path) -> None:
  """``workdir``'s report card (``lm.report``), written by process 0."""
  if _is_chief():
    _say(f'[report] {card.write(workdir)}')


def reused(config) -> dict[str, outputs.Outputs]:
  """The finished stages ``reuse.stages`` of the run in ``reuse.workdir`` (e.g. data .. sft of a
  lifecycle run), which this run's stages take as inputs instead of running them again."""
  out = {}
  for name in config.reuse.stages:
    path = Path(config.reuse.workdir) / name / 'outputs.json'
    if not path.is_file():
      raise lm_config.ConfigError(f'reuse.stages has {name!r} but {path} does not exist (reuse.workdir='
                                  f'{config.reuse.workdir!r}: a run whose {name} stage finished)')
    out[name] = outputs.load(path)
  return out


def run_stages(config, workdir: Path, shared: dict | None = None) -> dict[str, outputs.Outputs]:
  """Runs ``config.stages`` in ``workdir``, after the already-run ``shared`` ones; returns ``{stage: outputs}``."""
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise lm_config.ConfigError(f'unknown stage {unknown[0]!r} in config.stages; valid: {", ".join(STAGES)}')
  workdir.mkdir(parents=True, exist_ok=True)
  if _is_chief():
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
  results = {**reused(config), **(shared or {})}
  for name in config.stages:
    done = workdir / name / 'outputs.json'
    if done.exists():
      results[name] = outputs.load(done)
      _say(f'[{name}] already complete in {done.parent}: skipped')
      continue
    _say(f'[{name}] running in {workdir}')
    t0, compile0 = time.time(), compile_time.seconds()
    out = STAGES[name](config, workdir, results)
    out.wall_s, out.devices = time.time() - t0, _devices()  # for the report's time table
    out.compile_s = compile_time.seconds() - compile0
    if _is_chief():
      outputs.save(out, done)
    results[name] = out
  return results


def compilation_cache(workdir: Path) -> None:
  """Compiled programs persist in ``<workdir>/jax_cache``: a rerun, a resumed run and every variant of a
  sweep load what an earlier one compiled instead of compiling it again (keyed by the program, so a
  change of model, shapes or code compiles anew)."""
  jax.config.update('jax_compilation_cache_dir', str(Path(workdir).absolute() / 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


def check(config) -> None:
  """The whole config, before anything runs or is written: keys, types and ranges against
  ``lm.configs.base`` (``lm.config.validate``), every variant as the config it makes, and the model
  section; the first problem is a one-line ConfigError naming the key."""
  schema = base.get_config()
  lm_config.validate(config, schema, base.RANGES)
  for name, overrides in config.variants.items():
    variant = lm_config.with_overrides(config, dict(overrides))
    lm_config.validate(variant, schema, base.RANGES, where=f'variant {name!r}: ')
    ModelConfig.from_config(variant.model)
  ModelConfig.from_config(config.model)


TRAIN_SECTIONS = {'pretrain': 'pretrain', 'sft': 'sft', 'sft_original': 'sft', 'sft_synthetic': 'sft',
                  'reward': 'reward'}  # stage -> the train section it reads


def check_batches(config, mesh_shape) -> None:
  """Every train section a listed stage uses (in every variant) splits its batch evenly over the
  mesh's batch shards (data x fsdp) and its microbatches; else a one-line ConfigError naming it."""
  shards = mesh_shape[0] * mesh_shape[1]
  configs = [config] + [lm_config.with_overrides(config, dict(o)) for o in config.variants.values()]
  for c in configs:
    for section in sorted({TRAIN_SECTIONS[s] for s in c.stages if s in TRAIN_SECTIONS}):
      size, micro = c[section].batch_size, c[section].microbatches
      if size % micro or (size // micro) % shards:
        raise lm_config.ConfigError(f'{section}.batch_size={size} must be a multiple of {section}.microbatches='
                                    f'{micro} times the mesh batch shards ({shards}: data x fsdp of mesh.shape '
                                    f'{mesh_shape})')


def cpu_devices(n: int) -> None:
  """Splits the host's CPU into ``n`` XLA:CPU devices (``mesh.cpu_devices``; 0 leaves jax's count), which
  only a process whose CPU backend has not started yet can do."""
  if not n:
    return
  try:
    jax.config.update('jax_num_cpu_devices', n)
  except RuntimeError:
    have = len(jax.devices('cpu'))
    if have != n:
      raise lm_config.ConfigError(f'mesh.cpu_devices={n}: this process already runs jax with {have} CPU devices '
                                  '(set it on the command line of a fresh process)') from None


def launch(config, workdir: Path) -> dict:
  check(config)  # starts no jax backend
  cpu_devices(config.mesh.cpu_devices)  # before anything does
  sharding.maybe_initialize_distributed(config.distributed)
  if not jax.config.jax_compilation_cache_dir:  # a caller's own cache (the tests') wins
    compilation_cache(workdir)
  check_batches(config, sharding.mesh_shape(config.mesh.shape, jax.device_count()))  # a mesh that cannot fit: now
  variants = dict(config.variants)
  if not variants:
    results = run_stages(config, workdir)
    _report(workdir)
    return results
  shared_names = tuple(config.get('shared_stages', ()))
  shared = {}
  if shared_names:
    for name, overrides in variants.items():
      clash = [s for s in shared_names if s in dict(overrides)]
      if clash:
        raise lm_config.ConfigError(f'variant {name!r} overrides {clash[0]!r}, which is in shared_stages')
    shared_config = lm_config.with_overrides(config, {'stages': shared_names})
    shared_config.variants = {}
    shared = run_stages(shared_config, workdir / 'shared')
  results = {}
  for name, overrides in variants.items():
    variant_config = lm_config.with_overrides(config, dict(overrides), prefix='')
    variant_config.variants = {}
    variant_config.stages = tuple(s for s in config.stages if s not in shared_names)
    results[name] = run_stages(variant_config, workdir / name, shared)
  own = {v: {s: o for s, o in out.items() if s not in shared} for v, out in results.items()}
  table = comparison.table(own, config.comparison.columns)
  if _is_chief():
    (workdir / 'comparison.md').write_text(table)
    if config.comparison.plot:
      comparison.plot(own, *config.comparison.plot, workdir / 'comparison.png')
    if config.comparison.curves:
      comparison.curves(own, *config.comparison.curves, workdir / 'comparison_curves.png')
  _say(table)
  for name in (['shared'] if shared_names else []) + list(variants):
    _report(workdir / name)
  _report(workdir)
  return results


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required')
  if '://' in _WORKDIR.value:
    sys.exit(f'lm.launch: error: --workdir={_WORKDIR.value}: a local or mounted path, not a URL (on TPU VMs '
             'tpu/tpu.py launch mounts gs://BUCKET with gcsfuse and passes the mount)')
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  try:
    launch(_CONFIG.value, Path(_WORKDIR.value))
  except (ValueError, FileNotFoundError, checkpoint.SaveFailed) as e:  # ConfigError, the config checks of model,
    sys.exit(f'lm.launch: error: {e}')  # mesh and data, unreadable checkpoints, a failed save (a full disk)
  except train.Preempted as e:
    print(f'lm.launch: {e}', file=sys.stderr)
    sys.exit(143)
  except train.Diverged as e:
    sys.exit(f'lm.launch: error: {e}')


def main():
  """Checks the config file and every ``--config.*`` key before absl parses them, then runs. First of all,
  before JAX starts its threads, glibc keeps freed memory (``hardware.keep_freed_memory``): XLA:CPU's
  per-step temporaries were mapped and zero-filled afresh on every step (the lifecycle's pretraining and SFT
  steps 16% faster on a 2-core EPYC; peak RSS 1.7 -> 2.9 GB)."""
  hardware.keep_freed_memory()
  spec = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--config=')), None)
  if spec is None:
    sys.exit('lm.launch: error: --config=path/to/experiment.py[:arg] is required')
  try:
    config = lm_config.load(spec)
    lm_config.check_argv(config, sys.argv[1:])
  except (lm_config.ConfigError, ValueError) as e:
    sys.exit(f'lm.launch: error: {e}')
  app.run(_main, flags_parser=functools.partial(_parse_flags, config))


def _parse_flags(config, argv):
  """absl's flag parsing, where a ``--config.<key>=<value>`` it cannot parse is one line naming the key."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = ' '.join(str(e).split())
    match = re.match(r'flag --config\.([\w.]+)=(.*?): ', text)
    if match:
      key, value = match.groups()
      default = functools.reduce(lambda node, k: node[k], key.split('.'), config)
      text = (f'config key {key}={value}: expected {lm_config.kind_name(default)} like the default {default!r} '
              f'({text[match.end():]})')
    sys.exit(f'lm.launch: error: {text}')
