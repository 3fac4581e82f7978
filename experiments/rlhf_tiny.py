"""Pretrain -> SFT -> reward model on the panel's rankings -> RLHF -> the SFT-vs-RLHF report card
(``<workdir>/eval/report.md``): the lifecycle (experiments/lifecycle.py) with the eval on the two
models RLHF is about, and the arm picked on the command line.

  python -m lm.launch --config=experiments/rlhf_tiny.py --workdir=runs/rlhf_tiny
  --config.rlhf.algorithm=grpo --config.rlhf.group_size=4    another arm (see lm/stages/rlhf.py)
  ...:smoke                                                    a minutes-long version for tests
"""

from experiments import lifecycle


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/rlhf_tiny.py argument {arg!r}; valid: smoke')
  c = lifecycle.get_config(arg)
  c.eval.models = ('sft', 'rlhf')
  return c
