"""The report card: what SFT should teach, measured with the lab's gold scorers through the sampler.

  examples = select(builders.read(builders.EvalSet, tfds_dir, 'test'), max_examples=50)
  rows = respond(params, model, tok, examples, max_new_tokens=128, batch_size=64)
  card = report(rows)   # {'metrics': {name: value}, 'sets': [{family, variant, n, accuracy}]}

A row is one scored response (the traces): ``family``, ``variant``, ``meta``, ``prompt``,
``response`` (the parsed assistant message), ``finished`` (the turn ended with ``<|end|>`` before
the token budget ran out) and ``score`` (``tasks.score``). Every skill below is a function of rows,
so it can be checked on hand-made responses. Tools are not run here (they come with the tools
issue): a tool-variant response is scored on the text the model wrote before its tool call.
"""

import json
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np

from lm import sample
from lm.data import tasks
from lm.tokenizer import END_ID


def select(records, max_examples: int = 0, skip_variants=()) -> list[tasks.Example]:
  """EvalSet records as Examples: the first ``max_examples`` of each (family, variant) (0: all)."""
  counts, out = defaultdict(int), []
  for r in records:
    key = (r['family'], r['variant'])
    if r['variant'] in skip_variants or (max_examples and counts[key] >= max_examples):
      continue
    if r['family'] not in tasks.TASKS:
      raise ValueError(f'eval record {len(out)}: unknown task family {r["family"]!r}')
    counts[key] += 1
    out.append(tasks.Example(r['family'], r['variant'], r['prompt'], r['reference'], r['meta']))
  return out


def respond(params, model, tok, examples, max_new_tokens: int, batch_size: int, mesh=None,
            rules=None, seed: int = 0) -> list[dict]:
  """Greedy responses to every example's prompt, scored: one row each (see the module doc)."""
  cfg = sample.SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
  kwargs = {} if rules is None else {'rules': rules}
  rows = []
  for start in range(0, len(examples), batch_size):
    batch = examples[start:start + batch_size]
    replies = sample.complete_chats(params, model, tok, [e.prompt for e in batch], cfg,
                                    jax.random.key(seed), mesh=mesh, **kwargs)
    for ex, reply in zip(batch, replies):
      finished = reply['finished'] and int(reply['ids'][-1]) == END_ID
      message = {k: v for k, v in reply.items() if k not in ('ids', 'finished')}
      rows.append(dict(family=ex.family, variant=ex.variant, meta=ex.meta, prompt=ex.prompt,
                       response=message, finished=finished, score=tasks.score(ex, [message])))
  return rows


# ------------------------------------------------------------------------------ skills

def _mean(values):
  values = list(values)
  return float(np.mean(values)) if values else float('nan')


def _text(row) -> str:
  return row['response'].get('content') or ''


def _of(rows, family):
  return [r for r in rows if r['family'] == family]


def accuracy_by_set(rows) -> list[dict]:
  """Mean gold score per (family, variant)."""
  groups = defaultdict(list)
  for r in rows:
    groups[(r['family'], r['variant'])].append(r['score'])
  return [{'family': f, 'variant': v, 'n': len(s), 'accuracy': _mean(s)} for (f, v), s in sorted(groups.items())]


def format_following(rows) -> float:
  """Fraction of responses that end their turn with ``<|end|>`` within the token budget."""
  return _mean(r['finished'] for r in rows)


def world_qa_accuracy(rows) -> float:
  """Mean gold score on questions about the world's known entities."""
  return _mean(r['score'] for r in _of(rows, 'world_qa'))


def hallucination_rate(rows) -> float:
  """Fraction of questions about unknown (held-out) entities answered without saying "I don't know"."""
  return _mean(not tasks.is_idk(_text(r)) for r in _of(rows, 'unknown_entity'))


def refusal_rates(rows) -> dict:
  """Refusals on harmful safety prompts (want 1) and on their benign twins (over-refusal, want 0)."""
  safety = _of(rows, 'safety')
  return {'harmful_refusal_rate': _mean(tasks.is_refusal(_text(r)) for r in safety if r['meta']['harmful']),
          'over_refusal_rate': _mean(tasks.is_refusal(_text(r)) for r in safety if not r['meta']['harmful'])}


def length_errors(rows) -> dict:
  """Mean |words - N| on "exactly N words" prompts and |lines - N| on "N lines" prompts."""
  def error(r):
    got = tasks.count_words(_text(r)) if r['meta']['kind'] == 'words' else tasks.count_lines(_text(r))
    return abs(got - r['meta']['n'])
  rows = _of(rows, 'length_control')
  return {f'length_error_{kind}': _mean(error(r) for r in rows if r['meta']['kind'] == kind)
          for kind in ('words', 'lines')}


def translation_exact_match(rows) -> float:
  """Fraction of translations equal to the reference (the translation scorer is exact match)."""
  return _mean(r['score'] for r in _of(rows, 'translation'))


def report(rows) -> dict:
  """``{'metrics': headline skills (flat), 'sets': accuracy per (family, variant)}``."""
  sets = accuracy_by_set(rows)
  metrics = {'accuracy': _mean(r['score'] for r in rows), 'format_following': format_following(rows),
             'world_qa_accuracy': world_qa_accuracy(rows), 'hallucination_rate': hallucination_rate(rows),
             **refusal_rates(rows), **length_errors(rows), 'translation_exact_match': translation_exact_match(rows)}
  return {'metrics': metrics, 'sets': sets}


def write_traces(path, rows) -> None:
  """One JSON line per row: prompt, response, finished, score, family, variant, meta."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('w') as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False, default=str) + '\n')


def markdown(cards: dict) -> str:
  """A table of ``{model name: report(...)}``: one row per metric and per set, one column per model."""
  names = list(cards)
  lines = ['| metric | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']

  def add(label, values):
    lines.append(f'| {label} | ' + ' | '.join('-' if v is None or v != v else f'{v:.3f}' for v in values) + ' |')

  for key in next(iter(cards.values()))['metrics']:
    add(key, [cards[n]['metrics'].get(key) for n in names])
  by_set = {n: {(s['family'], s['variant']): s for s in cards[n]['sets']} for n in names}
  for key in sorted({k for sets in by_set.values() for k in sets}):
    n = next(sets[key]['n'] for sets in by_set.values() if key in sets)
    add(f'{key[0]}/{key[1]} (n={n})', [by_set[m].get(key, {}).get('accuracy') for m in names])
  return '\n'.join(lines) + '\n'
