"""Train-step throughput at a Llama shape: lm (JAX) side by side with Hugging Face (PyTorch).

Findings (tiny shape, 2-core AMD EPYC with AVX2 only -- no AVX-512, no AMX --, shared and noisy,
jax 0.10.2, torch 2.13 CPU, transformers 5.24; numbers are medians of interleaved blocks):
- Before the fused head: JAX float32 0.80x torch float32 eager in tokens/s (2.49 s vs 2.01 s per step); with the plain
  reference ops (autodiff backward) ~0.87x of that, i.e. lm.ops' custom VJPs + causal query blocks
  gave 7-13% over two runs (chunk 64 ~ chunk 128 > no chunking; the run-time lax.cond check that
  picks the blocked path costs nothing measurable).
- The step is matmul-bound (~154 GFLOP/step; YNNPACK dots ~3.5 s of ~5 s summed op time). Isolated
  matmuls of the step's shapes are at parity with torch (JAX/torch time 0.84-1.05 for forward, dX,
  dW); the rest of the gap is the non-dot ops (transposes, softmax, broadcasts, head, optimizer).
- Here bf16 compute is *slower* (x1.5-1.7 step time; the 2048^3 bf16 dot peaks below f32), because
  this CPU has no native bf16: the AMX numbers in DESIGN.md do not carry over. torch bf16 autocast
  took ~58 s/step (vs ~6.5 s f32 in the same, loaded, run): skip it with --skip "torch bf16 autocast".
- XLA:CPU hands a dot to YNNPACK only if its left operand contracts its last dim; rhs-transposed is
  fine. Physical transposes behind optimization_barrier give that for dW, p^T do and ds^T q.
- XLA flags (oneDNN / XNNPACK dot fusion instead of YNN) moved isolated matmuls by < 15%, in noise.
- Profile (jax.profiler perfetto trace, op times summed over the 2 Eigen threads, ~2.8 s of op time
  for a ~2.0 s step): YNN dots ~75%; then transposes (dW operands, q/k/v to head-major) ~8%,
  constant broadcasts ~3%, the rest small elementwise. XLA runs independent thunks concurrently, so
  dots in the step reach ~55-95 GFLOP/s against ~130-150 alone. The optimizer is ~20 ms/step.
- Fused head + cross-entropy (ops.head_cross_entropy, default in lm.steps.lm.make_loss_sums):
  the head's fwd+bwd alone went 269-319 -> 228-272 ms (-15%, chunk 512-1024 best), ~2% of the step:
  the head is matmul-bound (3 x 8.6 GFLOP). It also never stores the [B*T, V] logits.
- The attention's [16,2,512,256] constant broadcasts are the untaken lax.cond branch's residuals
  (a cond around custom_vjp'd code returns zeros for the other branch's residuals). A flash-style
  rewrite (one custom_vjp with the cond inside, probs recomputed in a transposed [S, M] layout so
  no [M, S] transpose is copied) was exact to 1e-5 and removed them, but moved the step by < noise
  (per-round ratio 0.99-1.0) and changed the remat gradients by ~5e-6 (test_model's 1e-6 bound):
  not kept. Watch for XLA folding a transpose of a dot's result into the dot: that makes it a
  slow-path ``dot`` thunk (an optimization_barrier before the transpose prevents it).
- xla_cpu_enable_concurrency_optimized_scheduler=False (via compile(compiler_options=...)): no gain.
- Load on this shared machine (load 3-5 on 2 cores) moves step times by 2x between minutes: compare
  only interleaved, and quote per-round ratios.

Usage:
  python benchmarks/train_step.py                       # tiny shape, JAX f32 + bf16, torch f32 + bf16
  python benchmarks/train_step.py --no_torch --steps 3  # JAX only
  python benchmarks/train_step.py --d_model 512 --n_layers 8 --peak_flops 2e12

Each variant is compiled / warmed up first, then the timed blocks of ``--steps`` steps run
interleaved (JAX f32, JAX bf16, torch f32, torch bf16, JAX f32, ...) so that a noisy, shared
machine slows every variant alike; the table shows medians over blocks.

Model FLOPs per token follow the PaLM appendix: ``6 N + 12 L T d_attn`` where N counts every
parameter that takes part in a matmul (the layers' weights and the vocab head; a tied embedding is
counted once, as the head), L is the number of layers, T the sequence length and d_attn
``n_heads * head_dim``. The attention term counts the full T x T score matrix (causal masking is
not discounted), as in PaLM.
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
import ml_collections
import numpy as np

from lm import optim
from lm.model import transformer as model_lib
from lm.steps import common
from lm.steps import lm as lm_step

SIZES = {
    'tiny': dict(n_layers=6, d_model=256, n_heads=4, n_kv_heads=2, d_ff=704, vocab_size=4096, seq=256, batch=16),
    'small': dict(n_layers=12, d_model=512, n_heads=8, n_kv_heads=4, d_ff=1408, vocab_size=8192, seq=512, batch=8),
}
DIMS = ('n_layers', 'd_model', 'n_heads', 'n_kv_heads', 'd_ff', 'vocab_size', 'seq', 'batch')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--size', default='tiny', choices=sorted(SIZES))
  for d in DIMS:
    p.add_argument(f'--{d}', type=int, default=None, help='overrides the size preset')
  p.add_argument('--steps', type=int, default=5, help='steps per timed block')
  p.add_argument('--blocks', type=int, default=3, help='timed blocks per variant (interleaved)')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per variant after compiling')
  p.add_argument('--dtype', default=None, choices=['float32', 'bfloat16'],
                 help="JAX compute dtype for the headline ratio (default: lm's ModelConfig.dtype)")
  p.add_argument('--no_torch', action='store_true', help='JAX rows only')
  p.add_argument('--skip', default='', help='comma-separated variants to leave out, e.g. "torch bf16 autocast" '
                 '(without AMX / avx512_bf16 it takes ~1 min per step here)')
  p.add_argument('--peak_flops', type=float, default=None,
                 help='peak FLOP/s for MFU (default: measured with a large matmul, per dtype)')
  p.add_argument('--tie_embeddings', type=int, default=1)
  args = p.parse_args(argv)
  shape = dict(SIZES[args.size])
  for d in DIMS:
    if getattr(args, d) is not None:
      shape[d] = getattr(args, d)
  args.shape = shape
  return args


def model_config(shape, dtype, tie):
  dims = {k: v for k, v in shape.items() if k not in ('seq', 'batch')}
  return model_lib.ModelConfig(**dims, dtype=dtype, tie_embeddings=bool(tie), max_seq_len=shape['seq'])


def optim_config():
  return ml_collections.ConfigDict(dict(
      lr=3e-4, warmup_steps=10, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0))


def flops_per_token(cfg: model_lib.ModelConfig, seq: int):
  n_matmul = cfg.n_params(include_embedding=False) + cfg.d_model * cfg.vocab_size  # head counted once
  attn = 12 * cfg.n_layers * seq * cfg.n_heads * cfg.head_size
  return 6 * n_matmul + attn, n_matmul, attn


def random_batch(shape, seed=0):
  rng = np.random.default_rng(seed)
  B, T, V = shape['batch'], shape['seq'], shape['vocab_size']
  tokens = rng.integers(0, V, size=(B, T + 1), dtype=np.int32)
  return tokens[:, :-1], tokens[:, 1:]


# ---------------------------------------------------------------------------------------------- JAX

def jax_runner(shape, dtype, tie, tokens, targets):
  cfg = model_config(shape, dtype, tie)
  model = model_lib.Transformer(cfg)
  B, T = tokens.shape
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32)))['params']
  tx, schedule = optim.make_optimizer(optim_config(), total_steps=1000)
  step = jax.jit(common.make_train_step(lm_step.make_loss_sums(model), tx, schedule), donate_argnums=0)
  batch = {
      'inputs': jnp.asarray(tokens), 'targets': jnp.asarray(targets),
      'loss_mask': jnp.ones((B, T), jnp.float32),
      'positions': jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)),
      'segment_ids': jnp.ones((B, T), jnp.int32),
  }
  state = {'s': common.init_state(params, tx)}
  n_params = sum(x.size for x in jax.tree.leaves(params))

  def run(n):
    s = state['s']
    for _ in range(n):
      s, metrics = step(s, batch)
    jax.block_until_ready(metrics)
    state['s'] = s
    return float(metrics['loss'])

  run.hlo = lambda: step.lower(state['s'], batch).compile().as_text()  # for profiling scripts
  return run, n_params, cfg


# -------------------------------------------------------------------------------------------- torch

def torch_runner(shape, autocast_bf16, tie, tokens, targets):
  import torch
  import transformers
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=shape['vocab_size'], hidden_size=shape['d_model'], intermediate_size=shape['d_ff'],
      num_hidden_layers=shape['n_layers'], num_attention_heads=shape['n_heads'],
      num_key_value_heads=shape['n_kv_heads'], max_position_embeddings=shape['seq'],
      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=bool(tie), attention_bias=False,
      mlp_bias=False, hidden_act='silu', attn_implementation='sdpa')
  model = transformers.LlamaForCausalLM(hf_cfg).float().train()
  oc = optim_config()
  opt = torch.optim.AdamW(model.parameters(), lr=oc.lr, betas=(oc.b1, oc.b2), eps=oc.eps,
                          weight_decay=oc.weight_decay)
  x = torch.from_numpy(np.asarray(tokens)).long()
  y = torch.from_numpy(np.asarray(targets)).long()
  n_params = sum(p.numel() for p in model.parameters())

  def one_step():
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast_bf16):
      logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), oc.clip_norm)
    opt.step()
    return loss

  def run(n):
    for _ in range(n):
      loss = one_step()
    return float(loss.detach())

  return run, n_params


# -------------------------------------------------------------------------------------------- peak

def measure_peak(dtype, n=2048, reps=5):
  a = jnp.ones((n, n), dtype)
  b = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / min(times)


def main(argv=None):
  args = parse_args(argv)
  shape = args.shape
  headline = args.dtype or model_lib.ModelConfig().dtype
  tokens, targets = random_batch(shape)
  B, T = tokens.shape
  print(f'shape: {shape}  tie_embeddings={bool(args.tie_embeddings)}  devices={jax.devices()}')

  skip = {s.strip() for s in args.skip.split(',') if s.strip()}
  variants = {}  # name -> (run, n_params, compute dtype)
  for dt in ('float32', 'bfloat16'):
    run, n, cfg = jax_runner(shape, dt, args.tie_embeddings, tokens, targets)
    if f'jax {dt}' not in skip or dt == headline:
      variants[f'jax {dt}'] = (run, n, dt)
  torch_note = ''
  if not args.no_torch:
    try:
      import torch  # noqa: F401
      import transformers  # noqa: F401
    except ImportError as e:
      torch_note = f'torch rows skipped: {e}'
    else:
      torch_note = f'torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}'
      run, n = torch_runner(shape, False, args.tie_embeddings, tokens, targets)
      variants['torch float32'] = (run, n, 'float32')
      if 'torch bf16 autocast' not in skip:
        run, n = torch_runner(shape, True, args.tie_embeddings, tokens, targets)
        variants['torch bf16 autocast'] = (run, n, 'bfloat16')
  else:
    torch_note = 'torch rows skipped (--no_torch)'

  losses = {}
  for name, (run, _, _) in variants.items():
    t0 = time.perf_counter()
    losses[name] = run(1)
    run(args.warmup)
    print(f'  warmed up {name:<20s} first step + {args.warmup} warmup: {time.perf_counter() - t0:6.1f} s, loss {losses[name]:.3f}')

  times = {name: [] for name in variants}
  for _ in range(args.blocks):
    for name, (run, _, _) in variants.items():
      t0 = time.perf_counter()
      run(args.steps)
      times[name].append((time.perf_counter() - t0) / args.steps)

  if args.peak_flops:
    peaks = {'float32': args.peak_flops, 'bfloat16': args.peak_flops}
    peak_note = f'peak {args.peak_flops:.3g} FLOP/s (--peak_flops)'
  else:
    peaks = {dt: measure_peak(jnp.dtype(dt)) for dt in ('float32', 'bfloat16')}
    peak_note = (f'peak measured with a 2048^3 jnp.dot: float32 {peaks["float32"]:.3g} FLOP/s, '
                 f'bfloat16 (f32 result) {peaks["bfloat16"]:.3g} FLOP/s; MFU uses the row\'s dtype')

  fpt, n_matmul, attn = flops_per_token(cfg, T)
  print(f'\nmodel FLOPs/token = 6*N + 12*L*T*d_attn = 6*{n_matmul:,} + 12*{cfg.n_layers}*{T}*'
        f'{cfg.n_heads * cfg.head_size} = {fpt:,}  (N = matmul params incl. head, PaLM appendix B)')
  print(peak_note)
  if torch_note:
    print(torch_note)
  tps = {}
  print('\n| variant | ms/step | tokens/s | params | FLOPs/token | achieved FLOP/s | MFU | × torch same precision |')
  print('|---|---|---|---|---|---|---|---|')
  for name, (_, n, dt) in variants.items():
    ms = statistics.median(times[name]) * 1e3
    tps[name] = B * T / (ms / 1e3)
  peers = {'jax float32': 'torch float32', 'jax bfloat16': 'torch bf16 autocast'}
  for name, (_, n, dt) in variants.items():
    ms = statistics.median(times[name]) * 1e3
    achieved = tps[name] * fpt
    peer = peers.get(name)
    rel = f'{tps[name] / tps[peer]:.2f}' if peer in tps else '—'
    print(f'| {name} | {ms:.1f} | {tps[name]:,.0f} | {n:,} | {fpt:,} | {achieved:.3g} | '
          f'{achieved / peaks[dt]:.1%} | {rel} |')
  spread = {k: f'{min(v) * 1e3:.0f}-{max(v) * 1e3:.0f}' for k, v in times.items()}
  print(f'\nms/step range over {args.blocks} blocks of {args.steps}: {spread}')
  if 'torch float32' in tps:
    print(f'headline: jax {headline} (lm default) vs torch float32 eager')
    print(f'ratio_vs_torch: {tps["jax " + headline] / tps["torch float32"]:.3f}')
  else:
    print('ratio_vs_torch: n/a (torch not run)')


if __name__ == '__main__':
  main()
