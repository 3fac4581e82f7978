"""The README's first command installs the package alone (``pip install -e .``, no extras): the launcher and
every stage it imports must need nothing beyond ``[project].dependencies`` and what those require."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A child process in which a third-party module imports only when a core dependency's distribution (or one they
# require, transitively, outside extras) provides it: what a fresh `pip install -e .` could import.
CHILD = textwrap.dedent('''
    import importlib.abc, importlib.metadata as md, re, sys
    from packaging.requirements import Requirement

    def norm(name):
      return re.sub(r'[-_.]+', '-', name).lower()

    core, todo = set(), [Requirement(r) for r in sys.argv[1:]]
    while todo:
      req = todo.pop()
      if norm(req.name) in core or (req.marker and not req.marker.evaluate({'extra': ''})):
        continue
      core.add(norm(req.name))
      todo += [Requirement(r) for r in md.requires(req.name) or ()]
    providers = md.packages_distributions()

    class CoreOnly(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top in sys.stdlib_module_names or top == 'lm' or top.startswith('_'):
          return None
        dists = {norm(d) for d in providers.get(top, ())}
        if dists and not dists & core:
          raise ModuleNotFoundError(f'{name} (from {sorted(dists)}: not a core dependency)', name=name)
        return None

    sys.meta_path.insert(0, CoreOnly())
    import lm.cli.launch  # noqa: F401  the launcher imports every stage
    print('imported')
''')


def _core_requirements() -> list[str]:
  """``[project].dependencies`` of pyproject.toml (read by hand: ``tomllib`` is Python 3.11's, the package 3.10's)."""
  block = re.search(r'^dependencies = \[(.*?)^\]', (REPO / 'pyproject.toml').read_text(), re.S | re.M).group(1)
  return re.findall(r'^\s*"([^"]+)"', block, re.M)


def test_the_launcher_and_its_stages_import_with_the_core_dependencies_alone():
  out = subprocess.run([sys.executable, '-c', CHILD, *_core_requirements()], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == 'imported', out.stderr.strip().splitlines()[-1:]


def test_a_module_outside_the_core_dependencies_is_refused():
  """The check itself: with torch installed (the test extra) but not a core dependency, it cannot be imported."""
  out = subprocess.run([sys.executable, '-c', CHILD.replace('import lm.cli.launch', 'import torch'),
                        *_core_requirements()], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "torch (from ['torch']: not a core dependency)" in out.stderr
