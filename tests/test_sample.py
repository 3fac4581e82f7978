"""The sampler against the full forward, its filters, stopping, compile reuse and sharding."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import sharding as sharding_lib
from lm.data import chat
from lm.inference import sample as S
from lm.model.transformer import Transformer, init_cache

N_NEW = 6
GREEDY = S.SamplingConfig(temperature=0.0, max_new_tokens=N_NEW, stop_ids=())
PROMPT_LENS = (3, 9, 14, 1)  # one batch of 4, bucket 16: rows are left-padded by different amounts


@pytest.fixture(scope='module')
def model_and_params(config):
  model = Transformer(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  return model, params


REF_LEN = 24  # every reference forward is padded to this length (trailing padding is invisible)


@pytest.fixture(scope='module')
def log_probs_of(model_and_params):
  """log_softmax of the full forward of each 1-D sequence, one compiled program for all."""
  model, params = model_and_params
  forward = jax.jit(lambda p, t: jax.nn.log_softmax(model.apply({'params': p}, t)['logits']))

  def run(seqs):
    tokens_BxT, _ = S.left_pad([], REF_LEN, len(seqs))
    for b, seq in enumerate(seqs):
      tokens_BxT[b, :len(seq)] = seq
    return np.asarray(forward(params, tokens_BxT))
  return run


def _prompts(config, lens, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(14, config.vocab_size, n).astype(np.int32) for n in lens]


def test_greedy_equals_argmax_of_full_forward(config, model_and_params, log_probs_of):
  model, params = model_and_params
  prompts = _prompts(config, PROMPT_LENS)
  out = S.generate(params, model, None, prompts, GREEDY, jax.random.key(1))
  assert out['tokens'].shape == (4, N_NEW) and out['mask'].all() and (out['lengths'] == N_NEW).all()
  logp_BxTxV = log_probs_of([np.concatenate([p, t]) for p, t in zip(prompts, out['tokens'])])
  for b, prompt in enumerate(prompts):
    steps = logp_BxTxV[b, len(prompt) - 1:len(prompt) - 1 + N_NEW]  # predictions of the generated tokens
    np.testing.assert_array_equal(steps.argmax(-1), out['tokens'][b])
    chosen = np.take_along_axis(steps, out['tokens'][b][:, None], -1)[:, 0]
    np.testing.assert_allclose(out['logprobs'][b], chosen, atol=1e-4)


def test_no_recompilation_within_a_bucket(config, model_and_params):
  model, params = model_and_params
  before = S.compile_count()
  for lens in [(5, 2, 16, 7), (11, 1, 3, 4), (2, 6, 9)]:  # all bucket 16, batch (padded to) 4
    S.generate(params, model, None, _prompts(config, lens, seed=len(lens)), GREEDY, jax.random.key(2))
  assert S.compile_count() - before <= 1  # 0 if an earlier test built this shape
  fn = S._compiled(model, GREEDY, 4, 16, 0, None, tuple(sharding_lib.DEFAULT_RULES))
  assert fn._cache_size() == 1


def test_filter_logits_on_known_values():
  probs = np.array([[0.05, 0.5, 0.15, 0.3]])
  logits = jnp.log(jnp.asarray(probs, jnp.float32))
  kept = lambda **kw: set(np.flatnonzero(np.isfinite(np.asarray(S.filter_logits(logits, **kw)[0]))))
  assert kept(top_k=1) == {1}
  assert kept(top_k=2) == {1, 3}
  assert kept(top_k=4) == kept() == {0, 1, 2, 3}
  assert kept(top_p=0.5) == {1}          # the top token alone reaches 0.5
  assert kept(top_p=0.51) == {1, 3}
  assert kept(top_p=0.8) == {1, 3}       # 0.5 + 0.3 reaches 0.8
  assert kept(top_p=0.81) == {1, 2, 3}
  assert kept(top_p=0.01) == {1}         # the most likely token is always kept
  assert kept(top_k=2, top_p=0.9) == {1, 3}
  assert kept(top_k=3, top_p=0.7) == {1, 3}  # nucleus of the renormalised top-3 (0.53, 0.32, 0.16)
  assert kept(top_k=3, top_p=0.9) == {1, 2, 3}


@pytest.mark.parametrize('cfg, allowed, probs_allowed', [
    (S.SamplingConfig(top_k=3), [1, 3, 2], [0.5, 0.3, 0.15]),
    (S.SamplingConfig(top_p=0.7), [1, 3], [0.5, 0.3]),
])
def test_samples_stay_in_the_allowed_set(cfg, allowed, probs_allowed):
  probs = np.array([0.01, 0.5, 0.15, 0.3, 0.04])
  logits_BxV = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (4000, 5))
  tokens = np.asarray(jax.jit(lambda l, r: S.choose(l, r, cfg))(logits_BxV, jax.random.key(3)))
  assert set(np.unique(tokens)) == set(allowed)
  expected = np.asarray(probs_allowed) / np.sum(probs_allowed)
  freq = np.array([np.mean(tokens == t) for t in allowed])
  np.testing.assert_allclose(freq, expected, atol=0.03)
  # temperature 0.25 samples from probs ** 4, renormalised
  hot = np.asarray(S.choose(logits_BxV, jax.random.key(4), S.SamplingConfig(temperature=0.25)))
  np.testing.assert_allclose(np.mean(hot == 1), 0.5 ** 4 / np.sum(probs ** 4), atol=0.03)


def test_rows_stop_at_a_stop_id_and_the_loop_exits_early():
  """A fake model: row b emits token 20 until its step counter reaches stop_at[b], then STOP."""
  STOP, V, B = 7, 32, 4
  stop_at = jnp.array([0, 2, 5, 100])  # row 3 never stops by itself
  cfg = S.SamplingConfig(temperature=0.0, max_new_tokens=8, stop_ids=(STOP, 3))

  def logits_for(step_B):
    return jnp.where((step_B == stop_at)[:, None], jax.nn.one_hot(STOP, V), jax.nn.one_hot(20, V)) * 10.0

  def step_fn(state, token_B, live_B):
    state = {'step': state['step'] + live_B, 'calls': state['calls'] + 1}
    return logits_for(state['step']), state

  state = {'step': jnp.zeros((B,), jnp.int32), 'calls': jnp.zeros((), jnp.int32)}
  run = jax.jit(lambda logits, state, done: S.decode_loop(step_fn, logits, state, jax.random.key(0), cfg, done))
  out = run(logits_for(state['step']), state, jnp.zeros((B,), bool))
  tokens, mask = np.asarray(out['tokens']), np.asarray(out['mask'])
  assert tokens[0].tolist() == [STOP] + [0] * 7
  assert tokens[1].tolist() == [20, 20, STOP] + [0] * 5
  assert tokens[2].tolist() == [20] * 5 + [STOP, 0, 0]
  assert tokens[3].tolist() == [20] * 8
  np.testing.assert_array_equal(out['lengths'], [1, 3, 6, 8])
  np.testing.assert_array_equal(mask, np.arange(8)[None] < np.array([1, 3, 6, 8])[:, None])
  np.testing.assert_array_equal(out['done'], [True, True, True, False])
  assert np.all(np.asarray(out['logprobs'])[~mask] == 0)

  # without the never-stopping row, the loop exits after the last stop (6 steps, not 8)
  out = run(logits_for(state['step']), state, jnp.array([False, False, False, True]))
  assert int(out['state']['calls']) == 6
  assert out['tokens'][3].tolist() == [0] * 8 and int(out['lengths'][3]) == 0


def test_extend_a_running_cache_equals_one_prefill(config, model_and_params, log_probs_of):
  """Prefill + extend (e.g. a tool result appended to a paused row) == prefill of it all at once."""
  model, params = model_and_params
  a, b = _prompts(config, (5, 4), seed=7)
  ta, ma = S.left_pad([a, a[:2]], 8, 2)
  tb, mb = S.left_pad([b, np.zeros(0, np.int32)], 4, 2)  # row 1 appends nothing

  @jax.jit
  def two_steps(params):
    _, state = S.prefill(params, model, ta, ma, cache_len=16)
    return S.extend(params, model, state, tb, mb)

  logits, state = two_steps(params)
  ref = log_probs_of([np.concatenate([a, b]), a[:2]])
  np.testing.assert_allclose(jax.nn.log_softmax(logits[0]), ref[0, 8], atol=1e-4)
  np.testing.assert_array_equal(state['positions'], [9, 2])
  assert int(state['cache']['end']) == 12


def test_a_float32_cache_decodes_bit_for_bit_as_a_bfloat16_one(config):
  """On CPU the cache is float32 under bfloat16 matmuls (XLA:CPU would convert a bfloat16 cache whole on
  every step); attention casts each slot as it reads it, so decoding gives what a bfloat16 cache gives."""
  cfg = dataclasses.replace(config, dtype='bfloat16')
  model = Transformer(cfg)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  prompt_BxP, mask_BxP = S.left_pad(_prompts(cfg, PROMPT_LENS), 16, 4)
  cache = init_cache(cfg, 4, 16 + N_NEW)
  assert cache['k'][0].dtype == cache['v'][-1].dtype == jnp.float32

  @jax.jit
  def run(params, cache):
    logits_BxV, state = S.extend(params, model, {'cache': cache, 'positions': jnp.zeros((4,), jnp.int32)},
                                 prompt_BxP, mask_BxP)
    return S.decode(params, model, state, logits_BxV, jax.random.key(1), GREEDY)

  held_f32 = run(params, cache)
  kv_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), {'k': cache['k'], 'v': cache['v']})
  held_bf16 = run(params, {**cache, **kv_bf16})
  assert held_bf16['state']['cache']['k'][0].dtype == jnp.bfloat16
  for key in ('tokens', 'logprobs', 'logits'):
    np.testing.assert_array_equal(held_f32[key], held_bf16[key], err_msg=key)


def test_complete_chats_renders_and_parses(config, model_and_params):
  class Tok:  # ids 14.. for 'a'..'z'; control ids come from lm.chat
    def encode(self, text):
      return [14 + ord(c) - ord('a') for c in text]

    def decode(self, ids):
      return ''.join(chr(ord('a') + i - 14) for i in ids if 14 <= i < 40)

  model, params = model_and_params
  tok = Tok()
  # batch 4, bucket 16: compiled already
  convs = [[{'role': 'user', 'content': 'hi'}],
           [{'role': 'system', 'content': 'be'}, {'role': 'user', 'content': 'ok'}],
           [{'role': 'user', 'content': 'abc'}], [{'role': 'user', 'content': 'x'}]]
  results = S.complete_chats(params, model, tok, convs, GREEDY, jax.random.key(5))
  prompts = [chat.render_prompt(tok, c) for c in convs]
  out = S.generate(params, model, tok, prompts, GREEDY, jax.random.key(5))
  for r, ids in zip(results, out['tokens']):
    assert r['role'] == 'assistant' and r['finished'] is False
    np.testing.assert_array_equal(r['ids'], ids)
    assert r['content'] == chat.parse(tok, ids)['content']


def test_sharded_equals_unsharded(config, model_and_params):
  model, params = model_and_params
  mesh = sharding_lib.make_mesh((2, 2, 2))
  rules = sharding_lib.DEFAULT_RULES
  init = lambda rng: model.init(rng, jnp.zeros((1, 8), jnp.int32))['params']
  sharded_params, _ = sharding_lib.sharded_init(init, mesh, rules, jax.random.key(0))
  prompts = _prompts(config, PROMPT_LENS)
  out = S.generate(sharded_params, model, None, prompts, GREEDY, jax.random.key(1), mesh=mesh)
  ref = S.generate(params, model, None, prompts, GREEDY, jax.random.key(1))
  np.testing.assert_array_equal(out['tokens'], ref['tokens'])
  np.testing.assert_allclose(out['logprobs'], ref['logprobs'], atol=1e-4)
