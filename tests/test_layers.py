"""The package's layers import one way: each module only from its own layer or those below it, no
``lm`` import inside a function (the way around a cycle), and no stage imports another stage."""

import ast
from pathlib import Path

import pytest

LM = Path(__file__).resolve().parents[1] / 'lm'

# lowest first; a module belongs to the first layer one of whose prefixes it starts with
LAYERS = (
    ('base', ('lm.config', 'lm.sharding', 'lm.optim', 'lm.checkpoint', 'lm.metrics', 'lm.tokenizer',
              'lm.hf_tokenizer', 'lm.plots', 'lm.outputs', 'lm.stats', 'lm.hardware', 'lm.compile_time')),
    ('model', ('lm.model',)),
    ('interop', ('lm.interop',)),
    ('lab', ('lm.lab',)),
    ('tools', ('lm.tools',)),
    ('data', ('lm.data',)),
    ('steps', ('lm.steps',)),
    ('inference', ('lm.inference',)),
    ('evals', ('lm.evals', 'lm.probes')),
    ('train', ('lm.train',)),
    ('rl', ('lm.rl',)),
    ('report', ('lm.report',)),
    ('serve', ('lm.serve',)),
    ('configs', ('lm.configs',)),
    ('stages', ('lm.stages',)),
    ('cli', ('lm.cli',)),
)
ENTRY_POINTS = ('lm.launch', 'lm.claims', 'lm.chat', 'lm.generate', 'lm.world',
                'lm.benchmark', 'lm.copying', 'lm.facts')  # ``python -m lm.<name>``


def _modules() -> dict[str, Path]:
  out = {}
  for path in sorted(LM.rglob('*.py')):
    name = '.'.join(path.relative_to(LM.parent).with_suffix('').parts)
    out[name.removesuffix('.__init__')] = path
  return out


def _layer(module: str) -> int:
  if module in ENTRY_POINTS or module.endswith('.__main__') or module == 'lm':
    return len(LAYERS)  # entry points sit on top of everything
  for i, (_, prefixes) in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in prefixes):
      return i
  raise AssertionError(f'{module} is in no layer: add it to LAYERS')


def _imports(path: Path):
  """``(imported module, line, inside a function)`` for every import of ``lm`` in the file."""
  tree = ast.parse(path.read_text())
  functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      if name == 'lm' or name.startswith('lm.'):
        yield name, node.lineno, id(node) in inside


def _resolve(name: str, modules) -> str:
  """The module an imported name lives in (``lm.stages.common.load_params`` -> ``lm.stages.common``)."""
  while name not in modules and '.' in name:
    name = name.rpartition('.')[0]
  return name


def test_every_module_imports_only_its_layer_or_below():
  modules = _modules()
  problems = []
  for module, path in modules.items():
    for name, line, in_function in _imports(path):
      target = _resolve(name, modules)
      where = f'{path.relative_to(LM.parent)}:{line}'
      if in_function:
        problems.append(f'{where}: imports {target} inside a function')
      if _layer(target) > _layer(module):
        problems.append(f'{where}: {module} ({LAYERS[_layer(module)][0]}) imports {target} '
                        f'({LAYERS[_layer(target)][0] if _layer(target) < len(LAYERS) else "entry point"})')
      if (module.startswith('lm.stages.') and target.startswith('lm.stages.') and target != module
          and target != 'lm.stages.common'):
        problems.append(f'{where}: stage {module} imports stage {target}')
  assert not problems, '\n'.join(problems)


def test_the_lab_needs_neither_jax_nor_tools():
  """The lab is pure Python (numpy at most): building a dataset never imports jax or a tool."""
  for path in (LM / 'lab').rglob('*.py'):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
          [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      for name in names:
        assert not name.startswith(('jax', 'flax', 'optax', 'lm.tools', 'lm.model')), f'{path}: imports {name}'


@pytest.mark.parametrize('package', ['lm.model', 'lm.lab', 'lm.inference', 'lm.rl', 'lm.report', 'lm.cli'])
def test_a_package_init_imports_nothing_that_imports_it_back(package):
  modules = _modules()
  init = modules[package]
  own = [_resolve(n, modules) for n, _, _ in _imports(init)]
  for target in own:
    if target.startswith(package + '.'):
      back = [_resolve(n, modules) for n, _, _ in _imports(modules[target])]
      assert package not in back, f'{package}/__init__.py imports {target}, which imports {package} back'
