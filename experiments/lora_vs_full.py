"""LoRA rank sweep against full fine-tuning, all from one shared pretrain: quality (eval loss and the
report card), trainable params, train-state memory and throughput, in one table.

  python -m lm.launch --config=experiments/lora_vs_full.py --workdir=runs/lora_vs_full
  ...:smoke    a seconds-long version for tests (full, ranks 1 and 4)

data, tokenizer and pretrain run once in ``<workdir>/shared``; each variant runs sft and eval in
``<workdir>/<variant>``; ``<workdir>/comparison.md`` has one row per variant: ``sft.eval_loss``,
``sft.trainable_params``, ``sft.train_state_bytes`` (params + AdamW moments), ``sft.tokens_per_s``
and the eval metrics ``eval.sft.*``. LoRA uses alpha = 2 x rank (a constant scale of 2) and a 3x
higher learning rate than full fine-tuning, the usual practice.
"""

from experiments import sft_tiny


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/lora_vs_full.py argument {arg!r}; valid: smoke')
  c = sft_tiny.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain')
  c.eval.models = ('sft',)  # the base model is the same for every variant
  lr = c.sft.optim.lr
  ranks = (1, 4) if arg == 'smoke' else (1, 4, 16, 64)
  variants = {'full': {'sft': {'mode': 'full'}}}
  for rank in ranks:
    variants[f'lora_r{rank}'] = {'sft': {'mode': 'lora', 'lora': {'rank': rank, 'alpha': 2.0 * rank},
                                         'optim': {'lr': 3 * lr}}}
  c.variants = variants
  return c
