"""The table (and optional plot) that ends a run with variants: one row per variant.

``comparison.columns`` picks and orders the ``stage.key`` columns (default: every scalar output of
the variants' own stages); ``comparison.plot = ('stage.key_x', 'stage.key_y')`` adds a scatter of the
variants (e.g. gold reward against KL: a reward-KL frontier) as ``comparison.png``.
"""

from pathlib import Path

from lm import plots


def _value(results: dict, column: str):
  stage, key = column.split('.', 1)
  return results[stage].get(key) if stage in results else None


def table(results: dict, columns=()) -> str:
  """Markdown: one row per variant (``results``: variant -> {stage: outputs})."""
  columns = list(columns)
  if not columns:
    for outputs in results.values():
      for stage, out in outputs.items():
        for key in out.scalars():
          if f'{stage}.{key}' not in columns:
            columns.append(f'{stage}.{key}')
  lines = ['| variant | ' + ' | '.join(columns) + ' |', '|---' * (len(columns) + 1) + '|']
  for variant, outputs in results.items():
    cells = []
    for col in columns:
      value = _value(outputs, col)
      cells.append('' if value is None else f'{value:.4g}' if isinstance(value, float) else str(value))
    lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot(results: dict, x: str, y: str, path: Path) -> bool:
  """Scatter of ``y`` against ``x``, one labelled point per variant that has both; False if none has."""
  points = [(v, _value(o, x), _value(o, y)) for v, o in results.items()]
  points = [(v, a, b) for v, a, b in points if isinstance(a, (int, float)) and isinstance(b, (int, float))]
  if not points:
    return False
  plots.scatter(path, points, x, y)
  return True
