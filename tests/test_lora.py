"""LoRA: identity at init, each adapter on its own slice, merged == unmerged, scanned == unrolled,
gradients reach adapters only, AdamW on adapters lowers the loss with the base bit-identical, the
train loop checkpoints adapters only, and the counts and memory ratio match a hand computation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lm import checkpoint, optim, sharding, train
from lm.configs import base as base_config
from lm.model import lora
from lm.model.transformer import Transformer
from lm.steps import common
from lm.steps import lm as lm_steps
from tests.conftest import jitted_logits

ALL = lora.LoraConfig(rank=4, alpha=8.0)


@functools.cache
def init_base(config):
  """(model, unboxed params, jitted logits(params, tokens)), one compile of each per config."""
  model = Transformer(config)
  init = jax.jit(lambda rng: nn.unbox(model.init(rng, jnp.zeros((1, 8), jnp.int32))['params']))
  return model, init(jax.random.key(0)), jitted_logits(model)


merge = jax.jit(lora.merge, static_argnums=2)
init = jax.jit(lora.init, static_argnums=2)  # one small program instead of many eager ops


def randomize_b(adapters, seed=1):
  """Nonzero B everywhere, so every adapter changes its slice."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (0.1 * rng.normal(size=x.shape)).astype(np.float32) if path[-1].key == 'b' else x, adapters)


def numpy_merge(layer, adapters, cfg, G):
  """The merged weights of one unscanned layer, built slice by slice in numpy."""
  out = {k: np.array(v) for k, v in layer.items() if not isinstance(v, dict)}
  s = cfg.scale
  for t, ad in adapters.items():
    a, b = np.asarray(ad['a'], np.float64), np.asarray(ad['b'], np.float64)
    if t == 'q':
      out['wqkv'][:, :, :G] += s * np.einsum('dr,rkgh->dkgh', a, b)
    elif t == 'k':
      out['wqkv'][:, :, G] += s * np.einsum('dr,rkh->dkh', a, b)
    elif t == 'v':
      out['wqkv'][:, :, G + 1] += s * np.einsum('dr,rkh->dkh', a, b)
    elif t == 'o':
      out['wo'] += s * np.einsum('nhr,rd->nhd', a, b)
    elif t == 'gate':
      out['w_gate_up'][..., 0] += s * (a @ b)
    elif t == 'up':
      out['w_gate_up'][..., 1] += s * (a @ b)
    elif t == 'down':
      out['w_down'] += s * (a @ b)
  return out


@pytest.mark.parametrize('scan', [False, True])
def test_at_init_params_and_logits_are_unchanged_exactly(make_config, make_batch, scan):
  config = make_config(scan_layers=scan)
  _, base, logits = init_base(config)
  adapters = init(jax.random.key(1), base, ALL)
  merged = merge(base, adapters, ALL)
  for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(merged)):
    np.testing.assert_array_equal(x, y)
  tokens = make_batch(2, 16)['inputs']
  np.testing.assert_array_equal(logits(base, tokens), logits(merged, tokens))
  assert all(np.all(ad['b'] == 0) and np.any(ad['a'] != 0) for ad in jax.tree.leaves(
      adapters, is_leaf=lambda x: isinstance(x, dict) and 'a' in x))


def test_each_adapter_changes_only_its_slice_and_matches_unmerged_projection(config):
  _, base, _ = init_base(config)
  D, K, G, Hd, H, F = config.d_model, config.n_kv_heads, config.q_per_kv, config.head_size, config.n_heads, config.d_ff
  slices = {'q': ('wqkv', np.s_[:, :, :G]), 'k': ('wqkv', np.s_[:, :, G]), 'v': ('wqkv', np.s_[:, :, G + 1]),
            'o': ('wo', np.s_[...]), 'gate': ('w_gate_up', np.s_[..., 0]), 'up': ('w_gate_up', np.s_[..., 1]),
            'down': ('w_down', np.s_[...])}
  x_NxD = np.random.default_rng(0).normal(size=(5, D))
  h_NxF = np.random.default_rng(1).normal(size=(5, F))
  h_NxHHd = np.random.default_rng(2).normal(size=(5, H * Hd))
  for target in lora.TARGETS:
    cfg = lora.LoraConfig(rank=3, alpha=6.0, targets=(target,))
    adapters = randomize_b(init(jax.random.key(2), base, cfg))
    merged = lora.merge(base, adapters, cfg)
    a, b = np.asarray(adapters['layer_0'][target]['a']), np.asarray(adapters['layer_0'][target]['b'])
    name, idx = slices[target]
    flat_base = dict(jax.tree_util.tree_flatten_with_path(base)[0])
    flat_merged = dict(jax.tree_util.tree_flatten_with_path(merged)[0])
    for path, w in flat_base.items():
      w_merged = np.asarray(flat_merged[path])
      if path[-1].key != name:
        np.testing.assert_array_equal(w_merged, w, err_msg=f'{target} changed {path}')
        continue
      changed = w_merged != np.asarray(w)
      outside = changed.copy()
      outside[idx] = False
      assert not outside.any(), f'{target} changed {path} outside its slice'
      assert changed[idx].mean() > 0.99, f'{target} left most of its slice of {path} unchanged'

    # the merged projection equals the unmerged one: x @ W + scale * (x @ A) @ B, on layer 0
    w0, wm = np.asarray(base['layer_0'][name], np.float64), np.asarray(merged['layer_0'][name], np.float64)
    s = cfg.scale
    if name == 'wqkv':
      proj = lambda w: (x_NxD @ w.reshape(D, -1)).reshape(5, K, G + 2, Hd)[(slice(None),) + idx[1:]]  # noqa: E731
      unmerged = proj(w0) + s * np.tensordot(x_NxD @ a, b, axes=1)
    elif name == 'w_gate_up':
      proj = lambda w: (x_NxD @ w.reshape(D, 2 * F)).reshape(5, F, 2)[idx]  # noqa: E731
      unmerged = proj(w0) + s * (x_NxD @ a) @ b
    elif name == 'wo':
      proj = lambda w: h_NxHHd @ w.reshape(H * Hd, D)  # noqa: E731
      unmerged = proj(w0) + s * (h_NxHHd @ a.reshape(H * Hd, -1)) @ b
    else:
      proj = lambda w: h_NxF @ w  # noqa: E731
      unmerged = proj(w0) + s * (h_NxF @ a) @ b
    np.testing.assert_allclose(proj(wm), unmerged, rtol=1e-5, atol=1e-5, err_msg=target)


def test_model_with_merged_params_equals_numpy_merged_reference(config, make_batch):
  _, base, logits = init_base(config)
  adapters = randomize_b(init(jax.random.key(3), base, ALL))
  merged = merge(base, adapters, ALL)
  reference = dict(base)
  for i in range(config.n_layers):
    layer = numpy_merge(base[f'layer_{i}'], adapters[f'layer_{i}'], ALL, config.q_per_kv)
    reference[f'layer_{i}'] = {**base[f'layer_{i}'], **{k: jnp.asarray(v, jnp.float32) for k, v in layer.items()}}
  tokens = make_batch(2, 16)['inputs']
  logits_merged, logits_ref, logits_base = logits(merged, tokens), logits(reference, tokens), logits(base, tokens)
  np.testing.assert_allclose(logits_merged, logits_ref, rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(logits_merged) - np.asarray(logits_base)).max() > 1e-2  # the adapters do something


def test_scanned_layout_matches_unrolled(make_config, make_batch):
  scanned_cfg = make_config(scan_layers=True)
  _, scanned_base, scanned_logits = init_base(scanned_cfg)
  _, _, unrolled_logits = init_base(make_config())
  adapters = randomize_b(init(jax.random.key(4), scanned_base, ALL))
  assert adapters['layers']['block']['q']['b'].shape == (2, 4, 2, 2, 16)
  merged = merge(scanned_base, adapters, ALL)

  unstack = lambda tree, i: jax.tree.map(lambda x: x[i], tree['layers']['block'])  # noqa: E731
  unrolled_base = {k: v for k, v in scanned_base.items() if k != 'layers'}
  unrolled_base.update({f'layer_{i}': unstack(scanned_base, i) for i in range(2)})
  unrolled_adapters = {f'layer_{i}': unstack(adapters, i) for i in range(2)}
  unrolled_merged = merge(unrolled_base, unrolled_adapters, ALL)
  for i in range(2):
    for x, y in zip(jax.tree.leaves(unstack(merged, i)), jax.tree.leaves(unrolled_merged[f'layer_{i}'])):
      np.testing.assert_array_equal(x, y)
  tokens = make_batch(2, 16)['inputs']
  np.testing.assert_allclose(scanned_logits(merged, tokens), unrolled_logits(unrolled_merged, tokens),
                             rtol=1e-4, atol=1e-5)


def test_gradients_reach_adapters_only(config, make_batch):
  model, base, _ = init_base(config)
  adapters = init(jax.random.key(5), base, ALL)
  batch = {k: jnp.asarray(v) for k, v in make_batch(2, 16).items()}
  rng = jax.random.key(0)
  base_loss = lm_steps.make_loss_sums(model)
  loss4 = lora.frozen_base_loss_sums(ALL, base_loss)

  g_base, g_adapters = jax.jit(jax.grad(lambda b, a: loss4(a, batch, rng, b)[0], argnums=(0, 1)))(base, adapters)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_base))
  for path, g in jax.tree_util.tree_flatten_with_path(g_adapters)[0]:
    # B = 0 at init, so dL/dA = scale * dL/dW @ B^T = 0 while dL/dB = scale * A^T @ dL/dW is not
    assert (np.abs(np.asarray(g)).max() > 0) == (path[-1].key == 'b'), path

  # the closure form differentiates exactly the adapters tree (shapes only: no second compile)
  loss3 = lora.make_loss_sums(base, ALL, base_loss)
  g3 = jax.eval_shape(jax.grad(lambda a: loss3(a, batch, rng)[0]), adapters)
  assert jax.tree.map(lambda g: (g.shape, g.dtype), g3) == jax.tree.map(lambda a: (a.shape, a.dtype), adapters)


def test_adamw_on_adapters_lowers_loss_base_bit_identical_on_a_mesh(config, make_batch):
  """The wiring proposed for lm.train: the base is a jit argument placed on the mesh, not a constant."""
  mesh, rules = sharding.make_mesh((1, 2, 2), jax.devices()[:4]), sharding.DEFAULT_RULES
  model, base, _ = init_base(config)
  abstract_base = jax.eval_shape(lambda: base)
  boxed_base = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  base_shardings = nn.unbox(sharding.logical_shardings(boxed_base, mesh, rules))
  base = jax.device_put(base, base_shardings)
  base_before = jax.tree.map(np.array, base)

  adapter_shardings = lora.shardings(abstract_base, ALL, mesh, rules)
  assert adapter_shardings['layer_0']['q']['a'].spec == P('fsdp', None)
  assert adapter_shardings['layer_0']['q']['b'].spec == P(None, 'tensor', None, None)
  assert adapter_shardings['layer_0']['down']['a'].spec == P('tensor', None)

  tx, schedule = optim.make_optimizer(base_config.train_section(6, 4, 16, lr=3e-2, warmup_steps=1).optim, 6)

  def init_state(rng):  # as lm.train does, with the boxed adapters as the params
    adapters = lora.init_boxed(rng, abstract_base, ALL)
    return {'step': jnp.zeros((), jnp.int32), 'params': adapters, 'opt_state': tx.init(adapters),
            'rng': jax.random.key_data(rng)}

  rng = jax.random.key(6)
  state_shardings = nn.unbox(sharding.logical_shardings(jax.eval_shape(init_state, rng), mesh, rules))
  assert state_shardings['params'] == adapter_shardings
  loss4 = lora.frozen_base_loss_sums(ALL, lm_steps.make_loss_sums(model))

  def step(state, batch, base):
    return common.make_train_step(lambda p, b, r: loss4(p, b, r, base), tx, schedule)(state, batch)

  batch = sharding.place_batch(make_batch(4, 16), mesh)
  with sharding.use_mesh(mesh, rules):
    state = jax.jit(lambda r: nn.unbox(init_state(r)), out_shardings=state_shardings)(rng)
    step_fn = jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh), base_shardings),
                      out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
    losses = []
    for _ in range(6):
      state, metrics = step_fn(state, batch, base)
      losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0] - 0.1, losses
  for before, after in zip(jax.tree.leaves(base_before), jax.tree.leaves(base)):
    np.testing.assert_array_equal(before, after)
  q_b = state['params']['layer_0']['q']['b']
  assert q_b.sharding.is_equivalent_to(adapter_shardings['layer_0']['q']['b'], q_b.ndim)


class _FixedBatches:
  def __init__(self, batch):
    self.batch = batch

  def host_batch(self, i, host_slice):
    return {k: v[host_slice] for k, v in self.batch.items()}


def test_train_run_checkpoints_adapters_only(config, make_batch, tmp_path):
  """lm.train.run as it is today, with the base closed over: the checkpoint holds adapters only."""
  mesh, rules = sharding.make_mesh((1, 1, 1), jax.devices()[:1]), sharding.DEFAULT_RULES
  model, base, _ = init_base(config)
  cfg = lora.LoraConfig(rank=2, alpha=4.0, targets=('q', 'v'))
  task = train.Task(name='sft', init_params=lambda rng: lora.init_boxed(rng, base, cfg),
                    loss_sums=lora.make_loss_sums(base, cfg, lm_steps.make_loss_sums(model)),
                    train_batches=_FixedBatches(make_batch(4, 16)), weight_name='tokens')
  train_cfg = base_config.train_section(2, 4, 16, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=2)
  out = train.run(task, train_cfg, tmp_path, mesh, rules)
  assert np.isfinite(out['loss'])
  mgr = checkpoint.manager(out['checkpoint_dir'])
  stored = mgr.item_metadata(2)['state']['params']
  mgr.close()
  assert set(stored) == {'layer_0', 'layer_1'}
  assert set(stored['layer_0']) == {'q', 'v'} and set(stored['layer_0']['q']) == {'a', 'b'}


def test_trainable_count_and_memory_match_hand_computation(config):
  _, base, _ = init_base(config)
  r = 4
  D, K, G, Hd, H, F, L = (config.d_model, config.n_kv_heads, config.q_per_kv, config.head_size, config.n_heads,
                          config.d_ff, config.n_layers)
  per_layer = {'q': r * (D + K * G * Hd), 'k': r * (D + K * Hd), 'v': r * (D + K * Hd), 'o': r * (H * Hd + D),
               'gate': r * (D + F), 'up': r * (D + F), 'down': r * (F + D)}
  for targets in (lora.TARGETS, ('q', 'v'), ('down',)):
    cfg = lora.LoraConfig(rank=r, alpha=8.0, targets=targets)
    adapters = lora.init(jax.random.key(0), base, cfg)
    n = L * sum(per_layer[t] for t in targets)
    assert lora.trainable_count(adapters) == n
    report = lora.memory_report(base, adapters)
    N = config.n_params()
    assert report['trainable_params'] == n and report['full_params'] == N
    assert report['lora_state_bytes'] == 3 * 4 * n and report['full_state_bytes'] == 3 * 4 * N
    assert report['state_ratio'] == pytest.approx(n / N)
    assert report['total_ratio'] == pytest.approx((N + 3 * n) / (3 * N))
  line = lora.memory_line(report)
  assert f'{n:,} trainable' in line and '\n' not in line


def test_config_errors():
  with pytest.raises(ValueError, match='lora.targets'):
    lora.LoraConfig(targets=('q', 'proj'))
  with pytest.raises(ValueError, match='unknown config key lora.rnak'):
    lora.LoraConfig.from_config({'rnak': 4})
  assert lora.LoraConfig.from_config({'rank': 2, 'alpha': 4.0, 'targets': ['q']}).scale == 2.0
