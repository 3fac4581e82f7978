"""benchmarks/aot_plan.py: the real train step compiled ahead of time on abstract arguments.

FLOPs are checked against a hand count (every dot of the step: 6 x params x tokens for the
projections and the vocab head, 12 x T x S x heads x head_size per sequence and layer for
attention), memory against the sharding (the train state per device shrinks as 1/fsdp).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))

import aot_plan  # noqa: E402

from lm import sharding  # noqa: E402
from lm.model import ops

B, T = 8, 32  # T <= ops.ATTENTION_CHUNK: attention is one full T x T block


def test_hlo_dot_flops_counts_loop_bodies_by_trip_count():
  def f(w_KxN, x_MxK):
    y, _ = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w_KxN), None), x_MxK, None, length=5)
    return y @ w_KxN

  compiled = jax.jit(f).lower(jnp.ones((64, 64)), jnp.ones((8, 64))).compile()
  assert aot_plan.hlo_dot_flops(compiled.as_text()) == 6 * 2 * 8 * 64 * 64
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert cost['flops'] < 3 * 2 * 8 * 64 * 64  # XLA's own count sees the loop body once


@pytest.fixture(scope='module')
def plans(make_config):
  config = make_config(d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=512)
  scanned = make_config(d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=512, scan_layers=True)
  assert T <= ops.ATTENTION_CHUNK
  devices = jax.devices()
  return config, {
      'fsdp8': aot_plan.plan(config, sharding.make_mesh((1, 8, 1), devices), B, T),
      'fsdp2': aot_plan.plan(config, sharding.make_mesh((1, 2, 1), devices[:2]), B, T),
      'fsdp8_scanned': aot_plan.plan(scanned, sharding.make_mesh((1, 8, 1), devices), B, T),
  }


def hand_count(c):
  """(projections, attention) FLOPs of one step on [B, T]: 6 x tokens x (layer weights + the head, once)."""
  hd = c.head_size
  per_layer = c.d_model * (c.n_heads + 2 * c.n_kv_heads) * hd + c.n_heads * hd * c.d_model + 3 * c.d_model * c.d_ff
  projections = 6 * (c.n_layers * per_layer + c.d_model * c.vocab_size) * B * T
  attention = 12 * B * c.n_layers * c.n_heads * hd * T * T  # q k^T and p v, forward and backward
  return projections, attention


def test_flops_match_the_hand_count(plans):
  c, p = plans
  projections, attention = hand_count(c)
  want = (projections + attention) / 8
  np.testing.assert_allclose(p['fsdp8']['flops'], want, rtol=1e-6)
  np.testing.assert_allclose(p['fsdp8_scanned']['flops'], want, rtol=1e-6)  # scan bodies x trip count
  assert p['fsdp8']['flops'] <= p['fsdp8']['xla_flops'] < 1.5 * p['fsdp8']['flops']  # + elementwise work
  assert p['fsdp8_scanned']['xla_flops'] < 0.8 * p['fsdp8']['xla_flops']          # XLA: one layer body
  # the analytic model count differs only in attention: causal T(T+1)/2 keys per query row, not T x T
  causal = attention * (T + 1) / (2 * T) / 8
  np.testing.assert_allclose(p['fsdp8']['model_flops'], projections / 8 + causal, rtol=1e-9)


def test_untied_head_is_counted_once(make_config):
  # 8B and 70B have their own head matrix: its dots (h w, dh, dw) are 6 x d x V per token, as a tied one's
  dims = dict(d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=512)
  c = make_config(**dims, tie_embeddings=False)
  assert c.n_params() == make_config(**dims).n_params() + 128 * 512  # the head is there, once
  r = aot_plan.plan(c, sharding.make_mesh((1, 8, 1), jax.devices()), B, T)
  projections, attention = hand_count(c)
  np.testing.assert_allclose(r['flops'], (projections + attention) / 8, rtol=1e-6)
  np.testing.assert_allclose(r['model_flops'], (projections + attention * (T + 1) / (2 * T)) / 8, rtol=1e-6)


def test_memory_is_finite_and_shrinks_with_fsdp(plans):
  c, p = plans
  for r in p.values():
    for k in ('arguments_gib', 'outputs_gib', 'temps_gib', 'peak_gib', 'state_gib'):
      assert np.isfinite(r[k]) and r[k] > 0, (k, r[k])
    assert r['aliased_gib'] > 0  # the state is donated: outputs reuse its buffers
  # params + AdamW moments in float32, sharded over fsdp
  n_state = 3 * c.n_params() * 4 / 2 ** 30
  np.testing.assert_allclose(p['fsdp8']['state_gib'], n_state / 8, rtol=0.01)
  np.testing.assert_allclose(p['fsdp2']['state_gib'], n_state / 2, rtol=0.01)
  assert p['fsdp8']['arguments_gib'] < 0.5 * p['fsdp2']['arguments_gib']
  assert p['fsdp8']['peak_gib'] < p['fsdp2']['peak_gib']
