"""Metrics of a run: ``<workdir>/metrics.jsonl`` (one JSON object a line) and TensorBoard events.

Only process 0 writes. Every line has ``stage`` and ``step``. On resume, lines of that stage past
the restored step are dropped so that the file reads as one uninterrupted run.
"""

import json
import math
from pathlib import Path

import jax


def read(workdir, stage: str | None = None) -> list[dict]:
  path = Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in rows if stage is None or r.get('stage') == stage]


class Writer:

  def __init__(self, workdir, stage: str, resume_step: int = 0):
    self.stage = stage
    self.active = jax.process_index() == 0
    self.path = Path(workdir) / 'metrics.jsonl'
    self.tb = None
    if not self.active:
      return
    if self.path.exists():  # drop what a killed run logged after its last checkpoint
      kept = [r for r in read(workdir) if r.get('stage') != stage or r['step'] <= resume_step]
      self.path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(str(Path(workdir) / 'tensorboard' / stage), purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {'stage': self.stage, 'step': int(step)}
    row.update({k: _plain(v) for k, v in metrics.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for k, v in row.items():
      if isinstance(v, (int, float)) and k != 'step' and math.isfinite(v):
        self.tb.add_scalar(f'{self.stage}/{k}', v, step)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def _plain(v):
  v = v.item() if hasattr(v, 'item') else v
  return float(v) if isinstance(v, float) or hasattr(v, 'dtype') else v
