"""Tools inside RL: GRPO on arithmetic and on facts about entities pretraining never named, with the
calculator and the knowledge base run inside the rollouts, against the same GRPO without tools.

  python -m lm.launch --config=experiments/rl_tools.py --workdir=runs/rl_tools
  ...:smoke    a minutes-long version for tests

data .. reward run once in ``<workdir>/shared`` (SFT teaches both ways: the tool variants call the tools);
variants ``tools`` (``rlhf.tools``: the prompts keep the tools offer, the calls run through
``lm.inference.agent``, tool results are written into the KV cache and carry no gradient) and ``none``
(the offer removed). Both train on the gold scorers (``rlhf.reward=gold``: a verifiable reward reads the
final answer) with GRPO groups of 4. ``<workdir>/comparison.md``: gold reward on the RL eval prompts,
tool calls per answer, and the eval stage's accuracy on arithmetic with the calculator and on held-out
facts with the knowledge base.
"""

from experiments import lifecycle

MIX = (('arithmetic', 'tool', 2.0), ('unknown_entity', 'tool', 1.0))
COLUMNS = ('rlhf.eval_gold_reward', 'rlhf.eval_tool_calls', 'rlhf.eval_kl', 'eval.rlhf.acc[arithmetic/tool]',
           'eval.rlhf.acc[unknown_entity/tool]', 'eval.sft.acc[arithmetic/tool]', 'eval.sft.acc[unknown_entity/tool]')


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/rl_tools.py argument {arg!r}; valid: smoke')
  c = lifecycle.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft', 'preferences', 'reward')
  c.data.eval_sets = (('arithmetic', 'tool'), ('unknown_entity', 'tool'))
  c.eval.models = ('sft', 'rlhf')
  c.eval.breakdowns = ('arithmetic/tool', 'unknown_entity/tool')
  group = 2 if arg == 'smoke' else 4
  c.rlhf.update(algorithm='grpo', group_size=group, reward='gold', prompt_mix=MIX,
                prompts_per_iteration=max(c.rlhf.prompts_per_iteration // group, 8 // group) * 2,
                max_prompt_len=96)
  c.variants = {'tools': {'rlhf': {'tools': ('calculator', 'knowledge_base')}}, 'none': {'rlhf': {'tools': ()}}}
  c.comparison.columns = COLUMNS
  return c
