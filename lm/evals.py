"""The report card: what SFT should teach, measured with the lab's gold scorers through the sampler.

  examples = select(builders.read(builders.EvalSet, tfds_dir, 'test'), max_examples=50)
  rows = respond(params, model, tok, examples, max_new_tokens=128, batch_size=64)
  card = report(rows)   # {'metrics': {name: value}, 'sets': [{family, variant, n, accuracy}]}

A row is one scored response (the traces): ``family``, ``variant``, ``meta``, ``prompt``,
``response`` (the final assistant message: its ``content`` is the answer, its ``thinking`` apart),
``turn`` (every message of the assistant's turn: with tools, assistant -> tool -> ... -> assistant),
``calls`` (the tool calls with their results, ``lm.agent``), ``finished`` (the turn ended with
``<|end|>`` before the token budget ran out) and ``score`` (``tasks.score`` of the turn: scorers read
the last assistant message's content only, never the thinking or the tool results). Every skill
below is a function of rows, so it can be checked on hand-made responses.

Tools: prompts that offer them (``tasks.offers_tools``) run through ``lm.agent`` with the given
``tools`` (calls executed, results read, then the answer); with no tools the offer is removed from
the prompt and the plain sampler answers. Other prompts always use the plain sampler.
"""

import json
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np

from lm.inference import agent, sample
from lm.lab import tasks


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
            rules=None, seed: int = 0, tools: dict | None = None,
            agent_cfg: agent.AgentConfig = agent.AgentConfig(), temperature: float = 0.0) -> list[dict]:
  """Responses to every example's prompt, scored: one row each, in order (see the module doc).
  Greedy by default; at ``temperature > 0`` each batch samples with its own key from ``seed``."""
  cfg = sample.SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens)
  kwargs = {} if rules is None else {'rules': rules}
  rows = [None] * len(examples)
  for use_tools in (False, True):
    index = [i for i, e in enumerate(examples) if use_tools == (bool(tools) and tasks.offers_tools(e.prompt))]
    for start in range(0, len(index), batch_size):
      batch = index[start:start + batch_size]
      prompts = [examples[i].prompt if use_tools else tasks.without_tools(examples[i].prompt) for i in batch]
      rng = jax.random.fold_in(jax.random.key(seed), 2 * start + use_tools)
      if use_tools:
        turns = agent.complete_chats(params, model, tok, prompts, cfg, rng, tools, agent_cfg, mesh=mesh, **kwargs)
      else:
        turns = map(agent.plain_turn, sample.complete_chats(params, model, tok, prompts, cfg, rng, mesh=mesh, **kwargs))
      for i, prompt, t in zip(batch, prompts, turns):
        ex = examples[i]
        rows[i] = dict(family=ex.family, variant=ex.variant, meta=ex.meta, prompt=prompt, response=t['answer'],
                       turn=t['messages'], calls=t['calls'], finished=t['end_of_turn'],
                       score=tasks.score(ex, t['messages']))
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
  """Fraction of questions about unknown (held-out) entities answered without saying "I don't know"
  (without tools: the ``tool`` variant, where the model can look them up, is not counted)."""
  return _mean(not tasks.is_idk(_text(r)) for r in _of(rows, 'unknown_entity') if r['variant'] != 'tool')


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


def breakdown(rows, spec: str) -> dict:
  """Accuracy of the rows that ``spec`` names: ``family``, ``family/variant``, either followed by
  ``:meta_key`` for one value per distinct ``meta[meta_key]`` (e.g. ``arithmetic:digits``).

  Keys: ``acc[<family>[/<variant>]]`` or ``acc[<family>[/<variant>]:<key>=<value>]``, values sorted.
  """
  where, _, key = spec.partition(':')
  family, _, variant = where.partition('/')
  if family not in tasks.TASKS:
    raise ValueError(f'eval.breakdowns has {spec!r}: unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
  rows = [r for r in _of(rows, family) if variant in ('', r['variant'])]
  if not key:
    return {f'acc[{where}]': _mean(r['score'] for r in rows)}
  groups = defaultdict(list)
  for r in rows:
    if key not in r['meta']:
      raise ValueError(f'eval.breakdowns has {spec!r}: {family} examples have no meta {key!r} '
                       f'(they have {", ".join(sorted(r["meta"]))})')
    groups[r['meta'][key]].append(r['score'])
  return {f'acc[{where}:{key}={value}]': _mean(groups[value]) for value in sorted(groups)}


def report(rows, breakdowns=()) -> dict:
  """``{'metrics': headline skills (flat) and each of ``breakdowns``, 'sets': accuracy per (family, variant)}``."""
  sets = accuracy_by_set(rows)
  metrics = {'accuracy': _mean(r['score'] for r in rows), 'format_following': format_following(rows),
             'world_qa_accuracy': world_qa_accuracy(rows), 'hallucination_rate': hallucination_rate(rows),
             **refusal_rates(rows), **length_errors(rows), 'translation_exact_match': translation_exact_match(rows),
             'tool_calls_per_answer': _mean(len(r.get('calls', ())) for r in rows)}
  for spec in breakdowns:
    metrics.update(breakdown(rows, spec))
  return {'metrics': metrics, 'sets': sets}


def write_traces(path, rows) -> None:
  """One JSON line per row: prompt, response, turn, calls, finished, score, family, variant, meta."""
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
