"""How far PPO moves from SFT and what that buys: the KL coefficient and the learning rate, on the reward
model, on the reward model and gold together, and on gold, from one SFT model and one reward model.

  python -m lm.launch --config=experiments/rlhf_step_size.py --workdir=runs/rlhf_step_size
  ...:smoke    a minutes-long version for tests (two variants: kl005, kl05)

data .. reward (the default lifecycle's) run once in ``<workdir>/shared``; each variant runs rlhf and
the eval of SFT and RLHF over the same prompts, so ``eval/report.md`` has RLHF - SFT paired, with the
gold win rate. Variants: ``kl05`` (the lifecycle's PPO: reward model, KL coefficient 0.5, lr 1e-4),
``kl005`` and ``kl02`` (coefficient 0.05 and 0.2), ``lr3e5`` (coefficient 0.05, lr 3e-5), ``mix_kl02``
(reward model and gold, 0.5 each, coefficient 0.2) and ``gold_kl02`` (gold only: RL from verifiable
rewards).
``<workdir>/comparison.md``: gold, proxy and KL on the fixed RL eval prompts and the eval accuracies.
"""

from experiments import lifecycle

COLUMNS = ('rlhf.eval_gold_reward', 'rlhf.eval_proxy_reward', 'rlhf.eval_kl', 'rlhf.response_length',
           'eval.rlhf.accuracy', 'eval.sft.accuracy')
VARIANTS = {
    'kl005': {'rlhf': {'kl_coef': 0.05}},
    'kl02': {'rlhf': {'kl_coef': 0.2}},
    'kl05': {},
    'lr3e5': {'rlhf': {'kl_coef': 0.05, 'optim': {'lr': 3e-5}}},
    'mix_kl02': {'rlhf': {'reward': 'mix', 'reward_weights': (0.5, 0.5), 'kl_coef': 0.2}},
    'gold_kl02': {'rlhf': {'reward': 'gold', 'kl_coef': 0.2}},
}


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/rlhf_step_size.py argument {arg!r}; valid: smoke')
  c = lifecycle.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft', 'preferences', 'reward')
  c.eval.models = ('sft', 'rlhf')
  c.variants = {k: VARIANTS[k] for k in ('kl005', 'kl05')} if arg == 'smoke' else VARIANTS
  c.comparison.columns = COLUMNS
  c.comparison.plot = ('rlhf.eval_kl', 'rlhf.eval_gold_reward')
  return c
