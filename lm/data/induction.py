"""Random token strings repeated once: copying by what followed a token the last time (an induction head's
job), as pretraining documents (``pretrain.induction_share``) and as the copy probe's random strings.

The lab's text asks for copying (a worked sum restates the sum asked, counting the word asked) in a few
percent of its tokens, and the tiny model does not learn it from them; strings that are nothing but a copy
teach it in a few hundred steps (``lm.probes``' copy[random]). What that buys after SFT is copying words,
not numbers, whose digits recur (README: random strings repeated once).
"""

import numpy as np

from lm import tokenizer

LENGTH = 30  # tokens in each copy


def text_ids(tok) -> tuple[int, int]:
  """``[low, high)``: the ids of text pieces (no control token; bytes too when the vocab has few pieces)."""
  low = tokenizer.FIRST_TEXT_ID if tok.vocab_size > 2 * tokenizer.FIRST_TEXT_ID else tokenizer.FIRST_BYTE_ID
  return low, tok.vocab_size


def strings(n: int, tok, rng: np.random.Generator) -> list[list[int]]:
  """``n`` random strings of ``LENGTH`` text ids, each followed by itself."""
  low, high = text_ids(tok)
  return [s + s for s in rng.integers(low, high, (n, LENGTH)).tolist()]


def add_to(docs_tokens: list, share: float, tok, seed: int) -> list:
  """``docs_tokens`` followed by enough repeated strings to be ``share`` of the tokens (EOS included)."""
  if not 0 <= share < 1:
    raise ValueError(f'pretrain.induction_share={share}: the share of pretraining tokens that are repeated '
                     'random strings, in [0, 1)')
  n_tokens = sum(len(d) + 1 for d in docs_tokens)
  n = round(share * n_tokens / (1 - share) / (2 * LENGTH + 1))
  return list(docs_tokens) + strings(n, tok, np.random.default_rng([seed, 1]))
