"""lm/attention.py: every implementation this machine can run equals lm.ops.attention_reference
with causal + segment masks (values and gradients), alone and inside the model on a sharded mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import sharding
from lm.model import attention, ops
from lm.model.transformer import ModelConfig, Transformer

CPU_IMPLEMENTATIONS = ('xla', 'chunked', 'dot_product', 'splash')  # splash in Pallas interpret mode
F32 = dict(rtol=2e-5, atol=2e-5)
BF16 = dict(rtol=2e-2, atol=2e-2)


def _inputs(make_batch, B=2, T=128, K=2, G=2, D=16, seed=0):  # splash takes multiples of 128
  batch = make_batch(B, T, seed=seed)
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(B, T, K, G, D)), jnp.float32) * D ** -0.5
  k, v = (jnp.asarray(rng.normal(size=(B, K, T, D)), jnp.float32) for _ in range(2))
  seg, pos = jnp.asarray(batch['segment_ids']), jnp.asarray(batch['positions'])
  return q, k, v, seg, pos


def _config(impl, **kw):
  return ModelConfig(attention=impl, **kw)


def _real(seg):
  return (seg > 0)[:, :, None, None, None]  # padding rows: nothing is learnt there (module docstring)


@pytest.mark.parametrize('impl', CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize('dtype,tol', [(jnp.float32, F32), (jnp.bfloat16, BF16)])
def test_equals_the_reference_with_causal_and_segment_masks(make_batch, impl, dtype, tol):
  q, k, v, seg, pos = _inputs(make_batch)
  cfg = _config(impl)
  mask = attention.self_mask(cfg, seg, pos)
  assert isinstance(mask, attention.Segments) == (impl in attention.TAKES_SEGMENTS)
  ref_mask = ops.attention_mask(seg, seg, pos, pos)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32) * _real(seg)

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)

  got = jax.jit(lambda q, k, v: attention.attend(cfg, q, k, v, mask, dtype))(q, k, v)
  want = ops.attention_reference(q, k, v, ref_mask, dtype)
  assert got.dtype == jnp.float32 and got.shape == q.shape
  np.testing.assert_allclose(np.where(_real(seg), got, 0), np.where(_real(seg), want, 0), **tol)
  got_g = jax.jit(jax.grad(loss(lambda q, k, v: attention.attend(cfg, q, k, v, mask, dtype)), (0, 1, 2)))(q, k, v)
  want_g = jax.grad(loss(lambda q, k, v: ops.attention_reference(q, k, v, ref_mask, dtype)), (0, 1, 2))(q, k, v)
  for name, a, b in zip('qkv', got_g, want_g):
    scale = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a / scale, b / scale, err_msg=f'd{name}', **tol)


@pytest.mark.parametrize('impl', ['chunked', 'splash'])
def test_softcapped_scores(make_batch, impl):
  q, k, v, seg, pos = _inputs(make_batch, seed=3)
  cfg = _config(impl, attn_softcap=0.5)
  got = jax.jit(lambda q, k, v: attention.attend(cfg, q, k, v, attention.self_mask(cfg, seg, pos), jnp.float32))(
      q * 8, k, v)
  want = ops.attention_reference(q * 8, k, v, ops.attention_mask(seg, seg, pos, pos), softcap=0.5)
  np.testing.assert_allclose(np.where(_real(seg), got, 0), np.where(_real(seg), want, 0), **F32)


def test_chunked_long_sequences_use_at_most_max_blocks(make_batch):
  q, k, v, seg, pos = _inputs(make_batch, B=1, T=256, K=1, G=2, D=8, seed=4)  # 256 / 16 = 16 > 8
  fn = lambda q, k, v: ops.segment_causal_attention(q, k, v, seg, chunk=8)  # noqa: E731
  # one custom_vjp over all blocks, two dots (scores, values) per block: 16 blocks, not 32 of 8 rows
  assert str(jax.make_jaxpr(fn)(q, k, v)).count('dot_general') == 2 * ops.MAX_CAUSAL_BLOCKS
  got = jax.jit(fn)(q, k, v)
  want = jax.jit(ops.attention_reference)(q, k, v, ops.attention_mask(seg, seg, pos, pos))
  np.testing.assert_allclose(np.where(_real(seg), got, 0), np.where(_real(seg), want, 0), **F32)


def test_model_on_a_sharded_mesh_matches_xla(make_config, make_batch):
  """Loss and parameter gradients of the model with each implementation, on the (2, 2, 2) mesh
  (splash runs per device under shard_map), equal those with ``xla``."""
  batch = {k: jnp.asarray(v) for k, v in make_batch(4, 128, seed=5).items()}
  mesh = sharding.make_mesh((2, 2, 2))
  base = make_config(n_heads=4, n_kv_heads=2, max_seq_len=128)
  results = {}
  for impl in ('xla', 'splash'):  # splash: segment ids through the model, shard_map (the others: op-level above)
    model = Transformer(dataclasses.replace(base, attention=impl))
    params, _ = sharding.sharded_init(lambda r, m=model: m.init(r, batch['inputs'][:1])['params'], mesh,
                                      sharding.DEFAULT_RULES, jax.random.key(0))

    def loss(p, m=model):
      logits = m.apply({'params': p}, batch['inputs'], batch['positions'], batch['segment_ids'])['logits']
      logp = jax.nn.log_softmax(logits)
      nll = -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
      return jnp.sum(nll * batch['loss_mask'])

    with sharding.use_mesh(mesh, sharding.DEFAULT_RULES):
      results[impl] = jax.device_get(jax.jit(jax.value_and_grad(loss))(params))
  want_loss, want_grads = results['xla']
  for impl, (got_loss, got_grads) in results.items():
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, err_msg=impl)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):  # relative to each leaf's scale
      scale = float(np.max(np.abs(b)))
      np.testing.assert_allclose(a / scale, b / scale, atol=1e-5, rtol=0, err_msg=impl)


def test_resolution_and_config_errors():
  assert attention.resolve(ModelConfig()) == 'xla'  # auto on CPU
  assert ModelConfig().attention == 'auto'
  with pytest.raises(ValueError, match=r"model.attention='cudnn' needs a GPU"):
    attention.resolve(ModelConfig(attention='cudnn', dtype='bfloat16'))
  with pytest.raises(ValueError, match=r"model.attention='flash'; valid: auto, xla, chunked"):
    ModelConfig(attention='flash')
  with pytest.raises(ValueError, match=r"model.attention='splash' has no sliding windows"):
    ModelConfig(attention='splash', sliding_window=4, sliding_layers=(0,))
  with pytest.raises(ValueError, match=r"model.attention='dot_product' has no score softcapping"):
    ModelConfig(attention='dot_product', attn_softcap=30.0)
  assert attention.resolve(ModelConfig(sliding_window=4, sliding_layers=(0,))) == 'xla'
