"""Pretrain, then supervised fine-tuning on the lab's conversations (full weights or LoRA), then the
base-vs-SFT report card (``<workdir>/eval/report.md``).

  python -m lm.launch --config=experiments/sft_tiny.py --workdir=runs/sft_tiny
  --config.sft.mode=lora          LoRA (rank and targets in sft.lora) instead of full fine-tuning
  ...:smoke                       a seconds-long version for tests
"""

from lm.configs import base, models


def get_config(arg: str = ''):
  c = base.get_config()
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'eval')
  if arg == 'smoke':
    c.data.pretrain_chars, c.data.sft_examples, c.data.eval_examples = 150_000, 200, 2
    c.data.preferences.n_prompts = 20
    c.tokenizer.vocab_size = 512
    c.model = models.get('test', max_seq_len=128)
    for stage in (c.pretrain, c.sft):
      stage.steps, stage.batch_size = 12, 8
      stage.log_every = stage.eval_every = stage.checkpoint_every = 4
      stage.eval_batches = 1
      stage.optim.warmup_steps = 2
    c.pretrain.seq_len, c.sft.seq_len = 64, 128
    c.eval.max_new_tokens, c.eval.batch_size, c.eval.max_examples = 24, 32, 2
  elif arg:
    raise ValueError(f'unknown experiments/sft_tiny.py argument {arg!r}; valid: smoke')
  c.model.vocab_size = c.tokenizer.vocab_size
  return c
