"""Teacher-forced probes of what a model does with its context, logged at each pretraining eval
(``pretrain.copy_probe`` worked sums; 0 is off). Top-1 accuracy of the next token, by what the token is:

  copy[random]   the second copy of a random token string repeated once (an induction head's job)
  copy[restate]  a worked sum's closing line restating the sum its first line states ("So 47 + 85 =")
  copy[operand]  the digit steps' operands, read by place from the first line ("tens: 4 + 8 + carry ...")
  digit_step     a digit step's sum given its operands and carry ("4 + 8 + carry 1 = 13")

Chance for a digit is about 0.1. The worked sums are the lab's own (``world.scratchpad``) on 2-digit
operands (the sums a scratchpad is for) drawn from a fixed seed: a copy is read from the context, whatever
the text trained on. Only tokens that are one digit are scored, so a tokenizer that does not split digits
leaves copy[operand], copy[restate] and digit_step out.
"""

import random

import jax
import numpy as np

from lm import sharding
from lm.data import induction
from lm.lab import world

ROLES = {'copy[random]': 'a random string, its second copy', 'copy[restate]': 'the closing line restates the sum',
         'copy[operand]': "the digit steps' operands, by place", 'digit_step': "a digit step's sum"}


def _roles(text: str) -> dict[int, str]:
  """The role of each character of a worked sum that a probe scores: the digit steps' operands and sums
  (``world.DIGIT_STEP``) and the operands the closing line restates (its digits before "=")."""
  roles = {}
  for m in world.DIGIT_STEP.finditer(text):
    for group, role in ((1, 'copy[operand]'), (2, 'copy[operand]'), (4, 'digit_step')):
      roles.update((i, role) for i in range(m.start(group), m.end(group)))
  closing = text.rindex('\n') + 1
  roles.update((i, 'copy[restate]') for i in range(closing, text.index('=', closing)) if text[i].isdigit())
  return roles


def token_roles(tok, text: str) -> tuple[list[int], list[str | None]]:
  """``text``'s tokens and each one's role (None: not scored): a token that decodes to one digit takes
  that character's role."""
  ids = tok.encode(text)
  ends = [len(tok.decode(ids[:i + 1])) for i in range(len(ids))]
  roles, out, start = _roles(text), [], 0
  for end in ends:
    piece = text[start:end].strip()
    out.append(roles.get(text.index(piece, start)) if len(piece) == 1 and piece.isdigit() else None)
    start = end
  return ids, out


def worked_sums(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  return [world.scratchpad(rng.randint(10, 99), rng.randint(10, 99), 'add') for _ in range(n)]


def probe_rows(tok, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """``tokens [R, T]`` and ``role_ids [R, T]`` (index into the returned role names, -1: not scored) of
  ``n`` worked sums and ``n`` random strings repeated once, right-padded with ``tok.pad_id``."""
  names = list(ROLES)
  seqs = [token_roles(tok, t) for t in worked_sums(n, seed)]
  for repeated in induction.strings(n, tok, np.random.default_rng(seed)):
    seqs.append((repeated, [None] * induction.LENGTH + ['copy[random]'] * induction.LENGTH))
  T = max(len(ids) for ids, _ in seqs)
  tokens, role_ids = np.full((len(seqs), T), tok.pad_id, np.int32), np.full((len(seqs), T), -1, np.int32)
  for r, (ids, roles) in enumerate(seqs):
    tokens[r, :len(ids)] = ids
    role_ids[r, :len(ids)] = [-1 if x is None else names.index(x) for x in roles]
  return tokens, role_ids, names


def make_copy_probe(model, tok, n: int, mesh, rules, seed: int = 0):
  """``probe(params, frozen) -> {role: top-1 accuracy}`` over ``probe_rows``; None when ``n`` is 0."""
  if n < 0:
    raise ValueError(f'pretrain.copy_probe={n}: the number of worked sums (and random strings) to probe, >= 0')
  if not n:
    return None
  tokens_RxT, role_ids_RxT, names = probe_rows(tok, n, seed)
  if tokens_RxT.shape[1] > model.config.max_seq_len:
    raise ValueError(f'pretrain.copy_probe: a probe row is {tokens_RxT.shape[1]} tokens, over model.max_seq_len='
                     f'{model.config.max_seq_len}')

  @jax.jit
  def hits(params, tokens_RxT):
    predicted_RxT = model.apply({'params': params}, tokens_RxT)['logits'][:, :-1].argmax(-1)
    return predicted_RxT == tokens_RxT[:, 1:]

  def probe(params, frozen):
    with sharding.use_mesh(mesh, rules):
      hit_RxT = np.asarray(jax.device_get(hits(params, jax.device_put(tokens_RxT, sharding.replicated(mesh)))))
    targets = role_ids_RxT[:, 1:]
    return {name: float(hit_RxT[targets == i].mean()) for i, name in enumerate(names) if (targets == i).any()}

  return probe
