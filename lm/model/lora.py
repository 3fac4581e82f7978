"""LoRA: low-rank adapters beside a frozen base, as plain pytrees; the model is left untouched.

A target projection ``W`` gets ``W + (alpha / rank) * A @ B`` with ``A`` random and ``B`` zero, so at
init the model computes exactly what the base computes. Training differentiates the adapters only:
``merge`` runs inside the loss (the merged weights are a few extra flops per step, tiny next to the
matmuls on activations), then ``model.apply`` as usual. The same ``merge`` exports a plain
checkpoint for serving at full speed.

Adapter shapes per layer (r = rank; D embed, K kv heads, G query heads per kv head, Hd head size,
H = K * G heads, F mlp), with logical axis names so that each shards like its base weight:

  target  base slice                 A                                  B
  q       wqkv[:, :, :G]   [D,K,G,Hd]  [D, r]      (embed, -)            [r, K, G, Hd]  (-, kv_heads, qkv, head_dim)
  k       wqkv[:, :, G]    [D,K,Hd]    [D, r]      (embed, -)            [r, K, Hd]     (-, kv_heads, head_dim)
  v       wqkv[:, :, G+1]  [D,K,Hd]    [D, r]      (embed, -)            [r, K, Hd]     (-, kv_heads, head_dim)
  o       wo               [H,Hd,D]    [H, Hd, r]  (heads, head_dim, -)  [r, D]         (-, embed)
  gate    w_gate_up[..., 0] [D,F]      [D, r]      (embed, -)            [r, F]         (-, mlp)
  up      w_gate_up[..., 1] [D,F]      [D, r]      (embed, -)            [r, F]         (-, mlp)
  down    w_down           [F,D]       [F, r]      (mlp, -)              [r, D]         (-, embed)

In every case the update is ``tensordot(A, B, 1)`` (A's last axis against B's first) and has the
slice's shape. The adapter tree mirrors the base's layer keys:
``{'layer_0': {'q': {'a': A, 'b': B}, ...}, ...}`` for unrolled layers, or
``{'layers': {'block': {'q': {'a': [L, D, r], 'b': [L, r, K, G, Hd]}, ...}}}`` for scanned ones
(a leading layer axis, logical name ``layers``).
"""

import dataclasses
import math
import re
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm import config as lm_config
from lm import sharding

TARGETS = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int = 8
  alpha: float = 16.0
  targets: tuple = TARGETS  # every projection, as QLoRA recommends; ('q', 'v') is the original paper's

  def __post_init__(self):
    object.__setattr__(self, 'targets', tuple(self.targets))
    unknown = [t for t in self.targets if t not in TARGETS]
    if unknown or not self.targets:
      raise ValueError(f'lora.targets={self.targets}: choose a non-empty subset of {TARGETS}')
    if self.rank < 1:
      raise ValueError(f'lora.rank={self.rank} must be >= 1')

  @classmethod
  def from_config(cls, cfg) -> 'LoraConfig':
    """From a ConfigDict / dict; an unknown key is a one-line error naming it and the valid ones."""
    return lm_config.dataclass_from(cls, cfg, 'lora')

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


# ---------------------------------------------------------------------------------------------
# Where the layers are, and what each target's adapter looks like.


def _layer_paths(params) -> list[tuple[str, ...]]:
  """``[('layer_0',), ('layer_1',), ...]`` for unrolled layers, ``[('layers', 'block')]`` for scanned."""
  if 'layers' in params:
    return [('layers', 'block')]
  paths = sorted((k for k in params if re.fullmatch(r'layer_\d+', k)), key=lambda k: int(k[6:]))
  if not paths:
    raise ValueError(f'no transformer layers found in params (top-level keys: {sorted(params)})')
  return [(k,) for k in paths]


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _with(tree, path, value):
  """A copy of nested dict ``tree`` with ``tree[path] = value`` (copies only along the path)."""
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _with(tree.get(path[0], {}), path[1:], value)
  return out


def _adapter_specs(layer, rank: int) -> dict:
  """``{target: (a_shape, a_axes, b_shape, b_axes)}`` for one layer's params (or their shapes).

  A scanned layer's weights have a leading layer axis; it is kept in front of both A and B.
  """
  lead = tuple(layer['wqkv'].shape[:-4])
  D, K, G2, Hd = layer['wqkv'].shape[-4:]
  G, H, F, r = G2 - 2, layer['wo'].shape[-3], layer['w_down'].shape[-2], rank
  specs = {
      'q': ((D, r), ('embed', None), (r, K, G, Hd), (None, 'kv_heads', 'qkv', 'head_dim')),
      'k': ((D, r), ('embed', None), (r, K, Hd), (None, 'kv_heads', 'head_dim')),
      'v': ((D, r), ('embed', None), (r, K, Hd), (None, 'kv_heads', 'head_dim')),
      'o': ((H, Hd, r), ('heads', 'head_dim', None), (r, D), (None, 'embed')),
      'gate': ((D, r), ('embed', None), (r, F), (None, 'mlp')),
      'up': ((D, r), ('embed', None), (r, F), (None, 'mlp')),
      'down': ((F, r), ('mlp', None), (r, D), (None, 'embed')),
  }
  lead_axes = ('layers',) * len(lead)
  return {t: (lead + a, lead_axes + aa, lead + b, lead_axes + ba) for t, (a, aa, b, ba) in specs.items()}


# ---------------------------------------------------------------------------------------------
# Init and shardings.


def init_boxed(rng, base_params_or_shapes, lora_cfg: LoraConfig):
  """Adapters as ``nn.LogicallyPartitioned`` leaves (what ``lm.train.Task.init_params`` returns).

  ``base_params_or_shapes``: the base params, boxed or not, or their ``ShapeDtypeStruct``s; only
  shapes are read. A ~ normal(0, 1/fan_in) with fan_in = A's input size (Kaiming), B = 0.
  """
  base = nn.unbox(base_params_or_shapes)
  adapters = {}
  for i, path in enumerate(_layer_paths(base)):
    specs = _adapter_specs(_get(base, path), lora_cfg.rank)
    layer = {}
    for j, target in enumerate(lora_cfg.targets):
      a_shape, a_axes, b_shape, b_axes = specs[target]
      n_lead = a_axes.count('layers')
      fan_in = math.prod(a_shape[n_lead:-1])
      key = jax.random.fold_in(jax.random.fold_in(rng, i), j)
      a = jax.random.normal(key, a_shape, jnp.float32) * fan_in ** -0.5
      b = jnp.zeros(b_shape, jnp.float32)
      layer[target] = {'a': nn.LogicallyPartitioned(a, a_axes), 'b': nn.LogicallyPartitioned(b, b_axes)}
    adapters = _with(adapters, path, layer)
  return adapters


def init(rng, base_params_or_shapes, lora_cfg: LoraConfig):
  """Adapters as a plain pytree of float32 arrays, separate from the base params."""
  return nn.unbox(init_boxed(rng, base_params_or_shapes, lora_cfg))


def shardings(base_params_or_shapes, lora_cfg: LoraConfig, mesh, rules):
  """``NamedSharding``s of the adapters (a tree like ``init``'s) for a mesh and logical rules."""
  abstract = jax.eval_shape(lambda: init_boxed(jax.random.key(0), base_params_or_shapes, lora_cfg))
  return nn.unbox(sharding.logical_shardings(abstract, mesh, rules))


# ---------------------------------------------------------------------------------------------
# Merge.


def _merge_layer(layer, adapters, scale: float):
  """One (unscanned) layer's params with ``scale * A @ B`` added to each adapted slice."""
  def delta(target, like_shape):
    if target not in adapters:
      return jnp.zeros(like_shape, jnp.float32)
    a, b = adapters[target]['a'], adapters[target]['b']
    return scale * jnp.tensordot(a, b, axes=1, precision=jax.lax.Precision.HIGHEST)

  out = dict(layer)
  D, K, G2, Hd = layer['wqkv'].shape
  if adapters.keys() & {'q', 'k', 'v'}:
    dq_DxKxGxHd = delta('q', (D, K, G2 - 2, Hd))
    dk_DxKx1xHd = delta('k', (D, K, Hd))[:, :, None]
    dv_DxKx1xHd = delta('v', (D, K, Hd))[:, :, None]
    d_wqkv = jnp.concatenate([dq_DxKxGxHd, dk_DxKx1xHd, dv_DxKx1xHd], axis=2)
    out['wqkv'] = layer['wqkv'] + d_wqkv.astype(layer['wqkv'].dtype)
  if 'o' in adapters:
    out['wo'] = layer['wo'] + delta('o', layer['wo'].shape).astype(layer['wo'].dtype)
  if adapters.keys() & {'gate', 'up'}:
    D, F, _ = layer['w_gate_up'].shape
    d_gate_up_DxFx2 = jnp.stack([delta('gate', (D, F)), delta('up', (D, F))], axis=-1)
    out['w_gate_up'] = layer['w_gate_up'] + d_gate_up_DxFx2.astype(layer['w_gate_up'].dtype)
  if 'down' in adapters:
    out['w_down'] = layer['w_down'] + delta('down', layer['w_down'].shape).astype(layer['w_down'].dtype)
  return out


def merge(base_params, adapters, lora_cfg: LoraConfig):
  """Base params with every adapter folded in: ``W + (alpha/rank) A @ B`` on its slice. Pure, jittable.

  The result has the base's structure, so ``model.apply`` and checkpoints take it as they are.
  """
  params = base_params
  for path in _layer_paths(base_params):
    layer, layer_adapters = _get(base_params, path), _get(adapters, path)
    merge_fn = lambda l, a: _merge_layer(l, a, lora_cfg.scale)  # noqa: E731
    if path == ('layers', 'block'):
      merge_fn = jax.vmap(merge_fn)
    params = _with(params, path, merge_fn(layer, layer_adapters))
  return params


# ---------------------------------------------------------------------------------------------
# Training the adapters only.


def frozen_base_loss_sums(lora_cfg: LoraConfig, base_loss_sums: Callable) -> Callable:
  """``loss_sums(adapters, batch, rng, base)``: the base objective of the merged params.

  The base is an argument (so a loop can pass it to ``jit`` as an input already on the mesh) and
  sits behind ``stop_gradient``: differentiating w.r.t. it gives zeros.
  """
  def loss_sums(adapters, batch, rng, base):
    return base_loss_sums(merge(jax.lax.stop_gradient(base), adapters, lora_cfg), batch, rng)
  return loss_sums


def make_loss_sums(base_params, lora_cfg: LoraConfig, base_loss_sums: Callable) -> Callable:
  """``loss_sums(adapters, batch, rng)`` for ``lm.steps.common.make_train_step``, base closed over.

  Works with ``lm.train.run`` as it is. Under ``jit`` a closed-over array becomes a constant of the
  compiled program (one unsharded copy, unless ``jax_use_simplified_jaxpr_constants`` is on): fine
  for small models; at scale pass the base as a jit argument (``frozen_base_loss_sums``).
  """
  loss_sums = frozen_base_loss_sums(lora_cfg, base_loss_sums)
  return lambda adapters, batch, rng: loss_sums(adapters, batch, rng, base_params)


def make_eval_step(base_params, lora_cfg: LoraConfig, base_eval_step: Callable) -> Callable:
  """``eval_step(adapters, batch)`` = ``base_eval_step(merge(base, adapters), batch)``."""
  return lambda adapters, batch: base_eval_step(merge(base_params, adapters, lora_cfg), batch)


# ---------------------------------------------------------------------------------------------
# What it costs.


def trainable_count(adapters) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(adapters))


def _nbytes(tree) -> int:
  return sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(nn.unbox(tree)))


def memory_report(base_params, adapters) -> dict:
  """Trainable params and AdamW train-state bytes (params + 2 moments) for LoRA vs full fine-tuning.

  ``lora_state_bytes`` counts adapters and their moments; ``lora_total_bytes`` adds the frozen base
  (held in both cases, but without moments under LoRA). Gradients and activations are not counted.
  """
  base_n = sum(int(x.size) for x in jax.tree.leaves(nn.unbox(base_params)))
  base_bytes, adapter_bytes = _nbytes(base_params), _nbytes(adapters)
  lora_n = trainable_count(adapters)
  full_state = 3 * base_bytes
  lora_state = 3 * adapter_bytes
  return {
      'trainable_params': lora_n,
      'full_params': base_n,
      'trainable_fraction': lora_n / base_n,
      'lora_state_bytes': lora_state,
      'full_state_bytes': full_state,
      'state_ratio': lora_state / full_state,
      'lora_total_bytes': base_bytes + lora_state,
      'total_ratio': (base_bytes + lora_state) / full_state,
  }


def _human(n_bytes: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n_bytes < 1024 or unit == 'GiB':
      return f'{n_bytes:.1f} {unit}' if unit != 'B' else f'{int(n_bytes)} B'
    n_bytes /= 1024


def memory_line(report: dict) -> str:
  """The report as one printable line."""
  r = report
  return (f'LoRA: {r["trainable_params"]:,} trainable params of {r["full_params"]:,} '
          f'({100 * r["trainable_fraction"]:.2f}%); params+AdamW state {_human(r["lora_state_bytes"])} vs '
          f'full fine-tuning {_human(r["full_state_bytes"])} ({r["state_ratio"]:.4f}x); with the frozen base '
          f'{_human(r["lora_total_bytes"])} ({r["total_ratio"]:.3f}x)')
