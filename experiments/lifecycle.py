"""The whole life of a tiny model on the lab's data, on a laptop CPU: tokenizer -> pretrain -> SFT (with
thinking and tools) -> reward model on the panel's rankings -> PPO against it -> the report card of
base, SFT and RLHF models. The README's main command.

  python -m lm.launch --config=experiments/lifecycle.py --workdir=runs/lifecycle
  ...:full     longer stages, bigger effects
  ...:smoke    a minutes-long version for tests (tiny sizes)

Ends with ``<workdir>/eval/report.md`` (the skills table) and the run's report card
(``<workdir>/report.md``, ``report.html``, plots) when ``lm.report`` is present.
"""

from lm.configs import base, models

BREAKDOWNS = ('arithmetic:digits', 'char_count:length')


def get_config(arg: str = ''):
  if arg not in ('', 'full', 'smoke'):
    raise ValueError(f'unknown experiments/lifecycle.py argument {arg!r}; valid: full, smoke')
  c = base.get_config()
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'reward', 'rlhf', 'eval')
  c.eval.breakdowns = BREAKDOWNS
  if arg == 'smoke':
    c.data.pretrain_chars, c.data.sft_examples, c.data.eval_examples = 150_000, 200, 2
    c.data.preferences.n_prompts = 48
    c.tokenizer.vocab_size = 512
    c.model = models.get('test', max_seq_len=128)
    for stage in (c.pretrain, c.sft, c.reward):
      stage.steps, stage.batch_size = 12, 8
      stage.log_every = stage.eval_every = stage.checkpoint_every = 4
      stage.eval_batches = 1
      stage.optim.warmup_steps = 2
    c.pretrain.seq_len, c.sft.seq_len, c.reward.seq_len = 64, 128, 128
    c.reward.normalize_prompts, c.reward.normalize_max_new_tokens = 8, 16
    c.rlhf.update(iterations=2, prompts_per_iteration=8, n_prompts=80, eval_prompts=8, eval_every=2,
                  max_prompt_len=48, max_new_tokens=16, epochs=1, minibatch_size=8, checkpoint_every=1,
                  best_of_n=(1, 2, 4))
    c.rlhf.preference.update(seq_len=128, batch_size=8, steps_per_iteration=2)
    c.eval.max_new_tokens, c.eval.batch_size, c.eval.max_examples = 24, 32, 2
  else:
    # the default: ~15 minutes on 2 CPU cores
    c.reward.steps = 60
    c.rlhf.update(iterations=30, prompts_per_iteration=16, eval_prompts=32, eval_every=10, max_new_tokens=64,
                  epochs=2, minibatch_size=16)
    c.eval.max_examples, c.eval.max_new_tokens = 24, 96
    if arg == 'full':
      c.pretrain.steps, c.sft.steps, c.reward.steps = 600, 400, 200
      c.data.sft_examples, c.data.pretrain_chars = 8000, 4_000_000
      c.rlhf.update(iterations=100)
      c.eval.max_examples, c.eval.max_new_tokens = 50, 160
  c.model.vocab_size = c.tokenizer.vocab_size
  return c
