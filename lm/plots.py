"""The plots every report draws: one PNG of line panels, and a labelled scatter. Matplotlib (Agg), imported
at the first plot: every command imports the report card, few draw."""

import functools
import math
from pathlib import Path


@functools.cache
def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def series(rows, key, x: str = 'step') -> tuple[list, list]:
  """``(xs, ys)`` of the metrics rows that hold a finite number under ``key``."""
  pts = [(r[x], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
  return [p[0] for p in pts], [p[1] for p in pts]


def figure(path, panels, xlabel: str = 'step', columns: int = 2, dpi: int = 90) -> Path:
  """One PNG with a plot per panel: ``[(title, [(label, xs, ys, style[, (lows, highs)])], xlabel or None)]``
  (a style of '' picks markers for short series; lows and highs, e.g. a 95% interval, are shaded around
  the line); empty series are left out, panels without any too."""
  panels = [(t, [s for s in ss if len(s[1])], xl) for t, ss, xl in panels]
  panels = [p for p in panels if p[1]] or [('no data', [], None)]
  cols = min(len(panels), columns)
  rows = -(-len(panels) // cols)
  plt = _pyplot()
  fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
  for ax, (title, lines, panel_xlabel) in zip(axes.flat, panels):
    for label, xs, ys, style, *band in lines:
      (line,) = ax.plot(xs, ys, style or ('o-' if len(xs) < 30 else '-'), label=label, markersize=3)
      if band and band[0] is not None:
        ax.fill_between(xs, *band[0], color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel(panel_xlabel or xlabel)
    ax.grid(alpha=0.3)
    if lines:
      ax.legend(fontsize=8)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return Path(path)


def scatter(path, points, xlabel: str, ylabel: str) -> Path:
  """Labelled points ``[(label, x, y)]``, e.g. one per variant of a sweep."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  for name, x, y in points:
    ax.scatter([x], [y])
    ax.annotate(name, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return Path(path)
