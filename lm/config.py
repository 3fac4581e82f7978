"""Loading experiment configs, and one-line errors for keys that do not exist, values of the wrong type
and values out of range."""

import copy
import dataclasses
import difflib
import fnmatch
import importlib.util
from pathlib import Path

import ml_collections


class ConfigError(ValueError):
  """A config that cannot run: the message names the key and what would be valid."""


def _unknown_key(prefix: str, key: str, valid) -> ConfigError:
  name = f'{prefix}.{key}' if prefix else key
  close = difflib.get_close_matches(key, list(valid), n=1)
  hint = f' (did you mean {prefix + "." if prefix else ""}{close[0]}?)' if close else ''
  return ConfigError(f'unknown config key {name}{hint}; valid keys{" in " + prefix if prefix else ""}: '
                     f'{", ".join(sorted(valid))}')


def dataclass_from(cls, cfg, section: str):
  """``cls(**cfg)`` for a config section (ConfigDict or dict); an unknown key is a one-line error
  naming it and the valid ones."""
  items = dict(cfg.items()) if hasattr(cfg, 'items') else dict(cfg)
  valid = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(items) - set(valid))
  if unknown:
    raise ConfigError(f'unknown config key {section}.{unknown[0]}; valid keys: {", ".join(valid)}')
  return cls(**items)


def check_key(config: ml_collections.ConfigDict, dotted: str) -> None:
  """Raises ConfigError unless ``dotted`` (e.g. ``model.d_model``) names an existing field."""
  node, path = config, []
  for key in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      valid = node.keys() if isinstance(node, ml_collections.ConfigDict) else []
      raise _unknown_key('.'.join(path), key, valid)
    node, path = node[key], path + [key]


def check_argv(config: ml_collections.ConfigDict, argv) -> None:
  """Checks every ``--config.a.b=v`` on the command line names a real key."""
  for arg in argv:
    if arg.startswith('--config.'):
      check_key(config, arg[len('--config.'):].split('=', 1)[0])


def with_overrides(config: ml_collections.ConfigDict, overrides: dict, prefix: str = ''):
  """A copy of ``config`` with nested ``overrides`` applied; unknown keys are ConfigErrors."""
  out = copy.deepcopy(config)
  _apply(out, overrides, prefix)
  return out


def _apply(node, overrides, prefix):
  for key, value in overrides.items():
    if key not in node:
      raise _unknown_key(prefix, key, node.keys())
    name = f'{prefix}.{key}' if prefix else key
    if isinstance(node[key], ml_collections.ConfigDict) and hasattr(value, 'items'):
      _apply(node[key], value, name)
    else:
      if isinstance(value, bool) and isinstance(node[key], float):  # ConfigDict would store True as 1.0
        raise ConfigError(f'config key {name}={value!r}: expected a number, got bool')
      with node.ignore_type():
        node[key] = value


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads ``path/to/experiment.py[:arg]`` by calling its ``get_config([arg])``."""
  path, _, arg = spec.partition(':')
  if not Path(path).is_file():
    raise ConfigError(f'config file {path} does not exist')
  module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except (AttributeError, KeyError) as e:
    raise ConfigError(f'{path}: {str(e).strip(chr(39)).splitlines()[0]}') from e


def validate(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, ranges: dict,
             where: str = '') -> None:
  """Checks ``config`` against ``schema`` (a config of defaults, every key in it) before anything runs:
  every key exists there, at any depth (a section left empty in the schema, such as ``variants``,
  takes any keys); every value has its default's type (an int where an int is, a number where a
  float is, a tuple of the same kinds where a tuple is; None takes anything); and every number is
  within ``ranges`` (dotted key pattern, ``*`` matching any part -> rule: ``'>= 1'``, ``'> 0'`` or
  ``'0..1'``, both ends included; the first pattern that matches applies, to each number of a
  tuple). The first problem is a one-line ConfigError naming the key, prefixed with ``where``."""
  for key, value, ref in _leaves(config, schema, where):
    problem = _type_problem(key, value, ref)
    if problem is None:
      problem = _range_problem(key, value, ranges)
    if problem:
      raise ConfigError(where + problem)


def _leaves(node, ref, where, prefix=''):
  """``(dotted key, value, schema value)`` of every leaf of ``node``; unknown keys are ConfigErrors."""
  for key, value in node.items():
    name = f'{prefix}.{key}' if prefix else key
    if key not in ref:
      raise ConfigError(where + str(_unknown_key(prefix, key, ref.keys())))
    if isinstance(ref[key], ml_collections.ConfigDict):
      if not hasattr(value, 'items'):
        raise ConfigError(f'{where}config key {name}={_show(value)}: expected a section (keys: '
                          f'{", ".join(sorted(ref[key].keys()))}), got {type(value).__name__}')
      if ref[key]:  # an empty section in the schema is free-form
        yield from _leaves(value, ref[key], where, name)
    else:
      yield name, value, ref[key]


_KINDS = ((bool, 'a bool'), (int, 'an int'), (float, 'a number'), (str, 'a string'))


def _kind(x):
  return next((kind for kind, _ in _KINDS if isinstance(x, kind)), type(x))


def kind_name(x) -> str:
  """What a value like ``x`` is, as an error names it: 'an int', 'a number', 'a tuple', ..."""
  if isinstance(x, (tuple, list)):
    return 'a tuple'
  kind = _kind(x)
  return dict(_KINDS).get(kind, getattr(kind, '__name__', str(kind)))


def _type_problem(key: str, value, ref) -> str | None:
  """What is wrong with the type of ``value`` where the schema has ``ref`` (None when it fits)."""
  if ref is None:
    return None
  if isinstance(ref, (tuple, list)):
    return _tuple_problem(key, value, ref)
  kind, name = _kind(ref), kind_name(ref)
  if kind is float:
    fits = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif kind is int:
    fits = isinstance(value, int) and not isinstance(value, bool)
  else:
    fits = isinstance(value, kind)
  return None if fits else f'config key {key}={_show(value)}: expected {name}, got {type(value).__name__}'


def _tuple_problem(key: str, value, ref) -> str | None:
  """A tuple where the schema has the tuple ``ref``: its elements are checked when ``ref``'s are all of
  one kind, or are rows of one length (each column checked where ``ref``'s rows agree on its kind)."""
  if not isinstance(value, (tuple, list)):
    return f'config key {key}={_show(value)}: expected a tuple, got {type(value).__name__}'
  is_row = lambda x: isinstance(x, (tuple, list))
  if ref and all(map(is_row, ref)) and len({len(r) for r in ref}) == 1:
    width = len(ref[0])
    columns = [ref[0][j] if len({_kind(r[j]) for r in ref}) == 1 else None for j in range(width)]
    for i, row in enumerate(value):
      if not is_row(row) or len(row) != width:
        return f'config key {key}[{i}]={_show(row)}: expected a tuple of {width} like {_show(tuple(ref[0]))}'
      problem = next(filter(None, (_type_problem(f'{key}[{i}][{j}]', x, c) for j, (x, c) in
                                   enumerate(zip(row, columns)))), None)
      if problem:
        return problem
  elif ref and not any(map(is_row, ref)) and len({_kind(x) for x in ref}) == 1:
    return next(filter(None, (_type_problem(f'{key}[{i}]', x, ref[0]) for i, x in enumerate(value))), None)
  return None


def _range_problem(key: str, value, ranges: dict) -> str | None:
  """Where ``value`` (or a number of the tuple ``value``) breaks the first rule of ``ranges`` matching ``key``."""
  rule = next((r for pattern, r in ranges.items() if fnmatch.fnmatchcase(key, pattern)), None)
  if rule is None:
    return None
  numbers = value if isinstance(value, (tuple, list)) else (value,)
  for x in numbers:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and not _within(x, rule):
      shown = f'{key}={_show(value)}' if x is value else f'{key}={_show(value)} (element {x!r})'
      return f'config key {shown} is out of range: must be {rule}'
  return None


def _show(value) -> str:
  """``value`` as an error shows it: one line, at most about 80 characters."""
  text = ' '.join(repr(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value).split())
  return text if len(text) <= 80 else text[:80] + '...'


def _within(x, rule: str) -> bool:
  if '..' in rule:
    low, high = (float(b) for b in rule.split('..'))
    return low <= x <= high
  op, bound = rule.split()
  return x >= float(bound) if op == '>=' else x > float(bound)
