"""The model against references: a float64 numpy forward, the KV cache, packing, layouts, remat."""

import dataclasses
import functools
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import errors

from lm import hardware, optim
from lm.model import ops
from lm.model.transformer import ModelConfig, RMSNorm, Transformer, init_cache
from lm.steps import common
from lm.steps.lm import make_loss_sums

B, T = 2, 16


@functools.lru_cache(maxsize=None)
def _init(config: ModelConfig):
  # Init only needs *some* params here. With the default partitionable threefry, XLA:CPU takes
  # ~5 s to compile each init (vs ~0.5 s without), so the model tests switch it off for init only;
  # tests/test_sharding.py covers sharded init with the default.
  with jax.threefry_partitionable(False):
    return nn.unbox(jax.jit(Transformer(config).init)(jax.random.key(0), jnp.zeros((B, T), jnp.int32)))['params']


@functools.lru_cache(maxsize=None)
def _fns(config: ModelConfig):
  """Params and jitted forward / cached-forward for ``config`` (compiled once per shape)."""
  model = Transformer(config)
  params = _init(dataclasses.replace(config, dtype='float32', remat='none'))

  @jax.jit
  def forward(params, tokens, positions, segment_ids):
    return model.apply({'params': params}, tokens, positions, segment_ids)

  @jax.jit
  def cached(params, tokens, positions, segment_ids, cache):
    return model.apply({'params': params}, tokens, positions, segment_ids, cache=cache)

  return params, forward, cached


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# ----------------------------------------------------------------------------------------------
# float64 numpy reference, written from the documented param layout only.

def _np_rms(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def _np_rope(x_BxTxHxE, positions_BxT, theta):
  d = x_BxTxHxE.shape[-1]
  inv_freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
  ang = positions_BxT.astype(np.float64)[:, :, None, None] * inv_freq
  x1, x2 = x_BxTxHxE[..., :d // 2], x_BxTxHxE[..., d // 2:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def _np_forward(p, c: ModelConfig, tokens, positions, segment_ids):
  D, H, K, G, Hd, F = c.d_model, c.n_heads, c.n_kv_heads, c.q_per_kv, c.head_size, c.d_ff
  Bn, Tn = tokens.shape
  x = p['embed'][tokens]
  mask = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (positions[:, None, :] <= positions[:, :, None])
  for i in range(c.n_layers):
    lp = p[f'layer_{i}']
    h = _np_rms(x, lp['attn_norm']['scale'], c.norm_eps)
    qkv = (h @ lp['wqkv'].reshape(D, -1)).reshape(Bn, Tn, K, G + 2, Hd)
    q = _np_rope(qkv[:, :, :, :G].reshape(Bn, Tn, H, Hd), positions, c.rope_theta) / np.sqrt(Hd)
    k = _np_rope(qkv[:, :, :, G], positions, c.rope_theta)
    v = qkv[:, :, :, G + 1]
    heads = []
    for hh in range(H):  # query head hh reads kv head hh // G
      s = np.einsum('btd,bsd->bts', q[:, :, hh], k[:, :, hh // G])
      s = np.where(mask, s, -np.inf)
      a = np.exp(s - s.max(-1, keepdims=True))
      a /= a.sum(-1, keepdims=True)
      heads.append(np.einsum('bts,bsd->btd', a, v[:, :, hh // G]))
    x = x + np.concatenate(heads, -1) @ lp['wo'].reshape(H * Hd, D)
    h = _np_rms(x, lp['mlp_norm']['scale'], c.norm_eps)
    gu = (h @ lp['w_gate_up'].reshape(D, 2 * F)).reshape(Bn, Tn, F, 2)
    g, u = gu[..., 0], gu[..., 1]
    x = x + (g / (1 + np.exp(-g)) * u) @ lp['w_down']
  h = _np_rms(x, p['final_norm']['scale'], c.norm_eps)
  head = p['embed'].T if c.tie_embeddings else p['head']
  return h @ head


def _scan_to_unrolled(params, n_layers):
  out = {k: v for k, v in params.items() if k != 'layers'}
  for i in range(n_layers):
    out[f'layer_{i}'] = jax.tree.map(lambda x: x[i], params['layers']['block'])
  return out


def _unrolled_to_scan(params, n_layers):
  out = {k: v for k, v in params.items() if not k.startswith('layer_')}
  out['layers'] = {'block': jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f'layer_{i}'] for i in range(n_layers)])}
  return out


# ----------------------------------------------------------------------------------------------


def test_rope_matches_float64_rotate_half():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 3, 16)).astype(np.float32)
  pos = rng.integers(0, 256, (2, 5)).astype(np.int32)
  got = np.asarray(ops.rope(jnp.asarray(x), jnp.asarray(pos), 10000.0))
  want = _np_rope(x.astype(np.float64), pos, 10000.0)
  # f32 angles up to 255 rad carry ~1.5e-5 absolute error; observed max ~1e-5.
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  # Position 0 is the identity, and a rotation keeps each pair's norm.
  np.testing.assert_allclose(np.asarray(ops.rope(jnp.asarray(x), jnp.zeros((2, 5), jnp.int32), 1e4)), x, atol=0)


def test_rope_tables_on_cpu_are_float64_angles_rounded_and_nan_past_their_end():
  rng = np.random.default_rng(2)
  pos = rng.integers(0, 4000, (2, 40)).astype(np.int32)
  inv_freq = 1.0 / 10000.0 ** (np.arange(32) / 32)
  scaled = (inv_freq / 8).astype(np.float32)  # a concrete inv_freq_J, as a scaled RoPE passes it
  for inv_J, given in ((inv_freq, None), (scaled.astype(np.float64), scaled)):
    cos, sin = jax.jit(lambda p, g=given: ops.rope_tables(p, 64, 10000.0, g, max_len=4000))(pos)
    angles = pos[:, :, None, None] * inv_J
    # Within float32 rounding of the true values (the formula's float32 angles are off by up to ~2e-4 here).
    np.testing.assert_allclose(np.asarray(cos), np.cos(angles), atol=6e-8, rtol=0)
    np.testing.assert_allclose(np.asarray(sin), np.sin(angles), atol=6e-8, rtol=0)
  formula_cos = jax.jit(lambda p: ops.rope_tables(p, 64, 10000.0)[0])(pos)
  np.testing.assert_allclose(np.asarray(formula_cos), np.cos(pos[:, :, None, None] * inv_freq), atol=3e-4, rtol=0)
  # A position at or past the table's end is NaN, not a clamped angle.
  cos, _ = jax.jit(lambda p: ops.rope_tables(p, 64, 10000.0, max_len=1000))(pos)
  np.testing.assert_array_equal(np.isnan(np.asarray(cos)).all(axis=(2, 3)), pos >= 1000)
  assert not np.isnan(np.asarray(cos)[pos < 1000]).any()


def test_rmsnorm_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 8)).astype(np.float32) * 3
  scale = rng.standard_normal(8).astype(np.float32)
  got = RMSNorm(1e-5).apply({'params': {'scale': jnp.asarray(scale)}}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), _np_rms(x.astype(np.float64), scale, 1e-5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('untied', [False, True])
def test_forward_matches_float64_numpy_reference(make_config, make_batch, untied):
  """Whole model (GQA head grouping, RoPE, SwiGLU, packing masks) vs an independent numpy forward."""
  c = make_config(tie_embeddings=not untied, scalar_head=untied)
  params, forward, _ = _fns(c)
  if untied:  # give the (zero-initialised) scalar head something to compute
    params = dict(params, scalar_head=jnp.linspace(-1, 1, c.d_model), scalar_bias=jnp.asarray(0.25))
  batch = make_batch(B, T, c.vocab_size, seed=3)
  out = forward(params, batch['inputs'], batch['positions'], batch['segment_ids'])
  want = _np_forward(_np(params), c, batch['inputs'], batch['positions'], batch['segment_ids'])
  assert out['logits'].dtype == jnp.float32 and out['logits'].shape == (B, T, c.vocab_size)
  # observed max abs error ~3e-7 (logits are up to ~0.5 at init)
  np.testing.assert_allclose(np.asarray(out['logits']), want, atol=2e-6, rtol=1e-5)
  if untied:
    assert out['scalar'].shape == (B, T)
    want_scalar = np.asarray(out['hidden'], np.float64) @ np.linspace(-1, 1, c.d_model) + 0.25
    np.testing.assert_allclose(np.asarray(out['scalar']), want_scalar, atol=1e-5)


def test_head_shapes_and_scalar_head_starts_at_zero(make_config, make_batch):
  init = Transformer(make_config()).init
  tied = nn.unbox(jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))['params']
  assert 'head' not in tied and tied['embed'].shape == (128, 64)
  c = make_config(tie_embeddings=False, scalar_head=True)
  params, forward, _ = _fns(c)
  assert params['head'].shape == (c.d_model, c.vocab_size) and params['embed'].shape == (c.vocab_size, c.d_model)
  assert params['scalar_head'].shape == (c.d_model,) and params['scalar_bias'].shape == ()
  np.testing.assert_array_equal(np.asarray(params['scalar_head']), 0)
  batch = make_batch(B, T, seed=4)
  out = forward(params, batch['inputs'], batch['positions'], batch['segment_ids'])
  assert out['scalar'].shape == (B, T) and out['scalar'].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out['scalar']), 0.0)
  assert out['hidden'].shape == (B, T, c.d_model)
  # A scalar-only model has no vocab head at all.
  v = make_config(lm_head=False, scalar_head=True)
  shapes = jax.eval_shape(Transformer(v).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  out = jax.eval_shape(Transformer(v).apply, shapes, jnp.zeros((1, 4), jnp.int32))
  assert 'logits' not in out and out['scalar'].shape == (1, 4)


@pytest.mark.parametrize('scan', [False, True])
def test_params_of_another_shape_are_refused_naming_the_param(make_config, scan):
  ids = jnp.zeros((1, 4), jnp.int32)
  params = jax.eval_shape(Transformer(make_config(d_ff=96, scan_layers=scan)).init, jax.random.key(0), ids)
  with pytest.raises(errors.ScopeParamShapeError, match=r'"w_gate_up".*shape \(64, 128, 2\).*has shape \(64, 96, 2\)'):
    jax.eval_shape(Transformer(make_config(scan_layers=scan)).apply, params, ids)  # Flax checks while tracing


@pytest.mark.parametrize('overrides', [
    {}, {'tie_embeddings': False}, {'scalar_head': True, 'lm_head': False},
    {'head_dim': 32, 'scan_layers': True, 'scalar_head': True}, {'n_kv_heads': 4, 'n_layers': 3},
])
def test_n_params_counts_the_leaves(make_config, overrides):
  c = make_config(**overrides)
  shapes = jax.eval_shape(Transformer(c).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)['params']))
  assert c.n_params() == counted
  assert c.n_params(include_embedding=False) == counted - c.vocab_size * c.d_model


def _full_vs_cached(c, tokens, positions, segment_ids, prompt_len):
  """Logits of prefill(prompt) + one-token decodes, concatenated over time."""
  params, forward, cached = _fns(c)
  cache = init_cache(c, B, T)
  out = cached(params, tokens[:, :prompt_len], positions[:, :prompt_len], segment_ids[:, :prompt_len], cache)
  logits = [out['logits']]
  cache = out['cache']
  for t in range(prompt_len, T):
    out = cached(params, tokens[:, t:t + 1], positions[:, t:t + 1], segment_ids[:, t:t + 1], cache)
    logits.append(out['logits'])
    cache = out['cache']
  assert int(cache['end']) == T
  return np.asarray(jnp.concatenate(logits, axis=1))


@pytest.mark.parametrize('scan', [False, True])
def test_kv_cache_decode_equals_full_forward(make_config, scan):
  c = make_config(scan_layers=scan)
  params, forward, _ = _fns(c)
  rng = np.random.default_rng(5)
  tokens = rng.integers(0, c.vocab_size, (B, T)).astype(np.int32)
  positions = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))
  segs = np.ones((B, T), np.int32)
  full = np.asarray(forward(params, tokens, positions, segs)['logits'])
  got = _full_vs_cached(c, tokens, positions, segs, prompt_len=6)
  np.testing.assert_allclose(got, full, atol=1e-5, rtol=0)  # observed: exactly equal

  # Left padding: row 0 starts with 4 pad slots (segment 0), its positions start at 0 at the first
  # real token. Reference: the same real tokens at the start of the row, with the padding moved
  # to the end (where causality makes it invisible).
  pad = 4
  lp_tokens, lp_pos, lp_seg = tokens.copy(), positions.copy(), segs.copy()
  lp_tokens[0, :pad] = 0
  lp_seg[0, :pad] = 0
  lp_pos[0] = np.concatenate([np.zeros(pad, np.int32), np.arange(T - pad, dtype=np.int32)])
  got = _full_vs_cached(c, lp_tokens, lp_pos, lp_seg, prompt_len=6)
  ref_tokens = tokens.copy()
  ref_tokens[0] = np.concatenate([lp_tokens[0, pad:], np.zeros(pad, np.int32)])
  ref_seg = segs.copy()
  ref_seg[0, T - pad:] = 0
  ref = np.asarray(forward(params, ref_tokens, positions, ref_seg)['logits'])
  np.testing.assert_allclose(got[0, pad:], ref[0, :T - pad], atol=1e-5, rtol=0)
  np.testing.assert_allclose(got[1], full[1], atol=1e-5, rtol=0)


def test_packed_segments_do_not_see_each_other(make_config):
  c = make_config()
  params, forward, _ = _fns(c)
  rng = np.random.default_rng(6)
  cut = 9
  tokens = rng.integers(0, c.vocab_size, (B, T)).astype(np.int32)
  segs = np.where(np.arange(T) < cut, 1, 2).astype(np.int32)[None].repeat(B, 0)
  positions = np.where(np.arange(T) < cut, np.arange(T), np.arange(T) - cut).astype(np.int32)[None].repeat(B, 0)
  base = np.asarray(forward(params, tokens, positions, segs)['logits'])

  changed = tokens.copy()
  changed[:, cut:] = (changed[:, cut:] + 1 + rng.integers(0, c.vocab_size - 1, (B, T - cut))) % c.vocab_size
  out = np.asarray(forward(params, changed, positions, segs)['logits'])
  np.testing.assert_allclose(out[:, :cut], base[:, :cut], atol=1e-6, rtol=0)  # other segment: untouched
  assert np.abs(out[:, cut:] - base[:, cut:]).min(axis=-1).max() > 0  # own segment: every position moved
  assert np.abs(out[:, cut:] - base[:, cut:]).max() > 1e-2

  changed = tokens.copy()
  changed[:, 0] = (changed[:, 0] + 1) % c.vocab_size
  out = np.asarray(forward(params, changed, positions, segs)['logits'])
  np.testing.assert_allclose(out[:, cut:], base[:, cut:], atol=1e-6, rtol=0)
  assert np.abs(out[:, :cut] - base[:, :cut]).max() > 1e-3

  # The second segment packed behind the first equals that segment alone at the start of a row.
  alone = np.zeros_like(tokens)
  alone[:, :T - cut] = tokens[:, cut:]
  alone_seg = np.zeros_like(segs)
  alone_seg[:, :T - cut] = 1
  ref = np.asarray(forward(params, alone, np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)), alone_seg)['logits'])
  np.testing.assert_allclose(base[:, cut:], ref[:, :T - cut], atol=1e-5, rtol=0)


def test_scan_and_unrolled_layouts_agree(make_config, make_batch):
  c = make_config()
  cs = dataclasses.replace(c, scan_layers=True)
  unrolled, forward, _ = _fns(c)
  scanned, forward_scan, _ = _fns(cs)
  assert scanned['layers']['block']['wqkv'].shape == (c.n_layers,) + unrolled['layer_0']['wqkv'].shape
  batch = make_batch(B, T, seed=7)
  args = (batch['inputs'], batch['positions'], batch['segment_ids'])
  ref = np.asarray(forward(unrolled, *args)['logits'])
  got = np.asarray(forward_scan(_unrolled_to_scan(unrolled, c.n_layers), *args)['logits'])
  np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
  back = _scan_to_unrolled(scanned, c.n_layers)
  assert jax.tree.structure(back) == jax.tree.structure(unrolled)
  np.testing.assert_allclose(np.asarray(forward(back, *args)['logits']),
                             np.asarray(forward_scan(scanned, *args)['logits']), atol=1e-6, rtol=0)


@functools.lru_cache(maxsize=None)
def _loss_and_grads(config):
  model = Transformer(config)
  return jax.jit(jax.value_and_grad(make_loss_sums(model), has_aux=True))


@pytest.mark.parametrize('scan,remat', [(False, 'full'), (False, 'dots'), (True, 'dots_no_batch')])
def test_remat_keeps_loss_and_gradients(make_config, make_batch, scan, remat):
  """Against the unrolled model without remat (its params and gradients mapped to the scan layout)."""
  c = make_config()
  params = _fns(c)[0]
  batch = make_batch(4, T, seed=8)
  (ref_obj, ref_sums), ref_g = _loss_and_grads(c)(params, batch, None)
  if scan:
    params, ref_g = _unrolled_to_scan(params, c.n_layers), _unrolled_to_scan(ref_g, c.n_layers)
  (obj, sums), g = _loss_and_grads(dataclasses.replace(c, scan_layers=scan, remat=remat))(params, batch, None)
  assert float(ref_sums['weight']) == float(batch['loss_mask'].sum()) > 0
  # observed: bitwise equal; asserted with a little room for reordering.
  np.testing.assert_allclose(float(obj), float(ref_obj), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g, ref_g)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(ref_g)) > 1e-3  # gradients are not trivially 0


def test_bfloat16_compute_is_close_to_float32(make_config, make_batch):
  c = make_config()
  params, forward, _ = _fns(c)
  _, forward_bf16, _ = _fns(dataclasses.replace(c, dtype='bfloat16'))
  batch = make_batch(B, T, seed=9)
  args = (batch['inputs'], batch['positions'], batch['segment_ids'])
  ref = forward(params, *args)
  got = forward_bf16(params, *args)
  assert got['logits'].dtype == jnp.float32 and got['hidden'].dtype == jnp.float32
  err = np.abs(np.asarray(got['logits']) - np.asarray(ref['logits'])).max()
  scale = np.abs(np.asarray(ref['logits'])).max()
  # bf16 has an 8-bit mantissa (~0.4% per rounding); observed err ~1% of the largest logit.
  assert 0 < err < 0.05 * scale, (err, scale)
  cache = init_cache(dataclasses.replace(c, dtype='bfloat16'), 1, 4)
  held = jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16  # CPU: see test_sample's bit-for-bit test
  assert all(x.dtype == held for x in jax.tree.leaves(cache['k']))


def _loss_curve(c: ModelConfig, seed: int, batches) -> np.ndarray:
  """The training loss of each AdamW step (lm.steps' train step) from an init with ``seed``."""
  model = Transformer(c)
  with jax.threefry_partitionable(False):
    params = nn.unbox(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, T), jnp.int32)))['params']
  cfg = ml_collections.ConfigDict(dict(lr=3e-3, warmup_steps=5, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8,
                                       weight_decay=0.1, clip_norm=1.0))
  tx, schedule = optim.make_optimizer(cfg, total_steps=len(batches))
  step = jax.jit(common.make_train_step(make_loss_sums(model), tx, schedule))
  state, losses = common.init_state(params, tx), []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return np.array(losses)


def test_bfloat16_loss_curve_matches_float32_within_seed_noise(make_config):
  """50 steps on a learnable stream (rows count up by a random stride): the bf16-matmul curve stays
  within a tenth of the float32 curve's own seed-to-seed spread, and below 0.01 nats everywhere."""
  c = make_config()
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(50):
    rows = (rng.integers(0, c.vocab_size, (8, 1)) + rng.integers(1, 4, (8, 1)) * np.arange(T + 1)) % c.vocab_size
    batches.append({'inputs': rows[:, :-1].astype(np.int32), 'targets': rows[:, 1:].astype(np.int32),
                    'loss_mask': np.ones((8, T), np.float32), 'segment_ids': np.ones((8, T), np.int32),
                    'positions': np.broadcast_to(np.arange(T, dtype=np.int32), (8, T))})
  f32 = _loss_curve(c, 0, batches)
  f32_other_seed = _loss_curve(c, 1, batches)
  bf16 = _loss_curve(dataclasses.replace(c, dtype='bfloat16'), 0, batches)
  assert f32[0] - f32[-5:].mean() > 1.0  # it learns: a curve, not noise around a constant
  seed_noise = np.abs(f32_other_seed - f32).mean()  # observed ~0.05 nats
  diff = np.abs(bf16 - f32)  # observed max ~1e-3
  assert 0 < diff.max() < min(0.1 * seed_noise, 0.01), (diff.max(), seed_noise)


def test_auto_dtype_is_bfloat16_only_where_matmuls_are_native_bf16(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\nprocessor\t: 1\n')
  amx = hardware.cpu_flags(str(cpuinfo))
  assert {'avx2', 'amx_bf16'} <= amx and 'avx512_bf16' not in amx
  assert hardware.cpu_flags(str(tmp_path / 'missing')) == frozenset()
  assert hardware.resolve_dtype('auto', 'cpu', amx) == 'bfloat16'
  assert hardware.resolve_dtype('auto', 'cpu', {'avx512_bf16'}) == 'bfloat16'
  assert hardware.resolve_dtype('auto', 'cpu', {'avx2', 'avx512f'}) == 'float32'
  assert hardware.resolve_dtype('auto', 'cpu', frozenset()) == 'float32'
  for accelerator in ('tpu', 'gpu'):
    assert hardware.resolve_dtype('auto', accelerator, frozenset()) == 'bfloat16'
  assert hardware.resolve_dtype('float32', 'tpu') == 'float32'
  here = 'bfloat16' if hardware.native_bf16_matmul() else 'float32'
  assert ModelConfig(dtype='auto').compute_dtype == jnp.dtype(here)
  assert ModelConfig(dtype='auto').dtype == 'auto'  # resolved where it is used, so a config moves between hosts


_FAULTS = """
import ctypes, ctypes.util, resource, sys, threading
from lm import hardware
if sys.argv[1] == 'keep':
  assert hardware.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults, size = [], 200 * 2 ** 20

def cycle():  # as XLA:CPU's worker threads do with an executable's temporaries
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

for _ in range(3):
  worker = threading.Thread(target=cycle)
  worker.start()
  worker.join()
print(faults[-1])
"""


def test_keep_freed_memory_reuses_a_big_block_without_page_faults():
  """glibc by default maps a 200 MB block afresh on every allocation (51,200 page faults each time);
  after keep_freed_memory the freed block is reused: no faults after the first."""
  faults = {mode: int(subprocess.run([sys.executable, '-c', _FAULTS, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ('default', 'keep')}
  assert faults['default'] > 40_000 and faults['keep'] < 1_000, faults


@pytest.mark.parametrize('overrides,names', [
    ({'n_heads': 4, 'n_kv_heads': 3}, ['n_heads', 'n_kv_heads']),
    ({'remat': 'sometimes'}, ['remat', 'sometimes']),
    ({'dtype': 'float8'}, ['dtype', 'float8']),
    ({'lm_head': False, 'scalar_head': False}, ['lm_head', 'scalar_head']),
])
def test_bad_config_values_raise(make_config, overrides, names):
  with pytest.raises(ValueError) as err:
    make_config(**overrides)
  for name in names:
    assert name in str(err.value)


def test_unknown_config_key_is_named():
  with pytest.raises(ValueError, match=r'model\.n_layer\b.*valid keys: .*n_layers'):
    ModelConfig.from_config({'n_layer': 2, 'd_model': 64})
  assert ModelConfig.from_config({'n_layers': 3, 'd_model': 32}) == ModelConfig(n_layers=3, d_model=32)
