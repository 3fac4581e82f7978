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

from lm import stats
from lm.inference import agent, sample
from lm.lab import tasks
from lm.lab.world import DIGIT_STEP, LETTER_STEP, scratchpad, spelled_count


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
  Greedy by default; at ``temperature > 0`` each batch samples with its own key from ``seed``.

  Batches hold one set after another (family, variant): a batch decodes until its longest answer ends,
  and a set's answers are alike in length, so short answers do not wait on a worked scratchpad. Every
  batch pads its prompts to the longest of them all and its rows to ``batch_size``: one compiled sampler,
  not one per prompt bucket or batch size (each a couple of seconds to compile; the decode attends to
  the cache's filled blocks of 128 slots, which a longer padding rarely adds to)."""
  cfg = sample.SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens)
  kwargs = {} if rules is None else {'rules': rules}
  rows = [None] * len(examples)
  for use_tools in (False, True):
    index = sorted((i for i, e in enumerate(examples) if use_tools == (bool(tools) and tasks.offers_tools(e.prompt))),
                   key=lambda i: (examples[i].family, examples[i].variant))
    prompts_all = {i: examples[i].prompt if use_tools else tasks.without_tools(examples[i].prompt) for i in index}
    kwargs.update(prompt_len=sample.longest_prompt(tok, prompts_all.values()), min_batch=batch_size)
    for start in range(0, len(index), batch_size):
      batch = index[start:start + batch_size]
      prompts = [prompts_all[i] for i in batch]
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

def _text(row) -> str:
  return row['response'].get('content') or ''


def _of(rows, family):
  return [r for r in rows if r['family'] == family]


def _length_error(r) -> float:
  got = tasks.count_words(_text(r)) if r['meta']['kind'] == 'words' else tasks.count_lines(_text(r))
  return float(abs(got - r['meta']['n']))


def _is(r, family: str, variant: str) -> bool:
  return (r['family'], r['variant']) == (family, variant)


def _asks_a_sum(r) -> bool:
  """A worked sum, or a calculator sum of 2 digits or more (a 1-digit one is answered directly)."""
  return _is(r, 'arithmetic', 'thinking') or (_is(r, 'arithmetic', 'tool') and r['meta']['digits'] > 1)


def _thinking(r) -> str:
  return r['response'].get('thinking') or ''


def _call(r, tool: str) -> dict | None:
  """The arguments of ``r``'s first call of ``tool``, or None."""
  return next(((c.get('arguments') or {}) for c in r.get('calls', ()) if c.get('name') == tool), None)


def _opening(text: str) -> str:
  """A worked scratchpad's opening, up to its first colon: "249 + 816:", 'Counting "r" in "mirror":'."""
  return text.partition(':')[0] + ':'


def _copies_the_sum(r) -> float:
  m = r['meta']
  asked = _opening(scratchpad(m['a'], m['b'], m['op']))
  if r['variant'] == 'thinking':
    return float(_thinking(r).startswith(asked))
  call = _call(r, 'calculator')
  return float(call is not None and str(call.get('expression', '')).replace(' ', '') + ':' == asked.replace(' ', ''))


def _digit_steps_right(r) -> float:
  steps = DIGIT_STEP.findall(_thinking(r))
  return sum(int(x) + int(y) + int(c) == int(s) for x, y, c, s in steps) / len(steps) if steps else float('nan')


def _copies_the_word(r) -> float:
  """The scratchpad opens with the letter and the word asked, quoted or bare (``World.restate``)."""
  word, letter = r['meta']['word'], r['meta']['letter']
  return float(any(_thinking(r).startswith(_opening(spelled_count(word, letter, quoted=q))) for q in (True, False)))


def _letter_steps_right(r) -> float:
  steps = LETTER_STEP.findall(_thinking(r))
  return sum((x == y) == (said == 'yes') for x, y, said in steps) / len(steps) if steps else float('nan')


def _names_the_subject(r) -> float:
  call = _call(r, 'knowledge_base')
  plain = lambda name: name.lower().removeprefix('the ')  # noqa: E731
  return float(call is not None and plain(str(call.get('query', ''))) == plain(r['meta']['subject']))


# name: (the rows it reads, the value of one row, better when). A rate is the mean of 0/1 values.
METRICS = {
    'accuracy': (lambda r: True, lambda r: r['score'], 'higher'),
    'format_following': (lambda r: True, lambda r: float(r['finished'] and bool(_text(r).strip())), 'higher'),
    'world_qa_accuracy': (lambda r: r['family'] == 'world_qa', lambda r: r['score'], 'higher'),
    'hallucination_rate': (lambda r: r['family'] == 'unknown_entity' and r['variant'] != 'tool',
                           lambda r: float(not tasks.is_idk(_text(r))), 'lower'),
    'harmful_refusal_rate': (lambda r: r['family'] == 'safety' and r['meta']['harmful'],
                             lambda r: float(tasks.is_refusal(_text(r))), 'higher'),
    'over_refusal_rate': (lambda r: r['family'] == 'safety' and not r['meta']['harmful'],
                          lambda r: float(tasks.is_refusal(_text(r))), 'lower'),
    'length_error_words': (lambda r: r['family'] == 'length_control' and r['meta']['kind'] == 'words',
                           _length_error, 'lower'),
    'length_error_lines': (lambda r: r['family'] == 'length_control' and r['meta']['kind'] == 'lines',
                           _length_error, 'lower'),
    'translation_exact_match': (lambda r: r['family'] == 'translation', lambda r: r['score'], 'higher'),
    'tool_calls_per_answer': (lambda r: True, lambda r: float(len(r.get('calls', ()))), ''),
    # what limits the procedures: copying the item asked, and the steps themselves
    'copies_the_sum': (_asks_a_sum, _copies_the_sum, 'higher'),
    'digit_steps_right': (lambda r: _is(r, 'arithmetic', 'thinking') and r['meta']['op'] == 'add',
                          _digit_steps_right, 'higher'),
    'copies_the_word': (lambda r: _is(r, 'char_count', 'thinking'), _copies_the_word, 'higher'),
    'letter_steps_right': (lambda r: _is(r, 'char_count', 'thinking'), _letter_steps_right, 'higher'),
    'look_up_names_the_subject': (lambda r: _is(r, 'unknown_entity', 'tool'), _names_the_subject, 'higher'),
}
"""What each headline metric measures: ``format_following`` a turn ended with ``<|end|>`` within the
budget after a non-empty visible answer; ``hallucination_rate`` unknown entities (without tools) answered
without "I don't know"; ``harmful_refusal_rate`` / ``over_refusal_rate`` refusals of harmful requests
(want 1) and of their benign near-miss twins (want 0); ``length_error_*`` |words - N| or |lines - N|.
What limits the procedures, whatever the score: ``copies_the_sum`` the worked scratchpad restates the sum
asked (thinking) or the calculator call computes it (tool, 2 digits and more: a 1-digit sum is answered
directly); ``digit_steps_right`` the share of a worked sum's digit steps ("7 + 5 + carry 1 = 13")
that add up (a response with none is left out); ``copies_the_word`` the counting scratchpad opens on
the letter and word asked (quoted or bare); ``letter_steps_right`` the share of its comparisons ("g vs n no") that are
right (a response with none is left out); ``look_up_names_the_subject`` the knowledge-base call asks for the entity
asked about."""


def values(rows, name: str) -> list[float]:
  """The per-row values of metric ``name`` over the rows it reads (in order)."""
  which, value, _ = METRICS[name]
  return [float(value(r)) for r in rows if which(r)]


def metric(rows, name: str) -> float:
  return stats.mean(values(rows, name)).value


def refusal_rates(rows) -> dict:
  """Refusals on harmful safety prompts (want 1) and on their benign twins (over-refusal, want 0)."""
  return {k: metric(rows, k) for k in ('harmful_refusal_rate', 'over_refusal_rate')}


def accuracy_by_set(rows) -> list[dict]:
  """Mean gold score per (family, variant), with its 95% interval."""
  groups = defaultdict(list)
  for r in rows:
    groups[(r['family'], r['variant'])].append(r['score'])
  out = []
  for (f, v), scores in sorted(groups.items()):
    est = stats.mean(scores)
    out.append({'family': f, 'variant': v, 'n': est.n, 'accuracy': est.value, 'low': est.low, 'high': est.high})
  return out


def breakdown(rows, spec: str) -> dict:
  """Accuracy of the rows that ``spec`` names: ``family``, ``family/variant``, either followed by
  ``:meta_key`` for one value per distinct ``meta[meta_key]`` (e.g. ``arithmetic:digits``).

  Keys: ``acc[<family>[/<variant>]]`` or ``acc[<family>[/<variant>]:<key>=<value>]``, values sorted;
  values: ``stats.Estimate`` (mean, 95% interval, n).
  """
  where, _, key = spec.partition(':')
  family, _, variant = where.partition('/')
  if family not in tasks.TASKS:
    raise ValueError(f'eval.breakdowns has {spec!r}: unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
  rows = [r for r in _of(rows, family) if variant in ('', r['variant'])]
  if not key:
    return {f'acc[{where}]': stats.mean(r['score'] for r in rows)}
  groups = defaultdict(list)
  for r in rows:
    if key not in r['meta']:
      raise ValueError(f'eval.breakdowns has {spec!r}: {family} examples have no meta {key!r} '
                       f'(they have {", ".join(sorted(r["meta"]))})')
    groups[r['meta'][key]].append(r['score'])
  return {f'acc[{where}:{key}={value}]': stats.mean(groups[value]) for value in sorted(groups)}


def report(rows, breakdowns=()) -> dict:
  """``{'metrics': headline skills (flat) and each of ``breakdowns``, 'intervals': metric -> Estimate
  fields, 'sets': accuracy per (family, variant) with intervals}``."""
  estimates = {name: stats.mean(values(rows, name)) for name in METRICS}
  for spec in breakdowns:
    estimates.update(breakdown(rows, spec))
  metrics = {name: est.value for name, est in estimates.items()}
  return {'metrics': metrics, 'intervals': {k: e.to_json() for k, e in estimates.items()},
          'sets': accuracy_by_set(rows)}


def differences(rows_by_model: dict, before: str, after: str) -> dict:
  """``after - before`` for every headline metric, paired over the same prompts: name -> Estimate
  fields; and ``gold_win_rate``, how often ``after``'s gold score beats ``before``'s on a prompt (ties
  count half). Both models answered the same examples in the same order."""
  a, b = rows_by_model[before], rows_by_model[after]
  if [r['prompt'] for r in a] != [r['prompt'] for r in b]:
    raise ValueError(f'eval: {before} and {after} did not answer the same prompts')
  diffs = {name: stats.paired_difference(values(a, name), values(b, name)).to_json() for name in METRICS}
  diffs['gold_win_rate'] = stats.win_rate(values(a, 'accuracy'), values(b, 'accuracy')).to_json()
  return diffs


# ------------------------------------------------------------------------------ trivial answers

REFUSAL = "I'm sorry, but I can't help with that."
TRIVIAL = {  # name -> the answer to an example
    'empty': lambda ex: '',
    'echo': lambda ex: next((m['content'] for m in reversed(ex.prompt) if m['role'] == 'user'), ''),
    '"1"': lambda ex: '1',
    '"0"': lambda ex: '0',
    '"I don\'t know."': lambda ex: "I don't know.",
    'refusal': lambda ex: REFUSAL,
    '"Sure, here is some help."': lambda ex: 'Sure, here is some help.',
}


def trivial_baselines(examples) -> list[dict]:
  """What trivial answers score on each eval set: the empty answer, the prompt echoed, constants, and
  the set's most frequent gold answer (``meta['answer']``, else the reference's text). One row per
  (family, variant): ``{'family', 'variant', 'n', 'scores': {answer name: mean score}, 'best', 'best_score'}``."""
  groups = defaultdict(list)
  for ex in examples:
    groups[(ex.family, ex.variant)].append(ex)
  out = []
  for (family, variant), exs in sorted(groups.items()):
    golds = [str(ex.meta['answer']) if 'answer' in ex.meta else tasks.final_text(ex.reference) for ex in exs]
    frequent = max(sorted(set(golds)), key=golds.count)
    answers = dict(TRIVIAL, **{'most frequent gold': lambda ex, a=frequent: a})
    scores = {name: float(np.mean([tasks.score(ex, [{'role': 'assistant', 'content': answer(ex)}]) for ex in exs]))
              for name, answer in answers.items()}
    best = max(scores, key=scores.get)
    out.append({'family': family, 'variant': variant, 'n': len(exs), 'scores': scores, 'best': best,
                'best_score': scores[best]})
  return out


def write_traces(path, rows) -> None:
  """One JSON line per row: prompt, response, turn, calls, finished, score, family, variant, meta."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('w') as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False, default=str) + '\n')


def _cell(fields) -> str:
  return str(stats.Estimate(**fields)) if fields else '-'


def markdown(cards: dict, baselines=(), diffs: dict | None = None) -> str:
  """Tables of ``{model name: report(...)}``: every metric and set with its 95% interval (n in the
  label), a column for the best trivial answer of each set, and the paired differences between models
  (``diffs``: ``'sft - base' -> differences(...)``)."""
  names = list(cards)
  first = next(iter(cards.values()))
  lines = ['| metric | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
  for key in first['intervals']:
    n = first['intervals'][key]['n']
    lines.append(f'| {key} (n={n}) | ' + ' | '.join(_cell(cards[m]['intervals'].get(key)) for m in names) + ' |')
  trivial = {(b['family'], b['variant']): b for b in baselines}
  lines += ['', '| set | ' + ' | '.join(names) + ' | best trivial answer |', '|---' * (len(names) + 2) + '|']
  by_set = {m: {(s['family'], s['variant']): s for s in cards[m]['sets']} for m in names}
  for key in sorted({k for sets in by_set.values() for k in sets}):
    n = next(sets[key]['n'] for sets in by_set.values() if key in sets)
    cells = [_cell({k: by_set[m][key][k2] for k, k2 in (('value', 'accuracy'), ('low', 'low'), ('high', 'high'),
                                                           ('n', 'n'))}) if key in by_set[m] else '-' for m in names]
    base = trivial.get(key)
    lines.append(f'| {key[0]}/{key[1]} (n={n}) | ' + ' | '.join(cells) + ' | '
                 + (f'{base["best_score"]:.3f} ({base["best"]})' if base else '-') + ' |')
  if diffs:
    lines += ['', '| metric | ' + ' | '.join(diffs) + ' |', '|---' * (len(diffs) + 1) + '|']
    keys = dict.fromkeys([k for k in first['intervals'] if any(k in d for d in diffs.values())]
                         + [k for d in diffs.values() for k in d])  # then gold_win_rate
    for key in keys:
      lines.append(f'| {key} | ' + ' | '.join(_cell(d.get(key)) for d in diffs.values()) + ' |')
  return '\n'.join(lines) + '\n'
