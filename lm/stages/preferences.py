"""Preferences stage: the rankings again, by the ``raters.panel`` of this config, in a dataset of their own.

The data stage ranks ``data.preferences`` with ``data.preferences.panel``; this stage re-ranks the
same prompts and candidates (same seeds) with ``raters.panel``, so that variants of an experiment
can share data, tokenizer, pretraining and SFT and differ only in who ranks (e.g. a length-biased
panel against an unbiased one). Later stages read ``preferences_dir(inputs)``.
"""

from pathlib import Path

import jax

from lm.data.world import World
from lm.stages import data


def preferences_dir(inputs) -> str:
  """Where the rankings are: this stage's dataset when it ran, else the data stage's."""
  return (inputs.get('preferences') or inputs['data'])['tfds_dir']


def run(config, workdir, inputs) -> dict:
  c = config.data
  out = Path(workdir) / 'preferences' / 'tfds'
  n = 0
  if jax.process_index() == 0:
    world = World(seed=c.seed, **c.world)
    held = data.eval_prompt_keys(inputs['data']['tfds_dir'])
    n = len(data.build_preferences(world, c, held, out, config.raters.panel))
  data.sync('preferences')
  return {'tfds_dir': str(out), 'preference_prompts': n, 'panel': dict(config.raters.panel)}
