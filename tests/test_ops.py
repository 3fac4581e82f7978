"""lm.ops fast kernels (custom VJPs, chunked causal attention) against the plain jnp formulation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.model import ops

F32 = dict(rtol=1e-5, atol=1e-5)
BF16 = dict(rtol=5e-2, atol=5e-2)


def _normal(rng, shape):
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _qkv(B, T, S, K, G, D, seed=0):
  rng = np.random.default_rng(seed)
  return (_normal(rng, (B, T, K, G, D)) * D ** -0.5, _normal(rng, (B, K, S, D)), _normal(rng, (B, K, S, D)))


def _packed(B, lengths):
  """Segment ids and positions for rows packed with segments of ``lengths`` (0 = padding tail)."""
  segs, poss = [], []
  for i, n in enumerate(lengths):
    segs.append(np.full(n, i + 1))
    poss.append(np.arange(n))
  seg = np.concatenate(segs)
  seg[-3:] = 0  # a padding tail: it attends to itself only
  pos = np.concatenate(poss)
  return jnp.asarray(np.tile(seg, (B, 1)), jnp.int32), jnp.asarray(np.tile(pos, (B, 1)), jnp.int32)


def _check(q, k, v, mask, dtype=jnp.float32, tol=F32, **kw):
  """Values and gradients (w.r.t. q, k, v) of ops.attention equal the reference."""
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)

  def out_and_grads(fn):
    def loss(q, k, v):
      out = fn(q, k, v, mask, dtype)
      return jnp.sum(out * cot), out
    return jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))

  fast = lambda q, k, v, m, dt: ops.attention(q, k, v, m, dt, **kw)
  got = out_and_grads(fast)(q, k, v)
  want = out_and_grads(ops.attention_reference)(q, k, v)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, **tol)


@pytest.mark.parametrize('T,chunk,K,G', [(40, 16, 2, 2), (37, 16, 1, 4), (64, 64, 3, 1), (20, 0, 2, 2)])
def test_causal_attention_matches_reference(T, chunk, K, G):
  q, k, v = _qkv(2, T, T, K, G, 8)
  pos = jnp.broadcast_to(jnp.arange(T), (2, T))
  seg = jnp.ones((2, T), jnp.int32)
  _check(q, k, v, ops.attention_mask(seg, seg, pos, pos), chunk=chunk)


def test_packed_segments_take_the_chunked_path_and_match():
  T, chunk = 45, 16
  seg, pos = _packed(2, [10, 20, 15])
  mask = ops.attention_mask(seg, seg, pos, pos)
  assert bool(ops.causal_chunks_are_exact(mask, chunk))
  _check(*_qkv(2, T, T, 2, 2, 8), mask, chunk=chunk)


def test_non_causal_mask_falls_back_to_the_full_path():
  """A bidirectional mask fails the check, so no key may be skipped: still exact."""
  T, chunk = 33, 16
  mask = jnp.ones((2, T, T), bool).at[:, :, 5].set(False)
  assert not bool(ops.causal_chunks_are_exact(mask, chunk))
  _check(*_qkv(2, T, T, 2, 2, 8), mask, chunk=chunk)


def test_row_with_no_visible_key_falls_back_and_matches():
  T, chunk = 32, 8
  pos = jnp.broadcast_to(jnp.arange(T), (1, T))
  seg = jnp.ones((1, T), jnp.int32)
  mask = ops.attention_mask(seg, seg, pos, pos).at[0, 3].set(False)  # query 3 sees nothing
  assert not bool(ops.causal_chunks_are_exact(mask, chunk))
  _check(*_qkv(1, T, T, 2, 2, 8), mask, chunk=chunk)


@pytest.mark.parametrize('dtype,tol', [(jnp.float32, F32), (jnp.bfloat16, BF16)])
def test_unchecked_blocks_are_exact_where_positions_count_up(dtype, tol):
  """check=False: rows whose positions count up in their segment get exactly the reference (values and
  gradients); a padding tail with all positions 0 (as lm.data.pipeline pads) that sees padding keys
  past its block gets only the keys up to its block's end: not the reference there."""
  T, chunk = 48, 16
  seg, pos = _packed(2, [10, 20, 18])
  seg = seg.at[:, 28:].set(0)
  pos = pos.at[:, 28:].set(0)  # rows 28..47: padding across the block boundary at 32
  mask = ops.attention_mask(seg, seg, pos, pos)
  assert not bool(ops.causal_chunks_are_exact(mask, chunk))
  q, k, v = _qkv(2, T, T, 2, 2, 8)
  real = (seg > 0)[:, :, None, None, None]
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32) * real

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * cot)

  fast = lambda q, k, v: ops.attention(q, k, v, mask, dtype, chunk=chunk, check=False)  # noqa: E731
  ref = lambda q, k, v: ops.attention_reference(q, k, v, mask, dtype)  # noqa: E731
  got, want = jax.jit(fast)(q, k, v), ref(q, k, v)
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), **tol)
  diff = np.abs(np.asarray(got - want)).max(axis=(0, 2, 3, 4))
  assert diff[28:32].min() > 1e-3  # padding in block [16, 32) sees padding keys 32..47: skipped
  if dtype == jnp.float32:
    assert diff[32:].max() < 1e-4  # the last block sees every key
  for g, w in zip(jax.jit(jax.grad(loss(fast), (0, 1, 2)))(q, k, v), jax.grad(loss(ref), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g, w, **tol)


def test_kv_cache_decode_single_query_against_slots():
  S = 24
  q, k, v = _qkv(2, 1, S, 2, 2, 8)
  kv_seg = jnp.asarray(np.tile(np.r_[np.ones(10), np.zeros(S - 10)], (2, 1)), jnp.int32)  # 10 filled slots
  kv_pos = jnp.broadcast_to(jnp.arange(S), (2, S))
  mask = ops.attention_mask(jnp.ones((2, 1), jnp.int32), kv_seg, jnp.full((2, 1), 9), kv_pos)
  _check(q, k, v, mask, chunk=8)


def test_prefill_chunk_against_a_longer_cache():
  T, S = 5, 16
  q, k, v = _qkv(1, T, S, 2, 2, 8)
  kv_seg = jnp.asarray((np.arange(S) < 12)[None], jnp.int32)
  q_pos = jnp.arange(7, 12)[None]
  mask = ops.attention_mask(jnp.ones((1, T), jnp.int32), kv_seg, q_pos, jnp.arange(S)[None])
  _check(q, k, v, mask, chunk=2)


@pytest.mark.parametrize('S,block,kv_len,T',
                         [(24, 8, 10, 1), (40, 8, 17, 3), (30, 8, 27, 3), (30, 8, 30, 2), (16, 64, 5, 1)])
def test_cached_attention_reads_only_filled_blocks_and_matches(S, block, kv_len, T):
  """Blocks past kv_len are skipped (filled with NaN here to prove it); the last block may overlap."""
  q, k, v = _qkv(2, T, S, 2, 2, 8)
  filled_S = np.arange(S) < kv_len
  unread_S = np.arange(S) >= -(-kv_len // block) * block
  k, v = (jnp.where(unread_S[:, None], jnp.nan, x) for x in (k, v))
  kv_seg = jnp.asarray(np.tile(filled_S, (2, 1)), jnp.int32)
  q_pos = jnp.broadcast_to(jnp.arange(kv_len - T, kv_len), (2, T))
  mask = ops.attention_mask(jnp.ones((2, T), jnp.int32), kv_seg, q_pos, jnp.broadcast_to(jnp.arange(S), (2, S)))
  got = jax.jit(ops.cached_attention, static_argnames='block')(q, k, v, mask, jnp.int32(kv_len), block=block)
  k0, v0 = jnp.nan_to_num(k), jnp.nan_to_num(v)
  np.testing.assert_allclose(got, ops.attention_reference(q, k0, v0, mask), **F32)


def test_cached_attention_gives_zeros_to_a_query_that_sees_nothing():
  q, k, v = _qkv(1, 2, 16, 2, 2, 8)
  mask = jnp.asarray([[[True] * 4 + [False] * 12, [False] * 16]])
  got = ops.cached_attention(q, k, v, mask, jnp.int32(4), block=8)
  np.testing.assert_allclose(got[:, 0], ops.attention_reference(q, k, v, mask)[:, 0], **F32)
  assert np.all(np.asarray(got[:, 1]) == 0)


def test_bfloat16_attention_is_close():
  T = 48
  q, k, v = _qkv(2, T, T, 2, 2, 16)
  pos = jnp.broadcast_to(jnp.arange(T), (2, T))
  seg = jnp.ones((2, T), jnp.int32)
  _check(q, k, v, ops.attention_mask(seg, seg, pos, pos), dtype=jnp.bfloat16, tol=BF16, chunk=16)


@pytest.mark.parametrize('M,K,N,dtype,tol', [(64, 32, 48, jnp.float32, F32), (7, 5, 3, jnp.bfloat16, BF16)])
def test_linear_matches_reference(M, K, N, dtype, tol):
  rng = np.random.default_rng(0)
  x, w, cot = _normal(rng, (M, K)), _normal(rng, (K, N)) / np.sqrt(K), _normal(rng, (M, N))
  np.testing.assert_allclose(ops.linear(x, w, dtype), ops.linear_reference(x, w, dtype), **tol)
  loss = lambda fn: lambda x, w: jnp.sum(fn(x, w, dtype) * cot)
  for g, want in zip(jax.grad(loss(ops.linear), (0, 1))(x, w), jax.grad(loss(ops.linear_reference), (0, 1))(x, w)):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, want, **tol)


def test_linear_of_a_transposed_weight_and_under_remat_and_jit():
  """The tied head calls ``linear(h, embed.T)``; the model may run under remat and jit."""
  rng = np.random.default_rng(0)
  x, e, cot = _normal(rng, (12, 8)), _normal(rng, (10, 8)), _normal(rng, (12, 10))
  loss = lambda fn: jax.jit(jax.checkpoint(lambda x, e: jnp.sum(fn(x, e.T) * cot)))
  got = jax.grad(loss(ops.linear), (0, 1))(x, e)
  want = jax.grad(loss(ops.linear_reference), (0, 1))(x, e)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, **F32)


def test_attention_under_scan():
  """As under ``nn.scan`` over layers: the lax.cond and custom VJPs inside a scanned body."""
  T = 20
  q, k, v = _qkv(1, T, T, 2, 2, 8)
  pos = jnp.broadcast_to(jnp.arange(T), (1, T))
  seg = jnp.ones((1, T), jnp.int32)
  mask = ops.attention_mask(seg, seg, pos, pos)

  def loss(fn):
    def body(q, _):
      return fn(q, k, v, mask).sum(axis=(3, 4))[..., None, None] * 0.1 + q, None
    return lambda q: jnp.sum(jax.lax.scan(body, q, None, length=3)[0])

  got = jax.grad(loss(lambda *a: ops.attention(*a, chunk=8)))(q)
  np.testing.assert_allclose(got, jax.grad(loss(ops.attention_reference))(q), **F32)


# ------------------------------------------------------------------------- head + cross-entropy

def _head_inputs(M=300, D=32, V=97, seed=0):
  rng = np.random.default_rng(seed)
  h = _normal(rng, (M, D))
  w = _normal(rng, (D, V)) * 0.3
  targets = jnp.asarray(rng.integers(0, V, M), jnp.int32)
  mask = jnp.asarray(rng.random(M) > 0.3, jnp.float32)
  return h, w, targets, mask


@pytest.mark.parametrize('chunk', [64, 128, 300, 1024])
@pytest.mark.parametrize('z_loss_weight', [0.0, 1e-2])
def test_head_cross_entropy_matches_reference(chunk, z_loss_weight):
  h, w, t, m = _head_inputs()
  got = ops.head_cross_entropy(h, w, t, m, z_loss_weight, chunk=chunk)
  want = ops.head_cross_entropy_reference(h, w, t, m, z_loss_weight)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, **F32)
  grad = lambda f: jax.grad(lambda h, w: 3.0 * f(h, w, t, m, z_loss_weight)[0], (0, 1))(h, w)
  got_g = grad(functools.partial(ops.head_cross_entropy, chunk=chunk))
  want_g = grad(ops.head_cross_entropy_reference)
  for a, b in zip(got_g, want_g):
    np.testing.assert_allclose(a, b, **F32)


def test_head_cross_entropy_of_a_transposed_tied_table_under_jit():
  h, w, t, m = _head_inputs()
  embed_VxD = w.T
  f = jax.jit(jax.value_and_grad(lambda h, e: ops.head_cross_entropy(h, e.T, t, m, chunk=128)[0], (0, 1)))
  g = jax.value_and_grad(lambda h, e: ops.head_cross_entropy_reference(h, e.T, t, m)[0], (0, 1))
  (va, ga), (vb, gb) = f(h, embed_VxD), g(h, embed_VxD)
  np.testing.assert_allclose(va, vb, **F32)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, **F32)


def test_head_cross_entropy_metrics_carry_no_gradient():
  h, w, t, m = _head_inputs()
  g = jax.grad(lambda h: ops.head_cross_entropy(h, w, t, m, 0.5)[1] + ops.head_cross_entropy(h, w, t, m, 0.5)[2])(h)
  assert not np.any(np.asarray(g))


@pytest.mark.parametrize('tie', [True, False])
def test_lm_loss_with_fused_head_equals_the_logits_path(tie):
  import flax.linen as nn

  from lm.model import transformer as model_lib
  from lm.steps import lm as lm_step
  cfg = model_lib.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                              tie_embeddings=tie, max_seq_len=16)
  model = model_lib.Transformer(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32)))['params']
  rng = np.random.default_rng(0)
  batch = {'inputs': jnp.asarray(rng.integers(0, 64, (2, 16)), jnp.int32),
           'targets': jnp.asarray(rng.integers(0, 64, (2, 16)), jnp.int32),
           'loss_mask': jnp.asarray(rng.random((2, 16)) > 0.3, jnp.float32),
           'positions': jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (2, 16)),
           'segment_ids': jnp.ones((2, 16), jnp.int32)}
  results = []
  for fused in (True, False):
    f = jax.jit(jax.value_and_grad(lm_step.make_loss_sums(model, 1e-3, fused_head=fused), has_aux=True))
    results.append(f(params, batch, None))
  ((obj_a, sums_a), g_a), ((obj_b, sums_b), g_b) = results
  np.testing.assert_allclose(obj_a, obj_b, **F32)
  for k in sums_b:
    np.testing.assert_allclose(sums_a[k], sums_b[k], **F32)
  for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('chunk', [0, 8])
def test_softcapped_attention_matches_reference_values_and_gradients(chunk):
  """Gemma 2's scores softcap * tanh(s / softcap): the hand-written backward against autodiff."""
  q, k, v = _qkv(2, 20, 20, 2, 2, 8)
  q = q * 3.0  # scores of several units, where the tanh bends
  pos = jnp.broadcast_to(jnp.arange(20), (2, 20))
  seg = jnp.ones((2, 20), jnp.int32)
  mask = ops.attention_mask(seg, seg, pos, pos)
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)

  def grads(fn):
    return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * cot), (0, 1, 2)))(q, k, v)

  fast = lambda q, k, v: ops.attention(q, k, v, mask, chunk=chunk, softcap=1.5)  # noqa: E731
  ref = lambda q, k, v: ops.attention_reference(q, k, v, mask, softcap=1.5)  # noqa: E731
  np.testing.assert_allclose(fast(q, k, v), ref(q, k, v), **F32)
  for g, w in zip(grads(fast), grads(ref)):
    np.testing.assert_allclose(g, w, **F32)
  assert np.abs(np.asarray(ref(q, k, v) - ops.attention_reference(q, k, v, mask))).max() > 0.1  # the cap matters
  got = ops.cached_attention(q[:, -3:], k, v, mask[:, -3:], jnp.int32(20), block=8, softcap=1.5)
  np.testing.assert_allclose(got, ref(q, k, v)[:, -3:], **F32)
