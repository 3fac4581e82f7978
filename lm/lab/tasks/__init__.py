"""Task families of the lab: prompts, reference answers and exact gold scorers.

    examples = sample(world, 'arithmetic', n=100, seed=0, variant='thinking', digits=3)
    score(examples[0], examples[0].reference)   # -> 1.0

An ``Example`` has ``prompt`` (messages: optional system, then user), ``reference`` (the messages an
ideal assistant sends: one assistant message, or assistant tool call -> tool result -> assistant
answer) and ``meta`` (what the scorer needs: the gold answer etc.; JSON-serialisable). Scorers read
the *last assistant message's content* only (thinking and tool use earn nothing by themselves) and
return a float in [0, 1] (``score``: 0 for an answer that only repeats the question). An SFT
conversation is ``example.prompt + example.reference``; an eval samples a response to
``example.prompt`` and calls ``score``.

Each family is a ``Family`` (``make``, ``score``, ``wrong``, ``key``, ``variants``) in ``TASKS``, defined
in its module, whose docstring says what its scorer scores and what its key is (the underlying item:
``lm.lab.splits`` keeps every item in one split):

  qa.py              world_qa, unknown_entity
  arithmetic.py      arithmetic, word_problem
  characters.py      char_count, spelling
  translation.py     translation
  length_control.py  length_control
  manners.py         manners
  safety.py          safety
  creative.py        creative
  joke.py            joke          (subjective: parts and a distribution of tastes, ``Family.taste``)
  slogan.py          slogan        (subjective)

Variant ``tool`` prompts start with the system message ``TOOLS_SYSTEM``, which offers the tools
(``lm.inference.agent`` runs them); other prompts offer none. ``without_tools(prompt)`` removes the
offer. ``sample`` ignores the splits (tests, the CLI); datasets draw through ``lm.lab.splits``.
``Family.wrong(world, example, rng)`` gives labelled wrong responses (wrong number or entity,
missing refusal, needless refusal, off length, ...) for tests and for ``lm.lab.raters``. The text
checks and message helpers the families share are ``lm.lab.tasks.base``.
"""

import json
import random

from lm.lab.tasks import (
  arithmetic,
  characters,
  creative,
  joke,
  length_control,
  manners,
  qa,
  safety,
  slogan,
  translation,
)
from lm.lab.tasks.base import (  # noqa: F401  (re-exported: callers use them as tasks.<name>)
  DOMAINS,
  TOOL_NAMES,
  TOOLS_SYSTEM,
  Example,
  Family,
  Taste,
  contains,
  count_lines,
  count_words,
  echoes,
  final_text,
  has_phrase,
  is_idk,
  is_refusal,
  is_rude,
  needless_refusal,
  offers_tools,
  question,
  say,
  simple,
  with_final,
  without_tools,
)
from lm.lab.tasks.safety import SAFETY  # noqa: F401  (re-exported)
from lm.lab.world import World, cap  # noqa: F401  (cap re-exported)

TASKS: dict[str, Family] = {f.name: f for f in (
    qa.WORLD_QA, qa.UNKNOWN_ENTITY, arithmetic.ARITHMETIC, arithmetic.WORD_PROBLEM, characters.CHAR_COUNT,
    characters.SPELLING, translation.TRANSLATION, length_control.LENGTH_CONTROL, manners.MANNERS,
    safety.SAFETY_FAMILY, creative.CREATIVE, joke.JOKE, slogan.SLOGAN)}


def sample(world: World, family: str, n: int, seed: int = 0, variant: str = 'direct', **options) -> list[Example]:
  """``n`` examples of ``family``; a pure function of the world and the arguments."""
  fam = TASKS[family]
  if variant not in fam.variants:
    raise ValueError(f'{family} has variants {fam.variants}, not {variant!r}')
  rng = random.Random(f'{family}:{variant}:{seed}:{sorted(options.items())}')
  return [fam.make(world, rng, variant, **options) for _ in range(n)]


def score(example: Example, response: list[dict]) -> float:
  """The family's gold score of ``response``; 0 in every family for a final answer that only repeats
  the question (the same words)."""
  text = final_text(response)
  if text.strip() and simple(text) == simple(question(example)):
    return 0.0
  return float(TASKS[example.family].score(example, response))


def key(example: Example) -> str:
  """The key of the example's underlying item (``Family.key``)."""
  return TASKS[example.family].key(example)


def prompt_key(messages) -> str:
  """A prompt's exact text as one string (messages in order, keys sorted). Two prompts of the same
  item differ here: leakage is judged by ``Family.key``."""
  return json.dumps(messages, sort_keys=True)
