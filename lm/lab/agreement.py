"""How much a rater panel agrees: Kendall's W and Krippendorff's ordinal alpha over R-way rankings.

  ranks_WxR = ranks(per_rater_WxR)          # rater w's rank of candidate r (0 = best)
  kendall_w(ranks_WxR)                       # one prompt's Kendall's W
  krippendorff_alpha(values_WxU)             # ordinal alpha over units (NaN: not rated)
  summary(records)                           # per family and domain, over PreferenceRankings records

**Kendall's W** of m raters ranking n candidates (no ties): with ``S_i`` the sum of candidate i's ranks,
``W = 12 sum_i (S_i - m (n - 1) / 2)^2 / (m^2 (n^3 - n))``: 1 when the raters agree exactly; raters
ranking independently at random give ``E[W] = 1 / m``, so ``mean_spearman = (m W - 1) / (m - 1)``,
the mean Spearman correlation over pairs of raters, is about 0 for them.

**Krippendorff's alpha** (ordinal): ``1 - D_o / D_e``, the disagreement observed within units over
the disagreement expected by chance from every value given, with the ordinal distance between values c
and k ``(sum_{g=c..k} n_g - (n_c + n_k) / 2)^2`` (``n_g``: how often value g was given). 1 is perfect
agreement, 0 that of chance (independent raters), below 0 systematic disagreement. A family's units are
its (prompt, candidate) pairs, the values the ranks the raters gave.

``summary`` reports, for every family and every domain (``Family.domain``, keys ``[domain:<name>]``) of
the records, for the objective ones together (``[objective]``) and for all of them (no suffix):
``kendall_w`` (mean over prompts), ``mean_spearman``, ``alpha``, ``panel_gold_accuracy`` (the fraction
of pairs of strictly different gold utility that the panel's aggregate ranking orders like gold) and
``agreement_prompts``. Records with fewer than two raters (human rankings) count in none of them.
"""

from collections import defaultdict

import numpy as np

from lm.lab import tasks


def ranks(per_rater_WxR) -> np.ndarray:
  """``[W, R]`` each rater's rank (0 = best) of each candidate, from rankings (candidate indices, best first)."""
  per_rater_WxR = np.asarray(per_rater_WxR)
  W, R = per_rater_WxR.shape
  out = np.empty((W, R), np.int64)
  out[np.arange(W)[:, None], per_rater_WxR] = np.arange(R)[None, :]
  return out


def kendall_w(ranks_WxR) -> float:
  """Kendall's coefficient of concordance of complete rankings without ties (module docstring)."""
  r = np.asarray(ranks_WxR, np.float64)
  m, n = r.shape
  s = r.sum(0) - m * (n - 1) / 2
  return float(12 * np.sum(s * s) / (m * m * (n ** 3 - n)))


def mean_spearman(w: float, n_raters: int) -> float:
  """The mean Spearman correlation over pairs of raters, from Kendall's W of ``n_raters``."""
  return (n_raters * w - 1) / (n_raters - 1)


def krippendorff_alpha(values_WxU) -> float:
  """Krippendorff's alpha for ordinal values; ``values_WxU[w, u]`` is rater w's value for unit u (NaN:
  none). Units with fewer than two values are left out; NaN when no two values differ."""
  v = np.asarray(values_WxU, np.float64)
  v = v[:, (~np.isnan(v)).sum(0) >= 2]
  categories = np.unique(v[~np.isnan(v)])
  Y = len(categories)
  counts_UxY = np.stack([(v == c).sum(0) for c in categories], 1).astype(np.float64)
  m_U = counts_UxY.sum(1)
  pairs_UxYxY = counts_UxY[:, :, None] * counts_UxY[:, None, :] - np.eye(Y)[None] * counts_UxY[:, :, None]
  coincidence_YxY = (pairs_UxYxY / (m_U - 1)[:, None, None]).sum(0)
  n_Y = coincidence_YxY.sum(1)
  n = n_Y.sum()
  cum = np.concatenate([[0.0], np.cumsum(n_Y)])
  lo, hi = np.minimum.outer(np.arange(Y), np.arange(Y)), np.maximum.outer(np.arange(Y), np.arange(Y))
  delta_YxY = (cum[hi + 1] - cum[lo] - (n_Y[lo] + n_Y[hi]) / 2) ** 2
  expected = np.sum(np.outer(n_Y, n_Y) * delta_YxY)
  if expected == 0:
    return float('nan')
  return float(1 - (n - 1) * np.sum(coincidence_YxY * delta_YxY) / expected)


def _pairwise_gold(ranking, gold_utilities) -> tuple[int, int]:
  """(pairs the ranking orders like gold, pairs of strictly different gold utility)."""
  position = np.argsort(np.asarray(ranking))
  g = np.asarray(gold_utilities, np.float64)
  better = g[:, None] > g[None, :]
  return int((better & (position[:, None] < position[None, :])).sum()), int(better.sum())


def measures(records) -> dict:
  """``kendall_w``, ``mean_spearman``, ``alpha``, ``panel_gold_accuracy``, ``agreement_prompts`` of
  ``records`` (NaN where none has two raters)."""
  rated = [r for r in records if len(r.get('rater_rankings') or ()) >= 2]
  if not rated:
    return {'kendall_w': float('nan'), 'mean_spearman': float('nan'), 'alpha': float('nan'),
            'panel_gold_accuracy': float('nan'), 'agreement_prompts': 0}
  ws = [kendall_w(ranks(r['rater_rankings'])) for r in rated]
  n_raters = max(len(r['rater_rankings']) for r in rated)
  values = [np.pad(ranks(r['rater_rankings']).astype(np.float64), ((0, n_raters - len(r['rater_rankings'])), (0, 0)),
                   constant_values=np.nan) for r in rated]
  right, pairs = np.sum([_pairwise_gold(r['ranking'], r['gold_utilities']) for r in rated], 0)
  return {'kendall_w': float(np.mean(ws)),
          'mean_spearman': float(np.mean([mean_spearman(w, len(r['rater_rankings'])) for w, r in zip(ws, rated)])),
          'alpha': krippendorff_alpha(np.concatenate(values, 1)),
          'panel_gold_accuracy': float(right / pairs) if pairs else float('nan'), 'agreement_prompts': len(rated)}


def domain(family: str) -> str:
  return tasks.TASKS[family].domain if family in tasks.TASKS else 'general'


def groups(records) -> dict[str, list]:
  """'' (all), each family, ``domain:<name>`` and ``objective`` (every family outside the subjective
  domain) -> its records."""
  out = defaultdict(list)
  for r in records:
    d = domain(r['family'])
    for name in ('', r['family'], f'domain:{d}') + (('objective',) if d != 'subjective' else ()):
      out[name].append(r)
  return out


def summary(records) -> dict:
  """The module docstring's measures of every family, every domain and all ``records``, as flat keys
  (``kendall_w``, ``kendall_w[joke]``, ``kendall_w[domain:subjective]``, ...)."""
  out = {}
  for name, recs in sorted(groups(records).items()):
    suffix = f'[{name}]' if name else ''
    out.update({f'{k}{suffix}': v for k, v in measures(recs).items()})
  return out
