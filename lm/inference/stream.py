"""Token-by-token decoding, for streaming an answer and for looking at its trajectory.

``sample.prefill`` writes the prompts once; then one compiled ``step`` per token picks every row's
next token (``sample.choose``, or a forced one), reports its log-prob, the top-k alternatives and
the entropy of the model's distribution there, and writes it into the cache (``sample.extend``).

    for event in stream(params, model, tok, [prompt_ids], SamplingConfig(temperature=0), seeds=[0]):
      ...   # Token, Call and Done events, in step order; a row's Done comes after its last Token

Numbers are ``lm.sample``'s: a token's log-prob is the RAW log-softmax of the logits (temperature 1,
no top-k / top-p), the same value ``sample.generate`` returns for it; the alternatives (the ``top_k``
most likely ids) and the entropy (nats) are of that same distribution. Greedy decoding writes the
tokens ``sample.generate`` writes for the same prompt: the same prompt bucket, and without forced
tokens the same cache length ``P + max_new_tokens``.

Randomness is per row: row b's token at step i is drawn with ``fold_in(key(seeds[b]), i)``, so a
row's answer does not depend on the other rows of its batch.

Forced tokens: ``forced[b]`` is written into row b before anything is sampled, each token reported
with its log-prob like a sampled one (``source='forced'``): re-scoring a finished turn
(``score_only``: the row ends with its forced tokens), or regenerating from a chosen token (the
prefix up to it forced, then sampling). Forced tokens count against ``max_new_tokens`` like
sampled ones.

Tools (``tools`` given): ``lm.inference.agent``'s protocol, one token at a time. ``<|/tool_call|>``
ends a segment; the call (``chat.parse`` of the segment) runs through ``lm.tools`` (``run_call``);
its result block, cut to ``agent_cfg.result_tokens``, is then forced into the row token by token
(``source='tool'``) and sampling goes on. At most ``agent_cfg.max_calls`` calls: one more stops the
row at that call (``stopped='tool_budget'``, the call not run). Each segment gets
``max_new_tokens``; the cache holds ``agent.turn_length`` tokens after the prompt, as in the agent.

Shapes: rows are padded to ``B`` (a power of two, a multiple of the mesh's data x fsdp), prompts
left-padded to ``P = sample.prompt_bucket``, the cache holds ``S = P + room`` slots. One compiled
prefill per (model, B, P, S) and one compiled step per (model, sampling config, top_k, B, S): a
step is never recompiled per token; ``compile_count()`` counts both.
"""

import dataclasses
import functools
from collections import deque
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lm import sharding as sharding_lib
from lm.data import chat_formats
from lm.inference import agent, sample
from lm.tokenizer import END_TOOL_CALL_ID, END_TOOL_RESULT_ID, TOOL_RESULT_ID
from lm.tools import base as tool_base


@dataclasses.dataclass(frozen=True)
class Token:
  """One token written into ``row``: sampled (``model``), given (``forced``) or a tool result's (``tool``)."""
  row: int
  id: int
  logprob: float             # raw log-softmax of the model at this step (see the module doc)
  top_ids: tuple[int, ...]   # the ``top_k`` most likely ids, most likely first
  top_logprobs: tuple[float, ...]
  entropy: float             # nats, of the raw distribution
  source: str


@dataclasses.dataclass(frozen=True)
class Call:
  """A tool call of ``row`` and what it returned (``agent.run``'s call records)."""
  row: int
  call: dict


@dataclasses.dataclass(frozen=True)
class Done:
  """``row`` has ended: every id of its turn, who wrote each, its calls and ``agent.trace`` of the turn."""
  row: int
  ids: list[int]
  sources: list[str]
  calls: list[dict]
  stopped: str | None        # None (a stop id), 'max_new_tokens', 'tool_budget', 'cancelled', 'forced'
  trace: dict


# ------------------------------------------------------------------------------- compiled

def _step(params, state, logits_BxV, keys_B, i, forced_B, live_B, *, model, cfg: sample.SamplingConfig, top_k: int):
  """One token per row: chosen (or forced where ``forced_B >= 0``), reported, and written into the cache."""
  logits_BxV = logits_BxV.astype(jnp.float32)
  logp_BxV = jax.nn.log_softmax(logits_BxV)
  choose = lambda logits_V, key: sample.choose(logits_V[None], jax.random.fold_in(key, i), cfg)[0]
  token_B = jnp.where(forced_B >= 0, forced_B, jax.vmap(choose)(logits_BxV, keys_B))
  token_B = jnp.where(live_B, token_B, cfg.pad_id)
  logp_B = jnp.take_along_axis(logp_BxV, token_B[:, None], -1)[:, 0]
  top_logp_BxA, top_ids_BxA = jax.lax.top_k(logp_BxV, top_k)
  entropy_B = -jnp.sum(jnp.where(logp_BxV > -jnp.inf, jnp.exp(logp_BxV) * logp_BxV, 0.0), axis=-1)
  new_logits_BxV, state = sample.extend(params, model, state, token_B[:, None], live_B[:, None])
  logits_BxV = jnp.where(live_B[:, None], new_logits_BxV.astype(jnp.float32), logits_BxV)
  report = {'token': token_B, 'logprob': logp_B, 'top_ids': top_ids_BxA, 'top_logprobs': top_logp_BxA,
            'entropy': entropy_B}
  return report, logits_BxV, state


def _under_mesh(fn, mesh, rules):
  if mesh is None:
    return fn

  def run(*args):
    with sharding_lib.use_mesh(mesh, rules):
      return fn(*args)
  return run


@functools.lru_cache(maxsize=64)
def _prefill(model, batch: int, prompt_len: int, cache_len: int, mesh, rules):
  """``sample.prefill`` jitted once per shape (the key)."""
  del batch, prompt_len
  fn = jax.jit(lambda params, prompt, mask: sample.prefill(params, model, prompt, mask, cache_len))
  return _under_mesh(fn, mesh, rules)


@functools.lru_cache(maxsize=64)
def _stepper(model, cfg: sample.SamplingConfig, top_k: int, batch: int, cache_len: int, mesh, rules):
  """``_step`` jitted once per shape (the key); the decode state is donated (the cache updated in place)."""
  del batch, cache_len
  fn = jax.jit(functools.partial(_step, model=model, cfg=cfg, top_k=top_k), donate_argnums=(1,))
  return _under_mesh(fn, mesh, rules)


def compile_count() -> int:
  """How many prefill and step programs have been built in this process."""
  return _prefill.cache_info().misses + _stepper.cache_info().misses


# --------------------------------------------------------------------------------- the loop

def room_bucket(n: int) -> int:
  """Cache room for ``n`` forced tokens: 0, else a multiple of 64 (re-scoring reuses a few programs)."""
  return -(-n // 64) * 64


@dataclasses.dataclass
class _Row:
  forced: deque            # (id, source) still to write
  ids: list = dataclasses.field(default_factory=list)
  sources: list = dataclasses.field(default_factory=list)
  calls: list = dataclasses.field(default_factory=list)
  segment_start: int = 0   # where the current segment (since the last tool result) begins in ids
  segment_tokens: int = 0  # tokens of the row's own in the current segment (sampled or forced)
  in_result: bool = False  # inside a tool result block


def stream(params, model, tokenizer, prompts_ids, cfg: sample.SamplingConfig, seeds, *, forced=None,
           tools: dict | None = None, agent_cfg: agent.AgentConfig = agent.AgentConfig(), top_k: int = 5,
           score_only: bool = False, mesh=None, rules=sharding_lib.DEFAULT_RULES,
           cancelled: Callable[[int], bool] = lambda row: False) -> Iterator[Token | Call | Done]:
  """Decodes ``prompts_ids`` (1-D id arrays) token by token, yielding events (see the module doc).

  ``seeds`` (one int per row) seed each row's sampling; ``forced`` (one id list per row, or None) is
  written first; ``cancelled(row)`` is asked before every step and ends a row that says True.
  """
  n = len(prompts_ids)
  if n == 0 or len(seeds) != n:
    raise ValueError(f'stream: {n} prompts and {len(seeds)} seeds (need one seed per prompt, at least one)')
  forced = [[int(i) for i in f] for f in forced] if forced is not None else [[] for _ in range(n)]
  if len(forced) != n:
    raise ValueError(f'stream: {len(forced)} forced lists for {n} prompts')
  if score_only and not all(forced):
    raise ValueError('stream: score_only needs forced tokens in every row')
  lengths = [len(np.asarray(p).reshape(-1)) for p in prompts_ids]
  if min(lengths) == 0:
    raise ValueError(f'stream: prompt {lengths.index(0)} is empty')
  chat_format = chat_formats.of(tokenizer)
  if chat_format is not None and cfg.stop_ids == sample.SamplingConfig.stop_ids:  # lm's ids mean nothing there
    cfg = dataclasses.replace(cfg, stop_ids=chat_format.stop_ids, pad_id=tokenizer.pad_id)
  if tools and END_TOOL_CALL_ID not in cfg.stop_ids:
    cfg = dataclasses.replace(cfg, stop_ids=cfg.stop_ids + (END_TOOL_CALL_ID,))
  N = cfg.max_new_tokens
  room = (agent.turn_length(cfg, agent_cfg) if tools else N) + room_bucket(max(map(len, forced)))
  shards = 1 if mesh is None else mesh.shape['data'] * mesh.shape['fsdp']
  B, P = sample._batch_bucket(n, shards), sample.prompt_bucket(max(lengths))
  rules = tuple(rules) if rules is not None else None
  prefill = _prefill(model, B, P, P + room, mesh, rules)
  step = _stepper(model, dataclasses.replace(cfg, max_new_tokens=1), top_k, B, P + room, mesh, rules)
  put = (lambda x: jnp.asarray(x)) if mesh is None else (
      lambda x: jax.device_put(x, sharding_lib.batch_sharding(mesh, np.ndim(x))))

  prompt_BxP, mask_BxP = sample.left_pad(prompts_ids, P, B, cfg.pad_id)
  logits_BxV, state = prefill(params, put(prompt_BxP), put(mask_BxP))
  keys_B = put(jax.random.key_data(jax.vmap(jax.random.key)(jnp.asarray(list(seeds) + [0] * (B - n), jnp.uint32))))
  keys_B = jax.random.wrap_key_data(keys_B)
  rows = [_Row(deque((i, 'forced') for i in f)) for f in forced]
  live = np.zeros((B,), bool)
  live[:n] = True

  def end(b, stopped):
    live[b] = False
    r = rows[b]
    return Done(b, r.ids, r.sources, r.calls, stopped,
                agent.trace(tokenizer, r.ids, r.calls, stopped, cfg.stop_ids))

  for i in range(room):
    for b in np.flatnonzero(live):
      if cancelled(int(b)):
        yield end(b, 'cancelled')
    if not live.any():
      return
    forced_B = np.full((B,), -1, np.int32)
    for b in np.flatnonzero(live):
      if rows[b].forced:
        forced_B[b] = rows[b].forced[0][0]
    report, logits_BxV, state = step(params, state, logits_BxV, keys_B, jnp.int32(i), put(forced_B), put(live))
    report = jax.device_get(report)
    for b in np.flatnonzero(live):
      r, token = rows[b], int(report['token'][b])
      source = r.forced.popleft()[1] if r.forced else 'model'
      r.ids.append(token)
      r.sources.append(source)
      if source != 'tool':
        r.segment_tokens += 1
      yield Token(int(b), token, float(report['logprob'][b]), tuple(int(t) for t in report['top_ids'][b]),
                  tuple(float(x) for x in report['top_logprobs'][b]), float(report['entropy'][b]), source)
      if token == TOOL_RESULT_ID:
        r.in_result = True
      if token == END_TOOL_RESULT_ID and r.in_result:
        r.in_result, r.segment_start, r.segment_tokens = False, len(r.ids), 0
      if r.forced:
        continue
      if score_only:
        yield end(b, None if token in cfg.stop_ids else 'forced')
      elif tools and token == END_TOOL_CALL_ID:
        call = _run_call(tokenizer, r, tools, agent_cfg)
        if call is None:
          yield end(b, 'tool_budget')
        else:
          yield Call(int(b), call)
      elif token in cfg.stop_ids:
        yield end(b, None)
      elif r.segment_tokens >= N or i == room - 1:
        yield end(b, 'max_new_tokens')


def _run_call(tokenizer, r: _Row, tools: dict, agent_cfg: agent.AgentConfig) -> dict | None:
  """Runs the call that ends the row's segment and queues its result block, with ``agent.run``'s own
  helpers (the same parsing, records and result block); None when the row has used its budget (the
  call recorded, not run)."""
  call, problem = agent._call_of(tokenizer, r.ids[r.segment_start:])
  record = dict(call) if call else {'error': problem, 'text': tokenizer.decode(r.ids[r.segment_start:])}
  if len(r.calls) >= agent_cfg.max_calls:
    r.calls.append({**record, 'executed': False})
    return None
  result = tool_base.run_call(tools, call) if call else tool_base.error(f'invalid tool call: {problem}')
  ids, truncated = agent._result_ids(tokenizer, result.text, agent_cfg.result_tokens)
  r.calls.append({**record, 'result': result.text, 'ok': result.ok, 'truncated': truncated, 'executed': True})
  r.forced.extend((i, 'tool') for i in ids)
  return r.calls[-1]
