"""Reward over-optimisation curves (Gao, Schulman and Hilton 2022): gold reward against d = sqrt(KL).

With R(d) the gold reward gained over the initial policy at distance d = sqrt(KL(pi || pi_init)):
  RL (PPO)     R(d) = d (alpha - beta ln d)    peaks at d* = exp(alpha / beta - 1)
  best-of-n    R(d) = d (alpha - beta d)       peaks at d* = alpha / (2 beta)
Both are linear in (alpha, beta) after dividing by d, so each is fit by least squares on R(d) / d
(points with d > 0). The KL where the fitted gold reward peaks is d*^2 (inf when the fit never turns
down: beta <= 0).
"""

import math

import numpy as np

FORMS = ('rl', 'bon')


def fit(d, gain, form: str) -> dict:
  """``{'alpha', 'beta', 'd_peak', 'kl_peak', 'gain_peak', 'r2'}`` of ``form`` fit to ``gain(d)``."""
  if form not in FORMS:
    raise ValueError(f'over-optimisation form {form!r}; valid: {", ".join(FORMS)}')
  d, gain = np.asarray(d, np.float64), np.asarray(gain, np.float64)
  keep = d > 0
  d, gain = d[keep], gain[keep]
  if len(d) < 2:
    raise ValueError(f'over-optimisation fit needs at least 2 points with KL > 0, got {len(d)}')
  slope_term = np.log(d) if form == 'rl' else d
  A = np.stack([np.ones_like(d), -slope_term], axis=1)
  (alpha, beta), *_ = np.linalg.lstsq(A, gain / d, rcond=None)
  predicted = curve(d, alpha, beta, form)
  total = np.sum((gain - gain.mean()) ** 2)
  r2 = 1.0 - np.sum((gain - predicted) ** 2) / total if total > 0 else float('nan')
  d_peak = peak(alpha, beta, form)
  return {'alpha': float(alpha), 'beta': float(beta), 'd_peak': d_peak, 'kl_peak': d_peak ** 2,
          'gain_peak': float(curve(d_peak, alpha, beta, form)) if math.isfinite(d_peak) else float('inf'),
          'r2': float(r2)}


def curve(d, alpha: float, beta: float, form: str):
  d = np.asarray(d, np.float64)
  return d * (alpha - beta * (np.log(d) if form == 'rl' else d))


def peak(alpha: float, beta: float, form: str) -> float:
  """The d where the fitted curve is highest (inf if it keeps rising)."""
  if beta <= 0:
    return float('inf')
  return float(math.exp(alpha / beta - 1.0)) if form == 'rl' else float(alpha / (2.0 * beta))
