"""Train-step MFU and decode tokens/s against the HBM roofline, on one accelerator (H100 / H200).

Train: the step ``lm.train`` compiles (``train.jit_train_step``: LM loss with the fused head,
AdamW, donation) at the ``125m`` and ``1b`` sizes of ``configs/models.py`` in bfloat16 compute,
``model.attention='auto'`` (cuDNN flash attention on GPU), on random packed rows. MFU = model FLOPs
per step (6 x matmul params x tokens + causal attention, ``benchmarks/aot_plan.model_flops``) /
step time / the chip's peak dense bf16 FLOP/s. Targets: >= 55%.

Decode: ``lm.sample.sample_jit`` (greedy, no stop ids) at the ``1b`` size with bfloat16 weights,
batch B, prompt P, N new tokens; decode time = whole call - prefill alone. The roofline is the HBM
time to read, per step, every weight once plus the filled part of the KV cache (on average P + N/2
slots): tokens/s <= B x bandwidth / bytes. Target: >= 70% of it.

Peaks (dense bf16 FLOP/s, HBM bytes/s) come from the device kind (H100 SXM 989e12, 3.35e12; H100
PCIe 756e12, 2.0e12; H200 989e12, 4.8e12; A100 312e12, 2.0e12); ``--peak_flops`` / ``--hbm_bw``
set them for other chips.

Usage (a GPU holder; results go to benchmarks/RESULTS.md with the card, command and date):
  python benchmarks/gpu_mfu.py                                   # 125m + 1b train, 1b decode
  python benchmarks/gpu_mfu.py --sizes 1b --batch 8 --seq_len 4096 --steps 20
  python benchmarks/gpu_mfu.py --sizes test --batch 8 --seq_len 128 --decode_size test --peak_flops 1e12 \\
      --hbm_bw 1e11    # a seconds-long smoke run on CPU
"""

import argparse
import dataclasses
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from aot_plan import model_flops  # noqa: E402

from lm import optim as lm_optim  # noqa: E402
from lm import sharding, train  # noqa: E402
from lm.configs import models  # noqa: E402
from lm.configs import optim as optim_presets  # noqa: E402
from lm.inference import sample as S  # noqa: E402
from lm.model import attention  # noqa: E402
from lm.model.transformer import ModelConfig, Transformer  # noqa: E402
from lm.steps import lm as lm_steps  # noqa: E402

CHIPS = (  # (device kind contains, dense bf16 FLOP/s, HBM bytes/s); first match wins
    ('H100 PCIe', 756e12, 2.0e12), ('H100', 989e12, 3.35e12), ('H200', 989e12, 4.8e12), ('A100', 312e12, 2.0e12))


def chip_peaks(kind: str, peak_flops: float, hbm_bw: float):
  found = next(((f, b) for name, f, b in CHIPS if name in kind), (None, None))
  return peak_flops or found[0], hbm_bw or found[1]


def train_mfu(size: str, batch: int, seq_len: int, steps: int, peak: float | None, impl: str = 'auto') -> dict:
  cfg = ModelConfig.from_config(models.get(size, dtype='bfloat16', attention=impl))
  cfg = dataclasses.replace(cfg, max_seq_len=max(cfg.max_seq_len, seq_len))
  model = Transformer(cfg)
  mesh, rules = sharding.make_mesh((-1, 1, 1)), sharding.DEFAULT_RULES
  section = ml_collections.ConfigDict({'steps': 1000, 'microbatches': 1, 'optim': optim_presets.adamw(3e-4, 10)})
  task = train.Task(name='mfu', init_params=lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))['params'],
                    loss_sums=lm_steps.make_loss_sums(model), train_batches=None)
  tx, schedule = lm_optim.make_optimizer(section.optim, section.steps)
  init, _, shardings = train.abstract_state(task, tx, mesh, rules)
  rng = np.random.default_rng(0)
  host = {'inputs': rng.integers(0, cfg.vocab_size, (batch, seq_len)).astype(np.int32),
          'positions': np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy(),
          'segment_ids': np.ones((batch, seq_len), np.int32), 'loss_mask': np.ones((batch, seq_len), np.int32)}
  host['targets'] = np.roll(host['inputs'], -1, axis=1)
  with sharding.use_mesh(mesh, rules):
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(jax.random.key(0))
    step = train.jit_train_step(task, section, tx, schedule, mesh, shardings)
    batch_arrays = sharding.place_batch(host, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch_arrays, None).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(2):  # warm up
      state, metrics = compiled(state, batch_arrays, None)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch_arrays, None)
    jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t0) / steps
  flops = model_flops(cfg, batch, seq_len)
  return {'size': size, 'params': cfg.n_params(), 'batch': batch, 'seq_len': seq_len, 'step_ms': 1e3 * step_s,
          'tokens_per_s': batch * seq_len / step_s, 'tflops': flops / step_s / 1e12,
          'mfu': flops / step_s / peak if peak else float('nan'), 'compile_s': compile_s,
          'loss': float(metrics['loss']), 'attention': attention.resolve(cfg)}


def decode_roofline(size: str, batch: int, prompt_len: int, new_tokens: int, repeats: int, hbm_bw) -> dict:
  cfg = ModelConfig.from_config(models.get(size, dtype='bfloat16'))
  model = Transformer(cfg)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)  # served weights: bf16
  rng = np.random.default_rng(0)
  prompts = [rng.integers(14, cfg.vocab_size, prompt_len) for _ in range(batch)]
  tokens_BxP, mask_BxP = S.left_pad(prompts, S.prompt_bucket(prompt_len), batch)
  P = tokens_BxP.shape[1]
  sampling = S.SamplingConfig(temperature=0.0, max_new_tokens=new_tokens, stop_ids=())
  prefill = jax.jit(lambda p, t, m: S.prefill(p, model, t, m, cache_len=P + new_tokens))
  run = lambda: S.sample_jit(params, model, tokens_BxP, mask_BxP, jax.random.key(0), sampling)  # noqa: E731

  def timed(fn):
    jax.block_until_ready(fn())
    best = float('inf')
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      best = min(best, time.perf_counter() - t0)
    return best

  decode_s = timed(run) - timed(lambda: prefill(params, tokens_BxP, mask_BxP))
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  kv_bytes = batch * cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_size * (P + new_tokens / 2) * 2  # bf16 cache
  bytes_per_step = weight_bytes + kv_bytes
  tokens_per_s = batch * new_tokens / decode_s
  roofline = batch * hbm_bw / bytes_per_step if hbm_bw else float('nan')
  return {'size': size, 'batch': batch, 'prompt': P, 'new_tokens': new_tokens,
          'ms_per_step': 1e3 * decode_s / new_tokens,
          'tokens_per_s': tokens_per_s, 'roofline_tokens_per_s': roofline, 'fraction': tokens_per_s / roofline,
          'gb_per_step': bytes_per_step / 1e9}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--sizes', nargs='+', default=['125m', '1b'])
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--seq_len', type=int, default=2048)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--attention', default='auto', help='model.attention for the train steps (auto: cudnn on GPU)')
  p.add_argument('--decode_size', default='1b')
  p.add_argument('--decode_batch', type=int, default=8)
  p.add_argument('--prompt_len', type=int, default=128)
  p.add_argument('--new_tokens', type=int, default=256)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--peak_flops', type=float, default=0.0)
  p.add_argument('--hbm_bw', type=float, default=0.0)
  args = p.parse_args()
  kind = jax.devices()[0].device_kind
  peak, bw = chip_peaks(kind, args.peak_flops, args.hbm_bw)
  print(f'{kind} x{jax.device_count()}, jax {jax.__version__}, {time.strftime("%Y-%m-%d")}; '
        f'peak {peak or float("nan"):.3g} FLOP/s, HBM {bw or float("nan"):.3g} B/s')
  print('\n| size | params | batch x seq | attention | step ms | tokens/s | TFLOP/s | MFU | compile s | loss |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for size in args.sizes:
    r = train_mfu(size, args.batch, args.seq_len, args.steps, peak, args.attention)
    print(f"| {size} | {r['params'] / 1e6:.0f}M | {r['batch']} x {r['seq_len']} | {r['attention']} | "
          f"{r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | {r['mfu']:.1%} | "
          f"{r['compile_s']:.0f} | {r['loss']:.3f} |", flush=True)
  d = decode_roofline(args.decode_size, args.decode_batch, args.prompt_len, args.new_tokens, args.repeats, bw)
  print('\n| size | batch | prompt | new | ms / step | tokens/s | roofline tokens/s | fraction | GB read / step |')
  print('|---|---|---|---|---|---|---|---|---|')
  print(f"| {d['size']} | {d['batch']} | {d['prompt']} | {d['new_tokens']} | {d['ms_per_step']:.2f} | "
        f"{d['tokens_per_s']:,.0f} | {d['roofline_tokens_per_s']:,.0f} | {d['fraction']:.1%} | "
        f"{d['gb_per_step']:.2f} |")


if __name__ == '__main__':
  main()
