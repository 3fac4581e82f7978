"""Batched sampling with the KV cache: prefill, then a decode loop, in one compiled function.

Layout of a batch: prompts are LEFT-padded to a static bucket length ``P`` (``prompt_bucket``), so
that the last column holds every row's last prompt token. Pad slots get segment id 0 (never
attended to); real tokens get segment 1 and positions counting from 0 at the first real token. The
cache holds ``P + max_new_tokens`` slots (plus optional room for later ``extend`` calls); each
decode step writes one slot at ``cache['end']`` in place and attends over the filled blocks of
slots only (``lm.ops.cached_attention``), so a step costs the weights plus what has been written.

One compiled function per (model, sampling config, batch, prompt bucket, cache length):
``_compiled`` is an ``lru_cache`` over those, and ``compile_count()`` says how many were built.
Nothing recompiles when prompt lengths change within a bucket.

Sampling (``SamplingConfig``, static): ``temperature == 0`` is greedy (argmax); otherwise the
logits are divided by the temperature, cut to the ``top_k`` most likely tokens (0: no cut), then to
the nucleus of probability ``top_p`` (1.0: no cut), and sampled. A row stops after emitting a stop
id (kept in the output, mask 1) or ``max_new_tokens``; afterwards it emits ``pad_id`` with mask 0.
The loop exits as soon as every row is done.

Returned log-probs are the model's RAW log-softmax of the chosen token (temperature 1, no top-k /
top-p): the policy log-prob that RL objectives (PPO, GRPO) need, comparable with a training
forward. They are 0 where the mask is 0.

Tool protocol (issue 6; not implemented here): put ``END_TOOL_CALL_ID`` among the stop ids. The
returned ``state`` (cache, next positions, next-token logits) holds every generated token, the stop
token included. Run the tools, then ``extend(params, model, state, tokens, mask)`` writes the result
tokens (left-padded, mask 0 = nothing) into the running cache and ``decode(...)`` continues from
there, with ``done`` False for the rows that resume. Size the cache for it with ``extra_cache``.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import sharding as sharding_lib
from lm.data import chat, chat_formats
from lm.model.transformer import init_cache
from lm.tokenizer import END_ID, EOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  temperature: float = 1.0     # 0: greedy
  top_k: int = 0               # 0: all tokens
  top_p: float = 1.0           # 1.0: all tokens
  max_new_tokens: int = 64
  stop_ids: tuple[int, ...] = (END_ID, EOS_ID)
  pad_id: int = PAD_ID

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f'sampling.temperature={self.temperature} must be >= 0')
    if self.top_k < 0:
      raise ValueError(f'sampling.top_k={self.top_k} must be >= 0')
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f'sampling.top_p={self.top_p} must be in (0, 1]')
    if self.max_new_tokens < 1:
      raise ValueError(f'sampling.max_new_tokens={self.max_new_tokens} must be >= 1')
    object.__setattr__(self, 'stop_ids', tuple(int(i) for i in self.stop_ids))


def prompt_bucket(length: int, minimum: int = 16) -> int:
  """Static prompt length: the next power of two (at least ``minimum``) up to 512, then multiples of 512."""
  if length <= 512:
    return max(minimum, 1 << max(0, length - 1).bit_length())
  return -(-length // 512) * 512


# ------------------------------------------------------------------------------ token choice

def filter_logits(logits_BxV, top_k: int = 0, top_p: float = 1.0):
  """Logits with everything outside the top-k and then the top-p nucleus set to -inf.

  The nucleus is the smallest set of most likely tokens whose probability (after top-k) reaches
  ``top_p``; the most likely token is always kept. Ties at the cut-off value are all kept.
  """
  V = logits_BxV.shape[-1]
  neg_inf = jnp.array(-jnp.inf, logits_BxV.dtype)
  if top_k and top_k < V:
    kth_B = jax.lax.top_k(logits_BxV, top_k)[0][:, -1]
    logits_BxV = jnp.where(logits_BxV >= kth_B[:, None], logits_BxV, neg_inf)
  if top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass of the more likely tokens
    keep_BxV = before_BxV < top_p
    cutoff_B = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1)
    logits_BxV = jnp.where(logits_BxV >= cutoff_B[:, None], logits_BxV, neg_inf)
  return logits_BxV


def choose(logits_BxV, rng, cfg: SamplingConfig):
  """Next token ids [B] from float32 logits: argmax if greedy, else a filtered sample."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = filter_logits(logits_BxV / cfg.temperature, cfg.top_k, cfg.top_p)
  return jax.random.categorical(rng, logits_BxV, axis=-1).astype(jnp.int32)


# ------------------------------------------------------------------------------- decode loop

def decode_loop(step_fn: Callable, logits_BxV, state, rng, cfg: SamplingConfig, done_B=None):
  """Samples up to ``cfg.max_new_tokens`` tokens per row; exits early when all rows are done.

  ``step_fn(state, tokens_B, live_B) -> (logits_BxV, state)`` feeds one token per row to the model
  (``live_B`` False for rows that are done: their token is padding and must stay invisible).
  ``logits_BxV`` predicts the first new token. Rows with ``done_B`` True emit nothing.
  Returns ``{tokens, logprobs, mask, lengths}`` ([B, N], [B, N], [B, N], [B]), ``done`` [B] (stopped
  at a stop id), and the final ``state`` and ``logits`` (each row's prediction after its last real
  token, e.g. after the stop id), from which generation can go on.
  """
  B, N = logits_BxV.shape[0], cfg.max_new_tokens
  stop_S = jnp.asarray(cfg.stop_ids, jnp.int32)
  done_B = jnp.zeros((B,), bool) if done_B is None else done_B.astype(bool)

  def cond(carry):
    i, _, _, _, _, done_B, _ = carry
    return (i < N) & ~jnp.all(done_B)

  def body(carry):
    i, logits_BxV, state, tokens_BxN, logprobs_BxN, done_B, mask_BxN = carry
    token_B = choose(logits_BxV.astype(jnp.float32), jax.random.fold_in(rng, i), cfg)
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV.astype(jnp.float32)), token_B[:, None], -1)[:, 0]
    live_B = ~done_B
    token_B = jnp.where(live_B, token_B, cfg.pad_id)
    tokens_BxN = tokens_BxN.at[:, i].set(token_B)
    logprobs_BxN = logprobs_BxN.at[:, i].set(jnp.where(live_B, logp_B, 0.0))
    mask_BxN = mask_BxN.at[:, i].set(live_B)
    done_B = done_B | (live_B & jnp.isin(token_B, stop_S))
    new_logits_BxV, state = step_fn(state, token_B, live_B)
    logits_BxV = jnp.where(live_B[:, None], new_logits_BxV, logits_BxV)  # a done row keeps its last
    return i + 1, logits_BxV, state, tokens_BxN, logprobs_BxN, done_B, mask_BxN

  carry = (jnp.zeros((), jnp.int32), logits_BxV, state, jnp.full((B, N), cfg.pad_id, jnp.int32),
           jnp.zeros((B, N), jnp.float32), done_B, jnp.zeros((B, N), bool))
  _, logits_BxV, state, tokens_BxN, logprobs_BxN, done_B, mask_BxN = jax.lax.while_loop(cond, body, carry)
  return {'tokens': tokens_BxN, 'logprobs': logprobs_BxN, 'mask': mask_BxN,
          'lengths': jnp.sum(mask_BxN, axis=-1, dtype=jnp.int32), 'done': done_B,
          'state': state, 'logits': logits_BxV}


# ------------------------------------------------------------------ the model with its cache
# A decode state is {'cache': the model's cache, 'positions': [B] position of each row's next token}.

def _constrain_cache(cache):
  def kv(x):  # [B, K, S, E] per layer, or [L, B, K, S, E] stacked
    return nn.with_logical_constraint(x, (None,) * (x.ndim - 4) + ('batch', 'act_kv_heads', 'length', None))
  return {**cache,
          'k': jax.tree.map(kv, cache['k']),
          'v': jax.tree.map(kv, cache['v']),
          'segment_ids': nn.with_logical_constraint(cache['segment_ids'], ('batch', 'length')),
          'positions': nn.with_logical_constraint(cache['positions'], ('batch', 'length'))}


def extend(params, model, state, tokens_BxT, mask_BxT):
  """Writes tokens into a running cache; returns ``(logits_BxV of each row's next token, state)``.

  Rows are LEFT-padded: ``mask_BxT`` is 0 on padding, which is invisible and takes no position.
  A row with no tokens keeps its position; its returned logits are meaningless (keep the old
  ones). The cache must have ``T`` free slots after ``cache['end']`` (``dynamic_update_slice``
  would otherwise clamp and overwrite the last slots).
  """
  mask_BxT = mask_BxT.astype(jnp.int32)
  positions_BxT = state['positions'][:, None] + jnp.cumsum(mask_BxT, axis=1) - 1
  positions_BxT = jnp.maximum(positions_BxT, 0) * mask_BxT
  out = model.apply({'params': params}, tokens_BxT, positions_BxT, mask_BxT, cache=state['cache'])
  state = {'cache': _constrain_cache(out['cache']), 'positions': state['positions'] + jnp.sum(mask_BxT, axis=1)}
  return out['logits'][:, -1], state


def prefill(params, model, prompt_BxP, prompt_mask_BxP, cache_len: int):
  """A fresh cache of ``cache_len`` slots holding the left-padded prompts."""
  B = prompt_BxP.shape[0]
  cache = _constrain_cache(init_cache(model.config, B, cache_len))
  state = {'cache': cache, 'positions': jnp.zeros((B,), jnp.int32)}
  return extend(params, model, state, prompt_BxP, prompt_mask_BxP)


def decode(params, model, state, logits_BxV, rng, cfg: SamplingConfig, done_B=None):
  """``decode_loop`` with the model: each step writes one token per row into the cache."""
  def step_fn(state, token_B, live_B):
    return extend(params, model, state, token_B[:, None], live_B[:, None])
  return decode_loop(step_fn, logits_BxV, state, rng, cfg, done_B)


def sample(params, model, prompt_BxP, prompt_mask_BxP, rng, cfg: SamplingConfig, extra_cache: int = 0):
  """Prefill + decode (traceable; ``sample_jit`` compiles it once per shape). See the module doc."""
  cache_len = prompt_BxP.shape[1] + cfg.max_new_tokens + extra_cache
  logits_BxV, state = prefill(params, model, prompt_BxP, prompt_mask_BxP, cache_len)
  done_B = ~jnp.any(prompt_mask_BxP > 0, axis=1)  # rows that are all padding (batch filler)
  return decode(params, model, state, logits_BxV, rng, cfg, done_B)


# ------------------------------------------------------------------------------- compiled

@functools.lru_cache(maxsize=64)
def _compiled(model, cfg: SamplingConfig, batch: int, prompt_len: int, extra_cache: int, mesh, rules):
  """One jitted ``sample`` per shape (jit would also cache by shape; this makes it countable)."""
  del batch, prompt_len  # the key: one compiled program per shape
  fn = functools.partial(sample, model=model, cfg=cfg, extra_cache=extra_cache)
  jitted = jax.jit(lambda params, prompt, mask, rng: fn(params, prompt_BxP=prompt, prompt_mask_BxP=mask, rng=rng))
  if mesh is None:
    return jitted

  def run(params, prompt, mask, rng):
    with sharding_lib.use_mesh(mesh, rules):
      return jitted(params, prompt, mask, rng)
  return run


def compile_count() -> int:
  """How many sampling programs have been built in this process."""
  return _compiled.cache_info().misses


def sample_jit(params, model, prompt_BxP, prompt_mask_BxP, rng, cfg: SamplingConfig, *, extra_cache: int = 0,
               mesh=None, rules=sharding_lib.DEFAULT_RULES):
  """``sample`` compiled once per (model, cfg, batch, prompt length, extra cache, mesh).

  With a ``mesh`` the batch is placed over data x fsdp (B must divide evenly) and the model is
  traced under the rules; ``params`` should already be sharded (``lm.sharding.sharded_init``).
  """
  B, P = prompt_BxP.shape
  if mesh is not None:
    put = lambda x: jax.device_put(x, sharding_lib.batch_sharding(mesh, np.ndim(x)))
    prompt_BxP, prompt_mask_BxP = put(prompt_BxP), put(prompt_mask_BxP)
  fn = _compiled(model, cfg, B, P, extra_cache, mesh, tuple(rules) if rules is not None else None)
  return fn(params, prompt_BxP, prompt_mask_BxP, rng)


# --------------------------------------------------------------------------- convenience

def _batch_bucket(n: int, multiple: int) -> int:
  size = max(multiple, 1 << max(0, n - 1).bit_length())
  return -(-size // multiple) * multiple


def left_pad(prompts, length: int, batch: int, pad_id: int = PAD_ID):
  """``(tokens int32 [batch, length], mask int32 [batch, length])``, prompts right-aligned."""
  tokens = np.full((batch, length), pad_id, np.int32)
  mask = np.zeros((batch, length), np.int32)
  for b, p in enumerate(prompts):
    p = np.asarray(p, np.int32).reshape(-1)
    if len(p):
      tokens[b, length - len(p):] = p
      mask[b, length - len(p):] = 1
  return tokens, mask


def generate(params, model, tokenizer, prompts_ids, cfg: SamplingConfig, rng, mesh=None,
             rules=sharding_lib.DEFAULT_RULES, prompt_len: int = 0, min_batch: int = 0) -> dict[str, Any]:
  """Samples a continuation of each prompt (a list of 1-D id arrays of any lengths).

  Pads the batch to a power of two of at least ``min_batch`` rows (and a multiple of the mesh's data x
  fsdp size) and the prompts to ``prompt_bucket`` of the longest, or of ``prompt_len`` when longer
  (calls that pass the longest prompt and the largest batch of them all share one program), so repeated
  calls reuse compiled programs. Returns numpy arrays for the given rows only: ``tokens`` [B, N],
  ``logprobs`` [B, N], ``mask`` [B, N], ``lengths`` [B]. ``tokenizer`` is unused here (kept for a uniform
  signature with chat helpers).
  """
  del tokenizer
  n = len(prompts_ids)
  if n == 0:
    raise ValueError('generate: no prompts')
  longest = max(len(np.asarray(p).reshape(-1)) for p in prompts_ids)
  if longest == 0:
    raise ValueError('generate: every prompt is empty')
  shards = 1 if mesh is None else mesh.shape['data'] * mesh.shape['fsdp']
  tokens_BxP, mask_BxP = left_pad(prompts_ids, prompt_bucket(max(longest, prompt_len)),
                                  _batch_bucket(max(n, min_batch), shards), cfg.pad_id)
  out = sample_jit(params, model, tokens_BxP, mask_BxP, rng, cfg, mesh=mesh, rules=rules)
  return {k: np.asarray(out[k])[:n] for k in ('tokens', 'logprobs', 'mask', 'lengths')}


def longest_prompt(tokenizer, conversations) -> int:
  """The longest rendered prompt of ``conversations``, in tokens: the ``prompt_len`` that lets batches of
  them share one sampling program."""
  return max((len(chat.render_prompt(tokenizer, messages)) for messages in conversations), default=0)


def complete_chats(params, model, tokenizer, conversations, cfg: SamplingConfig, rng, mesh=None,
                   rules=sharding_lib.DEFAULT_RULES, prompt_len: int = 0, min_batch: int = 0) -> list[dict]:
  """The assistant's next message for each conversation (lists of messages, see ``lm.chat``); prompts
  padded to at least ``prompt_len`` tokens, the batch to at least ``min_batch`` rows (``generate``).

  Each result is ``lm.chat.parse`` of the generated tokens plus ``ids`` (the valid generated ids)
  and ``finished`` (True when the row ended with a stop id rather than running out of tokens).
  """
  chat_format = chat_formats.of(tokenizer)  # an imported checkpoint's
  if chat_format is not None and cfg.stop_ids == SamplingConfig.stop_ids:  # lm's ids mean nothing there
    cfg = dataclasses.replace(cfg, stop_ids=chat_format.stop_ids, pad_id=tokenizer.pad_id)
  prompts = [chat.render_prompt(tokenizer, messages) for messages in conversations]
  out = generate(params, model, tokenizer, prompts, cfg, rng, mesh=mesh, rules=rules, prompt_len=prompt_len,
                 min_batch=min_batch)
  results = []
  for b in range(len(prompts)):
    ids = out['tokens'][b, :out['lengths'][b]]
    message = chat.parse(tokenizer, ids)
    message['ids'] = ids
    message['finished'] = bool(len(ids) and int(ids[-1]) in cfg.stop_ids)
    results.append(message)
  return results
