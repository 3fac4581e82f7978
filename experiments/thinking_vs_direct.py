"""Does a scratchpad help? The same SFT conversations with their thinking kept or stripped, from one
shared pretrain; accuracy by digit count (arithmetic) and by word length (letter counting).

  python -m lm.launch --config=experiments/thinking_vs_direct.py --workdir=runs/thinking_vs_direct
  ...:smoke    a seconds-long version for tests

The SFT mix teaches arithmetic, word problems and letter counting only with worked scratchpads
(``thinking`` variants: long addition and multiplication digit by digit, words spelled out letter by
letter). Variant ``direct`` trains with ``sft.thinking=False``: every scratchpad stripped, so the
prompts and the answers are the same and only the thinking differs. Both answer the same held-out
prompts; ``<workdir>/comparison.md`` has ``eval.sft.acc[arithmetic:digits=N]`` (N = 1..5),
``eval.sft.acc[char_count:length=N]`` and the word problems' accuracy, one row per variant.
"""

from experiments import sft_tiny

MIX = (('arithmetic', 'thinking', 4.0), ('word_problem', 'thinking', 1.0), ('char_count', 'thinking', 2.0),
       ('world_qa', 'direct', 1.0), ('manners', 'direct', 0.5))


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/thinking_vs_direct.py argument {arg!r}; valid: smoke')
  c = sft_tiny.get_config(arg)
  c.shared_stages = ('data', 'tokenizer', 'pretrain')
  c.data.sft_mix = MIX
  c.data.eval_sets = (('arithmetic', 'thinking'), ('char_count', 'thinking'), ('word_problem', 'thinking'))
  c.eval.models = ('sft',)
  c.eval.breakdowns = ('arithmetic:digits', 'char_count:length', 'word_problem')
  if arg == 'smoke':
    c.eval.max_new_tokens = 32
  else:
    c.model.max_seq_len = 512
    c.data.sft_examples, c.data.eval_examples, c.eval.max_examples = 6000, 150, 150
    c.sft.seq_len, c.sft.steps = 320, 300  # the longest scratchpads (5-digit subtraction): ~280 tokens
    c.eval.max_new_tokens = 256
  c.variants = {'direct': {'sft': {'thinking': False}}, 'thinking': {'sft': {'thinking': True}}}
  return c
