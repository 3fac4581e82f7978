"""One train step on a (2, 2, 2) mesh equals the same step on one device; accumulation; mesh shapes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lm import sharding as shd
from lm.model.transformer import Transformer
from lm.optim import make_optimizer
from lm.steps.common import accumulate, init_state, make_train_step
from lm.steps.lm import make_loss_sums

GLOBAL_BATCH, T = 16, 16
OPTIM = ml_collections.ConfigDict(dict(
    lr=1e-2, warmup_steps=0, min_lr_ratio=0.1, clip_norm=1.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1))

# Observed on this machine (f32), sharded vs one device and microbatched vs not: loss and grad norm
# equal to 0..2e-7 relative; gradients max abs err ~6e-8 (entries up to ~1e-1); Adam moments ~5e-9;
# params after one AdamW step ~1.5e-7 where |g| > 1e-6 (up to ~4e-5 where |g| ~ eps). Asserted:
LOSS_RTOL = 1e-5
GRAD_ATOL, GRAD_RTOL = 1e-6, 1e-4
PARAM_ATOL = 1e-6  # Adam's first step moves each param by ~lr * sign(g) = 1e-2; this is 1e-4 of that


def init_sharded_state(config, mesh, rules=shd.DEFAULT_RULES, seed=0):
  """Params and optimiser state created on ``mesh`` with the rules' shardings."""
  model = Transformer(config)
  init_fn = lambda rng: model.init(rng, jnp.zeros((GLOBAL_BATCH, T), jnp.int32))['params']
  params, param_sh = shd.sharded_init(init_fn, mesh, rules, jax.random.key(seed))
  tx, schedule = make_optimizer(OPTIM, total_steps=10)
  repl = shd.replicated(mesh)
  abstract = jax.eval_shape(lambda p: init_state(p, tx), params)
  state_sh = {
      'step': repl, 'rng': repl, 'params': param_sh,
      'opt_state': optax.tree_map_params(
          tx, lambda _, s: s, abstract['opt_state'], param_sh,
          transform_non_params=lambda _: repl, is_leaf=lambda x: isinstance(x, NamedSharding)),
  }
  state = jax.jit(lambda p: init_state(p, tx), out_shardings=state_sh)(params)
  return state, state_sh, (tx, schedule)


def make_step(config, mesh, state_sh, tx_schedule, rules=shd.DEFAULT_RULES, microbatches=1):
  """``step(state, batch) -> (state, metrics, grads)``, jitted with the mesh's shardings."""
  model = Transformer(config)
  loss_sums = make_loss_sums(model)
  train_step = make_train_step(loss_sums, *tx_schedule, microbatches)

  def step_and_grads(state, batch):
    new_state, metrics = train_step(state, batch)
    grads, sums = accumulate(loss_sums, state['params'], batch, jax.random.key(0))
    return new_state, metrics, jax.tree.map(lambda g: g / sums['weight'], grads)

  repl = shd.replicated(mesh)
  batch_sh = {k: shd.batch_sharding(mesh, 2) for k in ('inputs', 'targets', 'loss_mask', 'positions', 'segment_ids')}
  with shd.use_mesh(mesh, rules):
    return jax.jit(step_and_grads, in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, repl, state_sh['params']))


def setup(config, mesh, rules=shd.DEFAULT_RULES, microbatches=1):
  state, state_sh, tx_schedule = init_sharded_state(config, mesh, rules)
  return state, make_step(config, mesh, state_sh, tx_schedule, rules, microbatches)


@functools.lru_cache(maxsize=None)
def _state(config, mesh_shape, ndev):
  mesh = shd.make_mesh(mesh_shape, jax.devices()[:ndev])
  return mesh, *init_sharded_state(config, mesh)


@functools.lru_cache(maxsize=None)
def _reference(config, make_batch, microbatches=1, mesh_shape=(2, 2, 2), ndev=8):
  """One step on the mesh: host copies of (init params, new state, metrics, grads), and the arrays."""
  batch = make_batch(GLOBAL_BATCH, T, config.vocab_size, seed=11)
  mesh, state, state_sh, tx_schedule = _state(config, mesh_shape, ndev)
  step = make_step(config, mesh, state_sh, tx_schedule, microbatches=microbatches)
  with shd.use_mesh(mesh, shd.DEFAULT_RULES):
    new_state, metrics, grads = step(state, shd.place_batch(batch, mesh))
  return jax.device_get((state['params'], new_state, metrics, grads)), state, new_state


def _assert_trees_close(a, b, atol, rtol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=rtol), a, b)


def _assert_adam_params_close(a, b, grads):
  """Params after one Adam step: each moves by ~lr * g / (|g| + eps), which is ill-conditioned
  where |g| is near eps (a 1e-9 gradient error can change such an update by a sizeable fraction of
  lr). So: tight where |g| > 1e-6, and within the step size (times a small factor) elsewhere."""
  for x, y, g in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(grads)):
    well_conditioned = np.abs(g) > 1e-6
    np.testing.assert_allclose(x[well_conditioned], y[well_conditioned], atol=PARAM_ATOL, rtol=0)
    np.testing.assert_allclose(x, y, atol=2.5 * OPTIM.lr, rtol=0)


def _max_err(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_sharded_step_equals_single_device(config, make_batch):
  (p0, s8, m8, g8), _, _ = _reference(config, make_batch)
  (p1, s1, m1, g1), _, _ = _reference(config, make_batch, mesh_shape=(1, 1, 1), ndev=1)
  _assert_trees_close(p0, p1, 0, 0)  # sharded_init gives the same values whatever the mesh
  assert float(m8['weight']) == float(m1['weight']) > 100
  np.testing.assert_allclose(m8['loss'], m1['loss'], rtol=LOSS_RTOL)
  assert 3.0 < float(m8['loss']) < 6.0  # ~log(128) = 4.85 at init
  np.testing.assert_allclose(m8['grad_norm'], m1['grad_norm'], rtol=LOSS_RTOL)
  np.testing.assert_allclose(float(m8['lr']), OPTIM.lr, rtol=1e-6)
  _assert_trees_close(g8, g1, GRAD_ATOL, GRAD_RTOL)
  np.testing.assert_allclose(float(optax.global_norm(g8)), float(m8['grad_norm']), rtol=1e-5)
  _assert_adam_params_close(s8['params'], s1['params'], g1)
  _assert_trees_close(s8['opt_state'], s1['opt_state'], GRAD_ATOL, GRAD_RTOL)
  assert int(s8['step']) == int(s1['step']) == 1
  moved = _max_err(s8['params'], p0)
  assert 0.5 * OPTIM.lr < moved < 2 * OPTIM.lr, moved  # the step really updated the params
  well = [np.where(np.abs(g) > 1e-6, a - b, 0) for a, b, g in
          zip(jax.tree.leaves(s8['params']), jax.tree.leaves(s1['params']), jax.tree.leaves(g1))]
  print(f"sharded vs single: loss {abs(m8['loss'] - m1['loss']):.2e} grads {_max_err(g8, g1):.2e} "
        f"params {_max_err(s8['params'], s1['params']):.2e} (|g|>1e-6: {max(np.abs(w).max() for w in well):.2e}) "
        f"opt_state {_max_err(s8['opt_state'], s1['opt_state']):.2e}")


def test_params_are_sharded_as_the_rules_say(config, make_batch):
  _, state8, new_state8 = _reference(config, make_batch)
  c = config
  D, K, G, Hd, F, V, H = c.d_model, c.n_kv_heads, c.q_per_kv, c.head_size, c.d_ff, c.vocab_size, c.n_heads
  expected = {  # path -> (spec, shard shape on the (data=2, fsdp=2, tensor=2) mesh)
      ('embed',): (P('tensor', 'fsdp'), (V // 2, D // 2)),
      ('layer_0', 'wqkv'): (P('fsdp', 'tensor', None, None), (D // 2, K // 2, G + 2, Hd)),
      ('layer_1', 'wo'): (P('tensor', None, 'fsdp'), (H // 2, Hd, D // 2)),
      ('layer_0', 'w_gate_up'): (P('fsdp', 'tensor', None), (D // 2, F // 2, 2)),
      ('layer_1', 'w_down'): (P('tensor', 'fsdp'), (F // 2, D // 2)),
      ('layer_0', 'attn_norm', 'scale'): (P(None), (D,)),
      ('final_norm', 'scale'): (P(None), (D,)),
  }
  for state in (state8, new_state8):
    for path, (spec, shard_shape) in expected.items():
      x = functools.reduce(lambda t, k: t[k], path, state['params'])
      assert x.sharding.is_equivalent_to(NamedSharding(x.sharding.mesh, spec), x.ndim), (path, x.sharding)
      assert x.sharding.shard_shape(x.shape) == shard_shape, path
      assert {s.data.shape for s in x.addressable_shards} == {shard_shape}
  # Adam moments live where their params do.
  mu = new_state8['opt_state'][1][0].mu
  assert mu['layer_0']['wqkv'].sharding.is_equivalent_to(state8['params']['layer_0']['wqkv'].sharding, 4)
  # The scanned layout only adds an unsharded leading 'layers' axis.
  mesh = state8['params']['embed'].sharding.mesh
  model = Transformer(type(c)(**{**c.__dict__, 'scan_layers': True}))
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((GLOBAL_BATCH, T), jnp.int32))['params']
  sh = nn.unbox(shd.logical_shardings(abstract, mesh, shd.DEFAULT_RULES))
  assert sh['layers']['block']['wqkv'].is_equivalent_to(NamedSharding(mesh, P(None, 'fsdp', 'tensor')), 5)


@pytest.mark.parametrize('microbatches', [2, 4])
def test_gradient_accumulation_matches_one_big_batch(config, make_batch, microbatches):
  (p0, s_ref, m_ref, g_ref), _, _ = _reference(config, make_batch)
  (p_mb, s_mb, m_mb, _), _, _ = _reference(config, make_batch, microbatches=microbatches)
  assert float(m_mb['weight']) == float(m_ref['weight'])
  for k in ('loss', 'z_loss', 'grad_norm'):
    np.testing.assert_allclose(m_mb[k], m_ref[k], rtol=LOSS_RTOL, err_msg=k)
  _assert_adam_params_close(s_mb['params'], s_ref['params'], g_ref)
  print(f"microbatches={microbatches}: loss {abs(m_mb['loss'] - m_ref['loss']):.2e} "
        f"opt_state {_max_err(s_mb['opt_state'], s_ref['opt_state']):.2e} "
        f"params {_max_err(s_mb['params'], s_ref['params']):.2e}")
  _assert_trees_close(s_mb['opt_state'], s_ref['opt_state'], GRAD_ATOL, GRAD_RTOL)


def test_mesh_shape_resolution_and_errors():
  assert shd.mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert shd.mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  assert shd.mesh_shape((1, 1, -1), 8) == (1, 1, 8)
  assert shd.mesh_shape([2, 2, 2], 8) == (2, 2, 2)
  with pytest.raises(ValueError, match=r'uses 12 devices but 8 are present'):
    shd.mesh_shape((3, 2, 2), 8)
  with pytest.raises(ValueError, match=r'does not fit 8 devices'):
    shd.mesh_shape((3, -1, 1), 8)
  with pytest.raises(ValueError, match=r'at most one -1'):
    shd.mesh_shape((-1, -1, 2), 8)
  with pytest.raises(ValueError, match=r'needs 3 entries'):
    shd.mesh_shape((4, 2), 8)
  with pytest.raises(ValueError, match=r'sizes must be positive'):
    shd.mesh_shape((0, 8, 1), 8)
  with pytest.raises(ValueError, match=r'uses 8 devices but 4 are present'):
    shd.make_mesh((2, 2, 2), jax.devices()[:4])
  mesh = shd.make_mesh((2, -1, 2))
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2} and len(jax.devices()) == 8
  with pytest.raises(ValueError, match=r"'vocab' -> 'model'"):
    shd.rules_from_config([('vocab', 'model')])
  assert shd.rules_from_config([('batch', ['data', 'fsdp'])]) == (('batch', ('data', 'fsdp')),)
