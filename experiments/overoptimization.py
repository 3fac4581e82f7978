"""Reward hacking, measured: a long PPO run and best-of-n at several n against the same reward model,
gold (the lab's scorers) and proxy (reward model) reward against d = sqrt(KL), with Gao, Schulman and
Hilton's (2022) forms fitted: gold_RL(d) = d(alpha - beta ln d), gold_BoN(d) = d(alpha - beta d),
and the KL at which gold peaks while proxy keeps climbing.

  python -m lm.launch --config=experiments/overoptimization.py --workdir=runs/overoptimization
  ...:smoke    a minutes-long version for tests

data .. reward run once in ``<workdir>/shared``; variants ``ppo`` (a small fixed KL coefficient, many
iterations, eval every few) and ``best_of_n`` (n = 1..64) each end with the ``overoptimization``
stage (fits and ``curves.png``); ``<workdir>/comparison.md`` puts the fits side by side.
"""

from experiments import rlhf_tiny

COLUMNS = ('overoptimization.kl_max', 'overoptimization.proxy_gain_at_kl_max', 'overoptimization.gold_gain_at_kl_max',
           'overoptimization.gold_gain_best', 'overoptimization.kl_at_gold_best', 'overoptimization.gold_alpha',
           'overoptimization.gold_beta', 'overoptimization.gold_kl_peak', 'overoptimization.gold_r2',
           'overoptimization.proxy_kl_peak')


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/overoptimization.py argument {arg!r}; valid: smoke')
  c = rlhf_tiny.get_config(arg)
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'reward', 'rlhf', 'overoptimization')
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft', 'reward')
  if arg == 'smoke':
    ppo = {'iterations': 3, 'eval_every': 1}
    bon = {'best_of_n': (1, 2, 4)}
  else:
    ppo = {'iterations': 150, 'eval_every': 10, 'kl_coef': 0.01}
    bon = {'best_of_n': (1, 2, 4, 8, 16, 32, 64), 'iterations': 4}
  c.variants = {'ppo': {'rlhf': dict(algorithm='ppo', **ppo)},
                'best_of_n': {'rlhf': dict(algorithm='best_of_n', **bon)}}
  c.comparison.columns = COLUMNS
  return c
