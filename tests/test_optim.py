"""The optimiser against hand computations: schedule, decay mask, one AdamW step, clipping."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lm import optim

CFG = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=10, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8,
                                     weight_decay=0.1, clip_norm=1.0))


def test_schedule_warmup_peak_and_floor():
  _, schedule = optim.make_optimizer(CFG, total_steps=110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(5e-3)
  assert float(schedule(10)) == pytest.approx(1e-2)
  assert float(schedule(60)) == pytest.approx(1e-3 + 0.5 * 9e-3, rel=1e-5)  # cosine midpoint
  assert float(schedule(110)) == pytest.approx(1e-3)


def test_decay_skips_norms_embeddings_and_heads():
  params = {'embed': 0, 'final_norm': {'scale': 0}, 'layer_0': {'wqkv': 0, 'attn_norm': {'scale': 0}},
            'layers': {'block': {'w_down': 0, 'mlp_norm': {'scale': 0}}}, 'scalar_head': 0, 'scalar_bias': 0}
  mask = optim.decay_mask(params)
  assert mask == {'embed': False, 'final_norm': {'scale': False},
                  'layer_0': {'wqkv': True, 'attn_norm': {'scale': False}},
                  'layers': {'block': {'w_down': True, 'mlp_norm': {'scale': False}}}, 'scalar_head': False,
                  'scalar_bias': False}


def test_one_adamw_step_by_hand():
  cfg = ml_collections.ConfigDict(dict(CFG, warmup_steps=0))
  tx, schedule = optim.make_optimizer(cfg, total_steps=100)
  w = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
  n = np.array([1.0, 2.0], np.float32)
  g_w = np.array([[0.3, 0.0], [0.0, 0.4]], np.float32)  # global norm 0.5 + norm grad below
  g_n = np.array([0.0, 0.0], np.float32)
  params, grads = {'w': jnp.asarray(w), 'norm': jnp.asarray(n)}, {'w': jnp.asarray(g_w), 'norm': jnp.asarray(g_n)}
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(schedule(0))
  # step 1: m = (1-b1) g, v = (1-b2) g^2, bias-corrected -> g / (|g| + eps); decay 0.1 * w on w only
  expected_w = w - lr * (g_w / (np.abs(g_w) + 1e-8) + 0.1 * w)
  np.testing.assert_allclose(np.asarray(params['w'] + updates['w']), expected_w, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(params['norm'] + updates['norm']), n, rtol=1e-6)


def test_two_steps_with_clipping_by_hand():
  """Clipping matters across steps: step 1's gradient (norm 5) is scaled to norm 1 before Adam."""
  cfg = ml_collections.ConfigDict(dict(CFG, warmup_steps=0, weight_decay=0.0, clip_norm=1.0))
  tx, schedule = optim.make_optimizer(cfg, total_steps=100)
  w = np.array([1.0, -1.0], np.float32)
  g1, g2 = np.array([3.0, 4.0], np.float32), np.array([0.3, -0.1], np.float32)
  params = {'w': jnp.asarray(w)}
  state = tx.init(params)
  for g in (g1, g2):
    updates, state = tx.update({'w': jnp.asarray(g)}, state, params)
    params = {'w': params['w'] + updates['w']}
  b1, b2, eps = 0.9, 0.95, 1e-8
  c1 = g1 / np.linalg.norm(g1)                  # clipped to norm 1
  c2 = g2                                        # norm < 1: untouched
  m1, v1 = (1 - b1) * c1, (1 - b2) * c1 ** 2
  m2, v2 = b1 * m1 + (1 - b1) * c2, b2 * v1 + (1 - b2) * c2 ** 2
  u1 = (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
  u2 = (m2 / (1 - b1 ** 2)) / (np.sqrt(v2 / (1 - b2 ** 2)) + eps)
  expected = w - float(schedule(0)) * u1 - float(schedule(1)) * u2
  np.testing.assert_allclose(np.asarray(params['w']), expected, rtol=1e-5)
