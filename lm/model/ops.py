"""The numerical kernels the model is built from: matmul, attention, RoPE and the vocab head + loss.

Kept in one file so that each backend can use its fastest formulation while the model reads the same.
Conventions: activations stay float32; matmul operands are cast to the compute ``dtype`` and
accumulate in float32 (``preferred_element_type``), which is also what lets XLA:CPU run bf16 dots
on its fast path.

Why the hand-written backward passes (``jax.custom_vjp``): XLA:CPU in this jaxlib hands a dot to
its fast library (YNNPACK; AMX for bf16) only when both operands are row-major in memory with the
left one contracting its last dimension: ``[M,I]@[I,O]`` or ``[M,I]@[O,I]^T``. And it decides
whether a bf16 dot stays bf16 before it assigns layouts, from the layouts the program arrives
with: an operand that is a ``transpose`` (which arrives as a column-major view) makes it upcast
the whole dot to float32 (4-6x slower than bf16 with AMX). So here
- ``a @ b^T`` is one ``dot_general`` contracting both last dimensions (``_dot_nt``), never ``b.T``;
- a left operand that must be transposed (weight gradients ``x^T dy``, attention's ``p^T do`` and
  ``ds^T q``) is copied row-major by ``_transposed``: flattened behind an ``optimization_barrier``
  and reshaped back, so XLA can neither fold the transpose into the dot nor see a column-major
  view (a plain barrier around ``x.T`` keeps the view: the dot then runs in float32);
- a weight that may arrive transposed (the tied embedding as the vocab head) is copied the same way.
The copies are made on CPU only; other backends get the plain transposes. The results equal plain
autodiff (tests/test_ops.py checks values and gradients against a jnp reference).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e30  # finite, so that a row with no visible key gives a uniform softmax, not NaN
ATTENTION_CHUNK = 64  # query rows per block in causal attention (blocks skip keys in their future)


def _on_cpu() -> bool:
  return jax.default_backend() == 'cpu'


def _row_major(x):
  """``x`` as a fresh row-major array that XLA cannot fuse into its consumer (CPU; elsewhere ``x``)."""
  if not _on_cpu():
    return x
  return jax.lax.optimization_barrier(x.reshape(-1)).reshape(x.shape)


def _settled(*xs):
  """``xs`` behind an ``optimization_barrier`` on CPU: what the caller does with a dot's result (autodiff
  transposing a weight's gradient, say) is not folded into the dot, which would make it a bf16 dot
  with a transposed operand that this jaxlib can neither run fast nor, once layouts are assigned,
  run at all (``DotThunk``: unsupported BF16 x BF16 = F32)."""
  return jax.lax.optimization_barrier(xs) if _on_cpu() else xs


def _row_major_all(*xs):
  """``_row_major`` of each of ``xs``: attention's q, k and v arrive as transposed views (or whole
  slices of them), which would make XLA:CPU run their bf16 dots in float32."""
  return tuple(_row_major(x) for x in xs)


def _transposed(x_MxI):
  """``swapaxes(x, -1, -2)``, on CPU as a physical row-major copy (see the module doc)."""
  return _row_major(jnp.swapaxes(x_MxI, -1, -2))


def _dot(a, b, dtype):
  """``a @ b`` (batched over leading dimensions) with ``dtype`` operands and a float32 result."""
  return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _dot_nt(a_xMxI, b_xOxI, dtype):
  """``a @ b^T`` over the last two dimensions (leading ones batched), without a transpose op."""
  batch = tuple(range(a_xMxI.ndim - 2))
  dims = (((a_xMxI.ndim - 1,), (b_xOxI.ndim - 1,)), (batch, batch))
  return jax.lax.dot_general(a_xMxI.astype(dtype), b_xOxI.astype(dtype), dims, preferred_element_type=jnp.float32)


# ------------------------------------------------------------------------------------------ linear

@functools.lru_cache(maxsize=None)
def _linear_fn(dtype, x_dtype, w_dtype):
  @jax.custom_vjp
  def f(x_MxI, w_IxO):
    return _dot(x_MxI, w_IxO, dtype)

  def fwd(x_MxI, w_IxO):
    x_MxI, w_IxO = x_MxI.astype(dtype), w_IxO.astype(dtype)
    return _dot(x_MxI, w_IxO, dtype), (x_MxI, w_IxO)

  def bwd(res, dy_MxO):
    x_MxI, w_IxO = res
    dx_MxI = _dot_nt(dy_MxO, w_IxO, dtype)
    dw_IxO = _dot(_transposed(x_MxI), dy_MxO, dtype)
    dx_MxI, dw_IxO = _settled(dx_MxI, dw_IxO)
    return dx_MxI.astype(x_dtype), dw_IxO.astype(w_dtype)

  f.defvjp(fwd, bwd)
  return f


def linear(x_MxI, w_IxO, dtype=jnp.float32):
  """``x @ w`` with operands in ``dtype`` and a float32 result (2-D operands)."""
  return _linear_fn(jnp.dtype(dtype), x_MxI.dtype, w_IxO.dtype)(x_MxI, w_IxO)


def linear_reference(x_MxI, w_IxO, dtype=jnp.float32):
  return jnp.dot(x_MxI.astype(dtype), w_IxO.astype(dtype), preferred_element_type=jnp.float32)


# ---------------------------------------------------------------------------------------- rms norm

@functools.lru_cache(maxsize=None)
def _rms_norm_fn(eps: float):
  def forward(x_xD, w_D):
    r_x1 = jax.lax.rsqrt(jnp.mean(jnp.square(x_xD), axis=-1, keepdims=True) + eps)
    return x_xD * r_x1 * w_D, r_x1

  @jax.custom_vjp
  def f(x_xD, w_D):
    return forward(x_xD, w_D)[0]

  def fwd(x_xD, w_D):
    y, r_x1 = forward(x_xD, w_D)
    return y, (x_xD, w_D, r_x1)

  def bwd(res, dy_xD):
    x_xD, w_D, r_x1 = res
    g_xD = dy_xD * w_D
    dx_xD = r_x1 * (g_xD - x_xD * (jnp.square(r_x1) * jnp.mean(g_xD * x_xD, axis=-1, keepdims=True)))
    dw_D = jnp.sum((dy_xD * x_xD * r_x1).reshape(-1, w_D.shape[0]), axis=0)
    return dx_xD, dw_D

  f.defvjp(fwd, bwd)
  return f


def rms_norm(x_xD, w_D, eps: float):
  """``x / sqrt(mean(x^2) + eps) * w`` over the last axis (float32), with a hand-written backward:
  autodiff's kept more broadcasts of the row statistics than the two passes it needs."""
  return _rms_norm_fn(float(eps))(x_xD, w_D)


# ----------------------------------------------------------------------------------- gated unit

@functools.lru_cache(maxsize=None)
def _gated_fn(activation):
  def forward(gate_up_xFx2):
    return activation(gate_up_xFx2[..., 0]) * gate_up_xFx2[..., 1]

  @jax.custom_vjp
  def f(gate_up_xFx2):
    return forward(gate_up_xFx2)

  def bwd(gate_up_xFx2, dh_xF):
    (gate_up_xFx2,) = _settled(gate_up_xFx2)
    gate_xF, up_xF = gate_up_xFx2[..., 0], gate_up_xFx2[..., 1]
    act_xF, act_vjp = jax.vjp(activation, gate_xF)
    return (jnp.stack([act_vjp(dh_xF * up_xF)[0], dh_xF * act_xF], axis=-1),)

  f.defvjp(lambda g: (forward(g), g), bwd)
  return f


def gated_unit(gate_up_xFx2, activation):
  """``activation(gate) * up`` of interleaved ``[..., F, 2]`` (gate, up) pairs (SwiGLU / GeGLU), keeping
  only its input for the backward, which recomputes the activation: autodiff kept the activation and
  its pieces too (three passes over [M, F] in the forward instead of one). On CPU the backward's input
  passes a barrier, or XLA would merge its recomputation with the forward's and keep the pieces after all."""
  return _gated_fn(activation)(gate_up_xFx2)


# -------------------------------------------------------------------------------------------- rope

def rope_tables(positions_BxT, head_dim: int, theta: float, inv_freq_J=None, max_len: int = 0):
  """``(cos, sin)`` ``[B, T, 1, head_dim / 2]`` of the RoPE angles, for ``apply_rope``.

  ``inv_freq_J`` (``head_dim / 2`` frequencies) replaces the default ``theta ** (-2i / E)``, e.g.
  when scaled. On CPU with ``max_len`` > 0 the two are gathered from tables of the positions
  ``[0, max_len)``, computed on the host when the program is traced (``inv_freq_J`` must then be
  concrete) from float64 angles: closer to the true values than float32 angles, whose rounding grows
  with the position. A position at or past ``max_len`` gets NaN. Why tables: XLA:CPU fuses the sine
  and cosine into every consumer, each head of q and k, forward and backward (a barrier does not stop
  it: XLA:CPU removes barriers before fusion); they were ~6% of a tiny float32 train step's work on
  one thread. Other backends compute them in the program.
  """
  if max_len and _on_cpu():
    inv_freq = None if inv_freq_J is None else tuple(np.asarray(inv_freq_J, np.float32).tolist())
    tables = _rope_tables_upto(max_len, head_dim, float(theta), inv_freq)
    return tuple(jnp.take(t_LxJ, positions_BxT, axis=0, mode='fill', fill_value=jnp.nan)[:, :, None, :]
                 for t_LxJ in tables)
  return _rope_cos_sin(positions_BxT, head_dim, theta, inv_freq_J)


def _rope_cos_sin(positions_BxT, head_dim: int, theta: float, inv_freq_J=None):
  d_half = head_dim // 2
  if inv_freq_J is None:
    inv_freq_J = 1.0 / (theta ** (jnp.arange(d_half, dtype=jnp.float32) / d_half))
  angles_BxTx1xJ = (positions_BxT.astype(jnp.float32)[..., None] * inv_freq_J)[:, :, None, :]
  return jnp.cos(angles_BxTx1xJ), jnp.sin(angles_BxTx1xJ)


@functools.lru_cache(maxsize=16)
def _rope_tables_upto(max_len: int, head_dim: int, theta: float, inv_freq: tuple | None):
  """``(cos, sin)`` ``[max_len, head_dim / 2]`` of positions 0, 1, ... (float64 angles, rounded to float32)."""
  d_half = head_dim // 2
  inv_freq_J = 1.0 / theta ** (np.arange(d_half) / d_half) if inv_freq is None else np.asarray(inv_freq, np.float64)
  angles_LxJ = np.arange(max_len, dtype=np.float64)[:, None] * inv_freq_J
  return np.cos(angles_LxJ).astype(np.float32), np.sin(angles_LxJ).astype(np.float32)


def apply_rope(x_BxTxHxE, cos_BxTx1xJ, sin_BxTx1xJ):
  """Rotary position embedding, rotate-half convention (as in Llama / Hugging Face)."""
  d_half = x_BxTxHxE.shape[-1] // 2
  x1, x2 = x_BxTxHxE[..., :d_half], x_BxTxHxE[..., d_half:]
  rotated = [x1 * cos_BxTx1xJ - x2 * sin_BxTx1xJ, x2 * cos_BxTx1xJ + x1 * sin_BxTx1xJ]
  return jnp.concatenate(rotated, axis=-1).astype(x_BxTxHxE.dtype)


def rope(x_BxTxHxE, positions_BxT, theta: float, inv_freq_J=None):
  """``apply_rope`` with the tables of ``positions_BxT`` (``rope_tables``)."""
  return apply_rope(x_BxTxHxE, *rope_tables(positions_BxT, x_BxTxHxE.shape[-1], theta, inv_freq_J))


# ------------------------------------------------------------------------------------------ masks

def attention_mask(q_segment_ids_BxT, kv_segment_ids_BxS, q_positions_BxT, kv_positions_BxS):
  """Which keys each query sees: same segment and not in the future (by position)."""
  same_segment = q_segment_ids_BxT[:, :, None] == kv_segment_ids_BxS[:, None, :]
  causal = kv_positions_BxS[:, None, :] <= q_positions_BxT[:, :, None]
  return same_segment & causal


# ------------------------------------------------------------------------------------- attention
# The core works on q as [B, K, T, G, E] -> rows M = T*G per key/value head, so that every dot is a
# batched 2-E matmul over (B, K). The mask [B, T, S] is shared by the G query heads of a group.

def _scores(q_BxKxTxGxE, k_BxKxSxE, dtype):
  B, K, T, G, E = q_BxKxTxGxE.shape
  return _dot_nt(q_BxKxTxGxE.reshape(B, K, T * G, E), k_BxKxSxE, dtype)


def _masked_softmax(q_BxKxTxGxE, k_BxKxSxE, mask_BxTxS, dtype, softcap):
  B, K, T, G, E = q_BxKxTxGxE.shape
  scores_BxKxMxS = _scores(q_BxKxTxGxE, k_BxKxSxE, dtype)
  if softcap:
    scores_BxKxMxS = softcap * jnp.tanh(scores_BxKxMxS / softcap)
  scores_BxKxTxGxS = scores_BxKxMxS.reshape(B, K, T, G, -1)
  scores_BxKxTxGxS = jnp.where(mask_BxTxS[:, None, :, None, :], scores_BxKxTxGxS, NEG_INF)
  return jax.nn.softmax(scores_BxKxTxGxS, axis=-1).reshape(B, K, T * G, -1)


def _block_mask(mask, segments: bool, t0: int, t1: int, s1: int):
  """The [B, t1 - t0, s1] mask of query rows [t0, t1) over keys [0, s1): a slice of the dense mask,
  or built from segment ids (same segment, key index <= query index)."""
  if not segments:
    return mask[:, t0:t1, :s1]
  index = jnp.arange(s1)
  return (mask[:, t0:t1, None] == mask[:, None, :s1]) & (index[None, :] <= index[t0:t1, None])


@functools.lru_cache(maxsize=None)
def _blocks_fn(dtype, bounds, segments, softcap, q_dtype, k_dtype, v_dtype):
  """softmax(q k^T, masked) v over blocks of query rows, each ``(t0, t1, s1)``: rows [t0, t1) attend to
  keys [0, s1). One custom_vjp for all blocks: q, k and v are cast to ``dtype`` once, each block keeps
  its probabilities (float32), and the backward's dots are all fast-path ones; dq is concatenated
  and dk, dv are accumulated in place (autodiff of per-block slices would pad each block to full).

  With ``softcap`` the scores are ``softcap * tanh(q k^T / softcap)`` (Gemma 2); the backward
  recomputes ``q k^T`` for the tanh's derivative rather than keeping another [M, S] residual.
  """

  def forward(q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE, mask):
    B, K, T, G, E = q_BxKxTxGxE.shape
    q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE = (x.astype(dtype) for x in (q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE))
    outs, probs = [], []
    for t0, t1, s1 in bounds:
      mask_BxCxS = _block_mask(mask, segments, t0, t1, s1)
      p_BxKxCxS = _masked_softmax(q_BxKxTxGxE[:, :, t0:t1], k_BxKxSxE[:, :, :s1], mask_BxCxS, dtype, softcap)
      outs.append(_dot(p_BxKxCxS, v_BxKxSxE[:, :, :s1], dtype))
      probs.append(p_BxKxCxS)
    (out_BxKxMxE,) = _settled(jnp.concatenate(outs, axis=2) if len(outs) > 1 else outs[0])
    return out_BxKxMxE.reshape(B, K, T, G, E), (q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE, mask, tuple(probs))

  @jax.custom_vjp
  def f(q, k, v, mask):
    return forward(q, k, v, mask)[0]

  def bwd(res, dout_BxKxTxGxE):
    q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE, mask, probs = res
    B, K, T, G, E = q_BxKxTxGxE.shape
    dout_BxKxMxE = dout_BxKxTxGxE.reshape(B, K, T * G, E)
    dqs, dk_BxKxSxE, dv_BxKxSxE = [], jnp.zeros(k_BxKxSxE.shape, jnp.float32), jnp.zeros(v_BxKxSxE.shape, jnp.float32)
    for (t0, t1, s1), probs_BxKxCxS in zip(bounds, probs):
      q_BxKxCxE = q_BxKxTxGxE[:, :, t0:t1].reshape(B, K, (t1 - t0) * G, E)
      dout_BxKxCxE = dout_BxKxMxE[:, :, t0 * G:t1 * G]
      k_c, v_c = k_BxKxSxE[:, :, :s1], v_BxKxSxE[:, :, :s1]
      dv = _dot(_transposed(probs_BxKxCxS.astype(dtype)), dout_BxKxCxE, dtype)
      dprobs = _dot_nt(dout_BxKxCxE, v_c, dtype)
      dscores = probs_BxKxCxS * (dprobs - jnp.sum(dprobs * probs_BxKxCxS, -1, keepdims=True))
      # Masked scores get no gradient (as through the reference's ``where``); this only matters for a
      # row that sees no key, whose uniform probs are otherwise nonzero at masked keys.
      visible = _block_mask(mask, segments, t0, t1, s1)[:, None, :, None, :]
      dscores = jnp.where(visible, dscores.reshape(B, K, t1 - t0, G, s1), 0.0).reshape(B, K, -1, s1)
      if softcap:
        dscores = dscores * (1.0 - jnp.square(jnp.tanh(_dot_nt(q_BxKxCxE, k_c, dtype) / softcap)))
      dqs.append(_dot(dscores, k_c, dtype))
      dk = _dot(_transposed(dscores.astype(dtype)), q_BxKxCxE, dtype)
      whole = s1 == k_BxKxSxE.shape[2]
      dk_BxKxSxE = dk_BxKxSxE + dk if whole else dk_BxKxSxE.at[:, :, :s1].add(dk)
      dv_BxKxSxE = dv_BxKxSxE + dv if whole else dv_BxKxSxE.at[:, :, :s1].add(dv)
    dq_BxKxMxE = jnp.concatenate(dqs, axis=2) if len(dqs) > 1 else dqs[0]
    dq_BxKxMxE, dk_BxKxSxE, dv_BxKxSxE = _settled(dq_BxKxMxE, dk_BxKxSxE, dv_BxKxSxE)
    return (dq_BxKxMxE.reshape(B, K, T, G, E).astype(q_dtype), dk_BxKxSxE.astype(k_dtype),
            dv_BxKxSxE.astype(v_dtype), None)

  f.defvjp(forward, bwd)
  return f


def _blocks(q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE, mask, bounds, dtype, softcap=0.0, segments=False):
  fn = _blocks_fn(jnp.dtype(dtype), tuple(bounds), segments, float(softcap), q_BxKxTxGxE.dtype, k_BxKxSxE.dtype,
                  v_BxKxSxE.dtype)
  return fn(q_BxKxTxGxE, k_BxKxSxE, v_BxKxSxE, mask)


def _chunk_bounds(T: int, chunk: int):
  return [(t0, min(t0 + chunk, T)) for t0 in range(0, T, chunk)]


def _causal_bounds(T: int, chunk: int):
  """Query blocks of ``chunk`` rows, each over the keys up to its own end."""
  return [(t0, t1, t1) for t0, t1 in _chunk_bounds(T, chunk)]


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


def attention(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask_BxTxS, dtype=jnp.float32, chunk: int | None = None,
              softcap: float = 0.0, check: bool = True):
  """Grouped-query attention: G query heads share each of the K key/value heads.

  Keys and values come head-major, ``[B, K, S, E]`` (the KV cache's layout, read without a copy).
  ``q`` is expected pre-scaled by 1/sqrt(E). Returns float32 ``[B, T, K, G, E]``. When queries and
  keys are the same sequence (T == S) and T > ``chunk`` (default ``ATTENTION_CHUNK``; 0 disables),
  query blocks skip the keys in their future. With ``check`` (the default: exact for any mask)
  only when ``causal_chunks_are_exact`` holds for this mask (a ``lax.cond``; otherwise one full
  block). Without, always: exact for causal rows whose positions count up with the index (then no
  query sees past its block), and a row that does see past its block's end (a padding row whose
  positions are all 0) attends only to the keys up to there. The check's ``lax.cond`` costs ~2x
  in attention time on XLA:CPU (a branch's ops run apart from the rest of the program).
  ``softcap`` > 0 caps the scores at +-softcap with a tanh before the mask and softmax.
  """
  chunk = ATTENTION_CHUNK if chunk is None else chunk
  T, S = q_BxTxKxGxE.shape[1], k_BxKxSxE.shape[2]
  args = _row_major_all(jnp.transpose(q_BxTxKxGxE, (0, 2, 1, 3, 4)), k_BxKxSxE, v_BxKxSxE) + (mask_BxTxS,)
  full = functools.partial(_blocks, bounds=[(0, T, S)], dtype=dtype, softcap=softcap)
  if chunk and T == S and T > chunk:
    blocked = functools.partial(_blocks, bounds=_causal_bounds(T, chunk), dtype=dtype, softcap=softcap)
    if check:
      out_BxKxTxGxE = jax.lax.cond(causal_chunks_are_exact(mask_BxTxS, chunk), blocked, full, *args)
    else:
      out_BxKxTxGxE = blocked(*args)
  else:
    out_BxKxTxGxE = full(*args)
  return jnp.transpose(out_BxKxTxGxE, (0, 2, 1, 3, 4))


MAX_CAUSAL_BLOCKS = 16  # segment_causal_attention: long sequences get bigger query blocks, not more


def segment_causal_attention(q_BxTxKxGxE, k_BxKxTxE, v_BxKxTxE, segment_ids_BxT, dtype=jnp.float32,
                             chunk: int | None = None, softcap: float = 0.0):
  """Self-attention of packed rows: each query sees the keys at or before it (by index) in its segment.

  The mask is built per query block from the segment ids ([block, keys so far]), never [T, T], and
  block [t0, t1) reads keys [0, t1) only: exact for this mask by construction (a query always sees
  itself), so no check and no full-size fallback. Blocks of ``chunk`` rows (default
  ``ATTENTION_CHUNK``), at most ``MAX_CAUSAL_BLOCKS`` of them. For rows whose positions count up
  from 0 in each segment (``lm.data.pipeline``), this is ``attention`` with ``attention_mask``.
  """
  T = q_BxTxKxGxE.shape[1]
  chunk = max(ATTENTION_CHUNK if chunk is None else chunk, -(-T // MAX_CAUSAL_BLOCKS))
  q_BxKxTxGxE, k_BxKxTxE, v_BxKxTxE = _row_major_all(jnp.transpose(q_BxTxKxGxE, (0, 2, 1, 3, 4)), k_BxKxTxE,
                                                     v_BxKxTxE)
  out_BxKxTxGxE = _blocks(q_BxKxTxGxE, k_BxKxTxE, v_BxKxTxE, segment_ids_BxT, _causal_bounds(T, chunk), dtype, softcap,
                          segments=True)
  return jnp.transpose(out_BxKxTxGxE, (0, 2, 1, 3, 4))


KV_BLOCK = 128  # cache slots per block in cached_attention


def cached_attention(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask_BxTxS, kv_len, dtype=jnp.float32,
                     block: int = KV_BLOCK, softcap: float = 0.0):
  """Attention of new tokens over a KV cache whose slots ``>= kv_len`` are empty (inference only).

  Reads only the blocks of ``block`` slots that hold something (a ``while_loop`` to
  ceil(kv_len / block), online softmax), so a decode step costs what the filled part of the cache
  costs, not what its allocated length does. Equals ``attention`` wherever a query sees some key
  below ``kv_len`` (up to float reassociation); a query that sees none (padding) gets zeros.
  """
  B, T, K, G, E = q_BxTxKxGxE.shape
  S = k_BxKxSxE.shape[2]
  block = min(block, S)
  q_BxKxMxE = jnp.transpose(q_BxTxKxGxE, (0, 2, 1, 3, 4)).reshape(B, K, T * G, E)

  def body(carry):
    i, max_BxKxM, sum_BxKxM, acc_BxKxMxE = carry
    start = jnp.minimum(i * block, S - block)  # the last block may overlap the one before it
    k_BxKxCxE = jax.lax.dynamic_slice_in_dim(k_BxKxSxE, start, block, axis=2)
    v_BxKxCxE = jax.lax.dynamic_slice_in_dim(v_BxKxSxE, start, block, axis=2)
    fresh_C = start + jnp.arange(block) >= i * block  # slots not already counted
    visible_BxTxC = jax.lax.dynamic_slice_in_dim(mask_BxTxS, start, block, axis=2) & fresh_C
    scores_BxKxMxC = _dot_nt(q_BxKxMxE, k_BxKxCxE, dtype).reshape(B, K, T, G, block)
    if softcap:
      scores_BxKxMxC = softcap * jnp.tanh(scores_BxKxMxC / softcap)
    scores_BxKxMxC = jnp.where(visible_BxTxC[:, None, :, None, :], scores_BxKxMxC, -jnp.inf).reshape(B, K, T * G, block)
    new_max_BxKxM = jnp.maximum(max_BxKxM, jnp.max(scores_BxKxMxC, axis=-1))
    safe_max = jnp.where(jnp.isfinite(new_max_BxKxM), new_max_BxKxM, 0.0)
    p_BxKxMxC = jnp.exp(scores_BxKxMxC - safe_max[..., None])
    rescale_BxKxM = jnp.exp(max_BxKxM - safe_max)
    sum_BxKxM = sum_BxKxM * rescale_BxKxM + jnp.sum(p_BxKxMxC, axis=-1)
    acc_BxKxMxE = acc_BxKxMxE * rescale_BxKxM[..., None] + _dot(p_BxKxMxC, v_BxKxCxE, dtype)
    return i + 1, new_max_BxKxM, sum_BxKxM, acc_BxKxMxE

  n_blocks = (jnp.minimum(kv_len, S) + block - 1) // block
  init = (jnp.zeros((), jnp.int32), jnp.full((B, K, T * G), -jnp.inf, jnp.float32),
          jnp.zeros((B, K, T * G), jnp.float32), jnp.zeros((B, K, T * G, E), jnp.float32))
  _, _, sum_BxKxM, acc_BxKxMxE = jax.lax.while_loop(lambda c: c[0] < n_blocks, body, init)
  out_BxKxMxE = acc_BxKxMxE / jnp.maximum(sum_BxKxM, 1e-30)[..., None]
  return jnp.transpose(out_BxKxMxE.reshape(B, K, T, G, E), (0, 2, 1, 3, 4))


def attention_reference(q_BxTxKxGxE, k_BxKxSxE, v_BxKxSxE, mask_BxTxS, dtype=jnp.float32, softcap: float = 0.0):
  """The plain formulation (autodiff backward); the tests hold ``attention`` to it.

  Operands are rounded to ``dtype`` and multiplied in float32: the same products as a ``dtype`` dot
  with a float32 result (exact in float32), on any dot this jaxlib's CPU backend supports.
  """
  rounded = lambda x: x.astype(dtype).astype(jnp.float32)
  scores_BxKxGxTxS = jnp.einsum('btkgd,bksd->bkgts', rounded(q_BxTxKxGxE), rounded(k_BxKxSxE))
  if softcap:
    scores_BxKxGxTxS = softcap * jnp.tanh(scores_BxKxGxTxS / softcap)
  scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, NEG_INF)
  probs = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
  return jnp.einsum('bkgts,bksd->btkgd', rounded(probs), rounded(v_BxKxSxE))


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
  w_DxV = _row_major(w_DxV.astype(dtype))  # cast once; a tied table arrives as a transposed view
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
    dh_CxD = _dot_nt(dlogits_CxV, w_DxV, dtype)
    dw_DxV = dw_DxV + _dot(_transposed(h_CxD.astype(dtype)), dlogits_CxV, dtype)
    return (nll, z, dw_DxV), dh_CxD

  zero = jnp.zeros((), jnp.float32)
  dw0 = jnp.zeros((D, V) if with_grad else (), jnp.float32)
  (nll, z, dw_DxV), dh_NxCxD = jax.lax.scan(body, (zero, zero, dw0), (strided(h_MxD), strided(targets_M),
                                                                      strided(mask_M)))
  grads = _settled(jnp.swapaxes(dh_NxCxD, 0, 1).reshape(M, D), dw_DxV) if with_grad else None
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
