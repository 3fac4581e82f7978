"""Attention per backend, chosen by ``model.attention``; all compute the same thing.

  xla          ``lm.ops.attention`` with the dense mask of positions: causal query blocks, fast-path
               backward (best on CPU)
  chunked      ``lm.ops.segment_causal_attention``: packed causal rows by query blocks, no [T, T]
               mask (long sequences on any backend; the AOT plans' stand-in for splash)
  dot_product  ``jax.nn.dot_product_attention(implementation='xla')`` with the mask
  cudnn        ``jax.nn.dot_product_attention(implementation='cudnn')``: cuDNN flash attention
               (GPU, bfloat16/float16), causal with the segments as a mask
  splash       Pallas TPU splash attention with segment ids and a causal mask (TPU; elsewhere it
               runs in Pallas interpret mode, which is slow and meant for tests)
  auto         splash on TPU (chunked for lengths that are not multiples of 128), cudnn on GPU
               (bfloat16/float16), xla otherwise

In training (no KV cache) a query sees the keys of its segment (segment ids; 0 is padding) that
are not after it. ``xla`` and ``dot_product`` take that as the dense ``[B, T, S]`` mask of
positions (``ops.attention_mask``); ``chunked``, ``cudnn`` and ``splash`` take the segment ids and
order keys by index. For packed rows, whose positions count up from 0 in each segment (as
``lm.data.pipeline`` writes them), the two agree; where they could differ, on padding rows, nothing
is learnt. Decoding with a KV cache always uses ``ops.cached_attention``.

``xla`` runs its causal query blocks without ``ops.attention``'s run-time check (a ``lax.cond``
that doubled attention's time on XLA:CPU): a block of queries attends to the keys up to its own
end, which is all a query sees when its segment's positions count up with the index. Only a row
whose positions do not (padding: segment 0, positions 0) would see keys past its block; there it
sees the keys up to its block's end, like ``chunked``. Sequences of at most ``ops.ATTENTION_CHUNK``
tokens are one block: exactly the dense mask.

Shapes: q ``[B, T, K, G, E]`` (pre-scaled by 1/sqrt(E)), k and v ``[B, K, S, E]``; the output is
float32 ``[B, T, K, G, E]``. Matmul operands are cast to the compute dtype.
"""

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.model import ops

IMPLEMENTATIONS = ('auto', 'xla', 'chunked', 'dot_product', 'cudnn', 'splash')
TAKES_SEGMENTS = ('chunked', 'cudnn', 'splash')  # the others take the dense mask
SPLASH_BLOCKS = (512, 256, 128)                  # query/key block sizes: the largest that divides T


class Segments(NamedTuple):
  """The training mask as segment ids ``[B, T]``: same segment, key not after the query."""
  ids_BxT: jax.Array


def check(config) -> None:
  """Combinations that cannot work, whatever the backend (a one-line error naming the field)."""
  impl = config.attention
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'model.attention={impl!r}; valid: {", ".join(IMPLEMENTATIONS)}')
  if impl in TAKES_SEGMENTS and config.sliding_layers:
    raise ValueError(f'model.attention={impl!r} has no sliding windows (model.sliding_layers): use xla or auto')
  if impl in ('dot_product', 'cudnn') and config.attn_softcap:
    raise ValueError(f'model.attention={impl!r} has no score softcapping (model.attn_softcap): use xla or splash')


def resolve(config) -> str:
  """The implementation ``config.attention`` means on this backend."""
  impl, backend, dtype = config.attention, jax.default_backend(), config.compute_dtype.name
  if impl == 'auto':
    if config.sliding_layers:
      return 'xla'
    if backend == 'tpu':
      return 'splash'
    if backend == 'gpu' and dtype in ('bfloat16', 'float16') and not config.attn_softcap:
      return 'cudnn'
    return 'xla'
  if impl == 'cudnn' and (backend != 'gpu' or dtype == 'float32'):
    raise ValueError(f"model.attention='cudnn' needs a GPU and model.dtype bfloat16 or float16 "
                     f'(here: {backend}, {config.dtype})')
  return impl


def self_mask(config, segment_ids_BxT, positions_BxT):
  """The training mask in the form the configured implementation takes."""
  if resolve(config) in TAKES_SEGMENTS:
    return Segments(segment_ids_BxT)
  return ops.attention_mask(segment_ids_BxT, segment_ids_BxT, positions_BxT, positions_BxT)


def attend(config, q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask, dtype):
  """Training attention by ``config.attention``; ``mask`` comes from ``self_mask``."""
  impl = resolve(config)
  softcap = config.attn_softcap
  if impl == 'splash' and config.attention == 'auto' and q_BxTxKxGxE.shape[1] % 128:
    impl = 'chunked'  # splash takes multiples of 128 tokens; both take the segment ids
  if impl == 'xla':
    return ops.attention(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask, dtype, softcap=softcap, check=False)
  if impl == 'chunked':
    return ops.segment_causal_attention(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask.ids_BxT, dtype, softcap=softcap)
  if impl == 'dot_product':
    return _dot_product(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask[:, None], False, 'xla', dtype)
  if impl == 'cudnn':
    same_Bx1xTxS = (mask.ids_BxT[:, :, None] == mask.ids_BxT[:, None, :])[:, None]
    return _dot_product(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, same_Bx1xTxS, True, 'cudnn', dtype)
  return splash(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask.ids_BxT, dtype, softcap)


def _dot_product(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask_Bx1xTxS, is_causal, implementation, dtype):
  B, T, K, G, E = q_BxTxKxGxE.shape
  to_bskd = lambda x: jnp.transpose(x, (0, 2, 1, 3)).astype(dtype)  # noqa: E731
  out_BxTxHxE = jax.nn.dot_product_attention(
      q_BxTxKxGxE.reshape(B, T, K * G, E).astype(dtype), to_bskd(k_BxKxSxE), to_bskd(v_BxKxSxE),
      mask=mask_Bx1xTxS, scale=1.0, is_causal=is_causal, implementation=implementation)
  return out_BxTxHxE.reshape(B, T, K, G, E).astype(jnp.float32)


# ------------------------------------------------------------------------------------------ splash

@functools.lru_cache(maxsize=None)
def _splash_kernel(T: int, G: int, softcap: float, interpret: bool):
  """One key/value head's kernel: G query heads share it (MQA form), causal, any segments."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  block = next((b for b in SPLASH_BLOCKS if T % b == 0), None)
  if block is None:
    raise ValueError(f"model.attention='splash' needs a sequence length that is a multiple of 128 (got {T})")
  blocks = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                         block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  mask = sm.MultiHeadMask([sm.CausalMask((T, T)) for _ in range(G)])
  with jax.ensure_compile_time_eval():  # the block tables are constants, not values of the trace that asked
    kernel = sk.make_splash_mqa(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                                attn_logits_soft_cap=softcap or None, interpret=interpret)
  return kernel, sk.SegmentIds


def _splash_local(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, segment_ids_BxT, dtype, softcap):
  T, G = q_BxTxKxGxE.shape[1], q_BxTxKxGxE.shape[3]
  kernel, segment_ids = _splash_kernel(T, G, float(softcap), jax.default_backend() != 'tpu')
  q_BxKxGxTxE = jnp.transpose(q_BxTxKxGxE, (0, 2, 3, 1, 4)).astype(dtype)
  per_head = lambda q, k, v, s: kernel(q, k, v, segment_ids=segment_ids(s, s))  # noqa: E731
  per_row = jax.vmap(per_head, in_axes=(0, 0, 0, None))
  out_BxKxGxTxE = jax.vmap(per_row)(q_BxKxGxTxE, k_BxKxSxE.astype(dtype), v_BxKxSxE.astype(dtype), segment_ids_BxT)
  return jnp.transpose(out_BxKxGxTxE, (0, 3, 1, 2, 4)).astype(jnp.float32)


def splash(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, segment_ids_BxT, dtype=jnp.float32, softcap: float = 0.0):
  """Splash attention; under a mesh, each device runs the kernel on its own batch rows and
  key/value heads (``shard_map`` over the logical ``batch`` and ``act_kv_heads`` axes)."""
  run = functools.partial(_splash_local, dtype=dtype, softcap=softcap)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return run(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, segment_ids_BxT)
  args = (q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, segment_ids_BxT)
  names = (('batch', None, 'act_kv_heads', None, None), ('batch', 'act_kv_heads', None, None),
           ('batch', 'act_kv_heads', None, None), ('batch', None))
  specs = [_spec(n, x.shape, mesh) for n, x in zip(names, args)]
  return jax.shard_map(run, mesh=mesh, in_specs=tuple(specs), out_specs=specs[0], check_vma=False)(*args)


def _spec(logical_names, shape, mesh):
  """The rules' PartitionSpec, replicating a dimension that its mesh axes do not divide (e.g. the
  one-row batch the model is initialised with)."""
  out = []
  for axes, size in zip(nn.logical_to_mesh_axes(logical_names), shape):
    n = 1
    for a in (axes if isinstance(axes, tuple) else (axes,) if axes else ()):
      n *= mesh.shape[a]
    out.append(axes if size % n == 0 else None)
  return jax.sharding.PartitionSpec(*out)
