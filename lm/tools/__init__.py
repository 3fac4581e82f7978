"""Tools a model can call: the registry (``get``, ``available``, ``build``); the interface and the call
runner are ``lm.tools.base``.

A call, as the model writes it between ``<|tool_call|>`` and ``<|/tool_call|>``, is the JSON
``{"name": str, "arguments": dict}``. ``run_call(tools, call)`` runs it and always returns a
``ToolResult``: unknown tools, bad arguments and failures inside a tool are ``ok=False`` results
with a one-line readable text, never exceptions. The result's ``text`` goes between
``<|tool_result|>`` and ``<|/tool_result|>``, cut to ``max_chars`` with ``TRUNCATION_MARKER``.

    tools = {name: get(name) for name in ('calculator', 'python')}
    run_call(tools, {'name': 'calculator', 'arguments': {'expression': '2 ** 10 / 3'}})
    # -> ToolResult(text='1024/3 (~341.3333333)', ok=True)

Built-in tools (``available()``), each in its own module:

  calculator      exact arithmetic on + - * / ** and parentheses (``calculator.py``)
  python          code run in a sandboxed process (``python_sandbox.py``)
  knowledge_base  BM25 retrieval over the lab world's encyclopedia (``knowledge.py``)
  search          search over a pluggable backend; the built-in one is a local index (``search.py``)

A tool subclasses ``Tool``: it sets ``name``, ``description`` and ``parameters`` (argument name ->
(type, required)) and implements ``run(arguments) -> ToolResult``; ``Tool.__call__`` checks the
arguments against ``parameters``, turns any exception into an error result and truncates.
"""

from lm.lab.world import World
from lm.tools.base import Tool, ToolResult, run_call  # noqa: F401  (the interface, for callers of lm.tools)
from lm.tools.calculator import Calculator
from lm.tools.knowledge import KnowledgeBase
from lm.tools.python_sandbox import PythonSandbox
from lm.tools.search import LocalIndex, Search

TOOLS = {'calculator': Calculator, 'python': PythonSandbox, 'knowledge_base': KnowledgeBase, 'search': Search}


def available() -> list[str]:
  return sorted(TOOLS)


def get(name: str, **kwargs) -> Tool:
  """A new instance of the tool ``name``, built with ``kwargs``."""
  if name not in TOOLS:
    raise ValueError(f'unknown tool {name!r}; available: {", ".join(available())}')
  return TOOLS[name](**kwargs)


def build(names, world_config: dict | None = None) -> dict[str, Tool]:
  """``{name: get(name)}``; the knowledge base and the local search index cover the lab's world
  built from ``world_config`` (a ``World.config``; None: the default world)."""
  out = {}
  for name in names:
    if name == 'knowledge_base':
      out[name] = get(name, world_config=world_config or {})
    elif name == 'search':
      out[name] = get(name, backend=LocalIndex.from_world(World.from_config(world_config or {})))
    else:
      out[name] = get(name)
  return out
