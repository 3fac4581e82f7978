"""How fast the lab's data is made and fed: generation, tokenizer training, tokenizing and packing,
and batch assembly against the train step that consumes it.

  python benchmarks/data_pipeline.py                   # 20M characters of pretraining text
  python benchmarks/data_pipeline.py --chars 5000000

Prints one table; the last line says how many times faster the pipeline assembles batches than
the tiny model's train step consumes them (so > 1 means the pipeline is never the bottleneck).
The step is timed here, in the same process: the tiny model (``lm.configs.models`` 'tiny' with
this tokenizer's vocabulary) and AdamW compiled as ``lm.steps`` builds them, run on the batches
just assembled (median over ``--steps`` steps after one warm-up step).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--chars', type=int, default=20_000_000, help='pretraining characters to generate')
  parser.add_argument('--vocab_size', type=int, default=4096)
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--steps', type=int, default=5, help='timed train steps (after one warm-up step)')
  parser.add_argument('--dtype', default='float32', help='model.dtype of the timed train step')
  args = parser.parse_args()

  from lm import tokenizer
  from lm.configs import base
  from lm.data import pipeline
  from lm.lab.world import World
  from lm.stages import data as data_stage

  rows = []
  world = World(seed=0)
  docs, t = timed(lambda: world.pretraining_documents(target_chars=args.chars, seed=0))
  rows.append(('generate pretraining text', f'{args.chars / 1e6:.0f}M chars', t,
               f'{args.chars / t / 1e6:.1f}M chars/s'))

  cfg = base.data_section()
  with tempfile.TemporaryDirectory() as tmp:
    out, t = timed(lambda: data_stage.run(_config(cfg, pretrain_chars=args.chars), tmp, {}))
    rows.append(('data stage (all four tfds datasets)', f'{out.get("sft_conversations")} SFT, '
                 f'{out.get("preference_prompts")} prefs', t, ''))
    sample = docs[:max(1, len(docs) // 4)]
    mb = sum(map(len, sample)) / 1e6
    tok, t = timed(lambda: tokenizer.train(sample, Path(tmp) / 'tok.model', args.vocab_size))
    rows.append((f'train BPE tokenizer (vocab {args.vocab_size})', f'{mb:.1f} MB', t, f'{mb / t:.1f} MB/s'))

  ids, t = timed(lambda: [tok.encode(d) for d in docs])
  n_tokens = sum(map(len, ids))
  rows.append(('tokenize', f'{n_tokens / 1e6:.1f}M tokens', t, f'{n_tokens / t / 1e6:.2f}M tok/s'))
  packed, t = timed(lambda: pipeline.pack(ids, args.seq_len, tok.eos_id))
  rows.append(('pack', f'{len(packed["inputs"])} rows', t, f'{n_tokens / t / 1e6:.1f}M tok/s'))

  batches = pipeline.Batches(packed, args.batch_size, seed=0)
  n = 200
  _, t = timed(lambda: [batches.host_batch(i) for i in range(n)])
  per_batch = t / n
  batch_tokens = args.batch_size * args.seq_len
  rows.append(('assemble a batch', f'{args.batch_size}x{args.seq_len}', per_batch,
               f'{batch_tokens / per_batch / 1e6:.1f}M tok/s'))

  step_s = time_train_step(batches, tok.vocab_size, args)
  rows.append((f'train step (tiny model, {args.dtype})', f'{args.batch_size}x{args.seq_len}', step_s,
               f'{batch_tokens / step_s / 1e3:.1f}k tok/s'))

  print(f'| {"what":<38} | {"size":<22} | {"seconds":>9} | {"rate":<16} |')
  print(f'|{"-" * 40}|{"-" * 24}|{"-" * 11}|{"-" * 18}|')
  for what, size, seconds, rate in rows:
    print(f'| {what:<38} | {size:<22} | {seconds:>9.4f} | {rate:<16} |')
  print(f'tokens per character: {n_tokens / args.chars:.3f}')
  print(f'pipeline_vs_train_step: {step_s / per_batch:.0f}x')


def time_train_step(batches, vocab_size: int, args) -> float:
  """Median seconds of the tiny model's compiled train step on the pipeline's own batches."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from lm import optim
  from lm.configs import models
  from lm.configs import optim as optim_presets
  from lm.model.transformer import ModelConfig, Transformer
  from lm.steps import common
  from lm.steps import lm as lm_steps

  config = ModelConfig.from_config(models.get('tiny', vocab_size=vocab_size, max_seq_len=args.seq_len,
                                              dtype=args.dtype))
  model = Transformer(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, args.seq_len), jnp.int32)))['params']
  tx, schedule = optim.make_optimizer(optim_presets.adamw(), total_steps=1000)
  step = jax.jit(common.make_train_step(lm_steps.make_loss_sums(model), tx, schedule), donate_argnums=0)
  state = common.init_state(params, tx)
  times = []
  for i in range(args.steps + 1):
    batch = {k: jnp.asarray(v) for k, v in batches.host_batch(i).items()}
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return float(np.median(times[1:]))


def _config(data_cfg, **overrides):
  import ml_collections

  from lm import config as lm_config
  return ml_collections.ConfigDict({'data': lm_config.with_overrides(data_cfg, overrides)})


if __name__ == '__main__':
  np.set_printoptions(precision=3)
  main()
