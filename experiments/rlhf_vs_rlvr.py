"""What RL trains on: the reward model (RLHF), the lab's gold scorers (RL from verifiable rewards) or a mix,
on the same prompts with the same budget, from one SFT model and one reward model.

  python -m lm.launch --config=experiments/rlhf_vs_rlvr.py --workdir=runs/rlhf_vs_rlvr
  ...:smoke    a minutes-long version for tests

data .. reward (the lifecycle's, policy rankings included) run once in ``<workdir>/shared``; variants
``model`` (``rlhf.reward=model``), ``gold`` (``rlhf.reward=gold``) and ``mix`` (``rlhf.reward=mix``, equal
weights) each run rlhf and the eval of SFT and RLHF. ``<workdir>/comparison.md``: gold and proxy reward
and KL on the fixed RL eval prompts, the eval set's mean gold score; ``comparison.png``: gold reward
against KL (the reward-KL plane). Gold is measured whatever the run trains on.
"""

from experiments import lifecycle

COLUMNS = ('rlhf.eval_gold_reward', 'rlhf.eval_proxy_reward', 'rlhf.eval_kl', 'rlhf.eval_train_reward',
           'rlhf.response_length', 'eval.rlhf.accuracy', 'eval.sft.accuracy')


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/rlhf_vs_rlvr.py argument {arg!r}; valid: smoke')
  c = lifecycle.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft', 'preferences', 'reward')
  c.eval.models = ('sft', 'rlhf')
  c.variants = {'model': {'rlhf': {'reward': 'model'}}, 'gold': {'rlhf': {'reward': 'gold'}},
                'mix': {'rlhf': {'reward': 'mix', 'reward_weights': (0.5, 0.5)}}}
  c.comparison.columns = COLUMNS
  c.comparison.plot = ('rlhf.eval_kl', 'rlhf.eval_gold_reward')
  return c
