"""The lab's datasets as records for ``lm.data.builders``: pretraining text, SFT conversations,
rankings by a rater panel and eval prompts, drawn from the world and the task families."""

from lm.data import builders
from lm.lab import raters, tasks


def split(records, validation_fraction):
  """``{'train', 'validation'}``: the first ``validation_fraction`` (at least one record) held out."""
  n_val = max(1, int(len(records) * validation_fraction)) if len(records) > 1 else 0
  return {'train': records[n_val:], 'validation': records[:n_val]}


def pretraining_texts(world, c) -> list[str]:
  """The world's documents, or with ``data.pretrain_tfds='name[:split[:field]]'`` a public tfds
  dataset's text (e.g. ``tiny_shakespeare``, ``c4:train:text``; needs the ``[tf]`` extra and
  internet), cut into pieces of at most ~4000 characters at line breaks."""
  if not c.pretrain_tfds:
    return world.pretraining_documents(target_chars=c.pretrain_chars, seed=c.seed)
  name, split_name, field = (c.pretrain_tfds.split(':') + ['train', 'text'])[:3]
  pieces, chars = [], 0
  for text in builders.read_named(name, split_name or 'train', field or 'text'):
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


def preference_records(world, c, held: frozenset, panel: dict) -> list[dict]:
  """``data.preferences.n_prompts`` prompts (none of them in ``held``), K candidates each, ranked by
  ``panel`` (``lm.lab.raters.Panel`` settings)."""
  p = c.preferences
  prompts = tasks.mixture(world, p.mix, p.n_prompts, c.seed + 1, exclude=held)
  return raters.preference_records(world, prompts, raters.Panel(**panel), p.k, seed=c.seed)


def eval_prompt_keys(tfds_dir) -> frozenset:
  """``tasks.prompt_key`` of every eval prompt."""
  return frozenset(tasks.prompt_key(r['prompt']) for r in builders.read(builders.EvalSet, tfds_dir, 'test'))
