"""Estimates with 95% intervals: a mean of per-prompt scores, and a paired difference between two models
on the same prompts. Deterministic (a fixed bootstrap seed), so a report is reproducible.

  est = mean([1, 0, 1, 1])            # Estimate(value=0.75, low=..., high=..., n=4)
  d = paired_difference(sft, rlhf)     # rlhf - sft, bootstrap over prompts
  d.clears(0.05)                       # the whole interval is above +0.05

A mean of 0/1 scores gets the Wilson score interval (right at 0 and 1, where a bootstrap collapses to
a point); other means and every difference a percentile bootstrap of ``N_BOOT`` resamples.
"""

import dataclasses
import math

import numpy as np

LEVEL = 0.95
N_BOOT = 4000
SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
  value: float
  low: float
  high: float
  n: int

  def clears(self, minimum: float) -> bool:
    """The effect holds: the interval lies above ``minimum`` (a positive minimum effect), or for a
    negative ``minimum`` (a decrease wanted) below it."""
    return self.low > minimum if minimum >= 0 else self.high < minimum

  def __str__(self) -> str:
    if self.n == 0 or math.isnan(self.value):
      return '-'
    return f'{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]'

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


NAN = Estimate(float('nan'), float('nan'), float('nan'), 0)


def wilson(successes: float, n: int, level: float = LEVEL) -> tuple[float, float]:
  """The Wilson score interval of a binomial proportion."""
  if n == 0:
    return float('nan'), float('nan')
  z = _z(level)
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def _z(level: float) -> float:
  """The standard normal quantile at (1 + level) / 2, by bisection on erf (no scipy)."""
  target, lo, hi = (1 + level) / 2, 0.0, 10.0
  for _ in range(100):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < target else (lo, mid)
  return (lo + hi) / 2


def _bootstrap(values: np.ndarray, level: float) -> tuple[float, float]:
  rng = np.random.default_rng(SEED)
  idx = rng.integers(0, len(values), size=(N_BOOT, len(values)))
  means = values[idx].mean(axis=1)
  return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def mean(values, level: float = LEVEL) -> Estimate:
  """The mean of per-prompt values with its interval (NaN values are left out)."""
  x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                 np.float64)
  if len(x) == 0:
    return NAN
  if np.all((x == 0) | (x == 1)):
    low, high = wilson(float(x.sum()), len(x), level)
  else:
    low, high = _bootstrap(x, level)
  return Estimate(float(x.mean()), low, high, len(x))


def paired_difference(before, after, level: float = LEVEL) -> Estimate:
  """``mean(after - before)`` over the same prompts, with a paired bootstrap interval."""
  a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'paired difference of {a.shape} and {b.shape} values: not the same prompts')
  keep = ~(np.isnan(a) | np.isnan(b))
  d = b[keep] - a[keep]
  if len(d) == 0:
    return NAN
  low, high = _bootstrap(d, level)
  return Estimate(float(d.mean()), low, high, len(d))


def win_rate(before, after, level: float = LEVEL) -> Estimate:
  """How often ``after`` beats ``before`` on the same prompt (ties count half), with its interval."""
  a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'win rate of {a.shape} and {b.shape} values: not the same prompts')
  wins = (b > a) + 0.5 * (b == a)
  if len(wins) == 0:
    return NAN
  low, high = _bootstrap(wins.astype(np.float64), level)
  return Estimate(float(wins.mean()), low, high, len(wins))
