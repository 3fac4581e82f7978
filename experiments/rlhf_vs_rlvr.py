"""What RL trains on: the reward model (RLHF), the lab's gold scorers (RL from verifiable rewards) or a mix,
with PPO and with GRPO, on the same prompts with the same budget, from one SFT model and one reward model.

  python -m lm.launch --config=experiments/rlhf_vs_rlvr.py --workdir=runs/rlhf_vs_rlvr
  ...:smoke    a minutes-long version for tests (the three PPO arms)

data .. reward (the lifecycle's, policy rankings included) run once in ``<workdir>/shared``; each variant
runs rlhf (30 iterations) and the eval of SFT and RLHF over the same prompts:
  * ``model``, ``gold``, ``mix``: the lifecycle's PPO (16 prompts an iteration, one sample each, KL
    coefficient 0.5) on ``rlhf.reward=model`` (``model`` is the lifecycle's own RLHF stage), ``gold``
    and ``mix`` (equal weights);
  * ``grpo_model``, ``grpo_gold``, ``grpo_mix``: GRPO, groups of 4 samples of 8 prompts, KL
    coefficient 0.05, on the same direct prompts;
  * ``all_model``, ``all_gold``: that GRPO on every SFT family (worked sums, counting, the calculator
    and knowledge base run inside the rollouts: ``rlhf.tools``), KL coefficient 0.1, so RL also sees
    the skills the eval asks for that the direct prompts leave out;
  * ``grpo_gold_t05``, ``all_gold_t05``: those two on gold, sampling at temperature 0.5 instead of 1
    (the tiny model's samples at 1 are right far less often than its greedy answers).
``<workdir>/comparison.md``: gold and proxy reward and KL on the fixed RL eval prompts, the eval set's
mean gold score; ``comparison.png``: gold reward against KL (the reward-KL plane). Gold is measured
whatever the run trains on.
"""

from experiments import lifecycle

COLUMNS = ('rlhf.eval_gold_reward', 'rlhf.eval_proxy_reward', 'rlhf.eval_kl', 'rlhf.eval_train_reward',
           'rlhf.response_length', 'eval.rlhf.accuracy', 'eval.sft.accuracy')
GRPO = dict(algorithm='grpo', group_size=4, prompts_per_iteration=8, kl_coef=0.05)
ALL = dict(GRPO, prompt_mix=lifecycle.SFT_MIX, tools=('calculator', 'knowledge_base'), max_prompt_len=72,
           max_new_tokens=184, kl_coef=0.1)  # 72 + 184 = the model's 256 positions
MIX = dict(reward='mix', reward_weights=(0.5, 0.5))
VARIANTS = {
    'model': {'rlhf': {'reward': 'model'}}, 'gold': {'rlhf': {'reward': 'gold'}}, 'mix': {'rlhf': MIX},
    'grpo_model': {'rlhf': dict(GRPO, reward='model')}, 'grpo_gold': {'rlhf': dict(GRPO, reward='gold')},
    'grpo_mix': {'rlhf': dict(GRPO, **MIX)},
    'all_model': {'rlhf': dict(ALL, reward='model')}, 'all_gold': {'rlhf': dict(ALL, reward='gold')},
    'grpo_gold_t05': {'rlhf': dict(GRPO, reward='gold', temperature=0.5)},
    'all_gold_t05': {'rlhf': dict(ALL, reward='gold', temperature=0.5)},
}


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/rlhf_vs_rlvr.py argument {arg!r}; valid: smoke')
  c = lifecycle.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft', 'preferences', 'reward')
  c.eval.models = ('sft', 'rlhf')
  c.variants = {k: VARIANTS[k] for k in ('model', 'gold', 'mix')} if arg == 'smoke' else VARIANTS
  c.comparison.columns = COLUMNS
  c.comparison.plot = ('rlhf.eval_kl', 'rlhf.eval_gold_reward')
  return c
