"""Preferences stage: the rankings again, by this run's rater panel, in a dataset of their own.

The data stage already ranks ``data.preferences`` with its panel; this stage re-ranks the same
prompts and candidates (same seeds) with the panel of the current config, so that variants of an
experiment can share data, tokenizer, pretraining and SFT and differ only in who ranks (e.g. a
length-biased panel against an unbiased one). Later stages read ``preferences_dir(inputs)``.
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
    n = len(data.build_preferences(world, c, data.eval_prompt_keys(inputs['data']['tfds_dir']), out))
  data.sync('preferences')
  return {'tfds_dir': str(out), 'preference_prompts': n, 'panel': dict(c.preferences.panel)}
