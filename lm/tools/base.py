"""The tool interface: ``ToolResult``, ``Tool`` (argument checks, errors as results, truncation) and
``run_call``, which runs one call (parsed, or its JSON text) with a set of tools. The registry is
``lm.tools``."""


import dataclasses
import json
import math

TRUNCATION_MARKER = '\n[... truncated: {n} more characters]'
DEFAULT_MAX_CHARS = 2000
MAX_CALL_CHARS = 50_000  # a call's JSON text (arguments included): a longer one is an error, never run
MAX_DEPTH = 32           # how deep a call's arguments may nest


def short(x, n: int = 60) -> str:
  """``repr(x)``, cut to about ``n`` characters (a garbage name or key stays readable in an error)."""
  text = repr(x)
  return text if len(text) <= n else text[:n] + '...'


def json_problem(value, max_depth: int = MAX_DEPTH, where: str = '') -> str | None:
  """What keeps ``value`` from being plain JSON that round-trips, or None: a key that is not a string,
  a number that is not finite, text that is not valid UTF-8 (a lone surrogate), a value of another
  type, nesting deeper than ``max_depth``. The place is named like ``['a'][2]``."""
  at = f' at {where[:60]}{"..." if len(where) > 60 else ""}' if where else ''
  if max_depth < 0:
    return f'nested too deep{at}'
  if isinstance(value, dict):
    for key, item in value.items():
      if not isinstance(key, str):
        return f'key {short(key)}{at} is not a string ({type(key).__name__})'
      problem = json_problem(key, max_depth, where) or json_problem(item, max_depth - 1, f'{where}[{short(key)}]')
      if problem:
        return problem
    return None
  if isinstance(value, (list, tuple)):
    return next(filter(None, (json_problem(x, max_depth - 1, f'{where}[{i}]') for i, x in enumerate(value))), None)
  if isinstance(value, str):
    try:
      value.encode('utf-8')
    except UnicodeEncodeError as e:
      return f'text{at} is not valid UTF-8 ({e.reason} at character {e.start})'
    return None
  if isinstance(value, float) and not math.isfinite(value):
    return f'{value}{at} is not a JSON number'
  if value is None or isinstance(value, (bool, int, float)):
    return None
  return f'{type(value).__name__} value{at} is not JSON'


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
    unknown = sorted((k for k in arguments if k not in self.parameters), key=repr)
    if unknown:
      return f'{self.name}: unknown argument {short(unknown[0])} (expected: {", ".join(self.parameters)})'
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


def run_call(tools: dict[str, Tool], call) -> ToolResult:
  """Runs one call ``{"name", "arguments"}`` (or its JSON text) with ``tools``; every problem is an
  error result on one line naming it: text that is not JSON, a call longer than ``MAX_CALL_CHARS``,
  arguments nested deeper than ``MAX_DEPTH`` or not plain JSON, an unknown tool or field, and the
  tool's own argument checks."""
  if isinstance(call, str):
    if len(call) > MAX_CALL_CHARS:
      return error(f'tool call is {len(call)} characters long; at most {MAX_CALL_CHARS}')
    try:
      call = json.loads(call)
    except json.JSONDecodeError as e:
      return error(f'tool call is not valid JSON: {e.msg} (character {e.pos})')
    except RecursionError:
      return error(f'tool call is not valid JSON: nested too deep (at most {MAX_DEPTH} levels)')
  if not isinstance(call, dict):
    return error(f'tool call must be a JSON object, got {type(call).__name__}')
  name = call.get('name')
  if not isinstance(name, str):
    return error('tool call has no "name" string')
  if name not in tools:
    return error(f'unknown tool {short(name)}; available: {", ".join(sorted(tools)) or "none"}')
  extra = sorted((k for k in call if k not in ('name', 'arguments')), key=repr)
  if extra:
    return error(f'tool call has unknown field {short(extra[0])} (expected "name" and "arguments")')
  arguments = call.get('arguments', {})
  problem = json_problem(arguments)
  if problem:
    return error(f'{name}: arguments are not plain JSON: {problem}')
  size = len(json.dumps(arguments, ensure_ascii=False))
  if size > MAX_CALL_CHARS:
    return error(f'{name}: arguments are {size} characters of JSON; at most {MAX_CALL_CHARS}')
  return tools[name](arguments)
