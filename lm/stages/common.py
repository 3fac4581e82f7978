"""What stages share, so that no stage imports another: the mesh and model from config, the inputs a
stage needs (typed ``lm.outputs``), trained params back from a stage's outputs, the lab's world, the fact
probe, and the multi-host barrier. (The reward model's contract is ``lm.rl.reward_model``.)"""

import jax

from lm import outputs, probes, sharding
from lm.config import ConfigError
from lm.data import builders
from lm.lab.world import World
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer


def mesh_and_rules(config):
  return sharding.make_mesh(config.mesh.shape), sharding.rules_from_config(config.mesh.rules)


def model_from_config(config, tok=None, seq_len: int | None = None) -> Transformer:
  """The model of ``config.model``, checked against the tokenizer and the sequence length."""
  model_cfg = ModelConfig.from_config(config.model)
  if tok is not None and tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f'model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer\'s {tok.vocab_size}')
  if seq_len is not None and seq_len > model_cfg.max_seq_len:
    raise ConfigError(f'seq_len={seq_len} is longer than model.max_seq_len={model_cfg.max_seq_len}')
  return Transformer(model_cfg)


def need(inputs: dict, stage: str, by: str):
  """``inputs[stage]``, or a one-line error saying that ``by`` needs that stage before it."""
  if stage not in inputs:
    raise ConfigError(f'{by} needs the {stage} stage before it (ran: {", ".join(inputs) or "none"})')
  return inputs[stage]


def tfds_dir(inputs: dict, by: str) -> str:
  """The data stage's datasets."""
  return need(inputs, 'data', by).tfds_dir


def rankings_dir(inputs: dict, by: str) -> str:
  """Where the preference rankings are: the preferences stage's dataset when it ran, else the data stage's."""
  return inputs['preferences'].tfds_dir if 'preferences' in inputs else tfds_dir(inputs, by)


def world(config) -> World:
  """The lab's world of this run (``data.seed``, ``data.world``)."""
  try:
    return World(seed=config.data.seed, **config.data.world)
  except ValueError as e:
    raise ConfigError(f'data.world: {e}') from None


def load_params(trained: outputs.Model, model: Transformer, mesh, rules):
  """The params ``trained`` names, on the mesh (LoRA adapters merged into their base)."""
  return params_lib.load_trained(model, mesh, rules, trained.checkpoint_dir, trained.lora,
                                 trained.base_checkpoint_dir)


def model_outputs(config, out: dict, tokenizer: str, **fields) -> outputs.Model:
  """``outputs.Model`` of a training stage: ``train.run``'s result (checkpoint dir, final metrics:
  loss, tokens_seen, ...) with the model's config, its parameter count and tokenizer."""
  n_params = ModelConfig.from_config(config.model).n_params()
  return outputs.Model(checkpoint_dir=out['checkpoint_dir'], model=dict(config.model), tokenizer=tokenizer,
                       metrics={'params': n_params, **{k: v for k, v in out.items() if k != 'checkpoint_dir'}},
                       **fields)


def sync(name: str) -> None:
  """Every process waits here (what process 0 wrote exists for all)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def fact_probe(key: str, on: bool, model, tok, inputs, mesh, rules):
  """``lm.probes.make_fact_probe`` on the facts of the data stage's eval set, or None when config ``key``
  (``on``) is false."""
  if not on:
    return None
  records = builders.read(builders.EvalSet, tfds_dir(inputs, key), 'test')
  try:
    return probes.make_fact_probe(model, tok, probes.world_facts(records), mesh, rules)
  except ValueError as e:
    raise ConfigError(f'{key}: {e} (data.eval_sets)') from None
