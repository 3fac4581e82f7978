"""The lab's own scaling law: model sizes x pretraining budgets on the calibrated lab of the lifecycle,
accuracy per skill after SFT with 95% intervals, one table and one plot.

  python -m lm.launch --config=experiments/lab_scaling.py --workdir=runs/lab_scaling
  ...:smoke    a minutes-long version for tests (two test-sized models, one budget each)

data and tokenizer run once in ``<workdir>/shared``; each variant ``<size>@<pretrain steps>`` pretrains
its model for that many steps of the lifecycle's batch, fine-tunes it with the lifecycle's SFT and
answers the lifecycle's eval sets (SFT model only). ``<workdir>/comparison.md`` has one row per
variant: params, tokens seen in pretraining and accuracy per eval set with its interval;
``comparison_curves.png`` plots each set's accuracy against pretraining tokens, one line per size, so
the budget at which a skill appears can be read for each size.
"""

from experiments import lifecycle

# (d_model, n_layers, n_heads, n_kv_heads, d_ff): 'm' is the lifecycle's own model ('tiny')
SIZES = {'xs': (128, 2, 2, 1, 384), 's': (192, 4, 3, 1, 512), 'm': (256, 6, 4, 2, 704)}
STEPS = (200, 400, 800)
SMOKE_SIZES = {'xs': (32, 1, 2, 1, 64), 's': (64, 2, 4, 2, 128)}
SMOKE_STEPS = (12,)


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/lab_scaling.py argument {arg!r}; valid: smoke')
  c = lifecycle.get_config(arg)
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'eval')
  c.shared_stages = ('data', 'tokenizer')
  c.eval.models = ('sft',)
  sizes, budgets = (SMOKE_SIZES, SMOKE_STEPS) if arg == 'smoke' else (SIZES, STEPS)
  variants = {}
  for size, (d_model, n_layers, n_heads, n_kv_heads, d_ff) in sizes.items():
    for steps in budgets:
      variants[f'{size}@{steps}'] = {
          'model': dict(d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, d_ff=d_ff),
          'pretrain': {'steps': steps, 'eval_every': steps, 'checkpoint_every': steps}}
  c.variants = variants
  accuracy = tuple(f'eval.sft.acc[{family}/{variant}]' for family, variant in c.data.eval_sets)
  # the lab's targets within the sums, and what decides them: the sum copied, its digit steps right
  targets = ('eval.sft.acc[arithmetic/thinking:digits=2]', 'eval.sft.acc[arithmetic/tool:digits=3]',
             'eval.sft.copies_the_sum', 'eval.sft.digit_steps_right')
  c.comparison.columns = ('pretrain.params', 'pretrain.tokens_seen') + accuracy + targets
  c.comparison.curves = ('pretrain.tokens_seen', accuracy)
  return c
