"""Tiny pretraining on CPU in a few minutes: the lab's world -> tokenizer -> 5.5M-param Llama.

  python -m lm.launch --config=experiments/pretrain_tiny.py --workdir=runs/pretrain_tiny
  ...:smoke    a seconds-long version for tests
  ...:ablate   a sweep over depth and learning rate, ending in one comparison table
"""

from lm.configs import base, models


def get_config(arg: str = ''):
  c = base.get_config()
  if arg == 'smoke':
    c.data.pretrain_chars, c.data.sft_examples, c.data.eval_examples = 150_000, 100, 2
    c.data.preferences.n_prompts = 20
    c.tokenizer.vocab_size = 512
    c.model = models.get('test')
    c.pretrain.steps, c.pretrain.batch_size, c.pretrain.seq_len = 20, 8, 64
    c.pretrain.log_every = c.pretrain.eval_every = c.pretrain.checkpoint_every = 5
    c.pretrain.eval_batches = 1
    c.pretrain.optim.warmup_steps = 5
  elif arg == 'ablate':
    c.variants = {'base': {}, 'shallow': {'model': {'n_layers': 2}},
                  'low_lr': {'pretrain': {'optim': {'lr': 1e-3}}}}
  elif arg:
    raise ValueError(f'unknown experiments/pretrain_tiny.py argument {arg!r}; valid: smoke, ablate')
  c.model.vocab_size = c.tokenizer.vocab_size
  return c
