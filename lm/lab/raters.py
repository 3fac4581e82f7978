"""Preference data: candidate responses of graded quality, ranked by a simulated, biased rater panel.

    cands = candidates(world, example, k=4, rng=random.Random(0))   # presentation order
    panel = Panel(n_raters=5, length_bias=0.5, confidence_bias=0.3, position_bias=0.2, noise=0.1, seed=0)
    r = panel.rank(cands)            # r.per_rater [W, R], r.panel [R], r.gold [R]: candidate indices, best first
    records = preference_dataset(world, n=1000, k=4, panel=panel, seed=0)

**Candidates.** For one example the pool holds the reference, the family's labelled wrong answers
(``Family.wrong``: wrong number or entity, hallucination, needless refusal, missing refusal, off
length, ...), and restyled versions: ``polite`` / ``rude`` / ``hedged`` reference, ``confident`` and
``padded`` (verbose filler around the answer) wrong answers, a padded reference, a needless refusal
and an "I don't know". A subjective family's pool leaves out the refusal, the "I don't know" and its
``IMPLAUSIBLE`` answers (echo, off topic), which every taste puts last: its candidates are the
trade-offs tastes disagree on. ``candidates`` keeps the reference and draws ``k - 1`` others at
random, then shuffles them.

**Gold utility** of a candidate = the family's gold score of its messages (in [0, 1])
+ ``POLITE_BONUS`` (0.05) if polite - ``RUDE_PENALTY`` (0.25) if rude - ``PADDING_PENALTY`` (0.05)
if padded with filler. The gold ranking sorts by utility (ties: presentation order).

**Features** (what biased raters react to): ``n_words`` (words of the visible assistant content,
thinking excluded), ``tone`` (+1 confident, -1 hedged, 0 neither; also as flags ``confident`` and
``hedged``), ``refusal``, ``polite``, ``rude``.

**Raters.** Rater r scores candidate i shown at position p (0 = first) as

    utility_i + length_r * (log(1 + n_words_i) - mean over candidates) + confidence_r * tone_i
              + position_r * (R - 1 - p) / (R - 1) + noise_r * N(0, 1)

and ranks by score (ties: presentation order). Each rater's ``length_r``, ``confidence_r``,
``position_r`` and ``noise_r`` are the panel's setting times a log-normal factor (``spread``), drawn
once from ``seed``; a setting of 0 stays 0, so no bias and no noise reproduce the gold ranking.
The panel's aggregate ranking is a Borda count (mean rank, ties by index). Candidates of equal
utility (e.g. two wrong answers) are ordered by position in the gold ranking: use
``gold_utilities`` to find such ties.

**Tastes.** In a subjective family (``Family.taste``: ``joke``, ``slogan``) a candidate's ``parts`` are
scored from its text, and rater r's ``utility_i`` above is their own: ``w_r . parts_i`` plus the
politeness terms, with ``w_r ~ Dirichlet(concentration * mean)`` drawn once per (panel seed, family).
Gold is the population's expected utility, ``mean . parts_i``, so even a panel without bias or noise
disagrees with gold (and with itself) there.

**Expertise** (``experts``; unset, None: every rater judges as above, today's rankings bit for bit).
Each rater is an expert or a lay person in each of ``tasks.DOMAINS`` (math, world, veltic, safety,
subjective; a family's ``Family.domain``; 'general' families every rater judges as an expert). An
expert's ``utility_i`` is the gold utility (in a subjective family: the population's, not their own
taste). A lay rater's is their own judgement of correctness leaning on surface cues,

    (1 - lay_surface) * own_i + lay_surface * surface_i + lay_noise * N(0, 1) + politeness terms

where ``own_i`` is the gold score (their taste's utility in a subjective family) and ``surface_i`` the
mean of three cues in [0, 1]: length (``sigmoid(2 (log(1 + n_words_i) - mean))``), tone (1 confident,
0.5 neither, 0 hedged) and politeness. ``experts`` is a fraction (the first ``round(f * W)`` of the W raters are
experts in every domain, the rest in none) or one entry per rater: a domain, ``'all'``, ``''`` (none)
or a list of domains. The biases, position and noise terms apply to every rater as before.

**Writers.** ``lay_answer`` is what a lay writer (``data.sft_writers``) writes for an example: a
plausible wrong answer (``LAY_WRITING``: the family's wrong answers bar echoes, rude and off-topic
ones, half of them confidently restyled), a padded reference, or the reference itself.
"""

import dataclasses
import random
import zlib

import numpy as np

from lm.lab import tasks
from lm.lab.world import World

POLITE_BONUS, RUDE_PENALTY, PADDING_PENALTY = 0.05, 0.25, 0.05
POLITE_MARKERS = ('thank you for asking', 'i hope this helps', 'happy to help', 'glad you asked')
CONFIDENT_MARKERS = ('definitely', 'absolutely certain', 'without a doubt', 'i am certain', "i'm certain")
HEDGE_MARKERS = ('i think', 'maybe', 'perhaps', 'i may be wrong', 'i might be wrong', 'i believe')
FILLER = ('Let me explain this carefully and thoroughly.',
          'This is an important question that deserves a complete answer.',
          'There are many things worth considering here.', 'I have thought about every part of it with great care.',
          'Taking all of that into account, here is my answer.', 'It is worth going through this step by step.',
          'Many people ask this, and the details matter.', 'To be complete, I will also restate the main point.')
LAY_WRITING = (('wrong', 0.4), ('padded', 0.3), ('reference', 0.3))  # what a lay writer's answer is
IMPLAUSIBLE = ('echo', 'rude', 'cold', 'off_topic')  # wrong answers no writer would offer


@dataclasses.dataclass
class Candidate:
  messages: list[dict]  # assistant (and tool) messages
  kind: str             # how it was made: 'reference', 'wrong_number', 'padded_wrong', ...
  gold_score: float     # the family's gold scorer
  utility: float        # gold_score + politeness terms (module docstring)
  features: dict        # n_words, tone, refusal, polite, rude
  family: str = ''      # the example's task family
  parts: tuple = ()     # a subjective family's parts (``Taste.mean`` order), else ()


def _restyle(messages, style, rng):
  text = tasks.final_text(messages)
  if style == 'polite':
    new = f'Thank you for asking! {text} I hope this helps.'
  elif style == 'rude':
    new = f'Ugh, obviously. {text} Stop wasting my time, idiot.'
  elif style == 'confident':
    new = f'Definitely: {text} I am certain of this, without a doubt.'
  elif style == 'hedged':
    new = f'I think {text[:1].lower() + text[1:]} But I may be wrong.'
  elif style == 'padded':
    fill = rng.sample(FILLER, len(FILLER))
    new = ' '.join(fill[:4]) + f' {text} ' + ' '.join(fill[4:])
  else:
    raise ValueError(style)
  return tasks.with_final(messages, new)


def features(messages: list[dict]) -> dict:
  visible = ' '.join(m.get('content') or '' for m in messages if m['role'] == 'assistant')
  tone = 1 if tasks.has_phrase(visible, CONFIDENT_MARKERS) else -1 if tasks.has_phrase(visible, HEDGE_MARKERS) else 0
  return dict(n_words=tasks.count_words(visible), tone=tone, confident=tone > 0, hedged=tone < 0,
              refusal=tasks.is_refusal(visible),
              polite=tasks.has_phrase(visible, POLITE_MARKERS), rude=tasks.is_rude(visible))


def candidate(example, kind: str, messages) -> Candidate:
  """``messages`` (a response to ``example``) scored by gold and described by its features."""
  gold = tasks.score(example, messages)
  f = features(messages)
  utility = gold + POLITE_BONUS * f['polite'] - RUDE_PENALTY * f['rude'] - PADDING_PENALTY * ('padded' in kind)
  taste = tasks.TASKS[example.family].taste
  parts = taste.vector(example, messages) if taste else ()
  return Candidate(messages, kind, gold, round(utility, 6), f, example.family, parts)


def candidate_pool(world: World, example: tasks.Example, rng: random.Random) -> list[Candidate]:
  """Every candidate for ``example``: the reference first, then wrong and restyled ones (deduplicated)."""
  ref = example.reference
  taste = tasks.TASKS[example.family].taste
  wrongs = tasks.TASKS[example.family].wrong(world, example, rng)
  if taste:  # a subjective family's pool: its trade-offs, where tastes differ (module docstring)
    wrongs = [(kind, msgs) for kind, msgs in wrongs if kind not in IMPLAUSIBLE]
  pool = [('reference', ref)] + wrongs
  pool += [('polite_reference', _restyle(ref, 'polite', rng)), ('rude_reference', _restyle(ref, 'rude', rng)),
           ('hedged_reference', _restyle(ref, 'hedged', rng)), ('padded_reference', _restyle(ref, 'padded', rng))]
  if wrongs:
    kind, msgs = wrongs[0]
    pool += [('confident_' + kind, _restyle(msgs, 'confident', rng)), ('padded_' + kind, _restyle(msgs, 'padded', rng))]
    if len(wrongs) > 1:
      kind, msgs = wrongs[1]
      pool.append(('padded_' + kind, _restyle(msgs, 'padded', rng)))
  if not example.meta.get('harmful') and not taste:
    pool.append(('needless_refusal', tasks.needless_refusal()))
  if example.family not in ('unknown_entity',) and not taste:
    pool.append(('idk', tasks.say("I don't know.")))
  out, seen = [], set()
  for kind, msgs in pool:
    key = repr(msgs)
    if key not in seen:
      seen.add(key)
      out.append(candidate(example, kind, msgs))
  return out


def candidates(world: World, example: tasks.Example, k: int, rng: random.Random) -> list[Candidate]:
  """``k`` candidates in presentation order: the reference and ``k - 1`` others drawn from the pool."""
  pool = candidate_pool(world, example, rng)
  if k > len(pool):
    raise ValueError(f'only {len(pool)} distinct candidates for a {example.family} example, asked for {k}')
  chosen = [pool[0]] + rng.sample(pool[1:], k - 1)
  rng.shuffle(chosen)
  return chosen


def gold_ranking(cands: list[Candidate]) -> np.ndarray:
  return np.argsort(-np.array([c.utility for c in cands]), kind='stable')


def borda(per_rater_WxR: np.ndarray) -> np.ndarray:
  """Aggregate rankings (each row: indices best first) by mean rank; ties by index."""
  W, R = per_rater_WxR.shape
  ranks_WxR = np.empty_like(per_rater_WxR)
  ranks_WxR[np.arange(W)[:, None], per_rater_WxR] = np.arange(R)[None, :]
  return np.argsort(ranks_WxR.mean(0), kind='stable')


@dataclasses.dataclass
class Rankings:
  per_rater: np.ndarray  # [W, R] candidate indices, best first, one row per rater
  panel: np.ndarray      # [R] Borda aggregate of the rows
  gold: np.ndarray       # [R] by gold utility


def expertise(experts, n_raters: int) -> list[frozenset] | None:
  """Each rater's domains of expertise from a panel's ``experts`` setting (module docstring); None if unset."""
  if experts is None:
    return None
  if isinstance(experts, (int, float)) and not isinstance(experts, bool):
    if not 0 <= experts <= 1:
      raise ValueError(f'raters.panel.experts={experts}: a fraction must be in [0, 1]')
    n = round(experts * n_raters)
    return [frozenset(tasks.DOMAINS) if r < n else frozenset() for r in range(n_raters)]
  entries = [experts] * n_raters if isinstance(experts, str) else list(experts)
  if len(entries) != n_raters:
    raise ValueError(f'raters.panel.experts has {len(entries)} entries for {n_raters} raters')
  out = []
  for e in entries:
    domains = [] if e == '' else list(tasks.DOMAINS) if e == 'all' else [e] if isinstance(e, str) else list(e)
    unknown = sorted(set(domains) - set(tasks.DOMAINS))
    if unknown:
      raise ValueError(f'raters.panel.experts: unknown domain {unknown[0]!r}; valid: all, {", ".join(tasks.DOMAINS)}')
    out.append(frozenset(domains))
  return out


def surface(cands: list[Candidate]) -> np.ndarray:
  """``[R]`` what a lay rater takes for quality: the mean of the length, tone and politeness cues."""
  loglen_R = np.log1p([c.features['n_words'] for c in cands])
  length_R = 1 / (1 + np.exp(-2 * (loglen_R - loglen_R.mean())))
  tone_R = (np.array([c.features['tone'] for c in cands], float) + 1) / 2
  polite_R = np.array([c.features['polite'] for c in cands], float)
  return (length_R + tone_R + polite_R) / 3


class Panel:
  """Simulated raters: gold utility (their own taste's in subjective families; a lay rater's surface-led
  judgement outside their expertise) plus length, confidence and position biases and noise."""

  def __init__(self, n_raters: int = 5, length_bias: float = 0.0, confidence_bias: float = 0.0,
               position_bias: float = 0.0, noise: float = 0.0, seed: int = 0, spread: float = 0.3,
               experts=None, lay_surface: float = 0.5, lay_noise: float = 0.3):
    self.n_raters = n_raters
    rs = np.random.default_rng([seed, 1])

    def mix(setting):
      return setting * np.exp(spread * rs.standard_normal(n_raters) - spread ** 2 / 2)
    self.length, self.confidence = mix(length_bias), mix(confidence_bias)
    self.position, self.noise = mix(position_bias), mix(noise)
    self._rng = np.random.default_rng([seed, 2])
    self.seed, self.lay_surface, self.lay_noise = seed, lay_surface, lay_noise
    self.expertise = expertise(experts, n_raters)
    self._tastes = {}

  def tastes(self, family: str) -> np.ndarray:
    """``[W, Q]`` each rater's weights on the parts of a subjective ``family`` (``Taste``: Dirichlet)."""
    if family not in self._tastes:
      taste = tasks.TASKS[family].taste
      alpha = taste.concentration * np.array(list(taste.mean.values()))
      rng = np.random.default_rng([self.seed, 4, zlib.crc32(family.encode())])
      self._tastes[family] = rng.dirichlet(alpha, self.n_raters)
    return self._tastes[family]

  def is_expert(self, family: str) -> np.ndarray:
    """``[W]`` whether each rater judges ``family`` as an expert (all of them when expertise is unset)."""
    domain = tasks.TASKS[family].domain if family in tasks.TASKS else 'general'
    if self.expertise is None or domain == 'general':
      return np.ones(self.n_raters, bool)
    return np.array([domain in e for e in self.expertise])

  def utilities(self, cands: list[Candidate], lay_noise_WxR: np.ndarray | None = None) -> np.ndarray:
    """``[W, R]`` (or ``[1, R]``: everyone the gold utility) what each rater takes each candidate's utility for."""
    utility_R = np.array([c.utility for c in cands])
    family, parts = cands[0].family, [c.parts for c in cands]
    if self.expertise is None and not parts[0]:
      return utility_R[None]
    gold_R = np.array([c.gold_score for c in cands])
    own_WxR = self.tastes(family) @ np.array(parts).T if parts[0] else np.tile(gold_R, (self.n_raters, 1))
    if self.expertise is None:
      return own_WxR + (utility_R - gold_R)[None]
    lay_WxR = (1 - self.lay_surface) * own_WxR + self.lay_surface * surface(cands)[None]
    lay_WxR = lay_WxR + self.lay_noise * lay_noise_WxR + (utility_R - gold_R)[None]
    return np.where(self.is_expert(family)[:, None], utility_R[None], lay_WxR)

  def scores(self, cands: list[Candidate], rng: np.random.Generator | None = None) -> np.ndarray:
    """``[W, R]`` rater scores of the candidates in presentation order."""
    rng = self._rng if rng is None else rng
    R = len(cands)
    loglen_R = np.log1p([c.features['n_words'] for c in cands])
    tone_R = np.array([c.features['tone'] for c in cands], float)
    front_R = (R - 1 - np.arange(R)) / max(R - 1, 1)
    noise_WxR = rng.standard_normal((self.n_raters, R))
    lay_noise_WxR = rng.standard_normal((self.n_raters, R)) if self.expertise is not None else None
    return (self.utilities(cands, lay_noise_WxR) + self.length[:, None] * (loglen_R - loglen_R.mean())[None]
            + self.confidence[:, None] * tone_R[None] + self.position[:, None] * front_R[None]
            + self.noise[:, None] * noise_WxR)

  def rank(self, cands: list[Candidate], rng: np.random.Generator | None = None) -> Rankings:
    """Each rater's ranking, their Borda aggregate and the gold ranking (indices, best first).

    Noise comes from ``rng``, or else from the panel's own generator (so a sequence of calls is
    deterministic in the panel's seed).
    """
    per_rater = np.argsort(-self.scores(cands, rng), axis=1, kind='stable')
    return Rankings(per_rater, borda(per_rater), gold_ranking(cands))


PREFERENCE_FAMILIES = ('world_qa', 'unknown_entity', 'arithmetic', 'word_problem', 'char_count', 'spelling',
                       'translation', 'length_control', 'manners', 'safety', 'creative', 'joke', 'slogan')


def lay_answer(world: World, example: tasks.Example, rng: random.Random) -> list[dict]:
  """What a lay writer answers to ``example`` (module docstring): plausible, sometimes wrong or padded."""
  kind = rng.choices([k for k, _ in LAY_WRITING], [w for _, w in LAY_WRITING])[0]
  wrongs = [m for label, m in tasks.TASKS[example.family].wrong(world, example, rng) if label not in IMPLAUSIBLE]
  if kind == 'wrong' and wrongs:
    answer = rng.choice(wrongs)
    return _restyle(answer, 'confident', rng) if rng.random() < 0.5 else answer
  if kind == 'padded':
    return _restyle(example.reference, 'padded', rng)
  return example.reference


def preference_records(world: World, examples, panel: Panel, k: int = 4, seed: int = 0) -> list[dict]:
  """For each example, ``k`` candidates ranked by ``panel``; deterministic in ``seed``.

  Each record (JSON-serialisable): ``family``, ``variant``, ``prompt`` (messages), ``responses``
  (K message lists, presentation order), ``kinds``, ``features``, ``gold_scores``, ``gold_utilities``,
  ``rater_rankings`` (one per rater: candidate indices, best first), ``ranking`` (their Borda
  aggregate), ``gold_ranking`` and ``meta``.
  """
  rng = random.Random(f'preferences:{seed}')
  noise_rng = np.random.default_rng([seed, 3])
  records = []
  for ex in examples:
    cands = candidates(world, ex, k, rng)
    r = panel.rank(cands, noise_rng)
    records.append(dict(
        family=ex.family, variant=ex.variant, prompt=ex.prompt, responses=[c.messages for c in cands],
        kinds=[c.kind for c in cands], features=[c.features for c in cands],
        gold_scores=[c.gold_score for c in cands], gold_utilities=[c.utility for c in cands],
        rater_rankings=r.per_rater.tolist(), ranking=r.panel.tolist(), gold_ranking=r.gold.tolist(),
        meta={key: v for key, v in ex.meta.items() if key != 'world'}))
  return records


def preference_dataset(world: World, n: int, k: int = 4, panel: Panel | None = None, seed: int = 0,
                       families=PREFERENCE_FAMILIES, weights=None) -> list[dict]:
  """``n`` preference records (see ``preference_records``) over ``families`` drawn with ``weights``;
  variants are drawn uniformly among a family's variants."""
  rng = random.Random(f'preference prompts:{seed}')
  examples = []
  for _ in range(n):
    fam = tasks.TASKS[rng.choices(families, weights)[0]]
    examples.append(fam.make(world, rng, rng.choice(fam.variants)))
  return preference_records(world, examples, panel or Panel(seed=seed), k, seed)
