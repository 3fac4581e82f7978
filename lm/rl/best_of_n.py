"""Best-of-n sampling with a reward model: draw n responses, keep the one the reward model scores highest.

No training: the policy is the reference itself. Its KL to the reference is taken in closed form,
``KL_bon = log n - (n - 1) / n`` (Stiennon et al. 2020, used by Gao et al. 2022): exact when the n
samples are almost surely distinct, an upper bound otherwise (Beirami et al. 2024).
``pick`` takes the first ``n`` of ``n_max`` samples per prompt, so one set of samples serves every
``n`` up to ``n_max`` (each ``n`` sees a different, nested subset; the estimates are correlated but
each is unbiased for its ``n``).
"""

import math

import numpy as np


def kl(n: int) -> float:
  """KL(best-of-n || reference) in nats: ``log n - (n - 1) / n`` (0 for n = 1)."""
  if n < 1:
    raise ValueError(f'best-of-n needs n >= 1, got {n}')
  return math.log(n) - (n - 1) / n


def pick(scores_GxM, n: int) -> np.ndarray:
  """Index (within the group) of the highest score among the first ``n`` of each group: ``[G]``."""
  scores_GxM = np.asarray(scores_GxM)
  if not 1 <= n <= scores_GxM.shape[1]:
    raise ValueError(f'best-of-n: n={n} must be in 1..{scores_GxM.shape[1]} (the samples drawn per prompt)')
  return np.argmax(scores_GxM[:, :n], axis=1)


def select(values_GxM, scores_GxM, n: int) -> np.ndarray:
  """``values`` (e.g. gold scores) of the best-of-n pick in each group: ``[G]``."""
  idx = pick(scores_GxM, n)
  return np.asarray(values_GxM)[np.arange(len(idx)), idx]
