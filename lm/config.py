"""Loading experiment configs, and one-line errors for keys that do not exist."""

import copy
import dataclasses
import difflib
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
    if isinstance(node[key], ml_collections.ConfigDict) and hasattr(value, 'items'):
      _apply(node[key], value, f'{prefix}.{key}' if prefix else key)
    else:
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
