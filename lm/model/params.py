"""A model's params as plain pytrees: initialised with their logical axis names, abstract (a restore
target carrying shardings), or loaded from a trained stage's checkpoint (LoRA adapters merged)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm import checkpoint, sharding
from lm.model import lora
from lm.model.transformer import Transformer


def boxed_init(model: Transformer):
  """``rng -> boxed params`` of ``model`` (logical axis names kept, for shardings)."""
  return lambda rng: model.init(rng, jnp.zeros((1, 8), jnp.int32))['params']


def abstract_params(model: Transformer, mesh, rules):
  """ShapeDtypeStructs of the params, carrying their shardings: a restore target."""
  boxed = jax.eval_shape(boxed_init(model), jax.random.key(0))
  shardings = nn.unbox(sharding.logical_shardings(boxed, mesh, rules))
  return checkpoint.abstract_like(nn.unbox(boxed), shardings)


def load_trained(model: Transformer, mesh, rules, checkpoint_dir: str, lora_config: dict | None = None,
                 base_checkpoint_dir: str = ''):
  """The params a training stage produced, on the mesh: its checkpoint, or for LoRA (``lora_config``
  set) the base in ``base_checkpoint_dir`` with the adapters of ``checkpoint_dir`` merged in."""
  target = abstract_params(model, mesh, rules)
  if not lora_config:
    return checkpoint.restore_params(checkpoint_dir, target)
  base = checkpoint.restore_params(base_checkpoint_dir, target)
  lora_cfg = lora.LoraConfig.from_config(lora_config)
  adapters = checkpoint.restore_params(
      checkpoint_dir, checkpoint.abstract_like(
          jax.eval_shape(lambda: lora.init(jax.random.key(0), target, lora_cfg)),
          lora.shardings(target, lora_cfg, mesh, rules)))
  with sharding.use_mesh(mesh, rules):
    return jax.jit(lora.merge, static_argnums=2, out_shardings=jax.tree.map(lambda t: t.sharding, target))(
        base, adapters, lora_cfg)
