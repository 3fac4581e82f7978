"""Tiny pretraining on CPU in a few minutes: generated corpus -> tokenizer -> 5.5M-param Llama.

  python -m lm.launch --config=experiments/pretrain_tiny.py --workdir=runs/pretrain_tiny
  ...:smoke    a seconds-long version for tests
  ...:ablate   a sweep over depth and learning rate, ending in one comparison table
"""

from configs import base, models


def get_config(arg: str = ''):
  c = base.get_config()
  c.model = models.get('tiny', vocab_size=c.data.vocab_size)
  if arg == 'smoke':
    c.data.n_documents, c.data.n_validation = 400, 40
    c.model = models.get('test', vocab_size=c.data.vocab_size)
    c.pretrain.steps, c.pretrain.batch_size, c.pretrain.seq_len = 20, 8, 64
    c.pretrain.log_every = c.pretrain.eval_every = c.pretrain.checkpoint_every = 5
    c.pretrain.eval_batches = 1
    c.pretrain.optim.warmup_steps = 5
  elif arg == 'ablate':
    c.variants = {'base': {}, 'shallow': {'model': {'n_layers': 2}},
                  'low_lr': {'pretrain': {'optim': {'lr': 1e-3}}}}
  elif arg:
    raise ValueError(f'unknown experiments/pretrain_tiny.py argument {arg!r}; valid: smoke, ablate')
  return c
