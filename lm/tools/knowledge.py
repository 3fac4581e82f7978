"""The ``knowledge_base`` tool: BM25 retrieval over the lab world's encyclopedia.

Arguments ``{"query": str, "k": int (optional, 1..max_k, default k)}``. The result lists the top-k
passages, best first, as ``[1] <title>: <article>`` lines; a query matching nothing says so (ok).

One passage per entity: the canonical article of every known entity (``world.articles()``, the
text pretraining saw) and, with ``include_held_out`` (the default), an article for every held-out
entity too: the entities whose names never appear in pretraining (``unknown_entity`` questions in
``lm.data.tasks``), so a model can look up facts it never saw.
"""

import random

from lm.data.world import World, cap
from lm.tools import Tool, ToolResult, register
from lm.tools.bm25 import BM25Index


def world_passages(world: World, include_held_out: bool = True) -> list[tuple[str, str]]:
  """(title, text) for each entity: known ones first, in ``world.articles()`` order and wording."""
  known = [(cap(e.name), text.split('\n\n', 1)[1]) for e, text in zip(world.known(), world.articles())]
  if not include_held_out:
    return known
  rng = random.Random(f'held-out articles:{world.seed}')
  return known + [(cap(e.name), world.article(e, rng).split('\n\n', 1)[1]) for e in world.held_out()]


@register('knowledge_base')
class KnowledgeBase(Tool):
  name = 'knowledge_base'
  description = 'Looks up facts about the people, towns, creatures and things of the world; returns matching articles.'
  parameters = {'query': (str, True), 'k': (int, False)}

  def __init__(self, world: World | None = None, world_config: dict | None = None, include_held_out: bool = True,
               k: int = 3, max_k: int = 10, **kwargs):
    super().__init__(**kwargs)
    if world is not None and world_config is not None:
      raise ValueError('knowledge_base: give world or world_config, not both')
    self.world = world if world is not None else World.from_config(world_config or {})
    self.passages = world_passages(self.world, include_held_out)
    self.index = BM25Index([f'{title}\n{text}' for title, text in self.passages])
    self.k, self.max_k = k, max_k

  def search(self, query: str, k: int) -> list[tuple[str, str, float]]:
    """(title, text, score) of the ``k`` best passages."""
    return [(*self.passages[i], score) for i, score in self.index.top(query, k)]

  def run(self, arguments: dict) -> ToolResult:
    k = arguments.get('k', self.k)
    if not 1 <= k <= self.max_k:
      return ToolResult(f'knowledge_base: k must be between 1 and {self.max_k}, got {k}', False)
    hits = self.search(arguments['query'], k)
    if not hits:
      return ToolResult('no passages match the query', True)
    return ToolResult('\n'.join(f'[{i + 1}] {title}: {text}' for i, (title, text, _) in enumerate(hits)), True)
