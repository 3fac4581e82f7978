"""The lab's datasets as records for ``lm.data.builders``: pretraining text, SFT conversations,
rankings by a rater panel and eval prompts, each drawn from its own split of the task families'
items (``lm.lab.splits``), so no eval item is trained on in any template or with or without tools."""

from collections import Counter

from lm.data import builders
from lm.lab import raters, splits, tasks
from lm.lab.tasks import qa


def item(example: tasks.Example) -> str:
  """The example's family and item key: examples with the same one ask the same question."""
  return f'{example.family}: {tasks.key(example)}'


def split(records, validation_fraction, keys=None, strata=None):
  """``{'train', 'validation'}``: the first ``validation_fraction`` (at least one record) held out.
  With ``keys`` (one per record), validation takes whole items: the records of the first keys met,
  until it holds at least that many, so no key is on both sides. With ``strata`` too (one label per
  record, e.g. the family), that is done within each stratum in turn, so every stratum holds about its
  share: a key held for one stratum is held in all."""
  n_val = max(1, int(len(records) * validation_fraction)) if len(records) > 1 else 0
  if keys is None:
    return {'train': records[n_val:], 'validation': records[:n_val]}
  strata = [''] * len(records) if strata is None else list(strata)
  held = set()
  for stratum in dict.fromkeys(strata):
    mine = [k for k, s in zip(keys, strata) if s == stratum]
    want = max(1, int(len(mine) * validation_fraction)) if len(records) > 1 else 0
    counts, n_held = Counter(mine), sum(k in held for k in mine)
    for k in mine:
      if n_held >= want:
        break
      if k not in held:
        held.add(k)
        n_held += counts[k]
  return {'train': [r for r, k in zip(records, keys) if k not in held],
          'validation': [r for r, k in zip(records, keys) if k in held]}


def pretraining_texts(world, c) -> list[str]:
  """The world's documents (no eval item of the text families: ``lm.lab.splits.pretraining_documents``),
  or with ``data.pretrain_tfds='name[:split[:field]]'`` a public tfds dataset's text (e.g.
  ``tiny_shakespeare``, ``c4:train:text``; needs the ``[tf]`` extra and internet), cut into pieces of
  at most ~4000 characters at line breaks."""
  if not c.pretrain_tfds:
    return splits.pretraining_documents(world, target_chars=c.pretrain_chars, seed=c.seed, mix=c.pretrain_mix,
                                        fact_articles=c.fact_articles)
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


def task_options(c) -> dict:
  """``data.task_options`` as ``{family: {option: value}}``, the options left at () dropped (the family's own)."""
  chosen = {family: {k: tuple(v) for k, v in opts.items() if v} for family, opts in c.task_options.items()}
  return {family: opts for family, opts in chosen.items() if opts}


def eval_examples(world, c) -> list[tasks.Example]:
  """The ``data.eval_sets`` from the eval split, set after set: ``data.eval_examples`` each, or the size
  ``data.eval_sizes`` gives the family (``(family, n)`` pairs)."""
  sizes, options = dict(c.eval_sizes), task_options(c)
  return [e for family, variant in c.eval_sets
          for e in splits.draw(world, family, variant, 'eval', sizes.get(family, c.eval_examples),
                               **options.get(family, {}))]


def sft_examples(world, c) -> list[tasks.Example]:
  """``data.sft_examples`` of ``data.sft_mix`` from the sft split. ``data.sft_strangers`` is the fraction
  of its unknown_entity examples asked about strangers instead (``lm.lab.tasks.qa.stranger_unknown_entity``:
  an entity made up per example, so SFT teaches "I don't know" and the look-up on thousands of unknown
  names, not the sft split's few held-out entities; the eval set is unchanged). ``data.sft_writers`` is the fraction
  written by experts (the references); the others, drawn at random (stream ``sft writers``), a lay
  writer answers (``lm.lab.raters.lay_answer``: plausible, sometimes wrong or padded)."""
  examples = splits.draw_mix(world, c.sft_mix, c.sft_examples, 'sft', options=task_options(c))
  if not 0 <= c.sft_strangers <= 1:
    raise ValueError(f'data.sft_strangers={c.sft_strangers} must be a fraction in [0, 1]')
  unknown = [i for i, ex in enumerate(examples) if ex.family == 'unknown_entity']
  if c.sft_strangers and unknown:
    rng = splits.stream(world, 'sft strangers')
    for i in sorted(rng.sample(unknown, round(c.sft_strangers * len(unknown)))):
      examples[i] = qa.stranger_unknown_entity(world, rng, examples[i].variant)
  if not 0 <= c.sft_writers <= 1:
    raise ValueError(f'data.sft_writers={c.sft_writers} must be a fraction in [0, 1]')
  if c.sft_writers < 1:
    rng = splits.stream(world, 'sft writers')
    for i in sorted(rng.sample(range(len(examples)), round((1 - c.sft_writers) * len(examples)))):
      ex = examples[i]
      examples[i] = tasks.Example(ex.family, ex.variant, ex.prompt, raters.lay_answer(world, ex, rng), ex.meta)
  return examples


def preference_prompts(world, c) -> list[tasks.Example]:
  """``data.preferences.n_prompts`` of ``data.preferences.mix`` from the preferences split."""
  return splits.draw_mix(world, c.preferences.mix, c.preferences.n_prompts, 'preferences', options=task_options(c))


def preference_records(world, c, panel: dict, extra=()) -> dict:
  """``{'train', 'validation'}`` rankings: K candidates for each preference prompt, ranked by ``panel``
  (``lm.lab.raters.Panel`` settings), then the ``extra`` ``(record, example)`` pairs (e.g. rankings of
  a model's samples); validation holds whole items of both, about its share of each family's
  candidates and of each family's samples."""
  p = c.preferences
  prompts = preference_prompts(world, c)
  records = raters.preference_records(world, prompts, raters.Panel(**panel), p.k, seed=c.seed)
  for r in records:
    r['origin'] = {'source': 'candidates'}
  examples = prompts + [e for _, e in extra]
  records += [r for r, _ in extra]
  strata = [f'{e.family} {r["origin"]["source"]}' for r, e in zip(records, examples)]
  return split(records, p.validation_fraction, [item(e) for e in examples], strata)
