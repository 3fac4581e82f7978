"""The launcher's contract: one-line errors for bad configs, and sweeps that end in one table."""

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from lm import compile_time
from lm import config as lm_config
from lm.cli import launch

REPO = Path(__file__).resolve().parents[1]


def run_cli(tmp_path, *args):
  cmd = [sys.executable, '-m', 'lm.launch', f'--workdir={tmp_path / "run"}', *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('arg, expected', [
    ('--config.model.d_modle=64', 'unknown config key model.d_modle (did you mean model.d_model?); valid keys in '
     'model: '),
    ('--config.pretrain.optim.lr_peak=1', 'unknown config key pretrain.optim.lr_peak'),
    ('--config.mesh.shape=(3,1,1)', 'mesh.shape=(3, 1, 1) uses 3 devices but 8 are present'),
    ("--config.stages=('data','pretrian')", "unknown stage 'pretrian' in config.stages; valid: data, tokenizer, "
     'pretrain'),
])
def test_bad_config_is_one_line_naming_the_key(launcher_error, tmp_path, arg, expected):
  message = launcher_error('--config=experiments/pretrain_tiny.py:smoke', f'--workdir={tmp_path / "run"}', arg)
  assert message.startswith(f'lm.launch: error: {expected}') and '\n' not in message, message
  assert not (tmp_path / 'run').exists()


def test_unknown_experiment_argument_and_missing_file(launcher_error, tmp_path):
  message = launcher_error('--config=experiments/pretrain_tiny.py:huge', f'--workdir={tmp_path}')
  assert message.startswith("lm.launch: error: unknown experiments/pretrain_tiny.py argument 'huge'"), message
  message = launcher_error('--config=experiments/nope.py', f'--workdir={tmp_path}')
  assert message == 'lm.launch: error: config file experiments/nope.py does not exist'


def test_valid_keys_are_listed_and_typos_in_experiment_files_fail():
  config = lm_config.load(str(REPO / 'experiments/pretrain_tiny.py:smoke'))
  with pytest.raises(lm_config.ConfigError, match=r'valid keys in pretrain: batch_size, checkpoint_every'):
    lm_config.check_key(config, 'pretrain.stepz')
  lm_config.check_key(config, 'pretrain.optim.lr')  # a real key passes
  with pytest.raises(AttributeError):
    config.pretrain.stepz = 5  # configs are locked: a typo in an experiment file is not a new field
  with pytest.raises(lm_config.ConfigError, match='unknown config key model.n_layer '):
    lm_config.with_overrides(config, {'model': {'n_layer': 2}})


def test_model_section_is_checked_by_the_model_config():
  from lm.model.transformer import ModelConfig
  with pytest.raises(ValueError, match='unknown config key model.n_layer; valid keys: vocab_size, d_model'):
    ModelConfig.from_config({'n_layer': 2})


@pytest.mark.slow
def test_cpu_devices_split_the_batch_and_train_the_same_model(tmp_path):
  """mesh.cpu_devices=2 pretrains on two CPU devices, half of each batch on each, to one device's losses."""
  outs = {}
  for n in (1, 2):
    result = run_cli(tmp_path / str(n), '--config=experiments/pretrain_tiny.py:smoke', f'--config.mesh.cpu_devices={n}')
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / str(n) / 'run' / 'pretrain' / 'outputs.json').read_text())
    assert out['devices']['count'] == n
    step_compile = max(json.loads(line).get('compile_s', 0) for line in (tmp_path / str(n) / 'run' / 'metrics.jsonl')
                       .read_text().splitlines())
    assert 0.8 * step_compile <= out['compile_s'] < out['wall_s']  # the stage's compiles hold its train step's
    outs[n] = out['metrics']
  assert outs[1]['step'] == outs[2]['step'] == 20 and outs[1]['loss'] < 6.0  # it learned (ln 512 = 6.24)
  assert outs[2]['loss'] == pytest.approx(outs[1]['loss'], rel=1e-4)
  assert outs[2]['eval_loss'] == pytest.approx(outs[1]['eval_loss'], rel=1e-4)


def test_compile_seconds_count_a_new_program_once():
  program = jax.jit(lambda x: jnp.sin(x) * 3.25 + jnp.cumsum(x))  # a program nothing else here compiles
  x = jax.block_until_ready(jnp.arange(7.0))
  before, t0 = compile_time.seconds(), time.perf_counter()
  jax.block_until_ready(program(x))
  wall = time.perf_counter() - t0
  first = compile_time.seconds() - before
  jax.block_until_ready(program(x))
  assert 0 < first <= wall
  assert compile_time.seconds() - before == first  # the second call runs the compiled program


def test_cpu_devices_need_a_process_whose_jax_has_not_started(tmp_path):
  config = lm_config.load(str(REPO / 'experiments/pretrain_tiny.py:smoke'))
  have = jax.device_count()  # starts this process's backend, if nothing had yet
  launch.cpu_devices(have)   # asking for what it has is fine
  config.mesh.cpu_devices = have + 1
  with pytest.raises(lm_config.ConfigError, match=rf'mesh.cpu_devices={have + 1}: this process already runs jax '
                                                  rf'with {have} CPU devices'):
    launch.launch(config, tmp_path)
  assert not (tmp_path / 'config.json').exists()


@pytest.mark.slow
def test_variants_run_in_their_own_workdirs_and_end_in_one_table(tmp_path):
  config = lm_config.load(str(REPO / 'experiments/pretrain_tiny.py:smoke'))
  config = lm_config.with_overrides(config, {'pretrain': {'steps': 6, 'eval_every': 6, 'checkpoint_every': 6}})
  config.variants = {'one_layer': {'model': {'n_layers': 1}}, 'lr_1e-3': {'pretrain': {'optim': {'lr': 1e-3}}}}
  results = launch.launch(config, tmp_path)
  assert set(results) == {'one_layer', 'lr_1e-3'}
  assert (tmp_path / 'one_layer' / 'pretrain' / 'outputs.json').exists()
  assert '"n_layers": 1' in (tmp_path / 'one_layer' / 'config.json').read_text()
  assert '"n_layers": 2' in (tmp_path / 'lr_1e-3' / 'config.json').read_text()
  table = (tmp_path / 'comparison.md').read_text().splitlines()
  assert table[0].startswith('| variant |') and 'pretrain.eval_loss' in table[0]
  assert sorted(row.split('|')[1].strip() for row in table[2:]) == ['lr_1e-3', 'one_layer']
  assert results['one_layer']['pretrain'].get('eval_loss') != results['lr_1e-3']['pretrain'].get('eval_loss')


def test_shared_stages_cannot_be_varied(tmp_path):
  config = lm_config.load(str(REPO / 'experiments/lora_vs_full.py:smoke'))
  assert config.shared_stages == ('data', 'tokenizer', 'pretrain') and 'full' in config.variants
  config.variants = {'a': {}, 'b': {'pretrain': {'steps': 3}}}
  with pytest.raises(lm_config.ConfigError, match="variant 'b' overrides 'pretrain', which is in shared_stages"):
    launch.launch(config, tmp_path)
