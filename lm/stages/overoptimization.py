"""Over-optimisation stage: fits Gao et al.'s curves to the rlhf stage's gold and proxy rewards.

Reads ``<workdir>/rlhf`` metrics: for PPO (and the other online arms) the eval rows (fixed eval
prompts: ``eval_kl_k3``, ``eval_gold_reward``, ``eval_proxy_reward``), for best-of-n its row per n
(``kl`` = log n - (n - 1)/n). Gains are over the first point (the initial policy). Fits the RL form
to online arms and the best-of-n form to best-of-n (``lm.rl.overoptimization``), for gold and for proxy,
and writes ``<workdir>/overoptimization/curves.png`` (points and fitted curves against sqrt(KL)).
Outputs: ``gold_alpha``, ``gold_beta``, ``gold_kl_peak``, ``gold_r2``, the same for ``proxy_``, the
largest KL reached and the gold/proxy gains there.
"""

from pathlib import Path

import jax
import numpy as np

from lm import metrics, outputs, plots
from lm.config import ConfigError
from lm.rl import overoptimization
from lm.stages import common


def points(rows: list[dict], algorithm: str) -> dict[str, np.ndarray]:
  """``{'kl', 'gold', 'proxy'}`` series from the rlhf metrics rows, sorted by KL."""
  if algorithm == 'best_of_n':
    series = [(r['kl'], r['gold_reward'], r['proxy_reward']) for r in rows if 'n' in r]
  else:
    # k3: never negative and unbiased (k1's mean over a few dozen prompts can dip below 0 near the start)
    series = [(r['eval_kl_k3'], r['eval_gold_reward'], r['eval_proxy_reward']) for r in rows if 'eval_kl_k3' in r]
  if len(series) < 3:
    raise ConfigError(f'overoptimization: the rlhf stage logged {len(series)} points; it needs >= 3 '
                      '(more rlhf.best_of_n values, or rlhf.eval_every smaller than rlhf.iterations)')
  kl, gold, proxy = (np.asarray(x, np.float64) for x in zip(*sorted(series)))
  return {'kl': np.maximum(kl, 0.0), 'gold': gold, 'proxy': proxy}


def _plot(path, d, series: dict, fits: dict, form: str):
  """Measured gains (points) and their fitted curves (lines of the same colour) against d."""
  grid = np.linspace(max(d.max(), 1e-3) / 200, d.max() * 1.5 + 1e-3, 200)
  lines = []
  for i, (name, gain) in enumerate(series.items()):
    f = fits[name]
    lines += [(f'{name} (measured)', d, gain, f'C{i}o'),
              (f'{name} fit: a={f["alpha"]:.2f}, b={f["beta"]:.2f}', grid,
               overoptimization.curve(grid, f['alpha'], f['beta'], form), f'C{i}-')]
  plots.figure(path, [('reward gain over the initial policy', lines, None)], 'd = sqrt(KL to the initial policy)',
               dpi=100)


def run(config, workdir, inputs) -> outputs.Curves:
  algorithm = common.need(inputs, 'rlhf', 'overoptimization').algorithm
  form = 'bon' if algorithm == 'best_of_n' else 'rl'
  p = points(metrics.read(workdir, 'rlhf'), algorithm)
  d = np.sqrt(p['kl'])
  gains = {'gold': p['gold'] - p['gold'][0], 'proxy': p['proxy'] - p['proxy'][0]}
  fits = {name: overoptimization.fit(d, gain, form) for name, gain in gains.items()}
  out_dir = Path(workdir) / 'overoptimization'
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(out_dir / 'curves.png', d, gains, fits, form)
  out = {'form': form, 'points': int(len(d)), 'kl_max': float(p['kl'][-1]),
         'gold_gain_at_kl_max': float(gains['gold'][-1]), 'proxy_gain_at_kl_max': float(gains['proxy'][-1]),
         'gold_gain_best': float(gains['gold'].max()), 'kl_at_gold_best': float(p['kl'][int(np.argmax(gains['gold']))])}
  for name, f in fits.items():
    out.update({f'{name}_{k}': v for k, v in f.items()})
  print('[overoptimization] ' + ', '.join(f'{k}={v:.3g}' for k, v in out.items() if isinstance(v, float)), flush=True)
  return outputs.Curves(plot=str(out_dir / 'curves.png'), metrics=out)
