"""DPO and IPO from K-way rankings against hand computations; a few DPO steps on a tiny model."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import optim
from lm.configs import optim as optim_presets
from lm.model.transformer import Transformer
from lm.rl import preference
from lm.steps.common import init_state, make_train_step
from tests.conftest import tiny_config

RANKS = np.array([[1, 0, 2]])  # response 1 is best, then 0, then 2


def test_pairs_from_a_ranking():
  all_pairs = np.asarray(preference.pair_mask(jnp.asarray(RANKS), 'all'))[0]
  np.testing.assert_array_equal(all_pairs, [[0, 0, 1], [1, 0, 1], [0, 0, 0]])   # 0>2, 1>0, 1>2
  best = np.asarray(preference.pair_mask(jnp.asarray(RANKS), 'best'))[0]
  np.testing.assert_array_equal(best, [[0, 0, 0], [1, 0, 1], [0, 0, 0]])        # 1>0, 1>2
  with pytest.raises(ValueError, match="pairs='worst'"):
    preference.pair_mask(jnp.asarray(RANKS), 'worst')


def _by_hand(logp, ref, pairs, loss, beta):
  r = [logp[k] - ref[k] for k in range(3)]
  values = []
  for w, l in pairs:
    h = r[w] - r[l]
    values.append(math.log(1 + math.exp(-beta * h)) if loss == 'dpo' else (h - 1 / (2 * beta)) ** 2)
  return sum(values) / len(values)


@pytest.mark.parametrize('loss', ['dpo', 'ipo'])
@pytest.mark.parametrize('pairs', ['all', 'best'])
def test_dpo_and_ipo_by_hand(loss, pairs):
  logp, ref, beta = [-3.0, -2.5, -4.0], [-3.2, -3.0, -3.5], 0.5
  total, sums = preference.preference_sums(jnp.array([logp]), jnp.array([ref]), jnp.asarray(RANKS), loss, beta, pairs)
  hand_pairs = [(0, 2), (1, 0), (1, 2)] if pairs == 'all' else [(1, 0), (1, 2)]
  assert float(sums['weight']) == len(hand_pairs)
  assert float(total / sums['weight']) == pytest.approx(_by_hand(logp, ref, hand_pairs, loss, beta), rel=1e-5)
  # implicit rewards r = logp - ref: 0.2, 0.5, -0.5 -> every pair is ordered like the ranking
  assert float(sums['accuracy']) == len(hand_pairs)


def test_at_the_reference_dpo_is_log2_and_ipo_is_a_quarter_over_beta_squared():
  logp = jnp.array([[-3.0, -1.0, -2.0]])
  for loss, want in (('dpo', math.log(2)), ('ipo', 1 / (4 * 0.1 ** 2))):
    total, sums = preference.preference_sums(logp, logp, jnp.asarray(RANKS), loss, 0.1)
    assert float(total / sums['weight']) == pytest.approx(want, rel=1e-6)


def _rows(rng, N, K, P, R, vocab):
  """Prompt (P tokens, shared by a record's K rows) + a response of R tokens, right-padded by 2."""
  L = P + R + 2
  tokens = np.zeros((N, K, L), np.int32)
  prompts = rng.integers(1, vocab, (N, 1, P))
  tokens[..., :P] = prompts
  tokens[..., P:P + R] = rng.integers(1, vocab, (N, K, R))
  seg = np.zeros((N, K, L), np.int32)
  seg[..., :P + R] = 1
  mask = np.zeros((N, K, L), np.float32)
  mask[..., P:P + R] = 1
  ranks = np.stack([rng.permutation(K) for _ in range(N)]).astype(np.int32)
  return {'tokens': tokens, 'segment_ids': seg, 'positions': np.broadcast_to(np.arange(L), (N, K, L)) * seg,
          'response_mask': mask, 'ranks': ranks}


def test_sequence_logprobs_sum_the_response_tokens():
  model = Transformer(tiny_config(n_layers=1))
  params = jax.jit(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))['params']))(jax.random.key(0))
  b = _rows(np.random.default_rng(0), 2, 3, 4, 3, 128)
  got = jax.jit(preference.sequence_logprobs, static_argnums=0)(
      model, params, b['tokens'], b['segment_ids'], b['positions'], b['response_mask'])
  logits = np.asarray(jax.jit(lambda p, t: model.apply({'params': p}, t)['logits'])(params, b['tokens'].reshape(6, -1)),
                      np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  tokens = b['tokens'].reshape(6, -1)
  want = [sum(logp[m, t - 1, tokens[m, t]] for t in range(4, 7)) for m in range(6)]
  np.testing.assert_allclose(np.asarray(got).reshape(-1), want, rtol=1e-4)


def test_dpo_steps_raise_the_margin_of_the_preferred_responses():
  model = Transformer(tiny_config(n_layers=1))
  params = jax.jit(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))['params']))(jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in _rows(np.random.default_rng(1), 4, 3, 4, 3, 128).items()}
  batch['ref_logprobs'] = jax.jit(preference.sequence_logprobs, static_argnums=0)(
      model, params, batch['tokens'], batch['segment_ids'], batch['positions'], batch['response_mask'])
  tx, schedule = optim.make_optimizer(optim_presets.adamw(1e-2, warmup_steps=0, weight_decay=0.0), 10)
  step = jax.jit(make_train_step(preference.make_loss_sums(model, 'dpo', beta=0.5), tx, schedule))
  state = init_state({'policy': params}, tx)
  history = []
  for _ in range(8):
    state, m = step(state, batch)
    history.append(jax.device_get(m))
  assert history[0]['loss'] == pytest.approx(math.log(2), rel=1e-5)
  assert history[0]['margin'] == pytest.approx(0, abs=1e-5)
  assert history[-1]['loss'] < 0.5 and history[-1]['accuracy'] == 1.0 and history[-1]['margin'] > 1.0
