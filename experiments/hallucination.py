"""Hallucination on entities the model never saw: SFT with and without "I don't know" examples.

  python -m lm.launch --config=experiments/hallucination.py --workdir=runs/hallucination
  ...:smoke    a seconds-long version for tests

Each variant runs the whole pipeline (the SFT mix is made by the data stage; the pretraining text
and the held-out entities, which never appear in it, are the same). Variant ``with_idk`` trains on
the default SFT mix, which answers questions about held-out entities with "I don't know";
``without_idk`` drops those examples (and their tool variant). Both answer the same eval prompts;
``<workdir>/comparison.md``: hallucination rate on unknown entities (want low), world-QA accuracy on
known ones (the cost of saying "I don't know" too often) and overall accuracy.
"""

from experiments import sft_tiny
from lm.configs import base

COLUMNS = ('eval.sft.hallucination_rate', 'eval.sft.world_qa_accuracy', 'eval.sft.accuracy')


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/hallucination.py argument {arg!r}; valid: smoke')
  c = sft_tiny.get_config(arg)
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'eval')
  c.data.eval_sets = (('unknown_entity', 'direct'), ('world_qa', 'direct'))
  c.eval.models = ('sft',)
  without = tuple(m for m in base.SFT_MIX if m[0] != 'unknown_entity')
  c.variants = {'with_idk': {}, 'without_idk': {'data': {'sft_mix': without}}}
  c.comparison.columns = COLUMNS
  return c
