"""The reward-KL frontier of each RLHF arm from one SFT model and one reward model: PPO, GRPO and
RLOO (online, against the reward model) and DPO and IPO (offline, from the same rankings), each at
a weak and a strong KL strength (kl_coef 0.02 / 0.2; DPO/IPO beta 0.05 / 0.5), plus best-of-16 as the
no-training reference point.

  python -m lm.launch --config=experiments/ppo_vs_dpo_vs_grpo.py --workdir=runs/ppo_vs_dpo_vs_grpo
  ...:smoke    a minutes-long version for tests (PPO and DPO)

data .. reward run once in ``<workdir>/shared``; ``<workdir>/comparison.md`` has one row per arm and
strength (gold and proxy reward and KL on the fixed eval prompts, response length) and
``comparison.png`` plots gold reward against KL: the frontier.
"""

from experiments import rlhf_tiny

COLUMNS = ('rlhf.eval_kl', 'rlhf.eval_gold_reward', 'rlhf.eval_proxy_reward', 'rlhf.kl', 'rlhf.gold_reward',
           'rlhf.proxy_reward', 'rlhf.response_length')


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/ppo_vs_dpo_vs_grpo.py argument {arg!r}; valid: smoke')
  c = rlhf_tiny.get_config(arg)
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'reward', 'rlhf')
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft', 'reward')
  group = 2 if arg == 'smoke' else 4
  strengths = {'ppo': (0.02, 0.2), 'grpo': (0.02, 0.2), 'rloo': (0.02, 0.2), 'dpo': (0.05, 0.5), 'ipo': (0.05, 0.5)}
  if arg == 'smoke':
    strengths = {'ppo': (0.05,), 'dpo': (0.1,)}
  variants = {}
  for algorithm, values in strengths.items():
    for strength, value in zip(('weak_kl', 'strong_kl'), values):
      rl = {'algorithm': algorithm}
      if algorithm in ('dpo', 'ipo'):
        rl['preference'] = {'beta': value}
      else:
        rl['kl_coef'] = value
      if algorithm in ('grpo', 'rloo'):
        rl.update(group_size=group, prompts_per_iteration=c.rlhf.prompts_per_iteration // group * 2)
      variants[f'{algorithm}_{strength}'] = {'rlhf': rl}
  if arg != 'smoke':
    variants['best_of_16'] = {'rlhf': {'algorithm': 'best_of_n', 'best_of_n': (16,), 'iterations': 4}}
  c.variants = variants
  c.comparison.columns = COLUMNS
  c.comparison.plot = ('rlhf.eval_kl', 'rlhf.eval_gold_reward')
  return c
