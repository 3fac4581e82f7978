"""The RLHF run's report: ``<stage_dir>/report.md`` and a PNG of plots, from the stage's metrics.jsonl rows.

Training arms: proxy and gold reward, KL to the reference, response length, accuracy per task family,
refusal and over-refusal against the iteration (``eval_*`` series where measured). Best-of-n: proxy
and gold reward against ``sqrt(KL)``, the axis of Gao et al.'s over-optimisation curves.
"""

from pathlib import Path

import jax
import numpy as np

from lm import metrics

PANELS = (  # title, [(metric, label)]
    ('reward', [('proxy_reward', 'proxy (reward model)'), ('gold_reward', 'gold (lab scorers)'),
                ('eval_proxy_reward', 'proxy, eval prompts'), ('eval_gold_reward', 'gold, eval prompts')]),
    ('KL to the reference (nats per response)', [('kl', 'k1'), ('kl_k3', 'k3'), ('eval_kl', 'k1, eval prompts')]),
    ('response length (tokens)', [('response_length', 'rollouts'), ('eval_response_length', 'eval prompts')]),
    ('refusal rates', [('harmful_refusal_rate', 'refuses harmful'), ('over_refusal_rate', 'refuses benign'),
                       ('finished', 'ends its turn')]),
)
TABLE = ('proxy_reward', 'gold_reward', 'kl', 'kl_k3', 'response_length', 'finished', 'harmful_refusal_rate',
         'over_refusal_rate', 'eval_proxy_reward', 'eval_gold_reward', 'eval_kl', 'kl_coef', 'loss', 'policy_loss',
         'value_loss', 'entropy', 'clip_fraction', 'accuracy', 'margin', 'sample_s', 'score_s', 'update_s')


def _figure(path, panels, xlabel):
  """One PNG with a plot per panel: ``[(title, [(label, x, y)])]``."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  cols = min(len(panels), 2)
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
  for ax, (title, series) in zip(axes.flat, panels):
    for label, x, y in series:
      ax.plot(x, y, marker='o' if len(x) < 30 else None, markersize=3, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _series(rows, key):
  pts = [(r['step'], r[key]) for r in rows if key in r and r[key] is not None and np.isfinite(r[key])]
  return [p[0] for p in pts], [p[1] for p in pts]


def _fmt(v) -> str:
  return '-' if v is None or v != v else f'{v:.4g}'


def write(workdir, stage_dir, algorithm: str) -> str:
  """Writes the report and its plots (process 0 only); returns the report's path."""
  stage_dir = Path(stage_dir)
  path = stage_dir / 'report.md'
  if jax.process_index() != 0:
    return str(path)
  stage_dir.mkdir(parents=True, exist_ok=True)
  rows = metrics.read(workdir, 'rlhf')
  lines = [f'# RLHF: {algorithm}', '']
  images = []
  if algorithm == 'best_of_n':
    keys = [k for k in ('proxy_reward', 'gold_reward', 'eval_proxy_reward', 'eval_gold_reward') if rows and k in rows[0]]
    lines += ['| n | KL (nats) | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 2) + '|']
    lines += [f'| {r["n"]} | {r["kl"]:.3f} | ' + ' | '.join(_fmt(r[k]) for k in keys) + ' |' for r in rows]
    root_kl = [np.sqrt(r['kl']) for r in rows]
    _figure(stage_dir / 'best_of_n.png', [('best-of-n against the reward model',
                                           [(k, root_kl, [r[k] for r in rows]) for k in keys])], 'sqrt(KL) (nats^0.5)')
    images.append('best_of_n.png')
  elif rows:
    first, last = rows[0], rows[-1]
    lines += [f'{len(rows)} iterations logged (step {first["step"]} to {last["step"]}).', '',
              '| metric | first | last |', '|---|---|---|']
    keys = [k for k in TABLE if k in last] + sorted(k for k in last if k.startswith('acc['))
    lines += [f'| {k} | {_fmt(first.get(k))} | {_fmt(last.get(k))} |' for k in keys]
    accuracy = [(k, k[4:-1]) for k in sorted({k for r in rows for k in r if k.startswith('acc[')})]
    panels = []
    for title, keys in list(PANELS) + [('gold accuracy per task family (rollouts)', accuracy)]:
      series = [(label, *_series(rows, key)) for key, label in keys]
      if any(s[1] for s in series):
        panels.append((title, [s for s in series if s[1]]))
    if panels:
      _figure(stage_dir / 'rlhf.png', panels, 'iteration')
      images.append('rlhf.png')
  lines += [''] + [f'![{name[:-4]}]({name})' for name in images]
  path.write_text('\n'.join(lines) + '\n')
  return str(path)
