"""Biased raters give a biased reward model and a biased policy: a panel that likes long answers
against an unbiased one, from one shared SFT model.

  python -m lm.launch --config=experiments/rater_bias.py --workdir=runs/rater_bias
  ...:smoke    a minutes-long version for tests (up to the reward models)

data .. sft run once in ``<workdir>/shared``; each variant re-ranks the same candidates with its
panel (``preferences`` stage, ``raters.panel.length_bias``), trains a reward model on those rankings
and runs PPO against it. ``<workdir>/comparison.md``: how much each judge likes length (within-prompt
correlation of log(1 + words) with the panel's preference, the reward model's reward and the gold
utility), the reward model's held-out agreement with the panel and with the gold ranking, and the
policy after RLHF (response length, gold and proxy reward, KL).
"""

from experiments import rlhf_tiny

COLUMNS = ('reward.length_correlation_panel', 'reward.length_correlation_reward', 'reward.length_correlation_gold',
           'reward.eval_panel_accuracy', 'reward.eval_gold_accuracy', 'rlhf.eval_response_length',
           'rlhf.response_length', 'rlhf.eval_gold_reward', 'rlhf.eval_proxy_reward', 'rlhf.eval_kl')


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/rater_bias.py argument {arg!r}; valid: smoke')
  c = rlhf_tiny.get_config(arg)
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'preferences', 'reward', 'rlhf')
  if arg == 'smoke':
    c.stages = c.stages[:-1]  # the reward models only
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft')
  c.variants = {'unbiased': {'raters': {'panel': {'length_bias': 0.0}}},
                'length_biased': {'raters': {'panel': {'length_bias': 1.0}}}}
  c.comparison.columns = COLUMNS
  return c
