"""Metrics of a run: ``<workdir>/metrics.jsonl`` (one JSON object a line), TensorBoard events, and an
optional experiment tracker.

Only process 0 writes. Every line has ``stage`` and ``step``. On resume, lines of that stage past
the restored step are dropped so that the file reads as one uninterrupted run.

Tracker (the run's ``config.json`` key ``tracker``: ``none``, the default, ``trackio`` or ``wandb``):
each stage is a run named after the stage in a project named after the workdir, with the resolved
config; every numeric metric is logged at its step, and sample tables beside them: the RLHF stage's
rollouts (``<workdir>/rlhf/rollouts.jsonl``, its last ``TABLE_ROWS``) when its writer closes, the
eval stage's traces through ``log_tables``. trackio writes locally (a SQLite file under
``TRACKIO_DIR``, by default ``~/.cache/huggingface/trackio``; ``trackio show`` opens its dashboard);
wandb follows its own settings (``WANDB_MODE=offline`` keeps it on disk under the workdir). A resumed
stage continues its tracker run; what a killed run logged there past its checkpoint stays.
"""

import json
import math
from pathlib import Path

import jax

TRACKERS = ('none', 'trackio', 'wandb')
TABLE_ROWS = 1000


def read(workdir, stage: str | None = None) -> list[dict]:
  path = Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in rows if stage is None or r.get('stage') == stage]


class Tracker:
  """One stage of a run in trackio or wandb: scalars by step, tables of samples."""

  def __init__(self, kind: str, workdir, stage: str):
    workdir = Path(workdir)
    path = workdir / 'config.json'
    config = json.loads(path.read_text()) if path.is_file() else {}
    project = workdir.resolve().name
    self.kind = kind
    if kind == 'trackio':
      import trackio
      self.run = trackio.init(project=project, name=stage, config=config, resume='allow', auto_log_cpu=False,
                              auto_log_gpu=False)
      self._table = trackio.Table
    elif kind == 'wandb':
      import wandb
      self.run = wandb.init(project=project, name=stage, id=f'{project}-{stage}', dir=str(workdir), config=config,
                            resume='allow', reinit='finish_previous')
      self._table = wandb.Table
    else:
      raise ValueError(f'tracker={kind!r}; valid: {", ".join(TRACKERS)}')

  def log(self, step: int, values: dict) -> None:
    if values:
      self.run.log(values, step=int(step))

  def table(self, name: str, rows: list[dict], step: int = 0) -> None:
    """``rows`` (dicts) as a table: the union of their keys as columns, nested values as JSON text."""
    rows = rows[-TABLE_ROWS:]
    if not rows:
      return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    data = [[_cell(r.get(c)) for c in columns] for r in rows]
    self.run.log({name: self._table(columns=columns, data=data)}, step=int(step))

  def close(self) -> None:
    self.run.finish()


def tracker_of(workdir) -> str:
  """The run's tracker (``config.json`` key ``tracker``; ``none`` when absent)."""
  path = Path(workdir) / 'config.json'
  kind = (json.loads(path.read_text()).get('tracker') if path.is_file() else None) or 'none'
  if kind not in TRACKERS:
    raise ValueError(f'{path}: tracker={kind!r}; valid: {", ".join(TRACKERS)}')
  return kind


def open_tracker(workdir, stage: str) -> Tracker | None:
  """The stage's tracker run, or None when the run has none (or on a process other than 0)."""
  kind = tracker_of(workdir)
  if kind == 'none' or jax.process_index() != 0:
    return None
  return Tracker(kind, workdir, stage)


def log_tables(workdir, stage: str, tables: dict, values: dict | None = None, step: int = 0) -> None:
  """Logs ``tables`` (name -> list of row dicts) and numeric ``values`` to the run's tracker, if any."""
  tracker = open_tracker(workdir, stage)
  if tracker is None:
    return
  try:
    tracker.log(step, {k: v for k, v in (values or {}).items() if _is_number(v)})
    for name, rows in tables.items():
      tracker.table(name, rows, step)
  finally:
    tracker.close()


def _read_jsonl(path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Writer:

  def __init__(self, workdir, stage: str, resume_step: int = 0):
    self.stage = stage
    self.active = jax.process_index() == 0
    self.workdir = Path(workdir)
    self.path = self.workdir / 'metrics.jsonl'
    self.tb = self.tracker = None
    self.last_step = resume_step
    if not self.active:
      return
    if self.path.exists():  # drop what a killed run logged after its last checkpoint
      kept = [r for r in read(workdir) if r.get('stage') != stage or r['step'] <= resume_step]
      self.path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(str(Path(workdir) / 'tensorboard' / stage),
                            purge_step=resume_step + 1 if resume_step else None)
    self.tracker = open_tracker(workdir, stage)

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {'stage': self.stage, 'step': int(step)}
    row.update({k: _plain(v) for k, v in metrics.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != 'step' and math.isfinite(v)}
    for k, v in scalars.items():
      self.tb.add_scalar(f'{self.stage}/{k}', v, step)
    if self.tracker is not None:
      self.tracker.log(step, scalars)
    self.last_step = int(step)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
    if self.tracker is not None:
      rollouts = self.workdir / self.stage / 'rollouts.jsonl'
      if self.stage == 'rlhf' and rollouts.is_file():
        self.tracker.table('rollouts', _read_jsonl(rollouts), self.last_step)
      self.tracker.close()
      self.tracker = None


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and math.isfinite(v)


def _cell(v):
  return v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v, ensure_ascii=False)


def _plain(v):
  v = v.item() if hasattr(v, 'item') else v
  return float(v) if isinstance(v, float) or hasattr(v, 'dtype') else v
