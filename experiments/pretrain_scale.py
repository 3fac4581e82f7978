"""Pretraining at real sizes on a TPU slice: a plan of configs/plans.py (model, slice, mesh, global
batch, microbatches) with text from tfds and a 32k BPE. tpu/README.md shows the whole run.

  python tpu/tpu.py launch NAME --zone=Z --config=experiments/pretrain_scale.py:8b_v5p64 \\
      --workdir=gs://BUCKET/runs/8b --tfds-dir=gs://BUCKET/tfds        # on every worker of the slice
  python -m lm.launch --config=experiments/pretrain_scale.py:1b_v5e8 --workdir=DIR   # one host

The argument names the plan (default 1b_v5e8); ``benchmarks/aot_plan.py <plan>`` prints its memory
per chip. Text: ``c4/en`` validation split (0.36M documents), streamed (``lm.data.streaming``: a
``pretrain_tfds`` source is read one document at a time), so ``c4/en:train:text`` works the same way.
"""

from lm.configs import base, plans


def get_config(arg: str = '1b_v5e8'):
  p = plans.get(arg)
  c = base.get_config()
  c.model = p.model
  c.mesh = p.mesh
  c.data.pretrain_tfds = 'c4/en:validation:text'
  c.data.pretrain_chars = 400_000_000
  c.tokenizer.vocab_size = 32768  # the model keeps its own (larger) vocab_size: plans are sized with it
  c.pretrain = base.train_section(
      steps=5000, batch_size=p.batch_size, seq_len=p.seq_len, lr=3e-4, warmup_steps=500,
      microbatches=p.microbatches, log_every=10, eval_every=500, eval_batches=2, checkpoint_every=500)
  c.model.max_seq_len = max(c.model.max_seq_len, p.seq_len)
  return c
