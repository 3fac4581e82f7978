"""The numerical kernels the model is built from: matmul, attention, RoPE and the vocab head + loss.

Kept in one file so that each backend can use its fastest formulation while the model reads the same.
Conventions: activations stay float32; matmul operands are cast to the compute ``dtype`` and
accumulate in float32 (``preferred_element_type``), which is also what lets XLA:CPU run bf16 dots
on its fast path.

Why the hand-written backward passes (``jax.custom_vjp``): XLA:CPU in this jaxlib hands a dot to
its fast library (YNNPACK) only when the left operand is row-major with its contracting dimension
last (``[M,K]@[K,N]``, or ``[M,K]@[N,K]^T``). Autodiff's weight gradients (``x^T @ dy``) and the
attention gradients ``p^T @ do``, ``ds^T @ q`` contract the left operand's first dimension and fall
back to a slow path; writing ``x.T`` does not help (XLA folds it into the dot), so
``_transposed`` materialises the transpose behind an ``optimization_barrier``. The results equal
plain autodiff (tests/test_ops.py checks values and gradients against a jnp reference).
"""

import functools

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so that a row with no visible key gives a uniform softmax, not NaN
ATTENTION_CHUNK = 64  # query rows per block in causal attention (blocks skip keys in their future)


def _transposed(x_AxB):
  """``x.T`` as a physical row-major copy, so that a dot taking it as left operand stays fast."""
  return jax.lax.optimization_barrier(jnp.swapaxes(x_AxB, -1, -2))


def _dot(a, b, dtype):
  return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


# ------------------------------------------------------------------------------------------ linear

@functools.lru_cache(maxsize=None)
def _linear_fn(dtype, x_dtype, w_dtype):
  @jax.custom_vjp
  def f(x_MxK, w_KxN):
    return _dot(x_MxK, w_KxN, dtype)

  def fwd(x_MxK, w_KxN):
    x_MxK, w_KxN = x_MxK.astype(dtype), w_KxN.astype(dtype)
    return _dot(x_MxK, w_KxN, dtype), (x_MxK, w_KxN)

  def bwd(res, dy_MxN):
    x_MxK, w_KxN = res
    dx_MxK = _dot(dy_MxN, w_KxN.T, dtype)              # rhs-transposed: still the fast path
    dw_KxN = _dot(_transposed(x_MxK), dy_MxN, dtype)   # lhs needs a physical transpose
    return dx_MxK.astype(x_dtype), dw_KxN.astype(w_dtype)

  f.defvjp(fwd, bwd)
  return f


def linear(x_MxK, w_KxN, dtype=jnp.float32):
  """``x @ w`` with operands in ``dtype`` and a float32 result (2-D operands)."""
  return _linear_fn(jnp.dtype(dtype), x_MxK.dtype, w_KxN.dtype)(x_MxK, w_KxN)


def linear_reference(x_MxK, w_KxN, dtype=jnp.float32):
  return jnp.dot(x_MxK.astype(dtype), w_KxN.astype(dtype), preferred_element_type=jnp.float32)


# -------------------------------------------------------------------------------------------- rope

def rope(x_BxTxNxD, positions_BxT, theta: float, inv_freq_F=None):
  """Rotary position embedding, rotate-half convention (as in Llama / Hugging Face).

  ``inv_freq_F`` (``D / 2`` frequencies) replaces the default ``theta ** (-2i / D)``, e.g. when scaled.
  """
  d_half = x_BxTxNxD.shape[-1] // 2
  if inv_freq_F is None:
    inv_freq_F = 1.0 / (theta ** (jnp.arange(d_half, dtype=jnp.float32) / d_half))
  angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_F
  sin = jnp.sin(angles_BxTxF)[:, :, None, :]
  cos = jnp.cos(angles_BxTxF)[:, :, None, :]
  x1, x2 = x_BxTxNxD[..., :d_half], x_BxTxNxD[..., d_half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxTxNxD.dtype)


# ------------------------------------------------------------------------------------------ masks

def attention_mask(q_segment_ids_BxT, kv_segment_ids_BxS, q_positions_BxT, kv_positions_BxS):
  """Which keys each query sees: same segment and not in the future (by position)."""
  same_segment = q_segment_ids_BxT[:, :, None] == kv_segment_ids_BxS[:, None, :]
  causal = kv_positions_BxS[:, None, :] <= q_positions_BxT[:, :, None]
  return same_segment & causal


# ------------------------------------------------------------------------------------- attention
# The core works on q as [B, K, T, G, D] -> rows M = T*G per key/value head, so that every dot is a
# batched 2-D matmul over (B, K). The mask [B, T, S] is shared by the G query heads of a group.

def _scores(q_BxKxTxGxD, k_BxKxSxD, dtype):
  B, K, T, G, D = q_BxKxTxGxD.shape
  return _dot(q_BxKxTxGxD.reshape(B, K, T * G, D), jnp.swapaxes(k_BxKxSxD, -1, -2), dtype)


def _masked_softmax(q_BxKxTxGxD, k_BxKxSxD, mask_BxTxS, dtype, softcap):
  B, K, T, G, D = q_BxKxTxGxD.shape
  scores_BxKxMxS = _scores(q_BxKxTxGxD, k_BxKxSxD, dtype)
  if softcap:
    scores_BxKxMxS = softcap * jnp.tanh(scores_BxKxMxS / softcap)
  scores_BxKxTxGxS = scores_BxKxMxS.reshape(B, K, T, G, -1)
  scores_BxKxTxGxS = jnp.where(mask_BxTxS[:, None, :, None, :], scores_BxKxTxGxS, NEG_INF)
  return jax.nn.softmax(scores_BxKxTxGxS, axis=-1).reshape(B, K, T * G, -1)


@functools.lru_cache(maxsize=None)
def _attention_core_fn(dtype, q_dtype, k_dtype, v_dtype, softcap):
  """softmax(q k^T, masked) v with a backward pass made of fast-path dots only.

  With ``softcap`` the scores are ``softcap * tanh(q k^T / softcap)`` (Gemma 2); the backward
  recomputes ``q k^T`` for the tanh's derivative rather than keeping another [M, S] residual.
  """

  def forward(q_BxKxTxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS):
    probs_BxKxMxS = _masked_softmax(q_BxKxTxGxD, k_BxKxSxD, mask_BxTxS, dtype, softcap)
    out_BxKxMxD = _dot(probs_BxKxMxS, v_BxKxSxD, dtype)
    return out_BxKxMxD.reshape(q_BxKxTxGxD.shape), probs_BxKxMxS

  @jax.custom_vjp
  def f(q, k, v, mask):
    return forward(q, k, v, mask)[0]

  def fwd(q, k, v, mask):
    out, probs = forward(q, k, v, mask)
    return out, (q, k, v, mask, probs)

  def bwd(res, dout_BxKxTxGxD):
    q_BxKxTxGxD, k_BxKxSxD, v_BxKxSxD, mask, probs_BxKxMxS = res
    B, K, T, G, D = q_BxKxTxGxD.shape
    q_BxKxMxD = q_BxKxTxGxD.reshape(B, K, T * G, D)
    dout_BxKxMxD = dout_BxKxTxGxD.reshape(B, K, T * G, D)
    dv_BxKxSxD = _dot(_transposed(probs_BxKxMxS), dout_BxKxMxD, dtype)
    dprobs_BxKxMxS = _dot(dout_BxKxMxD, jnp.swapaxes(v_BxKxSxD, -1, -2), dtype)
    dscores_BxKxMxS = probs_BxKxMxS * (dprobs_BxKxMxS - jnp.sum(dprobs_BxKxMxS * probs_BxKxMxS, -1, keepdims=True))
    # Masked scores get no gradient (as through the reference's ``where``); this only matters for a
    # row that sees no key, whose uniform probs are otherwise nonzero at masked keys.
    dscores_BxKxMxS = jnp.where(mask[:, None, :, None, :], dscores_BxKxMxS.reshape(B, K, T, G, -1), 0.0)
    dscores_BxKxMxS = dscores_BxKxMxS.reshape(B, K, T * G, -1)
    if softcap:
      capped_BxKxMxS = jnp.tanh(_scores(q_BxKxTxGxD, k_BxKxSxD, dtype) / softcap)
      dscores_BxKxMxS = dscores_BxKxMxS * (1.0 - jnp.square(capped_BxKxMxS))
    dq_BxKxMxD = _dot(dscores_BxKxMxS, k_BxKxSxD, dtype)
    dk_BxKxSxD = _dot(_transposed(dscores_BxKxMxS), q_BxKxMxD, dtype)
    return (dq_BxKxMxD.reshape(B, K, T, G, D).astype(q_dtype), dk_BxKxSxD.astype(k_dtype),
            dv_BxKxSxD.astype(v_dtype), None)

  f.defvjp(fwd, bwd)
  return f


def _attention_core(q_BxKxTxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS, dtype, softcap=0.0):
  fn = _attention_core_fn(jnp.dtype(dtype), q_BxKxTxGxD.dtype, k_BxKxSxD.dtype, v_BxKxSxD.dtype, float(softcap))
  return fn(q_BxKxTxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS)


def _chunk_bounds(T: int, chunk: int):
  return [(t0, min(t0 + chunk, T)) for t0 in range(0, T, chunk)]


def causal_chunks_are_exact(mask_BxTxS, chunk: int):
  """True when query block [t0, t1) sees no key at index >= t1 and every query sees some key.

  Then attending block by block to keys [0, t1) equals attending to all keys, exactly: the skipped
  keys would have had zero weight. Holds for packed causal training masks; checked, not assumed.
  """
  T, S = mask_BxTxS.shape[1:]
  t_T = jnp.arange(T)
  block_end_T = jnp.minimum((t_T // chunk + 1) * chunk, T)
  skipped_TxS = jnp.arange(S)[None, :] >= block_end_T[:, None]
  no_skipped_key_visible = ~jnp.any(mask_BxTxS & skipped_TxS)
  every_row_sees_a_key = jnp.all(jnp.any(mask_BxTxS, axis=-1))
  return no_skipped_key_visible & every_row_sees_a_key


def _chunked_causal(q_BxKxTxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS, dtype, chunk, softcap=0.0):
  outs = []
  for t0, t1 in _chunk_bounds(q_BxKxTxGxD.shape[2], chunk):
    outs.append(_attention_core(q_BxKxTxGxD[:, :, t0:t1], k_BxKxSxD[:, :, :t1], v_BxKxSxD[:, :, :t1],
                                mask_BxTxS[:, t0:t1, :t1], dtype, softcap))
  return jnp.concatenate(outs, axis=2)


def attention(q_BxTxKxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS, dtype=jnp.float32, chunk: int | None = None,
              softcap: float = 0.0):
  """Grouped-query attention: G query heads share each of the K key/value heads.

  Keys and values come head-major, ``[B, K, S, D]`` (the KV cache's layout, read without a copy).
  ``q`` is expected pre-scaled by 1/sqrt(D). Returns float32 ``[B, T, K, G, D]``. Exact for any
  mask. When queries and keys are the same sequence (T == S) and T > ``chunk`` (default
  ``ATTENTION_CHUNK``; 0 disables), query blocks skip the keys in their future, taken only when
  ``causal_chunks_are_exact`` holds for this mask (a ``lax.cond``; otherwise one full block).
  ``softcap`` > 0 caps the scores at +-softcap with a tanh before the mask and softmax.
  """
  chunk = ATTENTION_CHUNK if chunk is None else chunk
  q_BxKxTxGxD = jnp.transpose(q_BxTxKxGxD, (0, 2, 1, 3, 4))
  T, S = q_BxTxKxGxD.shape[1], k_BxKxSxD.shape[2]
  args = (q_BxKxTxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS)
  full = functools.partial(_attention_core, dtype=dtype, softcap=softcap)
  if chunk and T == S and T > chunk:
    blocked = functools.partial(_chunked_causal, dtype=dtype, chunk=chunk, softcap=softcap)
    out_BxKxTxGxD = jax.lax.cond(causal_chunks_are_exact(mask_BxTxS, chunk), blocked, full, *args)
  else:
    out_BxKxTxGxD = full(*args)
  return jnp.transpose(out_BxKxTxGxD, (0, 2, 1, 3, 4))


MAX_CAUSAL_BLOCKS = 16  # segment_causal_attention: long sequences get bigger query blocks, not more


def segment_causal_attention(q_BxTxKxGxD, k_BxKxTxD, v_BxKxTxD, segment_ids_BxT, dtype=jnp.float32,
                             chunk: int | None = None, softcap: float = 0.0):
  """Self-attention of packed rows: each query sees the keys at or before it (by index) in its segment.

  The mask is built per query block from the segment ids ([block, keys so far]), never [T, T], and
  block [t0, t1) reads keys [0, t1) only: exact for this mask by construction (a query always sees
  itself), so no check and no full-size fallback. Blocks of ``chunk`` rows (default
  ``ATTENTION_CHUNK``), at most ``MAX_CAUSAL_BLOCKS`` of them. For rows whose positions count up
  from 0 in each segment (``lm.data.pipeline``), this is ``attention`` with ``attention_mask``.
  """
  T = q_BxTxKxGxD.shape[1]
  chunk = max(ATTENTION_CHUNK if chunk is None else chunk, -(-T // MAX_CAUSAL_BLOCKS))
  q_BxKxTxGxD = jnp.transpose(q_BxTxKxGxD, (0, 2, 1, 3, 4))
  index_T = jnp.arange(T)
  outs = []
  for t0, t1 in _chunk_bounds(T, chunk):
    same_BxCxS = segment_ids_BxT[:, t0:t1, None] == segment_ids_BxT[:, None, :t1]
    mask_BxCxS = same_BxCxS & (index_T[None, :t1] <= index_T[t0:t1, None])
    outs.append(_attention_core(q_BxKxTxGxD[:, :, t0:t1], k_BxKxTxD[:, :, :t1], v_BxKxTxD[:, :, :t1], mask_BxCxS,
                                dtype, softcap))
  return jnp.transpose(jnp.concatenate(outs, axis=2), (0, 2, 1, 3, 4))


KV_BLOCK = 128  # cache slots per block in cached_attention


def cached_attention(q_BxTxKxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS, kv_len, dtype=jnp.float32,
                     block: int = KV_BLOCK, softcap: float = 0.0):
  """Attention of new tokens over a KV cache whose slots ``>= kv_len`` are empty (inference only).

  Reads only the blocks of ``block`` slots that hold something (a ``while_loop`` to
  ceil(kv_len / block), online softmax), so a decode step costs what the filled part of the cache
  costs, not what its allocated length does. Equals ``attention`` wherever a query sees some key
  below ``kv_len`` (up to float reassociation); a query that sees none (padding) gets zeros.
  """
  B, T, K, G, D = q_BxTxKxGxD.shape
  S = k_BxKxSxD.shape[2]
  block = min(block, S)
  q_BxKxMxD = jnp.transpose(q_BxTxKxGxD, (0, 2, 1, 3, 4)).reshape(B, K, T * G, D)

  def body(carry):
    i, max_BxKxM, sum_BxKxM, acc_BxKxMxD = carry
    start = jnp.minimum(i * block, S - block)  # the last block may overlap the one before it
    k_BxKxCxD = jax.lax.dynamic_slice_in_dim(k_BxKxSxD, start, block, axis=2)
    v_BxKxCxD = jax.lax.dynamic_slice_in_dim(v_BxKxSxD, start, block, axis=2)
    fresh_C = start + jnp.arange(block) >= i * block  # slots not already counted
    visible_BxTxC = jax.lax.dynamic_slice_in_dim(mask_BxTxS, start, block, axis=2) & fresh_C
    scores_BxKxMxC = _dot(q_BxKxMxD, jnp.swapaxes(k_BxKxCxD, -1, -2), dtype).reshape(B, K, T, G, block)
    if softcap:
      scores_BxKxMxC = softcap * jnp.tanh(scores_BxKxMxC / softcap)
    scores_BxKxMxC = jnp.where(visible_BxTxC[:, None, :, None, :], scores_BxKxMxC, -jnp.inf).reshape(B, K, T * G, block)
    new_max_BxKxM = jnp.maximum(max_BxKxM, jnp.max(scores_BxKxMxC, axis=-1))
    safe_max = jnp.where(jnp.isfinite(new_max_BxKxM), new_max_BxKxM, 0.0)
    p_BxKxMxC = jnp.exp(scores_BxKxMxC - safe_max[..., None])
    rescale_BxKxM = jnp.exp(max_BxKxM - safe_max)
    sum_BxKxM = sum_BxKxM * rescale_BxKxM + jnp.sum(p_BxKxMxC, axis=-1)
    acc_BxKxMxD = acc_BxKxMxD * rescale_BxKxM[..., None] + _dot(p_BxKxMxC, v_BxKxCxD, dtype)
    return i + 1, new_max_BxKxM, sum_BxKxM, acc_BxKxMxD

  n_blocks = (jnp.minimum(kv_len, S) + block - 1) // block
  init = (jnp.zeros((), jnp.int32), jnp.full((B, K, T * G), -jnp.inf, jnp.float32),
          jnp.zeros((B, K, T * G), jnp.float32), jnp.zeros((B, K, T * G, D), jnp.float32))
  _, _, sum_BxKxM, acc_BxKxMxD = jax.lax.while_loop(lambda c: c[0] < n_blocks, body, init)
  out_BxKxMxD = acc_BxKxMxD / jnp.maximum(sum_BxKxM, 1e-30)[..., None]
  return jnp.transpose(out_BxKxMxD.reshape(B, K, T, G, D), (0, 2, 1, 3, 4))


def attention_reference(q_BxTxKxGxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS, dtype=jnp.float32, softcap: float = 0.0):
  """The plain formulation (autodiff backward); the tests hold ``attention`` to it.

  Operands are rounded to ``dtype`` and multiplied in float32: the same products as a ``dtype`` dot
  with a float32 result (exact in float32), on any dot this jaxlib's CPU backend supports.
  """
  rounded = lambda x: x.astype(dtype).astype(jnp.float32)
  scores_BxKxGxTxS = jnp.einsum('btkgd,bksd->bkgts', rounded(q_BxTxKxGxD), rounded(k_BxKxSxD))
  if softcap:
    scores_BxKxGxTxS = softcap * jnp.tanh(scores_BxKxGxTxS / softcap)
  scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, NEG_INF)
  probs = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
  return jnp.einsum('bkgts,bksd->btkgd', rounded(probs), rounded(v_BxKxSxD))


# ----------------------------------------------------------------------- head + cross-entropy
# The vocab head and its cross-entropy fused: rows are processed in chunks of ``HEAD_CHUNK``, so the
# [M, V] logits (and their gradient) never exist whole. The loss has a scalar output, so its
# gradient is computed in the same pass as the loss (no recomputation of the logits in the
# backward): dlogits = mask * (softmax * (1 + 2 z lse) - onehot), dh = dlogits @ w^T,
# dw = h^T @ dlogits, all fast-path dots; the backward only scales them by the cotangent.

HEAD_CHUNK = 1024  # rows per chunk in head_cross_entropy
HEAD_MAX_CHUNKS = 8  # at most this many chunks: big batches get bigger chunks


def _head_chunk_count(M: int, chunk: int) -> int:
  """ceil(M / chunk) chunks, at most ``HEAD_MAX_CHUNKS``, lowered to a divisor of M."""
  n = min(-(-M // chunk), HEAD_MAX_CHUNKS)
  while M % n:
    n -= 1
  return n


def _head_chunks(h_MxD, w_DxV, targets_M, mask_M, z_loss_weight, dtype, chunk, with_grad):
  # A scan over chunks: one chunk's logits and one [D, V] gradient accumulator are live at a time.
  # Chunk j holds rows j, n+j, 2n+j, ...: with rows sharded over devices (the batch axis), every
  # chunk keeps that spread, so each device works on its own rows in every chunk (a contiguous
  # chunk would sit on a few devices and leave the rest to wait, or be replicated).
  M, D = h_MxD.shape
  V = w_DxV.shape[1]
  n = _head_chunk_count(M, chunk)
  strided = lambda x: jnp.swapaxes(x.reshape(M // n, n, *x.shape[1:]), 0, 1)  # noqa: E731  [n, M/n, ...]

  def body(carry, xs):
    nll, z, dw_DxV = carry
    h_CxD, t_C, m_C = xs
    logits_CxV = _dot(h_CxD, w_DxV, dtype)
    max_C = jax.lax.stop_gradient(jnp.max(logits_CxV, axis=-1))
    exp_CxV = jnp.exp(logits_CxV - max_C[:, None])
    sum_C = jnp.sum(exp_CxV, axis=-1)
    lse_C = max_C + jnp.log(sum_C)
    onehot_CxV = jnp.arange(V, dtype=t_C.dtype)[None, :] == t_C[:, None]
    target_C = jnp.sum(jnp.where(onehot_CxV, logits_CxV, 0.0), axis=-1)
    nll = nll + jnp.sum((lse_C - target_C) * m_C)
    z = z + jnp.sum(jnp.square(lse_C) * m_C)
    if not with_grad:
      return (nll, z, dw_DxV), None
    scale_C = m_C * (1.0 + 2.0 * z_loss_weight * lse_C) / sum_C
    dlogits_CxV = exp_CxV * scale_C[:, None] - jnp.where(onehot_CxV, m_C[:, None], 0.0)
    dh_CxD = _dot(dlogits_CxV, w_DxV.T, dtype)                     # rhs-transposed: fast path
    dw_DxV = dw_DxV + _dot(_transposed(h_CxD), dlogits_CxV, dtype)  # lhs needs a physical transpose
    return (nll, z, dw_DxV), dh_CxD

  zero = jnp.zeros((), jnp.float32)
  dw0 = jnp.zeros((D, V) if with_grad else (), jnp.float32)
  (nll, z, dw_DxV), dh_NxCxD = jax.lax.scan(body, (zero, zero, dw0), (strided(h_MxD), strided(targets_M),
                                                                      strided(mask_M)))
  grads = (jnp.swapaxes(dh_NxCxD, 0, 1).reshape(M, D), dw_DxV) if with_grad else None
  return nll + z_loss_weight * z, nll, z, grads


@functools.lru_cache(maxsize=None)
def _head_cross_entropy_fn(z_loss_weight, dtype, chunk, h_dtype, w_dtype):
  @jax.custom_vjp
  def f(h_MxD, w_DxV, targets_M, mask_M):
    return _head_chunks(h_MxD, w_DxV, targets_M, mask_M, z_loss_weight, dtype, chunk, False)[:3]

  def fwd(h_MxD, w_DxV, targets_M, mask_M):
    objective, nll, z, (dh_MxD, dw_DxV) = _head_chunks(
        h_MxD, w_DxV, targets_M, mask_M, z_loss_weight, dtype, chunk, True)
    return (objective, nll, z), (dh_MxD, dw_DxV)

  def bwd(res, cotangents):
    # Only ``objective`` is differentiated here; the public wrapper stops the gradient of the
    # ``nll`` / ``z`` metrics, so their cotangents are zero.
    g, _, _ = cotangents
    dh_MxD, dw_DxV = res
    return (g * dh_MxD).astype(h_dtype), (g * dw_DxV).astype(w_dtype), None, None

  f.defvjp(fwd, bwd)
  return f


def head_cross_entropy(h_MxD, w_DxV, targets_M, mask_M, z_loss_weight: float = 0.0,
                       dtype=jnp.float32, chunk: int | None = None):
  """Masked next-token cross-entropy of the logits ``h @ w``, without materialising them.

  Returns ``(objective_sum, nll_sum, z_sum)``: ``nll_sum = sum(mask * (logsumexp - target_logit))``,
  ``z_sum = sum(mask * logsumexp^2)`` and ``objective_sum = nll_sum + z_loss_weight * z_sum``. Only
  ``objective_sum`` carries gradients (w.r.t. ``h`` and ``w``); the other two are metrics (their
  gradient is stopped). Equals ``head_cross_entropy_reference`` (tests/test_ops.py).
  """
  chunk = HEAD_CHUNK if chunk is None else chunk
  fn = _head_cross_entropy_fn(float(z_loss_weight), jnp.dtype(dtype), int(chunk), h_MxD.dtype, w_DxV.dtype)
  objective, nll, z = fn(h_MxD, w_DxV, targets_M, mask_M.astype(jnp.float32))
  return objective, jax.lax.stop_gradient(nll), jax.lax.stop_gradient(z)


def head_cross_entropy_reference(h_MxD, w_DxV, targets_M, mask_M, z_loss_weight: float = 0.0,
                                 dtype=jnp.float32):
  """The plain formulation (full logits, autodiff backward)."""
  logits_MxV = linear_reference(h_MxD, w_DxV, dtype)
  mask_M = mask_M.astype(jnp.float32)
  lse_M = jax.nn.logsumexp(logits_MxV, axis=-1)
  target_M = jnp.take_along_axis(logits_MxV, targets_M[:, None], axis=-1)[:, 0]
  nll = jnp.sum((lse_M - target_M) * mask_M)
  z = jnp.sum(jnp.square(lse_M) * mask_M)
  return nll + z_loss_weight * z, nll, z
