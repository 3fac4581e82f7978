"""The ``knowledge_base`` tool: BM25 retrieval over the lab world's encyclopedia (``lm.lab.knowledge``).

Arguments ``{"query": str, "k": int (optional, 1..max_k, default k)}``. The result lists the top-k
passages, best first, as ``[1] <title>: <article>`` lines; a query matching nothing says so (ok).
With ``include_held_out`` (the default) the held-out entities have articles too: facts pretraining
never showed.
"""

from lm.lab.knowledge import Encyclopedia
from lm.lab.world import World
from lm.tools.base import Tool, ToolResult


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
    self.encyclopedia = Encyclopedia(self.world, include_held_out)
    self.k, self.max_k = k, max_k

  def run(self, arguments: dict) -> ToolResult:
    k = arguments.get('k', self.k)
    if not 1 <= k <= self.max_k:
      return ToolResult(f'knowledge_base: k must be between 1 and {self.max_k}, got {k}', False)
    return ToolResult(self.encyclopedia.lookup(arguments['query'], k), True)
