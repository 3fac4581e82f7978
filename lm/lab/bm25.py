"""Okapi BM25 over a list of texts, in numpy.

    index = BM25Index(texts)
    index.top('who made the ashen lantern', k=3)   # -> [(doc index, score), ...] best first

Terms are lowercased runs of letters and digits. For a query with distinct terms ``t`` (a repeated
query term counts once), document ``d`` of length ``|d|`` terms scores

    sum_t  idf(t) * f(t, d) * (k1 + 1) / (f(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

with ``f(t, d)`` the count of ``t`` in ``d``, ``n(t)`` the number of documents holding ``t``, ``N``
documents and ``avgdl`` their mean length (the non-negative idf of Lucene). Terms not in the index
add nothing; documents scoring 0 are never returned.
"""

import collections
import re

import numpy as np

_TERM = re.compile(r'[a-z0-9]+')


def terms(text: str) -> list[str]:
  return _TERM.findall(text.lower())


class BM25Index:
  """An inverted index: for each term the documents holding it and how often."""

  def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
    if k1 < 0 or not 0 <= b <= 1:
      raise ValueError(f'BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}')
    self.k1, self.b = k1, b
    postings = collections.defaultdict(lambda: ([], []))
    lengths = []
    for i, text in enumerate(texts):
      counts = collections.Counter(terms(text))
      lengths.append(sum(counts.values()))
      for term, count in counts.items():
        postings[term][0].append(i)
        postings[term][1].append(count)
    self.n_docs = len(texts)
    self.lengths_N = np.asarray(lengths, np.float64)
    self.avgdl = float(self.lengths_N.mean()) if self.n_docs and self.lengths_N.sum() else 1.0
    self.postings = {t: (np.asarray(d, np.int64), np.asarray(c, np.float64)) for t, (d, c) in postings.items()}

  def idf(self, term: str) -> float:
    n = len(self.postings[term][0]) if term in self.postings else 0
    return float(np.log1p((self.n_docs - n + 0.5) / (n + 0.5)))

  def scores(self, query: str) -> np.ndarray:
    """The BM25 score of every document for ``query``, shape ``[N]``."""
    scores_N = np.zeros(self.n_docs)
    norm_N = self.k1 * (1 - self.b + self.b * self.lengths_N / self.avgdl)
    for term in dict.fromkeys(terms(query)):
      if term not in self.postings:
        continue
      docs, tf = self.postings[term]
      scores_N[docs] += self.idf(term) * tf * (self.k1 + 1) / (tf + norm_N[docs])
    return scores_N

  def top(self, query: str, k: int) -> list[tuple[int, float]]:
    """The ``k`` best documents with a positive score, best first (ties: lower index first)."""
    scores_N = self.scores(query)
    order = np.lexsort((np.arange(self.n_docs), -scores_N))[:k]
    return [(int(i), float(scores_N[i])) for i in order if scores_N[i] > 0]
