"""The numerical kernels the model is built from: matmul, attention and RoPE.

Kept in one file so that each backend can use its fastest formulation while the model reads the same.
Conventions: activations stay float32; matmul operands are cast to the compute ``dtype`` and
accumulate in float32 (``preferred_element_type``), which is also what lets XLA:CPU run bf16 dots
on its fast path.
"""

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so that a row with no visible key gives a uniform softmax, not NaN


def linear(x_MxK, w_KxN, dtype=jnp.float32):
  """``x @ w`` with operands in ``dtype`` and a float32 result."""
  return jnp.dot(x_MxK.astype(dtype), w_KxN.astype(dtype), preferred_element_type=jnp.float32)


def rope(x_BxTxNxD, positions_BxT, theta: float):
  """Rotary position embedding, rotate-half convention (as in Llama / Hugging Face)."""
  d_half = x_BxTxNxD.shape[-1] // 2
  inv_freq_F = 1.0 / (theta ** (jnp.arange(d_half, dtype=jnp.float32) / d_half))
  angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_F
  sin = jnp.sin(angles_BxTxF)[:, :, None, :]
  cos = jnp.cos(angles_BxTxF)[:, :, None, :]
  x1, x2 = x_BxTxNxD[..., :d_half], x_BxTxNxD[..., d_half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxTxNxD.dtype)


def attention_mask(q_segment_ids_BxT, kv_segment_ids_BxS, q_positions_BxT, kv_positions_BxS):
  """Which keys each query sees: same segment and not in the future (by position)."""
  same_segment = q_segment_ids_BxT[:, :, None] == kv_segment_ids_BxS[:, None, :]
  causal = kv_positions_BxS[:, None, :] <= q_positions_BxT[:, :, None]
  return same_segment & causal


def attention(q_BxTxKxGxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS, dtype=jnp.float32):
  """Grouped-query attention: G query heads share each of the K key/value heads.

  ``q`` is expected pre-scaled by 1/sqrt(D). Returns float32 ``[B, T, K, G, D]``.
  """
  scores_BxKxGxTxS = jnp.einsum(
      'btkgd,bskd->bkgts', q_BxTxKxGxD.astype(dtype), k_BxSxKxD.astype(dtype),
      preferred_element_type=jnp.float32)
  scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, NEG_INF)
  probs = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
  return jnp.einsum('bkgts,bskd->btkgd', probs.astype(dtype), v_BxSxKxD.astype(dtype),
                    preferred_element_type=jnp.float32)
