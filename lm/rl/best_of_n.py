"""Best-of-n sampling with a reward model: draw n responses, keep the one the reward model scores highest.

No training: the policy is the reference itself. Its KL to the reference is taken in closed form,
``KL_bon = log n - (n - 1) / n`` (Stiennon et al. 2020, used by Gao et al. 2022): exact when the n
samples are almost surely distinct, an upper bound otherwise (Beirami et al. 2024).
``pick`` takes the first ``n`` of ``n_max`` samples per prompt, so one set of samples serves every
``n`` up to ``n_max`` (each ``n`` sees a different, nested subset; the estimates are correlated but
each is unbiased for its ``n``). ``measure`` runs the whole measurement for the rlhf stage.
"""

import math

import jax
import numpy as np

from lm import metrics
from lm.data import pipeline


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
  bad = np.argwhere(~np.isfinite(scores_GxM[:, :n]))
  if len(bad):
    raise ValueError(f'best-of-n: score {scores_GxM[tuple(bad[0])]} of sample {bad[0][1]} of prompt {bad[0][0]} '
                     'is not finite (argmax would pick it)')
  return np.argmax(scores_GxM[:, :n], axis=1)


def select(values_GxM, scores_GxM, n: int) -> np.ndarray:
  """``values`` (e.g. gold scores) of the best-of-n pick in each group: ``[G]``."""
  idx = pick(scores_GxM, n)
  return np.asarray(values_GxM)[np.arange(len(idx)), idx]


def measure(c, seed: int, workdir, rollout, examples, eval_examples) -> dict:
  """Proxy and gold reward of best-of-n for each n in ``c.best_of_n`` (the rlhf section), over
  ``c.iterations`` batches of training prompts and over the fixed eval prompts (``eval_*``; none
  when ``eval_examples`` is empty), sampled from the reference by ``rollout`` (an
  ``lm.rl.rollouts.Rollouts`` with ``max(c.best_of_n)`` responses per prompt). Metrics rows have
  step = n; returns the metrics of the largest n, plus ``n<k>.*`` for every n."""

  def collect(batches, key):
    proxy, gold, length = [], [], []
    for i, batch_examples in enumerate(batches):
      _, stats, rows, _ = rollout({'policy': rollout.ref}, batch_examples, jax.random.fold_in(key, i), train=False)
      proxy.append(stats['score'].reshape(-1, rollout.group))
      gold.append(np.array([r['score'] for r in rows]).reshape(-1, rollout.group))
      length.append(stats['response_length'].reshape(-1, rollout.group))
    return np.concatenate(proxy), np.concatenate(gold), np.concatenate(length)

  prompts = pipeline.Batches({'index': np.arange(len(examples))}, c.prompts_per_iteration, seed=seed)
  train = collect([[examples[i] for i in prompts.host_batch(it)['index']] for it in range(c.iterations)],
                  jax.random.key(seed))
  held = collect([eval_examples], jax.random.key(seed + 1)) if eval_examples else None
  writer = metrics.Writer(workdir, 'rlhf')
  out = {}
  for n in sorted(c.best_of_n):
    row = {'n': n, 'kl': kl(n)}
    for prefix, measured in (('', train), ('eval_', held)):
      if measured is not None:
        proxy, gold, length = measured
        row.update({f'{prefix}proxy_reward': float(np.mean(select(proxy, proxy, n))),
                    f'{prefix}gold_reward': float(np.mean(select(gold, proxy, n))),
                    f'{prefix}response_length': float(np.mean(select(length, proxy, n))),
                    f'{prefix}kl': kl(n)})
    writer.write(n, row)
    out.update({f'n{n}.{k}': v for k, v in row.items() if k != 'n'})
  writer.close()
  return {**out, **{k: v for k, v in row.items() if k != 'n'}, 'n': max(c.best_of_n)}
