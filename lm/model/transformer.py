"""A Llama-family decoder in Flax Linen, used only through ``init`` / ``apply``.

Token embedding, RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or untied LM head and an
optional scalar head (reward and value models). Layers run under ``nn.scan`` or unrolled, with a
configurable remat policy. Packed sequences carry ``segment_ids`` (0 = padding) and ``positions``;
attention never crosses segments. A KV cache (``init_cache``) makes prefill-then-decode equal the
full forward.

Param layout (logical axis names in brackets) is chosen so that tensor parallelism shards whole
key/value groups and every projection is one 2-D matmul:
  embed       [vocab, embed]
  wqkv        [embed, kv_heads, qkv, head_dim]    qkv = the G query heads of a group, then k, then v
  wo          [heads, head_dim, embed]            head h = kv_head * G + g
  w_gate_up   [embed, mlp, gate_up]               gate_up = (gate, up)
  w_down      [mlp, embed]

Features of other Llama-family checkpoints (``lm.interop``), each off by default so that the model
and its params are exactly the plain one: biases on q, k, v (``qkv_bias``: ``bqkv [kv_heads, qkv,
head_dim]``); RMSNorm of each query and key head (``qk_norm``: ``q_norm``, ``k_norm``); embeddings
times sqrt(d_model) and norms that multiply by ``norm_offset + scale`` (Gemma stores ``scale - 1``);
GeGLU (``mlp_activation``); a query scale other than 1/sqrt(head_dim); tanh softcapping of attention
scores and of the final logits; norms after attention and after the MLP (``post_norms``:
``post_attn_norm``, ``post_mlp_norm``); a sliding attention window on some layers; RoPE
frequencies scaled as in Llama 3.1 (``rope_scaling='llama3'``) or linearly.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors

from lm import config as lm_config
from lm import hardware
from lm.model import attention, ops

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 4096
  d_model: int = 256
  n_layers: int = 6
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 0          # 0: d_model // n_heads
  d_ff: int = 704
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  lm_head: bool = True       # next-token logits
  scalar_head: bool = False  # one scalar per position (reward / value)
  dtype: str = 'float32'     # compute dtype of matmuls (auto: bf16 where native); params, activations stay f32
  scan_layers: bool = False
  remat: str = 'none'        # one of REMAT_POLICIES
  max_seq_len: int = 256     # longest sequence trained on; the default KV cache length
  # Other Llama-family architectures (see the module doc); the defaults are the plain model.
  qkv_bias: bool = False
  qk_norm: bool = False
  norm_offset: float = 0.0         # RMSNorm multiplies by (norm_offset + scale)
  scale_embeddings: bool = False   # token embeddings times sqrt(d_model)
  mlp_activation: str = 'silu'     # gate activation: silu (SwiGLU), gelu_tanh or gelu (GeGLU)
  query_pre_attn_scalar: float = 0.0  # queries times this ** -0.5 (0: head_size)
  attn_softcap: float = 0.0        # scores -> c * tanh(scores / c) (0: off)
  final_softcap: float = 0.0       # logits -> c * tanh(logits / c) (0: off)
  post_norms: bool = False         # RMSNorm of the attention and MLP outputs before the residual add
  sliding_window: int = 0          # layers in sliding_layers see only the last sliding_window positions
  sliding_layers: tuple = ()
  rope_scaling: str = 'none'       # none, linear or llama3
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  attention: str = 'auto'          # training attention kernel: auto, xla, chunked, dot_product, cudnn, splash

  def __post_init__(self):
    object.__setattr__(self, 'sliding_layers', tuple(int(i) for i in self.sliding_layers))
    if self.mlp_activation not in ACTIVATIONS:
      raise ValueError(f'model.mlp_activation={self.mlp_activation!r}; valid: {", ".join(ACTIVATIONS)}')
    if self.rope_scaling not in ('none', 'linear', 'llama3'):
      raise ValueError(f'model.rope_scaling={self.rope_scaling!r}; valid: none, linear, llama3')
    if self.sliding_layers and self.sliding_window <= 0:
      raise ValueError(f'model.sliding_layers={self.sliding_layers} needs model.sliding_window > 0')
    if any(not 0 <= i < self.n_layers for i in self.sliding_layers):
      raise ValueError(f'model.sliding_layers={self.sliding_layers}: layers are 0..{self.n_layers - 1}')
    if self.sliding_layers and self.scan_layers:
      raise ValueError('model.sliding_layers with model.scan_layers: scanned layers share one mask; unroll them')
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f'model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}')
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f'model.remat={self.remat!r}; valid: {sorted(REMAT_POLICIES)}')
    if self.dtype != 'auto' and self.dtype not in hardware.DTYPES:
      raise ValueError(f'model.dtype={self.dtype!r}; valid: auto, {", ".join(hardware.DTYPES)}')
    if not (self.lm_head or self.scalar_head):
      raise ValueError('model needs at least one of model.lm_head, model.scalar_head')
    attention.check(self)

  @classmethod
  def from_config(cls, cfg) -> 'ModelConfig':
    """From a ConfigDict / dict; an unknown key is a one-line error naming it and the valid ones."""
    return lm_config.dataclass_from(cls, cfg, 'model')

  @property
  def head_size(self) -> int:
    return self.head_dim or self.d_model // self.n_heads

  @property
  def q_per_kv(self) -> int:
    return self.n_heads // self.n_kv_heads

  @property
  def compute_dtype(self):
    """The matmul operand dtype; ``auto`` resolves on this backend (``lm.hardware.resolve_dtype``)."""
    return jnp.dtype(hardware.resolve_dtype(self.dtype))

  def n_params(self, include_embedding: bool = True) -> int:
    d, f, hd = self.d_model, self.d_ff, self.head_size
    per_layer = 2 * d + d * (self.n_heads + 2 * self.n_kv_heads) * hd + self.n_heads * hd * d + 3 * d * f
    per_layer += self.qkv_bias * (self.n_heads + 2 * self.n_kv_heads) * hd + self.qk_norm * 2 * hd
    per_layer += self.post_norms * 2 * d
    total = self.n_layers * per_layer + d
    if include_embedding:
      total += self.vocab_size * d
    if self.lm_head and not self.tie_embeddings:
      total += d * self.vocab_size
    if self.scalar_head:
      total += d + 1
    return total


def _param(module, name, init, shape, axes):
  """A float32 parameter with its logical axes. On apply the given value is returned once its shape is
  checked: Linen's own check traces the initialiser again on every trace (~40% of tracing a step)."""
  if not module.has_variable('params', name):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)
  value = nn.unbox(module.get_variable('params', name))
  if jnp.shape(value) != tuple(shape):
    raise errors.ScopeParamShapeError(name, module.scope.path_text, jnp.shape(value), tuple(shape))
  return value


def _dense_init(in_axis, out_axis, scale=1.0):
  return nn.initializers.variance_scaling(scale, 'fan_in', 'truncated_normal', in_axis=in_axis, out_axis=out_axis)


class RMSNorm(nn.Module):
  """Over the last axis; multiplies by ``offset + scale`` (scale starts at ``1 - offset``)."""
  eps: float
  offset: float = 0.0

  @nn.compact
  def __call__(self, x_BxTxD):
    init = nn.initializers.constant(1.0 - self.offset)
    scale_D = _param(self, 'scale', init, (x_BxTxD.shape[-1],), ('norm',))
    return ops.rms_norm(x_BxTxD, scale_D + self.offset if self.offset else scale_D, self.eps)


ACTIVATIONS = {
    'silu': nn.silu,
    'gelu_tanh': lambda x: nn.gelu(x, approximate=True),
    'gelu': lambda x: nn.gelu(x, approximate=False),
}


def rope_frequencies(config: ModelConfig):
  """The ``head_size / 2`` RoPE inverse frequencies, scaled as ``config.rope_scaling`` says (float32)."""
  d_half = config.head_size // 2
  inv_freq_J = 1.0 / (config.rope_theta ** (jnp.arange(d_half, dtype=jnp.float32) / d_half))
  if config.rope_scaling == 'linear':
    return inv_freq_J / config.rope_factor
  if config.rope_scaling == 'llama3':
    # Llama 3.1: long wavelengths slowed by ``rope_factor``, short ones kept, a smooth ramp between.
    low_freq_wavelen = config.rope_original_max_len / config.rope_low_freq_factor
    high_freq_wavelen = config.rope_original_max_len / config.rope_high_freq_factor
    wavelen_J = 2 * math.pi / inv_freq_J
    scaled_J = jnp.where(wavelen_J > low_freq_wavelen, inv_freq_J / config.rope_factor, inv_freq_J)
    smooth_J = ((config.rope_original_max_len / wavelen_J - config.rope_low_freq_factor)
                / (config.rope_high_freq_factor - config.rope_low_freq_factor))
    smoothed_J = (1 - smooth_J) * scaled_J / config.rope_factor + smooth_J * scaled_J
    medium_J = (wavelen_J >= high_freq_wavelen) & (wavelen_J <= low_freq_wavelen)
    return jnp.where(medium_J, smoothed_J, scaled_J)
  return inv_freq_J


def init_cache(config: ModelConfig, batch_size: int, max_len: int):
  """An empty KV cache: per-layer keys/values plus the segment ids and positions of each slot.

  Keys and values are stored as attention reads them, ``[B, K, S, E]`` per layer: a tuple of
  ``n_layers`` arrays for unrolled layers (each updated in place, nothing copied per step), one
  ``[L, B, K, S, E]`` array under ``scan_layers``. ``end`` is the next slot to write; slots with
  segment id 0 are empty and never attended to.

  They are held in the compute dtype, except on CPU: there float32, because XLA:CPU converts a
  bfloat16 cache to float32 whole on every decode step (1.6x the step's time at batch 64). The values
  are the same either way: a float32 slot is cast to the compute dtype where attention reads it, which
  rounds it as storing it would have.
  """
  kv_shape = (batch_size, config.n_kv_heads, max_len, config.head_size)
  dtype = jnp.float32 if jax.default_backend() == 'cpu' else config.compute_dtype
  if config.scan_layers:
    zeros = lambda: jnp.zeros((config.n_layers, *kv_shape), dtype)
  else:
    zeros = lambda: tuple(jnp.zeros(kv_shape, dtype) for _ in range(config.n_layers))
  return {
      'k': zeros(),
      'v': zeros(),
      'segment_ids': jnp.zeros((batch_size, max_len), jnp.int32),
      'positions': jnp.zeros((batch_size, max_len), jnp.int32),
      'end': jnp.zeros((), jnp.int32),
  }


class Block(nn.Module):
  """Pre-norm attention + gated MLP. ``kv`` is this layer's (k, v) cache or None; ``mask_BxTxS``
  already holds this layer's sliding window, if any."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, kv=None, cache_end=None):
    c = self.config
    B, T, D = x_BxTxD.shape
    K, G, E, F = c.n_kv_heads, c.q_per_kv, c.head_size, c.d_ff
    dt = c.compute_dtype

    wqkv = _param(self, 'wqkv', _dense_init(0, (1, 2, 3)), (D, K, G + 2, E), ('embed', 'kv_heads', 'qkv', 'head_dim'))
    wo = _param(self, 'wo', _dense_init((0, 1), 2, 1.0 / (2 * c.n_layers)), (c.n_heads, E, D),
                ('heads', 'head_dim', 'embed'))
    w_gate_up = _param(self, 'w_gate_up', _dense_init(0, (1, 2)), (D, F, 2), ('embed', 'mlp', 'gate_up'))
    w_down = _param(self, 'w_down', _dense_init(0, 1, 1.0 / (2 * c.n_layers)), (F, D), ('mlp', 'embed'))
    norm = lambda name: RMSNorm(c.norm_eps, c.norm_offset, name=name)  # noqa: E731

    h_BxTxD = norm('attn_norm')(x_BxTxD)
    qkv = ops.linear(h_BxTxD.reshape(B * T, D), wqkv.reshape(D, -1), dt).reshape(B, T, K, G + 2, E)
    if c.qkv_bias:
      qkv = qkv + _param(self, 'bqkv', nn.initializers.zeros, (K, G + 2, E), ('kv_heads', 'qkv', 'head_dim'))
    q_BxTxKxGxE = qkv[:, :, :, :G]
    k_BxTxKxE, v_BxTxKxE = qkv[:, :, :, G], qkv[:, :, :, G + 1]
    if c.qk_norm:
      q_BxTxKxGxE, k_BxTxKxE = norm('q_norm')(q_BxTxKxGxE), norm('k_norm')(k_BxTxKxE)
    with jax.ensure_compile_time_eval():  # concrete: the CPU's RoPE tables are computed from them when traced
      inv_freq_J = rope_frequencies(c) if c.rope_scaling != 'none' else None
    max_position = max(c.max_seq_len, T if kv is None else kv[0].shape[2])
    cos_sin = ops.rope_tables(positions_BxT, E, c.rope_theta, inv_freq_J, max_len=max_position)
    q_BxTxKxGxE = ops.apply_rope(q_BxTxKxGxE.reshape(B, T, K * G, E), *cos_sin)
    q_BxTxKxGxE = (q_BxTxKxGxE * (c.query_pre_attn_scalar or E) ** -0.5).reshape(B, T, K, G, E)
    k_BxTxKxE = ops.apply_rope(k_BxTxKxE, *cos_sin)
    q_BxTxKxGxE = nn.with_logical_constraint(q_BxTxKxGxE, ('batch', 'length', 'act_kv_heads', None, None))
    k_BxTxKxE = nn.with_logical_constraint(k_BxTxKxE, ('batch', 'length', 'act_kv_heads', None))

    k_BxKxTxE = jnp.transpose(k_BxTxKxE, (0, 2, 1, 3))
    v_BxKxTxE = jnp.transpose(v_BxTxKxE, (0, 2, 1, 3))
    if kv is None:
      keys_BxKxSxE, values_BxKxSxE, new_kv = k_BxKxTxE, v_BxKxTxE, None
    else:
      cache_k, cache_v = kv
      keys_BxKxSxE = jax.lax.dynamic_update_slice_in_dim(cache_k, k_BxKxTxE.astype(cache_k.dtype), cache_end, axis=2)
      values_BxKxSxE = jax.lax.dynamic_update_slice_in_dim(cache_v, v_BxKxTxE.astype(cache_v.dtype), cache_end, axis=2)
      new_kv = (keys_BxKxSxE, values_BxKxSxE)

    if kv is None:
      out_BxTxKxGxE = attention.attend(c, q_BxTxKxGxE, keys_BxKxSxE, values_BxKxSxE, mask_BxTxS, dt)
    else:
      out_BxTxKxGxE = ops.cached_attention(q_BxTxKxGxE, keys_BxKxSxE, values_BxKxSxE, mask_BxTxS, cache_end + T, dt,
                                           softcap=c.attn_softcap)
    attn_BxTxD = ops.linear(out_BxTxKxGxE.reshape(B * T, c.n_heads * E), wo.reshape(-1, D), dt).reshape(B, T, D)
    if c.post_norms:
      attn_BxTxD = norm('post_attn_norm')(attn_BxTxD)
    x_BxTxD = nn.with_logical_constraint(x_BxTxD + attn_BxTxD, ('batch', 'length', 'act_embed'))

    h_BxTxD = norm('mlp_norm')(x_BxTxD)
    gate_up = ops.linear(h_BxTxD.reshape(B * T, D), w_gate_up.reshape(D, 2 * F), dt).reshape(B * T, F, 2)
    hidden_MxF = ops.gated_unit(gate_up, ACTIVATIONS[c.mlp_activation])
    hidden_MxF = nn.with_logical_constraint(hidden_MxF, ('batch', 'act_mlp'))
    mlp_BxTxD = ops.linear(hidden_MxF, w_down, dt).reshape(B, T, D)
    if c.post_norms:
      mlp_BxTxD = norm('post_mlp_norm')(mlp_BxTxD)
    x_BxTxD = nn.with_logical_constraint(x_BxTxD + mlp_BxTxD, ('batch', 'length', 'act_embed'))
    return x_BxTxD, new_kv


class ScannedBlock(nn.Module):
  """``Block`` in the (carry, xs) -> (carry, ys) form that ``nn.scan`` wants."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, kv, positions_BxT, mask_BxTxS, cache_end):
    return block_class(self.config)(self.config, name='block')(x_BxTxD, positions_BxT, mask_BxTxS, kv, cache_end)


def block_class(config: ModelConfig):
  policy = REMAT_POLICIES[config.remat]
  if config.remat == 'none':
    return Block
  return nn.remat(Block, policy=policy, prevent_cse=not config.scan_layers, static_argnums=())


class Transformer(nn.Module):
  """``apply(params, tokens, positions=None, segment_ids=None, cache=None)`` -> dict.

  Returns ``logits`` ``[B, T, V]`` (float32) if ``lm_head``, ``scalar`` ``[B, T]`` if
  ``scalar_head``, ``hidden`` ``[B, T, D]`` (after the final norm) and, given a cache, the updated
  ``cache`` (new tokens are written at ``cache['end']``).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT=None, segment_ids_BxT=None, cache=None) -> dict[str, Any]:
    c = self.config
    B, T = tokens_BxT.shape
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    if segment_ids_BxT is None:
      segment_ids_BxT = jnp.ones((B, T), jnp.int32)

    if cache is None:
      mask_BxTxS = attention.self_mask(c, segment_ids_BxT, positions_BxT)  # dense, or the segment ids
      kv_positions_BxS, cache_end = positions_BxT, None
    else:
      cache_end = cache['end']
      kv_segments_BxS = jax.lax.dynamic_update_slice_in_dim(cache['segment_ids'], segment_ids_BxT, cache_end, 1)
      kv_positions_BxS = jax.lax.dynamic_update_slice_in_dim(cache['positions'], positions_BxT, cache_end, 1)
      mask_BxTxS = ops.attention_mask(segment_ids_BxT, kv_segments_BxS, positions_BxT, kv_positions_BxS)
    if c.sliding_layers:  # keys less than sliding_window positions back
      recent_BxTxS = positions_BxT[:, :, None] - kv_positions_BxS[:, None, :] < c.sliding_window
      sliding_mask_BxTxS = mask_BxTxS & recent_BxTxS

    embed_VxD = _param(self, 'embed', nn.initializers.normal(0.02), (c.vocab_size, c.d_model), ('vocab', 'embed'))
    # Gather the table's embed axis first: a lookup from an fsdp-sharded embed axis would give
    # activations split by feature that XLA must fully re-gather to split by batch.
    lookup_VxD = nn.with_logical_constraint(embed_VxD, ('vocab', None))
    x_BxTxD = jnp.take(lookup_VxD, tokens_BxT, axis=0)
    if c.scale_embeddings:
      x_BxTxD = x_BxTxD * jnp.float32(math.sqrt(c.d_model))
    x_BxTxD = nn.with_logical_constraint(x_BxTxD, ('batch', 'length', 'act_embed'))

    kv_LxBxKxSxE = None if cache is None else (cache['k'], cache['v'])
    if c.scan_layers:
      stack = nn.scan(
          ScannedBlock, variable_axes={'params': 0}, split_rngs={'params': True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=c.n_layers,
          metadata_params={nn.PARTITION_NAME: 'layers'})
      x_BxTxD, new_kv = stack(c, name='layers')(x_BxTxD, kv_LxBxKxSxE, positions_BxT, mask_BxTxS, cache_end)
    else:
      new_k, new_v = [], []
      for i in range(c.n_layers):
        kv = None if cache is None else (cache['k'][i], cache['v'][i])
        layer_mask_BxTxS = sliding_mask_BxTxS if i in c.sliding_layers else mask_BxTxS
        x_BxTxD, kv = block_class(c)(c, name=f'layer_{i}')(x_BxTxD, positions_BxT, layer_mask_BxTxS, kv, cache_end)
        if kv is not None:
          new_k.append(kv[0])
          new_v.append(kv[1])
      new_kv = (tuple(new_k), tuple(new_v)) if cache is not None else None

    h_BxTxD = RMSNorm(c.norm_eps, c.norm_offset, name='final_norm')(x_BxTxD)
    out = {'hidden': h_BxTxD}
    h_MxD = h_BxTxD.reshape(B * T, c.d_model)
    if c.lm_head:
      if c.tie_embeddings:
        head_DxV = embed_VxD.T
      else:
        head_DxV = _param(self, 'head', _dense_init(0, 1), (c.d_model, c.vocab_size), ('embed', 'vocab'))
      logits = ops.linear(h_MxD, head_DxV, c.compute_dtype).reshape(B, T, c.vocab_size)
      if c.final_softcap:
        logits = c.final_softcap * jnp.tanh(logits / c.final_softcap)
      out['logits'] = nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab'))
    if c.scalar_head:
      w_D = _param(self, 'scalar_head', nn.initializers.zeros, (c.d_model,), ('embed',))
      b = _param(self, 'scalar_bias', nn.initializers.zeros, (), ())
      out['scalar'] = jnp.einsum('btd,d->bt', h_BxTxD, w_D) + b
    if cache is not None:
      out['cache'] = {
          'k': new_kv[0], 'v': new_kv[1], 'segment_ids': kv_segments_BxS, 'positions': kv_positions_BxS,
          'end': cache_end + T,
      }
    return out
