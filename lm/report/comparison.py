"""The table (and optional plot) that ends a run with variants: one row per variant.

``comparison.columns`` picks and orders the ``stage.key`` columns (default: every scalar output of
the variants' own stages); ``comparison.plot = ('stage.key_x', 'stage.key_y')`` adds a scatter of the
variants (e.g. gold reward against KL: a reward-KL frontier) as ``comparison.png``;
``comparison.curves = ('stage.key_x', ('stage.key_y', ...))`` draws one panel per y against x as
``comparison_curves.png``, a line per series: variants named ``series@point`` share a line (a sweep
of sizes at several budgets: ``small@400``, ``small@800``, ``base@400``, ...), with its 95% interval
shaded where the stage reports one (``<key>.low`` and ``<key>.high``).
"""

from pathlib import Path

from lm import plots


def _value(results: dict, column: str):
  stage, key = column.split('.', 1)
  return results[stage].get(key) if stage in results else None


def _cell(results: dict, column: str) -> str:
  """The value, with ``[low, high]`` when the stage reports ``<key>.low`` and ``<key>.high``."""
  value = _value(results, column)
  if value is None:
    return ''
  if not isinstance(value, float):
    return str(value)
  low, high = _value(results, column + '.low'), _value(results, column + '.high')
  if isinstance(low, float) and isinstance(high, float):
    return f'{value:.3f} [{low:.3f}, {high:.3f}]'
  return f'{value:.4g}'


def table(results: dict, columns=()) -> str:
  """Markdown: one row per variant (``results``: variant -> {stage: outputs})."""
  columns = list(columns)
  if not columns:
    for outputs in results.values():
      for stage, out in outputs.items():
        scalars = out.scalars()
        for key in scalars:
          bound = key.endswith(('.low', '.high')) and key.rsplit('.', 1)[0] in scalars  # shown in its cell
          if f'{stage}.{key}' not in columns and not bound:
            columns.append(f'{stage}.{key}')
  lines = ['| variant | ' + ' | '.join(columns) + ' |', '|---' * (len(columns) + 1) + '|']
  for variant, outputs in results.items():
    cells = [_cell(outputs, col) for col in columns]
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


def series(results: dict, x: str, y: str) -> list:
  """``y`` against ``x``, one ``(name, xs, ys, style, (lows, highs))`` per series (the variant's name before
  '@'), points sorted by x; the band is ``y``'s 95% interval where every point has ``<y>.low`` and
  ``<y>.high``, else None."""
  points = {}
  for variant, outputs in results.items():
    a, b = _value(outputs, x), _value(outputs, y)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
      points.setdefault(variant.split('@')[0], []).append((a, b, _value(outputs, y + '.low'),
                                                           _value(outputs, y + '.high')))
  out = []
  for name, pts in points.items():
    pts.sort(key=lambda p: p[0])
    bounded = all(isinstance(p[2], float) and isinstance(p[3], float) for p in pts)
    band = ([p[2] for p in pts], [p[3] for p in pts]) if bounded else None
    out.append((name, [p[0] for p in pts], [p[1] for p in pts], 'o-', band))
  return out


def curves(results: dict, x: str, ys, path: Path) -> bool:
  """One panel per column of ``ys`` against ``x`` (``series``: a line per series, its interval shaded);
  False if no variant has x and any y."""
  panels = [(y, series(results, x, y), x) for y in ys]
  if not any(lines for _, lines, _ in panels):
    return False
  plots.figure(path, panels, xlabel=x, columns=3)
  return True
