"""Data stage: the lab's world and everything generated from it, as tfds array_record datasets.

Writes under ``<workdir>/data/tfds``: ``PretrainCorpus`` (train, validation), ``SftConversations``
(train, validation; a mix of task families with weights), ``PreferenceRankings`` (train,
validation; K responses ranked by a simulated panel) and ``EvalSet`` (test). Eval prompts never
appear in the SFT or preference sets.
"""

from pathlib import Path

import jax

from lm import outputs
from lm.data import builders, datasets
from lm.lab import tasks
from lm.stages import common


def run(config, workdir, inputs) -> outputs.Data:
  del inputs
  c = config.data
  out = Path(workdir) / 'data' / 'tfds'
  world = common.world(config)
  counts = {}
  if jax.process_index() == 0:
    docs = [{'text': d} for d in datasets.pretraining_texts(world, c)]
    builders.build(builders.PretrainCorpus, out, datasets.split(docs, c.validation_fraction))

    evals = tasks.mixture(world, [(f, v, 1.0) for f, v in c.eval_sets], c.eval_examples * len(c.eval_sets),
                          c.seed + 2)
    builders.build(builders.EvalSet, out, {'test': [
        {'prompt': e.prompt, 'reference': e.reference, 'meta': e.meta, 'family': e.family, 'variant': e.variant}
        for e in evals]})
    held = frozenset(tasks.prompt_key(e.prompt) for e in evals)

    sft = tasks.mixture(world, c.sft_mix, c.sft_examples, c.seed, exclude=held)
    builders.build(builders.SftConversations, out, datasets.split(
        [{'messages': e.prompt + e.reference, 'family': e.family, 'variant': e.variant} for e in sft],
        c.validation_fraction))

    prefs = datasets.preference_records(world, c, held, c.preferences.panel)
    builders.build(builders.PreferenceRankings, out, datasets.split(prefs, c.preferences.validation_fraction))
    counts = {'pretrain_documents': len(docs), 'pretrain_chars': sum(len(d['text']) for d in docs),
              'sft_conversations': len(sft), 'preference_prompts': len(prefs), 'eval_examples': len(evals)}
  common.sync('data')
  return outputs.Data(tfds_dir=str(out), metrics=counts)
