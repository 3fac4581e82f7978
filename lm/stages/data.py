"""Data stage: the lab's world and everything generated from it, as tfds array_record datasets.

Writes under ``<workdir>/data/tfds``: ``PretrainCorpus`` (train, validation), ``SftConversations``
(train, validation; a mix of task families with weights), ``PreferenceRankings`` (train,
validation; K responses ranked by a simulated panel) and ``EvalSet`` (test). Its metrics count them
and measure the panel's agreement on the rankings per family and domain (``lm.lab.agreement``: Kendall's
W, Krippendorff's alpha, the panel's pairwise accuracy against gold). Each is drawn from its
own split of the task families' items (``lm.lab.splits``): no eval item reaches SFT, the preferences
or the pretraining text of the text families, in any template, with or without the tools offer; the
validation splits hold whole items too.
"""

from pathlib import Path

import jax

from lm import outputs
from lm.data import builders, datasets
from lm.lab import agreement
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

    evals = datasets.eval_examples(world, c)
    builders.build(builders.EvalSet, out, {'test': [
        {'prompt': e.prompt, 'reference': e.reference, 'meta': e.meta, 'family': e.family, 'variant': e.variant}
        for e in evals]})

    sft = datasets.sft_examples(world, c)
    builders.build(builders.SftConversations, out, datasets.split(
        [{'messages': e.prompt + e.reference, 'family': e.family, 'variant': e.variant} for e in sft],
        c.validation_fraction, [datasets.item(e) for e in sft]))

    prefs = datasets.preference_records(world, c, c.preferences.panel)
    builders.build(builders.PreferenceRankings, out, prefs)
    counts = {'pretrain_documents': len(docs), 'pretrain_chars': sum(len(d['text']) for d in docs),
              'sft_conversations': len(sft), 'preference_prompts': sum(map(len, prefs.values())),
              'eval_examples': len(evals), **agreement.summary(prefs['train'] + prefs['validation'])}
  common.sync('data')
  return outputs.Data(tfds_dir=str(out), metrics=counts)
