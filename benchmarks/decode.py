"""Decode throughput of lm.sample: prefill and per-token decode cost at 64, 256 and 1024 new tokens.

The sampler sizes its KV cache per call (bucketed prompt + max_new_tokens). Each decode step writes
one slot in place (the cache is stored per layer as [B, K, S, D], the layout attention reads) and
attends over the filled blocks of 128 slots only (lm.ops.cached_attention), so a step costs the
weights plus the part of the cache written so far. The table reports, per generation length:
prefill tokens/s (B * P / prefill time), decode tokens/s (B * N / decode time, where decode time =
time of the whole compiled sample - time of the prefill alone), and ms per decode step. Stop ids
are disabled so every row runs all N steps. Baseline: no cache, a full forward over the whole
[B, P + N] buffer per generated token (causality hides the not-yet-written tail), jitted with a
fori_loop, at the smallest N.

Findings (tiny shape, prompt bucket 64, f32; CPU = a shared 2-core EPYC, medians of 3 repeats of
that time, so +-30% noise; the 1024/64 ratio is the figure that matters):
  | version, device, batch | ms/step N=64 | N=256 | N=1024 | ratio 1024/64 | no-cache ms/step N=64 |
  | cache [L,B,S,K,D] re-stacked per step, H100 (jax 0.11.2), B=8 | 0.29 | 0.22 | 0.31 | 1.04x | 0.50 |
  | same, CPU (jax 0.10.2), B=8 | 30.3 | 20.9 | 53.3 | 1.76x | 252 |
  | per-layer [B,K,S,D] in place, all slots attended, CPU, B=8 | 5.2 | 6.4 | 19.3 | 3.73x | 198 |
  | + only filled blocks attended (now), CPU, B=8, load 6 | 22.0 | 19.9 | 26.8 | 1.22x | 346 |
  The old layout copied the whole cache several times per step (per-layer slices re-stacked,
  k/v transposed inside attention). Without the copies what remained was attention over all
  P + N slots: at B=8 the cache (53 MB at 1088 slots) outweighs the tiny model's weights (22 MB),
  so reading every slot every step made a step at N=1024 cost ~4x one at N=64. Attending only to
  the filled blocks makes the average step at N=1024 read about half the cache. The remaining growth
  is that real attention work; it shrinks relative to the weights as the model grows.
  With ``--dtype bfloat16`` on CPU the cache was held in bf16 and XLA:CPU converted it whole to float32
  on every step; it is held in float32 there now (1.2-2.0x the decode tokens/s at batch 64,
  benchmarks/RESULTS.md).

Usage:
  python benchmarks/decode.py                       # tiny shape, B=8, prompt 64, N in 64 256 1024
  python benchmarks/decode.py --batch 4 --new_tokens 64 256 --repeats 7

Every figure is the median over ``--repeats`` (>= 5) rounds with its [min-max] beside it; a round
times the prefill alone and then the whole compiled sample, so decode = sample - prefill per round.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.inference import sample as S
from lm.model.transformer import ModelConfig, Transformer


def timed_once(fn):
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def spread(values, fmt):
  """``median [min-max]`` of a measurement repeated over rounds."""
  return f'{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]'


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--prompt_len', type=int, default=64)
  p.add_argument('--new_tokens', type=int, nargs='+', default=[64, 256, 1024])
  p.add_argument('--repeats', type=int, default=5, help='timed rounds per row (at least 5)')
  p.add_argument('--dtype', default='float32')
  p.add_argument('--no_baseline', action='store_true')
  args = p.parse_args()
  if args.repeats < 5:
    p.error(f'--repeats={args.repeats}: at least 5 rounds, so that the spread means something')

  config = ModelConfig(n_layers=6, d_model=256, n_heads=4, n_kv_heads=2, d_ff=704, vocab_size=4096,
                       dtype=args.dtype)
  model = Transformer(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  B, P = args.batch, args.prompt_len
  rng = np.random.default_rng(0)
  prompts = [rng.integers(14, config.vocab_size, int(n)) for n in rng.integers(P // 2, P + 1, B)]
  tokens_BxP, mask_BxP = S.left_pad(prompts, S.prompt_bucket(P), B)
  P = tokens_BxP.shape[1]
  print(f'{jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; model L{config.n_layers} '
        f'd{config.d_model} h{config.n_heads}/{config.n_kv_heads} V{config.vocab_size} {args.dtype}; '
        f'batch {B}, prompt bucket {P} (left-padded, {int(mask_BxP.sum())} real tokens)')

  rows = []  # (name, cache slots, prefill s per round, decode s per round, N, compile s)
  for N in args.new_tokens:
    cfg = S.SamplingConfig(temperature=0.0, max_new_tokens=N, stop_ids=())
    prefill = jax.jit(lambda params, t, m, N=N: S.prefill(params, model, t, m, cache_len=P + N))
    run_prefill = lambda: prefill(params, tokens_BxP, mask_BxP)  # noqa: E731
    run_sample = lambda cfg=cfg: S.sample_jit(params, model, tokens_BxP, mask_BxP, jax.random.key(0), cfg)  # noqa: E731
    jax.block_until_ready(run_prefill())
    t0 = time.perf_counter()
    out = jax.block_until_ready(run_sample())
    t_first = time.perf_counter() - t0
    assert int(out['lengths'].min()) == N
    prefills, decodes = [], []
    for _ in range(args.repeats):  # one round: prefill alone, then the whole sample; decode = the difference
      prefills.append(timed_once(run_prefill))
      decodes.append(timed_once(run_sample) - prefills[-1])
    compile_s = t_first - statistics.median(decodes) - statistics.median(prefills)
    rows.append((f'cached, N={N}', P + N, prefills, decodes, N, compile_s))

  if not args.no_baseline:
    N = args.new_tokens[0]
    naive = jax.jit(lambda params, t, m, N=N: naive_greedy(params, model, t, m, N))
    jax.block_until_ready(naive(params, tokens_BxP, mask_BxP))
    t_naive = [timed_once(lambda: naive(params, tokens_BxP, mask_BxP)) for _ in range(args.repeats)]
    cached = S.sample_jit(params, model, tokens_BxP, mask_BxP, jax.random.key(0),
                          S.SamplingConfig(temperature=0.0, max_new_tokens=N, stop_ids=()))
    same = np.array_equal(np.asarray(naive(params, tokens_BxP, mask_BxP)), np.asarray(cached['tokens']))
    rows.append((f'no cache, N={N}', P + N, None, t_naive, N, None))

  print(f'\n{args.repeats} rounds per row: median [min-max]')
  print('| variant | cache slots | prefill tok/s | decode tok/s | ms / decode step | compile s |')
  print('|---|---|---|---|---|---|')
  for name, slots, pre, dec, n, comp in rows:
    pre_s = spread([B * P / t for t in pre], lambda v: f'{v:,.0f}') if pre else '-'
    comp_s = f'{comp:.1f}' if comp is not None else '-'
    print(f'| {name} | {slots} | {pre_s} | {spread([B * n / t for t in dec], lambda v: f"{v:,.0f}")} | '
          f'{spread([1e3 * t / n for t in dec], lambda v: f"{v:.2f}")} | {comp_s} |')
  ms_step = {name: statistics.median(dec) / n for name, _, _, dec, n, _ in rows}
  cached_rows = [r[0] for r in rows if r[0].startswith('cached')]
  if len(cached_rows) > 1:
    ratio = ms_step[cached_rows[-1]] / ms_step[cached_rows[0]]
    print(f'\nper-token decode cost (medians), {cached_rows[-1]} vs {cached_rows[0]}: {ratio:.2f}x (target <= 1.3x)')
  if not args.no_baseline:
    speedup = ms_step[rows[-1][0]] / ms_step[cached_rows[0]]
    print(f'cached vs no-cache decode at N={args.new_tokens[0]} (medians): {speedup:.1f}x faster; '
          f'same greedy tokens: {same}')


def naive_greedy(params, model, prompt_BxP, mask_BxP, N):
  """Greedy decoding without a cache: one full forward over [B, P + N] per new token."""
  B, P = prompt_BxP.shape
  tokens_BxT = jnp.concatenate([prompt_BxP, jnp.zeros((B, N), jnp.int32)], axis=1)
  segment_ids_BxT = jnp.concatenate([mask_BxP, jnp.ones((B, N), jnp.int32)], axis=1)
  positions_BxT = jnp.maximum(jnp.cumsum(segment_ids_BxT, axis=1) - 1, 0) * segment_ids_BxT

  def body(i, tokens_BxT):
    logits_BxTxV = model.apply({'params': params}, tokens_BxT, positions_BxT, segment_ids_BxT)['logits']
    next_B = jnp.argmax(jax.lax.dynamic_index_in_dim(logits_BxTxV, P - 1 + i, 1, keepdims=False), -1)
    return jax.lax.dynamic_update_index_in_dim(tokens_BxT, next_B.astype(jnp.int32), P + i, 1)

  return jax.lax.fori_loop(0, N, body, tokens_BxT)[:, P:]


if __name__ == '__main__':
  main()
