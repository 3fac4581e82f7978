"""Tool use inside the sampler: think -> call -> read the result -> answer, in batches, with a budget.

    tools = {name: lm.tools.get(name) for name in ('calculator', 'python')}
    out = agent.generate(params, model, tok, prompts_ids, SamplingConfig(max_new_tokens=128), rng, tools)
    out['traces'][b]    # row b: messages of the turn, the calls with their results, finished, stopped

Protocol (on top of ``lm.sample``). Sampling stops a row at ``<|/tool_call|>`` as well as at the
config's stop ids. A round ends when every live row has stopped; then, on the host, each row that
stopped at a call has the call parsed (``lm.chat.parse`` of the text it wrote since its last result)
and run (``lm.tools.run_call``), and its result block ``[tool_result] text [/tool_result]`` is
written into the running KV cache with ``sample.extend``: LEFT-padded to ``AgentConfig.result_tokens``,
mask 0 on the padding and on every row that did not call, so those rows add nothing. Then
``sample.decode`` resumes the rows that called (``done`` True for the others). So rows of a batch call
tools at different steps; a row that called waits, paused, for the round's other rows to stop.

Budget: at most ``max_calls`` calls per row (per answer). A row that asks for one more is STOPPED at
that call: the call stays in its tokens and trace (``executed: False``), nothing is run or appended,
and the row is unfinished (``stopped == 'tool_budget'``). A call that cannot be parsed (bad JSON, no
name) is answered with an error result and counts against the budget like any other call.

Static shapes: ``cfg.max_new_tokens`` bounds each segment (the tokens a row writes between two
results), so a row writes at most ``(max_calls + 1) * max_new_tokens`` tokens of its own. There are
at most ``max_calls + 1`` rounds (only rows that called in a round resume in the next), each writing
at most ``max_new_tokens`` cache slots plus ``result_tokens`` for the results. The cache is sized for
that once: ``P + (max_calls + 1) * max_new_tokens + max_calls * result_tokens`` slots. Two programs
are compiled per shape (start = prefill + decode; resume = extend + decode) and reused by every round
and call; ``compile_count()`` counts them. A result longer than ``result_tokens - 2`` tokens is cut to
fit (``truncated`` in the trace).

Returned arrays (numpy, one row per prompt, ``L = (max_calls + 1) * max_new_tokens + max_calls *
result_tokens``), each row's tokens packed to the left, in order:

  tokens         int32 [B, L]    what the row's turn holds after the prompt: its own tokens and the
                                 result blocks inserted by the tools, then ``pad_id``
  mask           bool  [B, L]    1 on every real token (model-written or tool-inserted)
  response_mask  bool  [B, L]    1 only on tokens the MODEL wrote (sampled): the tokens an RL loss may
                                 put gradient on. 0 on the tool result blocks (``[tool_result]``, the
                                 result text, ``[/tool_result]``) and on padding
  logprobs       f32   [B, L]    the model's raw log-prob of each token it wrote (see ``lm.sample``);
                                 0 where ``response_mask`` is 0
  lengths        int32 [B]       real tokens per row (``mask.sum(-1)``)

An imported checkpoint's chat format (``lm.data.chat_formats``: llama3, chatml, qwen3) brings its own
protocol: the ids that may close a call (``call_stop_ids``), whether a stopped segment ends in a call
(``call_in``), the ids of a result block (``result_ids``: for Qwen ``<|im_end|>`` ... ``<tool_response>``
... ``<|im_start|>assistant\n``) and the parsing of a turn; the loop is the same.

A training forward over ``prompt + tokens[:length]`` (positions counting on, as in the cache) sees
exactly what the sampler saw. SFT needs nothing more: ``lm.chat.render`` already puts no loss on tool
messages (``[tool_result]`` ... ``[/tool_result]``).
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lm import sharding as sharding_lib
from lm.data import chat, chat_formats
from lm.inference import sample
from lm.tokenizer import END_ID, END_TOOL_CALL_ID, END_TOOL_RESULT_ID, TOOL_RESULT_ID
from lm.tools import base as tool_base


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  max_calls: int = 3        # tool calls per row (per answer); one more stops the row
  result_tokens: int = 96   # room for one result block, its two control tokens included

  def __post_init__(self):
    if self.max_calls < 0:
      raise ValueError(f'agent max_calls={self.max_calls} must be >= 0')
    if self.result_tokens < 3:
      raise ValueError(f'agent result_tokens={self.result_tokens} must be >= 3 (two control tokens and text)')


def _with_call_stop(cfg: sample.SamplingConfig, fmt=None) -> sample.SamplingConfig:
  if fmt is not None and cfg.stop_ids == sample.SamplingConfig.stop_ids:  # lm's ids mean nothing there
    cfg = dataclasses.replace(cfg, stop_ids=fmt.stop_ids, pad_id=fmt.tok.pad_id)
  calls = fmt.call_stop_ids if fmt is not None else (END_TOOL_CALL_ID,)
  return dataclasses.replace(cfg, stop_ids=cfg.stop_ids + tuple(i for i in calls if i not in cfg.stop_ids))


def turn_length(cfg: sample.SamplingConfig, agent_cfg: AgentConfig) -> int:
  """``L``: the most tokens one row's turn can hold (its own and the inserted results)."""
  return (agent_cfg.max_calls + 1) * cfg.max_new_tokens + agent_cfg.max_calls * agent_cfg.result_tokens


# ------------------------------------------------------------------------------- compiled

def _start(params, prompt_BxP, prompt_mask_BxP, rng, *, model, cfg, agent_cfg):
  extra = turn_length(cfg, agent_cfg) - cfg.max_new_tokens
  return sample.sample(params, model, prompt_BxP, prompt_mask_BxP, rng, cfg, extra_cache=extra)


def _resume(params, state, logits_BxV, result_BxR, result_mask_BxR, rng, *, model, cfg):
  """Appends each calling row's result block to the cache, then decodes those rows on."""
  new_logits_BxV, state = sample.extend(params, model, state, result_BxR, result_mask_BxR)
  resumed_B = jnp.any(result_mask_BxR > 0, axis=1)
  logits_BxV = jnp.where(resumed_B[:, None], new_logits_BxV, logits_BxV)
  return sample.decode(params, model, state, logits_BxV, rng, cfg, done_B=~resumed_B)


@functools.lru_cache(maxsize=32)
def _programs(model, cfg, agent_cfg, batch: int, prompt_len: int, mesh, rules):
  """(start, resume), jitted once per shape (the key); each round and each call reuses them."""
  del batch, prompt_len
  start = jax.jit(functools.partial(_start, model=model, cfg=cfg, agent_cfg=agent_cfg))
  resume = jax.jit(functools.partial(_resume, model=model, cfg=cfg), donate_argnums=(1,))  # the cache, in place
  if mesh is None:
    return start, resume

  def under_mesh(fn):
    def run(*args):
      with sharding_lib.use_mesh(mesh, rules):
        return fn(*args)
    return run
  return under_mesh(start), under_mesh(resume)


def compile_count() -> int:
  """How many (start, resume) program pairs have been built in this process."""
  return _programs.cache_info().misses


# --------------------------------------------------------------------------------- the loop

def _call_in(tokenizer, segment_ids):
  """None when generated ``segment_ids`` ended the turn; else ``_call_of`` them."""
  fmt = chat_formats.of(tokenizer)
  if fmt is not None:
    return fmt.call_in(segment_ids)
  return _call_of(tokenizer, segment_ids) if int(segment_ids[-1]) == END_TOOL_CALL_ID else None


def _call_of(tokenizer, segment_ids) -> tuple[dict | None, str | None]:
  """(call, None) for the call that ends ``segment_ids``, or (None, what is wrong with it)."""
  message = chat.parse(tokenizer, segment_ids)
  if message.get('tool_calls'):
    return message['tool_calls'][-1], None
  errors = message.get('tool_call_errors')
  return None, errors[-1]['error'] if errors else 'a tool call was closed but never opened'


def _result_ids(tokenizer, text: str, room: int) -> tuple[list[int], bool]:
  fmt = chat_formats.of(tokenizer)
  if fmt is not None:
    return fmt.result_ids(text, room)
  ids = list(tokenizer.encode(text))
  truncated = len(ids) > room - 2
  return [TOOL_RESULT_ID, *ids[:room - 2], END_TOOL_RESULT_ID], truncated


def run(params, model, tokenizer, prompt_BxP, prompt_mask_BxP, cfg: sample.SamplingConfig, rng,
        tools: dict, agent_cfg: AgentConfig = AgentConfig(), mesh=None,
        rules=sharding_lib.DEFAULT_RULES) -> dict[str, Any]:
  """The tool loop on a left-padded batch (see the module doc).

  Returns the arrays of the module doc for every row of the batch, ``calls`` (per row, the list of
  ``{"name", "arguments", "result", "ok", "truncated", "executed"}``; a call that did not parse has
  ``error`` and ``text`` instead of name and arguments), ``stopped`` (per row: None when the turn
  ended at a stop id, ``'tool_budget'`` or ``'max_new_tokens'``) and the final decode ``state`` and
  ``logits`` (the cache after the last round; each row's prediction after its last token).
  """
  cfg = _with_call_stop(cfg, chat_formats.of(tokenizer))
  B, P = prompt_BxP.shape
  R, L = agent_cfg.result_tokens, turn_length(cfg, agent_cfg)
  put = (lambda x: x) if mesh is None else (
      lambda x: jax.device_put(x, sharding_lib.batch_sharding(mesh, np.ndim(x))))
  start, resume = _programs(model, cfg, agent_cfg, B, P, mesh, tuple(rules) if rules is not None else None)
  live = np.asarray(prompt_mask_BxP).any(axis=1)  # rows that are all padding never run
  out = start(params, put(prompt_BxP), put(prompt_mask_BxP), jax.random.fold_in(rng, 0))

  tokens = np.full((B, L), cfg.pad_id, np.int32)
  response = np.zeros((B, L), bool)
  logprobs = np.zeros((B, L), np.float32)
  length = np.zeros((B,), np.int64)
  segment_start = np.zeros((B,), np.int64)  # where each row's current segment begins in its tokens
  calls: list[list[dict]] = [[] for _ in range(B)]
  stopped: list[str | None] = [None] * B

  def append(b, ids, logp=None):
    n = len(ids)
    tokens[b, length[b]:length[b] + n] = ids
    if logp is not None:
      response[b, length[b]:length[b] + n] = True
      logprobs[b, length[b]:length[b] + n] = logp
    length[b] += n

  for round_ in range(agent_cfg.max_calls + 1):
    seg_tokens, seg_logprobs = np.asarray(out['tokens']), np.asarray(out['logprobs'])
    seg_lengths, done = np.asarray(out['lengths']), np.asarray(out['done'])
    results = []
    for b in np.flatnonzero(live):
      n = int(seg_lengths[b])
      append(b, seg_tokens[b, :n], seg_logprobs[b, :n])
      if not done[b]:
        stopped[b], live[b] = 'max_new_tokens', False
        continue
      segment = tokens[b, segment_start[b]:length[b]]
      found = _call_in(tokenizer, segment) if n else None
      if found is None:
        live[b] = False  # ended its turn
        continue
      call, problem = found
      record = dict(call) if call else {'error': problem, 'text': tokenizer.decode(segment)}
      if len(calls[b]) >= agent_cfg.max_calls:
        calls[b].append({**record, 'executed': False})
        stopped[b], live[b] = 'tool_budget', False
        continue
      result = tool_base.run_call(tools, call) if call else tool_base.error(f'invalid tool call: {problem}')
      ids, truncated = _result_ids(tokenizer, result.text, R)
      calls[b].append({**record, 'result': result.text, 'ok': result.ok, 'truncated': truncated, 'executed': True})
      results.append((b, ids))
    if not results:
      break
    result_BxR, result_mask_BxR = sample.left_pad([[]] * B, R, B, cfg.pad_id)
    for b, ids in results:
      result_BxR[b, R - len(ids):], result_mask_BxR[b, R - len(ids):] = ids, 1
      append(b, ids)
      segment_start[b] = length[b]
    out = resume(params, out['state'], out['logits'], put(result_BxR), put(result_mask_BxR),
                 jax.random.fold_in(rng, round_ + 1))
  mask = np.arange(L)[None] < length[:, None]
  return {'tokens': tokens, 'mask': mask, 'response_mask': response, 'logprobs': logprobs,
          'lengths': length.astype(np.int32), 'calls': calls, 'stopped': stopped,
          'state': out['state'], 'logits': out['logits']}


def trace(tokenizer, ids, calls, stopped, stop_ids) -> dict:
  """One row's turn, structured: ``messages`` (``lm.chat.parse_turn``: assistant, tool, ...,
  assistant), ``answer`` (the last assistant message: its content is what scorers read), ``calls``,
  ``finished`` (ended at a stop id), ``end_of_turn`` (ended with ``<|end|>``) and ``stopped``."""
  ids = [int(i) for i in ids]
  fmt = chat_formats.of(tokenizer)
  messages = fmt.parse_turn(ids) if fmt is not None else chat.parse_turn(tokenizer, ids)
  answer = next((m for m in reversed(messages) if m['role'] == 'assistant'), {'role': 'assistant', 'content': ''})
  call_ends, ends = (fmt.call_stop_ids, fmt.end_ids) if fmt is not None else ((END_TOOL_CALL_ID,), (END_ID,))
  finished = bool(ids) and ids[-1] in stop_ids and ids[-1] not in call_ends and stopped is None
  return {'messages': messages, 'answer': answer, 'calls': calls, 'finished': finished,
          'end_of_turn': bool(ids) and ids[-1] in ends and stopped is None, 'stopped': stopped}


def plain_turn(reply) -> dict:
  """A ``lm.sample.complete_chats`` reply (no tools run) in the shape of a ``trace``."""
  message = {k: v for k, v in reply.items() if k not in ('ids', 'finished')}
  ids = [int(i) for i in reply['ids']]
  return {'messages': [message], 'answer': message, 'calls': [], 'finished': reply['finished'],
          'end_of_turn': reply['finished'] and bool(ids) and ids[-1] == END_ID,
          'stopped': None if reply['finished'] else 'max_new_tokens'}


def generate(params, model, tokenizer, prompts_ids, cfg: sample.SamplingConfig, rng, tools: dict,
             agent_cfg: AgentConfig = AgentConfig(), mesh=None, rules=sharding_lib.DEFAULT_RULES,
             prompt_len: int = 0, min_batch: int = 0) -> dict:
  """``run`` on prompts of any lengths (a list of 1-D id arrays), padded like ``sample.generate`` (to at
  least ``prompt_len`` tokens, the batch to at least ``min_batch`` rows).

  Returns the arrays of the module doc for the given rows (numpy) and ``traces`` (one ``trace`` each).
  """
  n = len(prompts_ids)
  if n == 0:
    raise ValueError('agent.generate: no prompts')
  longest = max(len(np.asarray(p).reshape(-1)) for p in prompts_ids)
  if longest == 0:
    raise ValueError('agent.generate: every prompt is empty')
  shards = 1 if mesh is None else mesh.shape['data'] * mesh.shape['fsdp']
  prompt_BxP, mask_BxP = sample.left_pad(prompts_ids, sample.prompt_bucket(max(longest, prompt_len)),
                                         sample._batch_bucket(max(n, min_batch), shards), cfg.pad_id)
  out = run(params, model, tokenizer, prompt_BxP, mask_BxP, cfg, rng, tools, agent_cfg, mesh, rules)
  arrays = {k: out[k][:n] for k in ('tokens', 'mask', 'response_mask', 'logprobs', 'lengths')}
  stop_ids = _with_call_stop(cfg, chat_formats.of(tokenizer)).stop_ids
  arrays['traces'] = [trace(tokenizer, out['tokens'][b, :out['lengths'][b]], out['calls'][b], out['stopped'][b],
                            stop_ids) for b in range(n)]
  return arrays


def complete_chats(params, model, tokenizer, conversations, cfg: sample.SamplingConfig, rng, tools: dict,
                   agent_cfg: AgentConfig = AgentConfig(), mesh=None, rules=sharding_lib.DEFAULT_RULES,
                   prompt_len: int = 0, min_batch: int = 0) -> list[dict]:
  """The assistant's whole next turn for each conversation, tools run: one ``trace`` each (prompts padded
  to at least ``prompt_len`` tokens, the batch to at least ``min_batch`` rows)."""
  prompts = [chat.render_prompt(tokenizer, messages) for messages in conversations]
  return generate(params, model, tokenizer, prompts, cfg, rng, tools, agent_cfg, mesh, rules, prompt_len,
                  min_batch)['traces']
