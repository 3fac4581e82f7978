"""The lab world's encyclopedia as passages, and BM25 retrieval over them: what the ``knowledge_base``
tool serves (``lm.tools.knowledge``) and what the lab's references quote (``unknown_entity/tool``).

One passage per entity: the canonical article of every known entity (``world.articles()``, the
text pretraining saw) and, with ``include_held_out`` (the default), an article for every held-out
entity too: the entities whose names never appear in pretraining, so a model can look up facts it
never saw.
"""

import functools
import json
import random

from lm.lab.bm25 import BM25Index
from lm.lab.world import World, cap


def world_passages(world: World, include_held_out: bool = True) -> list[tuple[str, str]]:
  """(title, text) for each entity: known ones first, in ``world.articles()`` order and wording."""
  known = [(cap(e.name), text.split('\n\n', 1)[1]) for e, text in zip(world.known(), world.articles())]
  if not include_held_out:
    return known
  rng = random.Random(f'held-out articles:{world.seed}')
  return known + [(cap(e.name), world.article(e, rng).split('\n\n', 1)[1]) for e in world.held_out()]


class Encyclopedia:
  """BM25 over ``world_passages``; ``lookup`` formats the hits as the tool's result text."""

  def __init__(self, world: World, include_held_out: bool = True):
    self.passages = world_passages(world, include_held_out)
    self.index = BM25Index([f'{title}\n{text}' for title, text in self.passages])

  def search(self, query: str, k: int) -> list[tuple[str, str, float]]:
    """(title, text, score) of the ``k`` best passages."""
    return [(*self.passages[i], score) for i, score in self.index.top(query, k)]

  def lookup(self, query: str, k: int) -> str:
    """The top-k passages, best first, as ``[1] <title>: <article>`` lines (or a line saying none matched)."""
    hits = self.search(query, k)
    if not hits:
      return 'no passages match the query'
    return result_text([(title, text) for title, text, _ in hits])


def result_text(passages) -> str:
  """(title, text) passages, best first, as the tool's result: ``[1] <title>: <article>`` lines."""
  return '\n'.join(f'[{i + 1}] {title}: {text}' for i, (title, text) in enumerate(passages))


@functools.lru_cache(maxsize=4)
def _encyclopedia(world_key: str) -> Encyclopedia:
  return Encyclopedia(World.from_config(json.loads(world_key)))


def look_up_stranger(world: World, e, rng: random.Random) -> tuple[dict, str]:
  """``look_up`` for a stranger (``World.stranger``): no encyclopedia holds it, so the result is its
  article as the tool would return it, were it there."""
  title, text = world.article(e, rng).split('\n\n', 1)
  return {'query': e.name, 'k': 1}, result_text([(title, text)])


def look_up(world: World, subject: str) -> tuple[dict, str]:
  """(the ``knowledge_base`` call's arguments for ``subject``, the tool's result text)."""
  arguments = {'query': subject, 'k': 1}
  return arguments, _encyclopedia(json.dumps(world.config, sort_keys=True)).lookup(subject, 1)
