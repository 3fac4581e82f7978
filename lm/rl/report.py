"""The RLHF run's report: ``<stage_dir>/report.md`` and a PNG of plots, from the stage's metrics.jsonl rows.

Training arms: the first and last iteration of ``lm.rl.names.TABLE`` and the per-family accuracies;
plots of ``names.PANELS`` (proxy and gold reward, KL to the reference, response length, refusals)
and of the accuracy per task family against the iteration (``eval_*`` series where measured), and the
rewards against KL. The report card shows the same figure.
Best-of-n: proxy and gold reward against ``sqrt(KL)``, the axis of Gao et al.'s over-optimisation curves.
"""

import math
from pathlib import Path

import jax

from lm import metrics, plots
from lm.rl import names

BEST_OF_N = ('proxy_reward', 'gold_reward', 'eval_proxy_reward', 'eval_gold_reward')  # best-of-n's series


def figure_name(algorithm: str) -> str:
  return 'best_of_n.png' if algorithm == 'best_of_n' else 'rlhf.png'


def _fmt(v) -> str:
  return '-' if v is None or v != v else f'{v:.4g}'


def figure(rows: list[dict], algorithm: str, path) -> Path:
  """The run's plots from its metrics rows: best-of-n's rewards against ``sqrt(KL)``; otherwise
  ``names.PANELS``, the gold accuracy per task family and the rewards against KL, over the iterations."""
  if algorithm == 'best_of_n':
    keys = [k for k in BEST_OF_N if k in rows[0]]
    root_kl = [math.sqrt(r['kl']) for r in rows]
    return plots.figure(path, [('best-of-n against the reward model',
                                [(k, root_kl, [r[k] for r in rows], '') for k in keys], None)], 'sqrt(KL) (nats^0.5)')
  accuracy = [(k, k[len(names.ACCURACY):-1])
              for k in sorted({k for r in rows for k in r if k.startswith(names.ACCURACY)})]
  panels = [(title, [(label, *plots.series(rows, key), '') for key, label in series], None)
            for title, series in (*names.PANELS, ('gold accuracy per task family (rollouts)', accuracy))]
  kl, proxy, gold = (plots.series(rows, k)[1] for k in ('kl', 'proxy_reward', 'gold_reward'))
  if kl and len(kl) == len(proxy) == len(gold):
    panels.append(('reward against KL (one point per iteration)', [('proxy', kl, proxy, 'o'), ('gold', kl, gold, 'o')],
                   'KL (nats)'))
  return plots.figure(path, panels, 'iteration')


def write(workdir, stage_dir, algorithm: str) -> str:
  """Writes the report and its plots (process 0 only); returns the report's path."""
  stage_dir = Path(stage_dir)
  path = stage_dir / 'report.md'
  if jax.process_index() != 0:
    return str(path)
  stage_dir.mkdir(parents=True, exist_ok=True)
  rows = metrics.read(workdir, 'rlhf')
  lines = [f'# RLHF: {algorithm}', '']
  if algorithm == 'best_of_n':
    keys = [k for k in BEST_OF_N if rows and k in rows[0]]
    lines += ['| n | KL (nats) | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 2) + '|']
    lines += [f'| {r["n"]} | {r["kl"]:.3f} | ' + ' | '.join(_fmt(r[k]) for k in keys) + ' |' for r in rows]
  elif rows:
    first, last = rows[0], rows[-1]
    lines += [f'{len(rows)} iterations logged (step {first["step"]} to {last["step"]}).', '',
              '| metric | first | last |', '|---|---|---|']
    keys = [k for k in names.TABLE if k in last] + sorted(k for k in last if k.startswith(names.ACCURACY))
    lines += [f'| {k} | {_fmt(first.get(k))} | {_fmt(last.get(k))} |' for k in keys]
  if rows:
    name = figure(rows, algorithm, stage_dir / figure_name(algorithm)).name
    lines += ['', f'![{name[:-4]}]({name})']
  path.write_text('\n'.join(lines) + '\n')
  return str(path)
