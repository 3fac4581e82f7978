"""Train-step throughput at a Llama shape: lm (JAX) against Hugging Face (PyTorch) at equal precision.

Two pairs, each compared only with itself: lm float32 vs torch float32 (eager), and lm bfloat16
(``model.dtype='bfloat16'``: bf16 matmul operands, float32 params, activations, norms, softmax and
accumulation) vs torch bfloat16 autocast (float32 params, bf16 matmuls). The torch side is
``transformers.LlamaForCausalLM`` (SDPA attention) with ``torch.optim.AdamW`` and the same
clipping; same shapes, same batch, same hyperparameters.

Fair by construction:
- Threads: ``--threads`` N (default: every CPU this process may use). The CPU affinity is pinned to
  N CPUs before JAX starts (XLA:CPU sizes its intra-op pool from the affinity when its client
  starts) and torch gets ``set_num_threads(N)``; the script prints the threads each one has: XLA's
  counted as its ``XLAEigen`` pool threads in /proc/self/task, torch's from ``get_num_threads``.
- Rounds interleave the frameworks (lm, torch, lm, torch, ... for each precision); the ratio is lm
  tokens/s over torch tokens/s per round, and the table gives its median over ``--rounds`` with the
  min-max. Interleaving does not make a loaded machine fair: other processes on these CPUs slow
  torch's OpenMP threads far more than XLA's pool (2-10x vs ~2x here), so the script prints the
  load average and warns when it exceeds the thread count. Quote only quiet runs.
- FLOPs per token follow the PaLM appendix: ``6 N + 12 L T d_attn``, N the weights in matmuls
  (the layers' projections and the vocab head once, tied or untied: ``aot_plan.matmul_params``),
  L layers, T the sequence length, d_attn = heads x head_dim (full T x T scores, as in PaLM).
- MFU uses a peak measured here: a 2048^3 ``jnp.dot`` per dtype (bf16 inputs, f32 result).
- Memory: by default the process calls ``lm.hardware.keep_freed_memory()`` first, so glibc reuses
  freed blocks instead of mapping and zero-filling them again: XLA:CPU allocates the step's 0.7-0.9
  GB of temporaries on every run (~25% of lm's step in page faults otherwise; torch's big tensors
  fault too, less). Both frameworks share the process, hence the setting; ``--malloc default``
  measures glibc's defaults.
- The table comes with ``lscpu``'s model name and the flags that decide bf16 speed (avx2, avx512f,
  avx512_bf16, amx_bf16).

Findings (tiny shape, 2-core Intel Xeon (Sapphire Rapids class: AVX-512, AVX512-BF16, AMX), shared
with other jobs (load 2-7), jax 0.10.2, torch 2.13 CPU, transformers 5.x): see benchmarks/RESULTS.md
for the measured table. What shaped lm/model/ops.py's CPU work:
- This jaxlib's XLA:CPU keeps a bf16 dot in bf16 (AMX, YNNPACK) only when both operands arrive
  row-major: an operand that is a ``transpose`` makes it upcast the dot to float32 before layouts
  are assigned. Every backward dot of the step ran in float32 (~100 GFLOP/s instead of 400-750):
  lm/model/ops.py now writes ``a @ b^T`` as one dot_general and copies the transposed left
  operands row-major behind a barrier; all 255 dots of the step run bf16 on YNNPACK.
- Attention: a ``lax.cond`` around big branches ran ~2x slower than the same blocks without it
  (XLA:CPU runs a branch's thunks apart from the rest of the program).
- Earlier (2-core AMD EPYC, AVX2 only): bf16 is 1.5-1.7x slower than f32 there (no native bf16),
  torch bf16 autocast ~58 s/step: run ``--precisions float32`` on such a CPU.

Usage:
  python benchmarks/train_step.py                           # tiny shape, both precisions, 5 rounds
  python benchmarks/train_step.py --precisions float32 --rounds 3 --steps 2
  python benchmarks/train_step.py --size small --threads 1
  python benchmarks/train_step.py --no_torch                # lm rows only (no ratio)
  python benchmarks/train_step.py --data_parallel 2         # also lm with the batch split over 2 CPU devices
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from aot_plan import matmul_params  # noqa: E402

from lm import hardware, optim, sharding  # noqa: E402
from lm.model import transformer as model_lib  # noqa: E402
from lm.steps import common  # noqa: E402
from lm.steps import lm as lm_step  # noqa: E402

SIZES = {
    'tiny': dict(n_layers=6, d_model=256, n_heads=4, n_kv_heads=2, d_ff=704, vocab_size=4096, seq=256, batch=16),
    'small': dict(n_layers=12, d_model=512, n_heads=8, n_kv_heads=4, d_ff=1408, vocab_size=8192, seq=512, batch=8),
}
DIMS = ('n_layers', 'd_model', 'n_heads', 'n_kv_heads', 'd_ff', 'vocab_size', 'seq', 'batch')
PRECISIONS = ('float32', 'bfloat16')
TORCH_NAME = {'float32': 'torch float32', 'bfloat16': 'torch bf16 autocast'}
CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--size', default='tiny', choices=sorted(SIZES))
  for d in DIMS:
    p.add_argument(f'--{d}', type=int, default=None, help='overrides the size preset')
  p.add_argument('--precisions', default=','.join(PRECISIONS), help='comma-separated: float32, bfloat16')
  p.add_argument('--steps', type=int, default=3, help='steps per timed block')
  p.add_argument('--rounds', type=int, default=5, help='timed rounds (each: lm block, torch block per precision)')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per variant after compiling')
  p.add_argument('--threads', type=int, default=None, help='CPUs for both frameworks (default: all allowed)')
  p.add_argument('--no_torch', action='store_true', help='lm rows only')
  p.add_argument('--data_parallel', type=int, default=1,
                 help='N > 1 adds lm rows with the batch split over N XLA:CPU devices (jax_num_cpu_devices; state '
                      'replicated, gradients summed across them), as the launcher\'s data mesh would run it')
  p.add_argument('--malloc', default='keep', choices=['keep', 'default'],
                 help="keep: lm.hardware.keep_freed_memory() for the whole process (both frameworks); default: "
                      "glibc's own (maps and zero-fills XLA's temporaries afresh on every step)")
  p.add_argument('--peak_flops', type=float, default=None,
                 help='peak FLOP/s for MFU (default: measured with a large matmul, per dtype)')
  p.add_argument('--tie_embeddings', type=int, default=1)
  args = p.parse_args(argv)
  args.shape = dict(SIZES[args.size])
  for d in DIMS:
    if getattr(args, d) is not None:
      args.shape[d] = getattr(args, d)
  args.precisions = [x.strip() for x in args.precisions.split(',') if x.strip()]
  bad = [x for x in args.precisions if x not in PRECISIONS]
  if bad:
    p.error(f'--precisions: {bad[0]!r} is not one of {", ".join(PRECISIONS)}')
  return args


def lm_name(dtype: str, n_devices: int) -> str:
  return f'lm {dtype}' + (f' x{n_devices} devices' if n_devices > 1 else '')


def lm_names(dtype: str, data_parallel: int) -> list[str]:
  return [lm_name(dtype, n) for n in sorted({1, data_parallel})]


def model_config(shape, dtype, tie):
  dims = {k: v for k, v in shape.items() if k not in ('seq', 'batch')}
  return model_lib.ModelConfig(**dims, dtype=dtype, tie_embeddings=bool(tie), max_seq_len=shape['seq'])


def optim_config():
  return ml_collections.ConfigDict(dict(
      lr=3e-4, warmup_steps=10, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0))


def flops_per_token(cfg: model_lib.ModelConfig, seq: int):
  """``(6 N + 12 L T d_attn, N, attention term)``; N counts the vocab head once, tied or untied."""
  n_matmul = matmul_params(cfg)
  attn = 12 * cfg.n_layers * seq * cfg.n_heads * cfg.head_size
  return 6 * n_matmul + attn, n_matmul, attn


def random_batch(shape, seed=0):
  rng = np.random.default_rng(seed)
  B, T, V = shape['batch'], shape['seq'], shape['vocab_size']
  tokens = rng.integers(0, V, size=(B, T + 1), dtype=np.int32)
  return tokens[:, :-1], tokens[:, 1:]


# -------------------------------------------------------------------------------------------- host

def pin_threads(n: int | None) -> list[int]:
  """Restricts this process to ``n`` of its allowed CPUs (all if None); call before JAX starts."""
  cpus = sorted(os.sched_getaffinity(0))
  if n is not None:
    if not 1 <= n <= len(cpus):
      raise SystemExit(f'--threads={n}: this process may use {len(cpus)} CPUs')
    cpus = cpus[:n]
    os.sched_setaffinity(0, cpus)
  return cpus


def xla_pool_threads() -> int:
  """Threads of XLA:CPU's intra-op pool (named ``tf_XLAEigen``) alive in this process."""
  names = []
  for tid in os.listdir('/proc/self/task'):
    try:
      with open(f'/proc/self/task/{tid}/comm') as f:
        names.append(f.read().strip())
    except OSError:
      continue
  return sum('XLAEigen' in n for n in names)


def cpu_description() -> str:
  """lscpu's model name and which of ``CPU_FLAGS`` the CPU has."""
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    out = ''
  fields = dict(line.split(':', 1) for line in out.splitlines() if ':' in line)
  model = fields.get('Model name', '?').strip()
  flags = set(fields.get('Flags', '').split()) or hardware.cpu_flags()
  have = ', '.join(f'{f} {"yes" if f in flags else "no"}' for f in CPU_FLAGS)
  return f'CPU: {model} ({os.cpu_count()} CPUs); flags: {have}'


# --------------------------------------------------------------------------------------------- JAX

def jax_runner(shape, dtype, tie, tokens, targets, n_devices=1):
  """The train step on the first ``n_devices`` devices: the batch split over them, the state replicated."""
  cfg = model_config(shape, dtype, tie)
  model = model_lib.Transformer(cfg)
  B, T = tokens.shape
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32)))['params']
  tx, schedule = optim.make_optimizer(optim_config(), total_steps=1000)
  step = jax.jit(common.make_train_step(lm_step.make_loss_sums(model), tx, schedule), donate_argnums=0)
  mesh = sharding.make_mesh(devices=jax.devices()[:n_devices])
  batch = jax.device_put({
      'inputs': tokens, 'targets': targets, 'loss_mask': np.ones((B, T), np.float32),
      'positions': np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)), 'segment_ids': np.ones((B, T), np.int32),
  }, sharding.batch_sharding(mesh))
  state = {'s': jax.device_put(common.init_state(params, tx), sharding.replicated(mesh))}

  def run(n):
    s, loss = state['s'], float('nan')
    for _ in range(n):
      s, metrics = step(s, batch)
      loss = metrics['loss']
    state['s'] = s
    return float(loss)  # waits for the last step

  run.hlo = lambda: step.lower(state['s'], batch).compile().as_text()  # for profiling scripts
  return run, cfg


# ------------------------------------------------------------------------------------------- torch

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
    loss = float('nan')
    for _ in range(n):
      loss = one_step().detach()
    return float(loss)

  return run


# -------------------------------------------------------------------------------------------- peak

def measure_peak(dtype, n=2048, reps=5):
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  f(a, a).block_until_ready()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / min(times)


def timed_block(run, steps):
  t0 = time.perf_counter()
  run(steps)
  return (time.perf_counter() - t0) / steps


def main(argv=None):
  args = parse_args(argv)
  cpus = pin_threads(args.threads)  # before the first JAX computation starts XLA's thread pool
  if args.data_parallel > 1:
    jax.config.update('jax_num_cpu_devices', args.data_parallel)  # before the CPU client starts
  kept = args.malloc == 'keep' and hardware.keep_freed_memory()  # likewise before any thread allocates
  n_threads = len(cpus)
  shape = args.shape
  tokens, targets = random_batch(shape)
  B, T = tokens.shape
  print(f'shape: {shape}  tie_embeddings={bool(args.tie_embeddings)}  devices={jax.devices()}')

  variants = {}  # name -> (run, precision)
  for dt in args.precisions:
    for n in sorted({1, args.data_parallel}):
      run, cfg = jax_runner(shape, dt, args.tie_embeddings, tokens, targets, n)
      variants[lm_name(dt, n)] = (run, dt)
  torch_note = 'torch rows skipped (--no_torch)'
  if not args.no_torch:
    import torch
    import transformers
    torch.set_num_threads(n_threads)
    for dt in args.precisions:
      variants[TORCH_NAME[dt]] = (torch_runner(shape, dt == 'bfloat16', args.tie_embeddings, tokens, targets), dt)
    torch_note = (f'torch {torch.__version__} (intra-op threads: {torch.get_num_threads()}), '
                  f'transformers {transformers.__version__}')

  for name, (run, _) in variants.items():
    t0 = time.perf_counter()
    loss = run(1)
    run(args.warmup)
    print(f'  warmed up {name:<20s} first step + {args.warmup}: {time.perf_counter() - t0:6.1f} s, loss {loss:.3f}')

  times = {name: [] for name in variants}
  load_before = os.getloadavg()[0]
  for _ in range(args.rounds):
    for dt in args.precisions:  # lm, [lm on N devices,] torch, lm, ...
      for name in (*lm_names(dt, args.data_parallel), TORCH_NAME[dt]):
        if name in variants:
          times[name].append(timed_block(variants[name][0], args.steps))

  if args.peak_flops:
    peaks = {dt: args.peak_flops for dt in PRECISIONS}
    peak_note = f'peak {args.peak_flops:.3g} FLOP/s (--peak_flops)'
  else:
    peaks = {dt: measure_peak(jnp.dtype(dt)) for dt in args.precisions}
    peak_note = ('peak measured with a 2048^3 jnp.dot: ' + ', '.join(f'{dt} {peaks[dt]:.3g} FLOP/s' for dt in peaks)
                 + ' (bf16 inputs, f32 result); MFU uses the row\'s precision')
  fpt, n_matmul, _ = flops_per_token(cfg, T)

  print(f'\n{cpu_description()}')
  print(f'native bf16 matmuls here (lm.hardware): {hardware.native_bf16_matmul()}; model.dtype=auto would be '
        f'{hardware.resolve_dtype("auto")}')
  print(f'threads: affinity {n_threads} CPUs {cpus}; XLA intra-op pool: {xla_pool_threads()} threads; {torch_note}')
  print('malloc: ' + ('lm.hardware.keep_freed_memory() for the whole process (both frameworks)' if kept
                      else "glibc's default (--malloc default, or no mallopt here)"))
  print(f'model FLOPs/token = 6*N + 12*L*T*d_attn = 6*{n_matmul:,} + 12*{cfg.n_layers}*{T}*'
        f'{cfg.n_heads * cfg.head_size} = {fpt:,}  (N = matmul weights, vocab head once; PaLM appendix B)')
  print(peak_note)
  print(f'{args.rounds} rounds of {args.steps} steps per variant; ms/step = median over rounds [min-max]')
  load = max(load_before, os.getloadavg()[0])
  print(f'load average (1 min) before / after the timed rounds: {load_before:.1f} / {os.getloadavg()[0]:.1f}')
  if load > n_threads + 0.5:
    print(f'WARNING: load {load:.1f} > {n_threads} threads: other processes share these CPUs. torch (OpenMP) slows '
          'down far more than XLA under contention, so the ratio flatters lm; rerun on a quiet machine.')
  print('\n| variant | ms/step | tokens/s | achieved FLOP/s | MFU | lm / torch, same precision (per round) |')
  print('|---|---|---|---|---|---|')
  ratios = {}  # lm row -> (median, min, max) of its per-round ratio to torch at its precision
  for dt in args.precisions:
    torch_name = TORCH_NAME[dt]
    for name in lm_names(dt, args.data_parallel):
      if torch_name in times:
        per_round = [t / s for s, t in zip(times[name], times[torch_name])]
        ratios[name] = statistics.median(per_round), min(per_round), max(per_round)
    for name in (*lm_names(dt, args.data_parallel), torch_name):
      if name not in times:
        continue
      ts = times[name]
      ms, tps = statistics.median(ts) * 1e3, B * T / statistics.median(ts)
      rel = f'{ratios[name][0]:.2f} [{ratios[name][1]:.2f}-{ratios[name][2]:.2f}]' if name in ratios else ''
      print(f'| {name} | {ms:.0f} [{min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f}] | {tps:,.0f} | {tps * fpt:.3g} | '
            f'{tps * fpt / peaks[dt]:.1%} | {rel} |')
  if ratios:
    print('ratio_vs_torch: ' + '; '.join(f'{name.removeprefix("lm ")} {r[0]:.3f}' for name, r in ratios.items()))
  else:
    print('ratio_vs_torch: n/a (torch not run)')


if __name__ == '__main__':
  main()
