"""The tool interface: ``ToolResult``, ``Tool`` (argument checks, errors as results, truncation) and
``run_call``, which runs one parsed call with a set of tools. The registry is ``lm.tools``."""


import dataclasses

TRUNCATION_MARKER = '\n[... truncated: {n} more characters]'
DEFAULT_MAX_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class ToolResult:
  """What a tool returns: ``text`` (goes between the result tokens) and whether it succeeded."""
  text: str
  ok: bool


def error(message: str) -> ToolResult:
  """An ``ok=False`` result with ``message`` on one line."""
  return ToolResult(' '.join(str(message).split()) or 'error', False)


def truncate(text: str, max_chars: int) -> str:
  """``text`` cut to at most ``max_chars`` characters (marker included) when longer."""
  if len(text) <= max_chars:
    return text
  keep = max(0, max_chars - len(TRUNCATION_MARKER.format(n=len(text))))  # the count shown is < len(text)
  return text[:keep] + TRUNCATION_MARKER.format(n=len(text) - keep)


class Tool:
  """Base of every tool. ``parameters``: argument name -> (python type or tuple of types, required)."""
  name: str = ''
  description: str = ''
  parameters: dict = {}

  def __init__(self, max_chars: int = DEFAULT_MAX_CHARS):
    if max_chars < 40:
      raise ValueError(f'tool {self.name}: max_chars must be at least 40, got {max_chars}')
    self.max_chars = max_chars

  def run(self, arguments: dict) -> ToolResult:
    raise NotImplementedError

  def check(self, arguments) -> str | None:
    """None when ``arguments`` fit ``parameters``, else what is wrong."""
    if not isinstance(arguments, dict):
      return f'{self.name}: arguments must be a JSON object, got {type(arguments).__name__}'
    unknown = sorted(set(arguments) - set(self.parameters))
    if unknown:
      return f'{self.name}: unknown argument {unknown[0]!r} (expected: {", ".join(self.parameters)})'
    for key, (kind, required) in self.parameters.items():
      if key not in arguments:
        if required:
          return f'{self.name}: missing argument {key!r}'
        continue
      value = arguments[key]
      kinds = kind if isinstance(kind, tuple) else (kind,)
      if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = ' or '.join(k.__name__ for k in kinds)
        return f'{self.name}: argument {key!r} must be {names}, got {type(value).__name__}'
    return None

  def __call__(self, arguments: dict) -> ToolResult:
    problem = self.check(arguments)
    if problem:
      return error(problem)
    try:
      result = self.run(arguments)
    except Exception as e:  # a tool never crashes the run
      return error(f'{self.name} failed: {type(e).__name__}: {e}')
    return ToolResult(truncate(result.text, self.max_chars), result.ok)


def run_call(tools: dict[str, Tool], call: dict) -> ToolResult:
  """Runs one parsed call ``{"name", "arguments"}`` with ``tools``; every problem is an error result."""
  if not isinstance(call, dict):
    return error(f'tool call must be a JSON object, got {type(call).__name__}')
  name = call.get('name')
  if not isinstance(name, str):
    return error('tool call has no "name" string')
  if name not in tools:
    return error(f'unknown tool {name!r}; available: {", ".join(sorted(tools)) or "none"}')
  extra = sorted(set(call) - {'name', 'arguments'})
  if extra:
    return error(f'tool call has unknown field {extra[0]!r} (expected "name" and "arguments")')
  return tools[name](call.get('arguments', {}))
