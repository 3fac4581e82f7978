"""Preferences stage: the rankings again, by the ``raters.panel`` of this config, in a dataset of their own.

The data stage ranks ``data.preferences`` with ``data.preferences.panel``; this stage re-ranks the
same prompts and candidates (same splits and seeds) with ``raters.panel``, so that variants of an experiment
can share data, tokenizer, pretraining and SFT and differ only in who ranks (e.g. a length-biased
panel against an unbiased one). Later stages read ``common.rankings_dir(inputs)``.
"""

from pathlib import Path

import jax

from lm import outputs
from lm.data import builders, datasets
from lm.stages import common


def run(config, workdir, inputs) -> outputs.Rankings:
  common.need(inputs, 'data', 'preferences')  # the same world and prompts as the data stage's rankings
  c = config.data
  out = Path(workdir) / 'preferences' / 'tfds'
  n = 0
  if jax.process_index() == 0:
    records = datasets.preference_records(common.world(config), c, config.raters.panel)
    builders.build(builders.PreferenceRankings, out, records)
    n = sum(map(len, records.values()))
  common.sync('preferences')
  return outputs.Rankings(tfds_dir=str(out), panel=dict(config.raters.panel), metrics={'preference_prompts': n})
