"""Why can't the model count letters? BPE pieces hide the letters; a character-level tokenizer shows
them; spelling the word out in thinking shows them to a BPE model too. Letter counting (and
spelling), accuracy by word length.

  python -m lm.launch --config=experiments/tokenization_counting.py --workdir=runs/tokenization_counting
  ...:smoke    a seconds-long version for tests

Variants (the data stage shared; each trains its own tokenizer, pretrain and SFT on the same text):
``bpe`` (sentencepiece BPE, answers directly: ``sft.thinking=False``), ``char`` (character-level,
directly) and ``bpe_spelled`` (BPE, thinking kept: the word spelled out and the letter counted).
Sequence lengths are the same in tokens, so the character model sees fewer words per step.
``<workdir>/comparison.md``: ``eval.sft.acc[char_count:length=N]``, ``acc[char_count]`` and
``acc[spelling]``, one row per variant.
"""

from experiments import sft_tiny

MIX = (('char_count', 'thinking', 4.0), ('spelling', 'direct', 1.0), ('world_qa', 'direct', 1.0),
       ('manners', 'direct', 0.5))


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/tokenization_counting.py argument {arg!r}; valid: smoke')
  c = sft_tiny.get_config(arg)
  c.shared_stages = ('data',)
  c.data.sft_mix = MIX
  c.data.eval_sets = (('char_count', 'thinking'), ('spelling', 'direct'))
  c.eval.models = ('sft',)
  c.eval.breakdowns = ('char_count:length', 'char_count', 'spelling')
  if arg == 'smoke':
    c.eval.max_new_tokens = 48
  else:
    c.data.sft_examples, c.data.eval_examples, c.eval.max_examples = 4000, 200, 200
    c.eval.max_new_tokens = 96
  c.variants = {'bpe': {'tokenizer': {'kind': 'bpe'}, 'sft': {'thinking': False}},
                'char': {'tokenizer': {'kind': 'char'}, 'sft': {'thinking': False}},
                'bpe_spelled': {'tokenizer': {'kind': 'bpe'}, 'sft': {'thinking': True}}}
  return c
