"""What several stages share: the mesh from config, the model, and a trained model's params back
from a stage's outputs (merging LoRA adapters into their base)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm import checkpoint, lora, sharding
from lm.config import ConfigError
from lm.model import ModelConfig, Transformer


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


def boxed_init(model: Transformer):
  """``rng -> boxed params`` of ``model`` (logical axis names kept, for shardings)."""
  return lambda rng: model.init(rng, jnp.zeros((1, 8), jnp.int32))['params']


def abstract_params(model: Transformer, mesh, rules):
  """ShapeDtypeStructs of the params, carrying their shardings: a restore target."""
  boxed = jax.eval_shape(boxed_init(model), jax.random.key(0))
  shardings = nn.unbox(sharding.logical_shardings(boxed, mesh, rules))
  return checkpoint.abstract_like(nn.unbox(boxed), shardings)


def load_trained_params(outputs: dict, model: Transformer, mesh, rules):
  """The params a training stage produced, on the mesh: its checkpoint, or for LoRA its base with
  the adapters merged in."""
  target = abstract_params(model, mesh, rules)
  if 'lora' not in outputs:
    return checkpoint.restore_params(outputs['checkpoint_dir'], target)
  base = checkpoint.restore_params(outputs['base_checkpoint_dir'], target)
  lora_cfg = lora.LoraConfig.from_config(outputs['lora'])
  adapters = checkpoint.restore_params(
      outputs['checkpoint_dir'], checkpoint.abstract_like(
          jax.eval_shape(lambda: lora.init(jax.random.key(0), target, lora_cfg)),
          lora.shardings(target, lora_cfg, mesh, rules)))
  with sharding.use_mesh(mesh, rules):
    return jax.jit(lora.merge, static_argnums=2, out_shardings=jax.tree.map(lambda t: t.sharding, target))(
        base, adapters, lora_cfg)
