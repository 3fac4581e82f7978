"""What a workdir holds, read only: its runs, and for each its finished stages, the models one can
talk to, its config and world, eval traces, RLHF rollouts, metrics and report card.

A run is the workdir itself, and each directory right under it with a ``config.json`` (the variants
and ``shared`` of a sweep). Every name a request carries (run, stage, trace model) is looked up
among those that exist and never joined onto a path, so nothing outside the workdir is reachable.

RLHF rollouts: ``<run>/<stage>/rollouts.jsonl`` when a run saved them, one JSON object a line with
``prompt`` (messages), ``response`` (the assistant message) or ``ids`` (the response's token ids),
``proxy_reward``, ``gold_reward`` (or ``score``), optionally ``iteration`` and ``kl`` (per response
token). The policy is that stage's model, its reference the ``sft`` stage's.
"""

import functools
import json
from pathlib import Path

from lm import metrics as metrics_lib
from lm import outputs, tokenizer
from lm.lab.world import World

# eval trace name (lm/stages/eval.py MODELS) -> the stage whose model wrote it
TRACE_STAGES = {'base': 'pretrain', 'sft': 'sft', 'rlhf': 'rlhf', 'sft+orig': 'sft_original',
                'sft+synth': 'sft_synthetic'}
REFERENCE_STAGE = 'sft'  # the RLHF policy's frozen reference


class Missing(LookupError):
  """A run, stage, trace or file that does not exist (HTTP 404)."""


class Unavailable(RuntimeError):
  """What the request needs is not in this run (no trained model, no world): HTTP 409."""


class Run:
  """One run directory."""

  def __init__(self, name: str, directory: Path):
    self.name, self.dir = name, directory

  def stages(self) -> dict[str, outputs.Outputs]:
    """Every finished stage (``<stage>/outputs.json``), by name; one that does not load is left out."""
    out = {}
    for path in sorted(self.dir.glob('*/outputs.json')):
      try:
        out[path.parent.name] = outputs.load(path)
      except (ValueError, TypeError, OSError):
        continue
    return out

  def models(self) -> list[str]:
    """Stages whose outputs are a language model (pretrain, sft, rlhf, import, ...; not the reward model)."""
    return [name for name, out in self.stages().items()
            if isinstance(out, outputs.Model) and not isinstance(out, outputs.Reward)]

  def model(self, stage: str) -> outputs.Model:
    """The trained model of ``stage`` (a one-line Missing / Unavailable error otherwise)."""
    models = self.models()
    if not models:
      done = ', '.join(self.stages()) or 'none'
      raise Unavailable(f'run {self.name!r} has no trained model yet (finished stages: {done})')
    if stage not in models:
      raise Missing(f'unknown stage {stage!r} in run {self.name!r}; models: {", ".join(models)}')
    return self.stages()[stage]

  def tokenizer(self, stage: str):
    """The tokenizer of ``stage``'s model (loaded once)."""
    return _load_tokenizer(self.model(stage).tokenizer)

  def config(self) -> dict | None:
    path = self.dir / 'config.json'
    return json.loads(path.read_text()) if path.is_file() else None

  def world(self) -> World:
    """The lab's world of this run (``data.seed``, ``data.world`` of its config)."""
    config = self.config()
    if not config or 'data' not in config:
      raise Unavailable(f'run {self.name!r} has no config.json with data.seed and data.world: no lab world')
    return _world(config['data']['seed'], json.dumps(config['data'].get('world', {}), sort_keys=True))

  def panel(self) -> dict:
    """The simulated panel's settings (``raters.panel``; the data stage's when the config has none)."""
    config = self.config() or {}
    return dict(config.get('raters', {}).get('panel') or config.get('data', {}).get('preferences', {}).get('panel')
                or {})

  def traces(self) -> dict[str, Path]:
    """Eval traces by model name (``eval/traces_<model>.jsonl``)."""
    return {p.stem.removeprefix('traces_'): p for p in sorted((self.dir / 'eval').glob('traces_*.jsonl'))}

  def trace_rows(self, model: str) -> list[dict]:
    traces = self.traces()
    if model not in traces:
      raise Missing(f'no eval traces of model {model!r} in run {self.name!r} (have: {", ".join(traces) or "none"})')
    return _jsonl(traces[model])

  def rollouts(self) -> dict[str, Path]:
    """Saved RLHF rollouts by stage (``<stage>/rollouts.jsonl``)."""
    return {p.parent.name: p for p in sorted(self.dir.glob('*/rollouts.jsonl'))}

  def rollout_rows(self, stage: str) -> list[dict]:
    saved = self.rollouts()
    if stage not in saved:
      raise Missing(f'run {self.name!r} saved no RLHF rollouts of stage {stage!r}')
    return _jsonl(saved[stage])

  def metrics(self) -> list[dict]:
    return metrics_lib.read(self.dir)

  def report(self) -> Path | None:
    path = self.dir / 'report.html'
    return path if path.is_file() else None

  def summary(self) -> dict:
    """What the runs page shows about this run."""
    stages = self.stages()
    return {'name': self.name,
            'stages': [{'name': name, 'kind': type(out).__name__, 'wall_s': out.wall_s, 'metrics': out.scalars()}
                       for name, out in stages.items()],
            'models': self.models(), 'traces': list(self.traces()), 'rollouts': list(self.rollouts()),
            'report': self.report() is not None, 'config': self.config() is not None,
            'trace_stages': {m: TRACE_STAGES.get(m, m) for m in self.traces()}}


class Workdir:
  """The directory ``lm.serve`` was given; its runs are found anew on every call."""

  def __init__(self, root):
    self.root = Path(root).resolve()
    if not self.root.is_dir():
      raise ValueError(f'workdir {root} does not exist or is not a directory')
    self._runs: dict[str, Run] = {}

  def runs(self) -> dict[str, Run]:
    found = {}
    if (self.root / 'config.json').is_file() or any(self.root.glob('*/outputs.json')):
      found['.'] = self.root
    for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
      if (sub / 'config.json').is_file():
        found[sub.name] = sub
    for name, directory in found.items():
      if name not in self._runs:
        self._runs[name] = Run(name, directory)
    return {name: self._runs[name] for name in found}

  def run(self, name: str) -> Run:
    runs = self.runs()
    if name not in runs:
      raise Missing(f'unknown run {name!r}; runs: {", ".join(runs) or "none"}')
    return runs[name]


def _jsonl(path: Path) -> list[dict]:
  rows = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        raise ValueError(f'{path.name} line {n} is not JSON') from None
  return rows


@functools.lru_cache(maxsize=16)
def _load_tokenizer(path: str):
  return tokenizer.load(path)


@functools.lru_cache(maxsize=4)
def _world(seed: int, world_json: str) -> World:
  return World(seed=seed, **json.loads(world_json))
