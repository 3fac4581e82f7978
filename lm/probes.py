"""Teacher-forced probes: what a model does with its context, and what it knows.

Copying, logged at each pretraining eval (``pretrain.copy_probe`` worked sums; 0 is off). Top-1 accuracy of
the next token, by what the token is:

  copy[random]   the second copy of a random token string repeated once (an induction head's job)
  copy[restate]  a worked sum's closing line restating the sum its first line states ("So 47 + 85 =")
  copy[operand]  the digit steps' operands, read by place from the first line ("tens: 4 + 8 + carry ...")
  digit_step     a digit step's sum given its operands and carry ("4 + 8 + carry 1 = 13")

Chance for a digit is about 0.1. The worked sums are the lab's own (``world.scratchpad``) on 2-digit
operands (the sums a scratchpad is for) drawn from a fixed seed: a copy is read from the context, whatever
the text trained on. Only tokens that are one digit are scored, so a tokenizer that does not split digits
leaves copy[operand], copy[restate] and digit_step out.

Facts (``fact_ranks``; ``python -m lm.facts``): a world fact said with its right value and with every other
value that attribute takes among the world's known entities of that kind, each text's log-likelihood
summed over what follows its context; the fact is known when the right value's text scores highest.
Formats: ``qa``, pretraining's question-and-answer documents ("Q: What work does Ada Hale do?\nA: Ada Hale
is a baker.", scored over the answer; ``lm.lab.world.fact_qa``), and ``statement``, that answer sentence
alone (scored past its first token). Chance is 1 / the candidates, 1/4 (legs) to 1/30 or so (people).
"""

import dataclasses
import random

import jax
import jax.numpy as jnp
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


# -- what the model knows --------------------------------------------------------------------------

FACT_FORMATS = ('qa', 'statement')


def fact_texts(w: world.World, kind: str, name: str, attr: str, fmt: str) -> list[tuple[str, str]]:
  """(context, continuation) of entity ``name``'s ``attr`` said with each value the known entities of
  ``kind`` hold: the right value first, then the others in sorted order."""
  if fmt not in FACT_FORMATS:
    raise ValueError(f'fact format {fmt!r}; valid: {", ".join(FACT_FORMATS)}')
  e = next((x for x in w.known(kind) if x.name == name), None)
  if e is None:
    raise ValueError(f'no known {kind} named {name!r} in the world')
  right = getattr(e, attr)
  values = [right] + sorted({getattr(x, attr) for x in w.known(kind)} - {right}, key=str)
  out = []
  for v in values:
    question, answer = world.fact_qa(dataclasses.replace(e, **{attr: v}), attr).split('\n')
    out.append((f'{question}\nA:', answer.removeprefix('A:')) if fmt == 'qa' else ('', answer.removeprefix('A: ')))
  return out


def _fact_scorer(model, tok, texts, mesh, rules, batch_size: int = 64):
  """``score(params) -> float64 [len(texts)]``: each ``(context, continuation)``'s log-likelihood under
  ``model``, summed over the continuation's tokens (with no context, over every token past the first);
  one jitted program for every call."""
  rows = []
  for context, continuation in texts:
    ids = list(tok.encode(context + continuation))
    rows.append((ids, len(tok.encode(context)) if context else 1))  # the index of the first token scored
  T = max(len(ids) for ids, _ in rows)
  if T > model.config.max_seq_len:
    raise ValueError(f'a fact text is {T} tokens, over model.max_seq_len={model.config.max_seq_len}')
  batches = []
  for start in range(0, len(rows), batch_size):
    tokens_BxT, mask_BxT = np.full((batch_size, T), tok.pad_id, np.int32), np.zeros((batch_size, T - 1), bool)
    for b, (ids, first) in enumerate(rows[start:start + batch_size]):
      tokens_BxT[b, :len(ids)] = ids
      mask_BxT[b, first - 1:len(ids) - 1] = True  # the target at t is token t + 1
    batches.append((tokens_BxT, mask_BxT))

  @jax.jit
  def logprobs(params, tokens_BxT):
    logits_BxTxV = model.apply({'params': params}, tokens_BxT)['logits'][:, :-1].astype(jnp.float32)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    return jnp.take_along_axis(logp_BxTxV, tokens_BxT[:, 1:, None], axis=-1)[..., 0]

  def score(params):
    totals = []
    with sharding.use_mesh(mesh, rules):
      for tokens_BxT, mask_BxT in batches:
        logp_BxT = jax.device_get(logprobs(params, jax.device_put(tokens_BxT, sharding.replicated(mesh))))
        totals.append((np.asarray(logp_BxT, np.float64) * mask_BxT).sum(-1))
    return np.concatenate(totals)[:len(rows)]

  return score


def fact_logprobs(params, model, tok, texts, mesh, rules, batch_size: int = 64) -> np.ndarray:
  """Each ``(context, continuation)``'s log-likelihood under ``model``, summed over the continuation's tokens
  (with no context, over every token past the first), float64."""
  return _fact_scorer(model, tok, texts, mesh, rules, batch_size)(params)


def _said(facts, fmt):
  """Every fact's ``fact_texts`` in one list, and each fact's (start, end) in it."""
  texts, spans = [], []
  for fact in facts:
    said = fact_texts(*fact, fmt)
    spans.append((len(texts), len(texts) + len(said)))
    texts += said
  return texts, spans


def _ranks(totals, spans) -> list[int]:
  return [int((totals[start + 1:end] > totals[start]).sum()) for start, end in spans]


def fact_ranks(params, model, tok, facts, fmt: str, mesh, rules) -> list[int]:
  """Per fact ``(world, kind, name, attr)``: how many of its other values' ``fact_texts`` score above the
  right value's (0: the fact is known)."""
  texts, spans = _said(facts, fmt)
  return _ranks(fact_logprobs(params, model, tok, texts, mesh, rules), spans)


def world_facts(records) -> dict[str, list[tuple]]:
  """``{'eval': facts, 'other': facts}``, each ``(world, kind, name, attr)``: the world questions among eval
  set ``records`` and, drawn with a fixed seed, as many of the world's other known facts."""
  asked = sorted({(r['meta']['kind'], r['meta']['subject'], r['meta']['attr']) for r in records
                  if r['family'] == 'world_qa'})
  if not asked:
    raise ValueError('the eval set has no world_qa items')
  w = world.World.from_config(next(r['meta']['world'] for r in records if r['family'] == 'world_qa'))
  others = sorted(set((e.kind, e.name, attr) for e in w.known() for attr in world.FACT_QUESTIONS[e.kind]) - set(asked))
  others = random.Random(0).sample(others, min(len(asked), len(others)))
  return {name: [(w, *fact) for fact in facts] for name, facts in (('eval', asked), ('other', others))}


def make_fact_probe(model, tok, facts_by_name: dict, mesh, rules):
  """``probe(params, frozen) -> {'facts_known[<name>]': share}``: the share of each set of facts
  (``world_facts``) known in the ``qa`` format, one jitted program for every call."""
  said = {name: _said(facts, 'qa') for name, facts in facts_by_name.items()}
  texts = [t for name in said for t in said[name][0]]
  score = _fact_scorer(model, tok, texts, mesh, rules)

  def probe(params, frozen):
    totals, offset, out = score(params), 0, {}
    for name, (texts_of, spans) in said.items():
      ranks = _ranks(totals[offset:offset + len(texts_of)], spans)
      out[f'facts_known[{name}]'] = sum(r == 0 for r in ranks) / len(ranks)
      offset += len(texts_of)
    return out

  return probe


def combined(*probes_or_none):
  """One probe logging what each given probe logs (None: no probe given)."""
  given = [p for p in probes_or_none if p is not None]
  if not given:
    return None
  return lambda params, frozen: {k: v for p in given for k, v in p(params, frozen).items()}
