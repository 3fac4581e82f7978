"""The ranking page's tasks: a prompt (a lab task on the run's world, or typed), K responses sampled
from a model, shown in random order; the gold scores and the simulated panel's ranking of them; the
record a person's ranking becomes (``lm.data.human``), and their agreement with gold and the panel.

Gold utility of a sample is ``lm.lab.raters``'s: the family's gold score + ``POLITE_BONUS`` if
polite - ``RUDE_PENALTY`` if rude. Agreement is pairwise: of the pairs of responses the reference
orders (gold: pairs of different utility) and the person did not mark as tied, the fraction they
order the same way.
"""

import dataclasses
import itertools
import random
import secrets

import numpy as np

from lm.lab import raters, splits, tasks


@dataclasses.dataclass
class Task:
  id: str
  run: str
  stage: str
  prompt: list[dict]
  responses: list[list[dict]]          # presentation order
  example: tasks.Example | None         # None: a typed prompt (no gold)
  candidates: list[raters.Candidate] | None
  panel_ranking: list[int]
  sampling: dict
  raters_done: set = dataclasses.field(default_factory=set)

  @property
  def gold_ranking(self) -> list[int]:
    return raters.gold_ranking(self.candidates).tolist() if self.candidates else []


def lab_example(world, mix, family: str, seed: int) -> tasks.Example:
  """One lab example of the preferences split (never an eval item): of ``family`` (a random variant of it),
  or drawn from ``mix`` ((family, variant, weight))."""
  rng = random.Random(f'lm.serve ranking:{seed}')
  if family:
    if family not in tasks.TASKS:
      raise ValueError(f'unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
    variant = rng.choice(tasks.TASKS[family].variants)
  else:
    family, variant, _ = rng.choices(mix, weights=[w for _, _, w in mix])[0]
  return splits.draw(world, family, variant, 'preferences', 1, purpose=f'human ranking {seed}')[0]


def new_task(run: str, stage: str, prompt, turns, example, panel: dict, sampling: dict, seed: int) -> Task:
  """A task of ``turns`` (one message list per sample) shown in a random order (from ``seed``)."""
  order = list(range(len(turns)))
  random.Random(f'lm.serve order:{seed}').shuffle(order)
  responses = [turns[i] for i in order]
  cands = [raters.candidate(example, f'sample:{stage}', r) for r in responses] if example else None
  panel_ranking = []
  if cands:
    panel_ranking = raters.Panel(**panel).rank(cands, np.random.default_rng([seed, 7])).panel.tolist()
  return Task(secrets.token_hex(8), run, stage, prompt, responses, example, cands, panel_ranking, sampling)


def check_ranking(ranking, ties, k: int) -> None:
  """A one-line ValueError unless ``ranking`` is a permutation of 0..k-1 and ``ties`` groups of its indices."""
  if sorted(ranking) != list(range(k)):
    raise ValueError(f'ranking {list(ranking)} is not a permutation of 0..{k - 1}')
  seen = set()
  for group in ties:
    if len(group) < 2 or any(not 0 <= i < k for i in group) or seen & set(group) or len(set(group)) < len(group):
      raise ValueError(f'ties {list(map(list, ties))} must be disjoint groups of two or more indices in 0..{k - 1}')
    seen |= set(group)


def record(task: Task, ranking, ties, rater: str, now: float) -> dict:
  """The ``lm.data.human`` record of a person's ranking of ``task``."""
  ex, cands = task.example, task.candidates
  return {
      'prompt': task.prompt, 'responses': task.responses, 'ranking': list(ranking), 'rater_rankings': [list(ranking)],
      'gold_ranking': task.gold_ranking,
      'gold_scores': [c.gold_score for c in cands] if cands else None,
      'gold_utilities': [c.utility for c in cands] if cands else None,
      'kinds': [f'sample:{task.stage}'] * len(task.responses),
      'features': [raters.features(r) for r in task.responses],
      'family': ex.family if ex else 'typed', 'variant': ex.variant if ex else '',
      'meta': {k: v for k, v in ex.meta.items() if k != 'world'} if ex else {},
      'rater': rater, 'time': now, 'ties': [list(g) for g in ties], 'panel_ranking': task.panel_ranking,
      'stage': task.stage, 'sampling': task.sampling, 'task': task.id}


def agreement(ranking, reference, ties=(), values=None) -> tuple[int, int]:
  """``(pairs ordered as in reference, pairs compared)``; pairs tied by the person, or of equal
  ``values`` (the reference's own ties), are not compared."""
  pos = {i: p for p, i in enumerate(ranking)}
  ref = {i: p for p, i in enumerate(reference)}
  tied = {frozenset(pair) for group in ties for pair in itertools.combinations(group, 2)}
  agree = total = 0
  for a, b in itertools.combinations(sorted(pos), 2):
    if frozenset((a, b)) in tied or (values is not None and values[a] == values[b]):
      continue
    total += 1
    agree += (pos[a] < pos[b]) == (ref[a] < ref[b])
  return agree, total


def agreements(rec: dict) -> dict:
  """A record's ``gold``, ``panel`` and ``panel_vs_gold`` agreement counts ``[agree, compared]``
  (empty without gold)."""
  if rec.get('gold_utilities') is None:
    return {}
  values = rec['gold_utilities']
  return {'gold': agreement(rec['ranking'], rec['gold_ranking'], rec['ties'], values),
          'panel': agreement(rec['ranking'], rec['panel_ranking'], rec['ties']),
          'panel_vs_gold': agreement(rec['panel_ranking'], rec['gold_ranking'], (), values)}


def summary(records, rater: str | None = None) -> dict:
  """Pooled agreement over ``rater``'s records (everyone's when None): the fraction of compared pairs."""
  mine = [r for r in records if rater is None or r['rater'] == rater]
  pooled = {'gold': [0, 0], 'panel': [0, 0], 'panel_vs_gold': [0, 0]}
  for r in mine:
    for key, (agree, total) in agreements(r).items():
      pooled[key][0] += agree
      pooled[key][1] += total
  return {'rankings': len(mine), 'with_gold': sum(r.get('gold_utilities') is not None for r in mine),
          **{key: {'agree': a, 'pairs': n, 'rate': a / n if n else None} for key, (a, n) in pooled.items()}}
