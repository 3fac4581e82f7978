"""A reward model and RLHF on what a person ranked: the lifecycle's SFT model, the rankings made in the
browser (``python -m lm.serve``'s ranking page) beside the simulated panel's.

  python -m lm.launch --config=experiments/lifecycle.py --workdir=runs/lifecycle
  python -m lm.serve --workdir=runs/lifecycle            # rank some responses in the page
  python -m lm.launch --config=experiments/human_rlhf.py:runs/lifecycle --workdir=runs/human_rlhf

The argument is the served run: its data .. sft stages are reused (not run again) and its
``human/rankings.jsonl`` joins the rankings (``raters.human``; ``--config.raters.human_mode=instead``
trains on the person's rankings alone). The reward stage trains on candidates, policy samples and the
person's rankings (``reward.data=mix``); RLHF and the eval follow as in the lifecycle.
"""

from experiments import lifecycle


def get_config(arg: str = ''):
  if not arg:
    raise ValueError('experiments/human_rlhf.py needs the served run: --config=experiments/human_rlhf.py:<workdir>')
  c = lifecycle.get_config()
  c.reuse.workdir, c.reuse.stages = arg, ('data', 'tokenizer', 'pretrain', 'sft')
  c.stages = ('preferences', 'reward', 'rlhf', 'eval')
  c.raters.human = arg
  c.reward.data = 'mix'
  return c
