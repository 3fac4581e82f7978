"""Do tools help? Math and world facts answered with the calculator and the knowledge base, against
the same model family trained and asked without them, from one shared pretrain.

  python -m lm.launch --config=experiments/tools_vs_none.py --workdir=runs/tools_vs_none
  ...:smoke    a seconds-long version for tests

The SFT mix has each question both ways: ``direct`` (no tools offered: answer, or say "I don't know"
about an entity held out of pretraining) and ``tool`` (tools offered in the system prompt: the
calculator for multi-digit arithmetic and word problems, one-digit sums still answered directly, the
knowledge base for held-out entities, answered from its real result). Variant ``none`` trains with
``sft.tools=False`` (the tool conversations left out) and is asked with ``eval.tools=()`` (the offer
removed); variant ``tools`` trains on everything and runs its calls through ``lm.agent``.
``<workdir>/comparison.md``: ``eval.sft.acc[arithmetic:digits=N]``, ``acc[word_problem]``,
``acc[unknown_entity/tool]`` (facts about held-out entities stated correctly), ``acc[world_qa]``
(facts seen in pretraining) and ``tool_calls_per_answer``, one row per variant.
"""

from experiments import sft_tiny

MIX = (('arithmetic', 'direct', 1.0), ('arithmetic', 'tool', 2.0), ('word_problem', 'direct', 0.5),
       ('word_problem', 'tool', 1.0), ('unknown_entity', 'direct', 1.0), ('unknown_entity', 'tool', 2.0),
       ('world_qa', 'direct', 2.0), ('manners', 'direct', 0.5))


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/tools_vs_none.py argument {arg!r}; valid: smoke')
  c = sft_tiny.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain')
  c.data.sft_mix = MIX
  c.data.eval_sets = (('arithmetic', 'tool'), ('word_problem', 'tool'), ('unknown_entity', 'tool'),
                      ('world_qa', 'direct'))
  c.eval.models = ('sft',)
  c.eval.breakdowns = ('arithmetic:digits', 'word_problem', 'unknown_entity/tool', 'world_qa')
  c.eval.max_tool_calls = 2
  if arg == 'smoke':
    c.eval.max_new_tokens = 32
  else:
    c.data.sft_examples, c.data.eval_examples, c.eval.max_examples = 6000, 100, 100
    c.sft.steps = 300  # the longest conversation, a lookup (offer, call, article, answer), is ~200 tokens
    c.eval.max_new_tokens = 64
  c.variants = {'none': {'sft': {'tools': False}, 'eval': {'tools': ()}}, 'tools': {'sft': {'tools': True}}}
  return c
