"""Synthetic data from the model itself (rejection sampling): pretrain -> SFT -> the SFT model samples
responses to new prompts and the lab's gold scorers keep the right ones -> SFT continued on the
original + synthetic conversations, against SFT continued for the same steps on the original ones only.

  python -m lm.launch --config=experiments/synthetic_data.py --workdir=runs/synthetic_data
  ...:reward    the reward model judges the samples instead of the gold scorers (adds the reward stage)
  ...:smoke     a short version for tests

``<workdir>/eval/report.md`` has the columns sft (before), sft+orig (continued on the original data)
and sft+synth (continued on original + synthetic); the report card's "Synthetic data" section lists
the acceptance rate per family and sft+synth - sft+orig for every skill: what the synthetic data adds.
"""

from experiments import sft_tiny


def get_config(arg: str = ''):
  if arg not in ('', 'smoke', 'reward'):
    raise ValueError(f'unknown experiments/synthetic_data.py argument {arg!r}; valid: smoke, reward')
  c = sft_tiny.get_config('smoke' if arg == 'smoke' else '')
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'synthetic', 'sft_original', 'sft_synthetic', 'eval')
  c.eval.models = ('sft', 'sft_original', 'sft_synthetic')
  if arg == 'reward':
    c.stages = c.stages[:4] + ('reward',) + c.stages[4:]
    c.synthetic.judge = 'reward'
  if arg == 'smoke':
    # enough SFT that some sampled turns end and score (the smoke model is tiny), short continued passes
    c.pretrain.eval_every = c.pretrain.checkpoint_every = c.pretrain.steps
    c.sft.steps, c.sft.optim.lr, c.sft.log_every = 40, 3e-3, 10
    c.sft.eval_every = c.sft.checkpoint_every = c.sft.steps
    c.eval.models = ('sft_original', 'sft_synthetic')
    c.data.sft_mix = (('manners', 'direct', 1.0), ('safety', 'direct', 1.0), ('length_control', 'direct', 1.0))
    c.data.eval_sets = (('manners', 'direct'), ('safety', 'direct'))
    # the smoke model is too small to pass the lab's scorers: its smoke run keeps every finished turn
    c.synthetic.update(n_prompts=24, mix=c.data.sft_mix, samples_per_prompt=2, max_new_tokens=24, batch_size=32,
                       tools=(), gold_threshold=0.0, keep_per_prompt=2, sft_steps=8, sft_lr=1e-3)
  return c
