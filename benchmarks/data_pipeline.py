"""How fast the lab's data is made and fed: generation, tokenizer training, tokenizing and packing,
and batch assembly against the train step that consumes it.

  python benchmarks/data_pipeline.py                   # 20M characters of pretraining text
  python benchmarks/data_pipeline.py --chars 5000000

Prints one table; the last line says how many times faster the pipeline assembles batches than
the tiny model's train step consumes them (so > 1 means the pipeline is never the bottleneck).
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
  parser.add_argument('--step_s', type=float, default=2.5,
                      help='seconds per tiny train step to compare with (benchmarks/train_step.py measures it)')
  args = parser.parse_args()

  from lm import tokenizer
  from lm.configs import base
  from lm.data import pipeline
  from lm.lab.world import World
  from lm.stages import data as data_stage

  rows = []
  world = World(seed=0)
  docs, t = timed(lambda: world.pretraining_documents(target_chars=args.chars, seed=0))
  rows.append(('generate pretraining text', f'{args.chars / 1e6:.0f}M chars', t, f'{args.chars / t / 1e6:.1f}M chars/s'))

  cfg = base.data_section()
  with tempfile.TemporaryDirectory() as tmp:
    out, t = timed(lambda: data_stage.run(_config(cfg, pretrain_chars=args.chars), tmp, {}))
    rows.append(('data stage (all four tfds datasets)', f'{out["sft_conversations"]} SFT, '
                 f'{out["preference_prompts"]} prefs', t, ''))
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

  print(f'| {"what":<38} | {"size":<22} | {"seconds":>9} | {"rate":<16} |')
  print(f'|{"-" * 40}|{"-" * 24}|{"-" * 11}|{"-" * 18}|')
  for what, size, seconds, rate in rows:
    print(f'| {what:<38} | {size:<22} | {seconds:>9.4f} | {rate:<16} |')
  print(f'tokens per character: {n_tokens / args.chars:.3f}')
  print(f'pipeline_vs_train_step: {args.step_s / per_batch:.0f}x')


def _config(data_cfg, **overrides):
  import ml_collections

  from lm import config as lm_config
  return ml_collections.ConfigDict({'data': lm_config.with_overrides(data_cfg, overrides)})


if __name__ == '__main__':
  np.set_printoptions(precision=3)
  main()
