"""Data stage: the lab's world and everything generated from it, as tfds array_record datasets.

Writes under ``<workdir>/data/tfds``: ``PretrainCorpus`` (train, validation), ``SftConversations``
(train, validation; a mix of task families with weights), ``PreferenceRankings`` (train,
validation; K responses ranked by a simulated panel) and ``EvalSet`` (test). Eval prompts never
appear in the SFT or preference sets.
"""

import json
import random
from pathlib import Path

import jax

from lm import raters
from lm.data import builders, tasks
from lm.data.world import World


def _split(records, validation_fraction):
  n_val = max(1, int(len(records) * validation_fraction)) if len(records) > 1 else 0
  return {'train': records[n_val:], 'validation': records[:n_val]}


def mixture(world, mix, n: int, seed: int, exclude=frozenset()) -> list[tasks.Example]:
  """``n`` examples drawn from ``mix`` (``(family, variant, weight)`` triples), shuffled by seed,
  leaving out any whose prompt is in ``exclude``."""
  total = sum(w for _, _, w in mix)
  examples = []
  for i, (family, variant, weight) in enumerate(mix):
    if family not in tasks.TASKS:
      raise ValueError(f'data mix: unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
    count = round(n * weight / total)
    drawn = tasks.sample(world, family, count, seed=seed + i, variant=variant)
    examples += [e for e in drawn if _prompt_key(e.prompt) not in exclude]
  random.Random(seed).shuffle(examples)
  return examples


def pretraining_texts(world, c) -> list[str]:
  """The world's documents, or with ``data.pretrain_tfds='name[:split[:field]]'`` a public tfds
  dataset's text (e.g. ``tiny_shakespeare``, ``c4:train:text``; needs the ``[tf]`` extra and
  internet), cut into pieces of at most ~4000 characters at line breaks."""
  if not c.pretrain_tfds:
    return world.pretraining_documents(target_chars=c.pretrain_chars, seed=c.seed)
  name, split, field = (c.pretrain_tfds.split(':') + ['train', 'text'])[:3]
  pieces, chars = [], 0
  for text in builders.read_named(name, split or 'train', field or 'text'):
    piece = ''
    for line in text.splitlines(keepends=True):
      if len(piece) + len(line) > 4000 and piece:
        pieces.append(piece)
        piece = ''
      piece += line
    pieces.append(piece)
    chars += len(text)
    if chars >= c.pretrain_chars:
      break
  return pieces


def _prompt_key(prompt) -> str:
  return json.dumps(prompt, sort_keys=True)


def build_preferences(world, c, held: frozenset, out, panel: dict) -> list[dict]:
  """``PreferenceRankings`` under ``out``: ``data.preferences.n_prompts`` prompts (none of them an
  eval prompt), K candidates each, ranked by ``panel``."""
  p = c.preferences
  prompts = mixture(world, p.mix, p.n_prompts, c.seed + 1, exclude=held)
  prefs = raters.preference_records(world, prompts, raters.Panel(**panel), p.k, seed=c.seed)
  builders.build(builders.PreferenceRankings, out, _split(prefs, p.validation_fraction))
  return prefs


def eval_prompt_keys(tfds_dir) -> frozenset:
  return frozenset(_prompt_key(r['prompt']) for r in builders.read(builders.EvalSet, tfds_dir, 'test'))


def run(config, workdir, inputs) -> dict:
  del inputs
  c = config.data
  out = Path(workdir) / 'data' / 'tfds'
  world = World(seed=c.seed, **c.world)
  counts = {}
  if jax.process_index() == 0:
    docs = [{'text': d} for d in pretraining_texts(world, c)]
    builders.build(builders.PretrainCorpus, out, _split(docs, c.validation_fraction))

    evals = mixture(world, [(f, v, 1.0) for f, v in c.eval_sets], c.eval_examples * len(c.eval_sets), c.seed + 2)
    builders.build(builders.EvalSet, out, {'test': [
        {'prompt': e.prompt, 'reference': e.reference, 'meta': e.meta, 'family': e.family, 'variant': e.variant}
        for e in evals]})
    held = frozenset(_prompt_key(e.prompt) for e in evals)

    sft = mixture(world, c.sft_mix, c.sft_examples, c.seed, exclude=held)
    builders.build(builders.SftConversations, out, _split(
        [{'messages': e.prompt + e.reference, 'family': e.family, 'variant': e.variant} for e in sft],
        c.validation_fraction))

    prefs = build_preferences(world, c, held, out, c.preferences.panel)
    counts = {'pretrain_documents': len(docs), 'pretrain_chars': sum(len(d['text']) for d in docs),
              'sft_conversations': len(sft), 'preference_prompts': len(prefs), 'eval_examples': len(evals)}
  sync('data')
  return {'tfds_dir': str(out), **counts}


def sync(name):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
