"""lm's model and sampler behind EleutherAI's evaluation harness (``lm_eval.api.model.LM``): public
benchmarks (gsm8k, hellaswag, mmlu, or local task yamls) on any trained stage of a workdir.

  loglikelihood          ``(context, continuation)``: the sum of the continuation's token log-probs
                         and whether greedy decoding would write it. Tokenised as the harness's own
                         Hugging Face model does: spaces ending the context move to the continuation,
                         the continuation's ids are those of ``context + continuation`` after the
                         context's; an empty context is the prefix token (BOS, else EOS).
  loglikelihood_rolling  a whole text's log-prob in windows of the model's length
                         (``lm_eval.utils.get_rolling_token_windows``), each token predicted once.
  generate_until         ``lm.inference.sample`` (KV cache; greedy unless ``do_sample``) for
                         ``max_gen_toks`` tokens or an end-of-text id, cut at the first ``until`` string.

Requests are scored in batches of ``batch_size`` rows (a multiple of the mesh's data x fsdp),
right-padded to a power-of-two length (``sample.prompt_bucket``) so that a few programs serve a
whole benchmark; the log-softmax and greedy check run on the device. A sequence longer than the
model keeps its last ``max_seq_len + 1`` tokens. Needs the ``[eval]`` extra.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import LM

from lm import sharding as sharding_lib
from lm.inference import sample, serving


@functools.lru_cache(maxsize=16)
def _scorer(model, mesh, rules):
  """jitted ``(params, tokens_BxT, targets_BxT, segments_BxT) -> (logprobs_BxT, greedy_BxT)``."""
  def score(params, tokens_BxT, targets_BxT, segments_BxT):
    positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
    logits_BxTxV = model.apply({'params': params}, tokens_BxT, positions_BxT, segments_BxT)['logits']
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    logp_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return logp_BxT, jnp.argmax(logp_BxTxV, axis=-1) == targets_BxT
  jitted = jax.jit(score)

  def run(*args):
    with sharding_lib.use_mesh(mesh, rules):
      return jitted(*args)
  return run


class Harness(LM):
  """A served stage (``serving.load``) as an ``lm_eval`` model."""

  def __init__(self, served: serving.Served, batch_size: int = 16, max_gen_toks: int = 256, seed: int = 0):
    super().__init__()
    self.served, self.tok = served, served.tokenizer
    shards = served.mesh.shape['data'] * served.mesh.shape['fsdp']
    self.batch_size = -(-int(batch_size) // shards) * shards
    self.max_length = served.model.config.max_seq_len
    self.max_gen_toks, self.seed = max_gen_toks, seed
    self.prefix_id = self.tok.bos_id if self.tok.bos_id is not None else self.tok.eos_id

  @property
  def tokenizer_name(self) -> str:
    return str(self.tok.path) if hasattr(self.tok, 'path') else type(self.tok).__name__

  # ------------------------------------------------------------------------ scoring

  def pair_ids(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids, tokenised as the harness's Hugging Face model does."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
      context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
      return [self.prefix_id], list(self.tok.encode(continuation))
    whole, ctx = list(self.tok.encode(context + continuation)), list(self.tok.encode(context))
    return ctx, whole[len(ctx):]

  def score(self, pairs) -> list[tuple[float, bool]]:
    """``(sum of log-probs, greedy)`` of each ``(context ids, continuation ids)``, batched."""
    out = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda k: -(len(pairs[k][0]) + len(pairs[k][1])))  # similar lengths
    fn = _scorer(self.served.model, self.served.mesh, tuple(self.served.rules))
    put = lambda x: jax.device_put(x, sharding_lib.batch_sharding(self.served.mesh, x.ndim))
    for start in range(0, len(order), self.batch_size):
      rows = order[start:start + self.batch_size]
      seqs = [(list(pairs[k][0]) + list(pairs[k][1]))[-(self.max_length + 1):] for k in rows]
      T = min(sample.prompt_bucket(max(len(s) for s in seqs) - 1), self.max_length)
      tokens, targets = np.zeros((2, self.batch_size, T), np.int32)
      segments = np.zeros((self.batch_size, T), np.int32)
      for b, s in enumerate(seqs):
        tokens[b, :len(s) - 1], targets[b, :len(s) - 1], segments[b, :len(s) - 1] = s[:-1], s[1:], 1
      logp, greedy = (np.asarray(x) for x in fn(self.served.params, put(tokens), put(targets), put(segments)))
      for b, k in enumerate(rows):
        n, m = len(seqs[b]) - 1, min(len(pairs[k][1]), len(seqs[b]) - 1)
        out[k] = (float(logp[b, n - m:n].astype(np.float64).sum()), bool(greedy[b, n - m:n].all()))
    return out

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    del disable_tqdm
    return self.score([self.pair_ids(*r.args) for r in requests])

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    del disable_tqdm
    windows, owner = [], []
    for k, r in enumerate(requests):
      for w in lm_eval_utils.get_rolling_token_windows(list(self.tok.encode(r.args[0])), self.prefix_id,
                                                       self.max_length, 1):
        windows.append(lm_eval_utils.make_disjoint_window(w))
        owner.append(k)
    totals = np.zeros(len(requests), np.float64)
    for k, (logp, _) in zip(owner, self.score(windows)):
      totals[k] += logp
    return [float(t) for t in totals]

  # ---------------------------------------------------------------------- generation

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    del disable_tqdm
    out = [None] * len(requests)
    groups = {}
    for k, r in enumerate(requests):
      kwargs = dict(r.args[1])
      until = kwargs.pop('until', None) or []
      until = [until] if isinstance(until, str) else list(until)
      cfg = sample.SamplingConfig(
          temperature=float(kwargs.get('temperature', 1.0)) if kwargs.get('do_sample') else 0.0,
          top_p=float(kwargs.get('top_p', 1.0)) if kwargs.get('do_sample') else 1.0,
          max_new_tokens=int(kwargs.get('max_gen_toks', self.max_gen_toks)),
          stop_ids=(self.tok.eos_id,), pad_id=self.tok.pad_id)
      groups.setdefault(cfg, []).append((k, until))
    for cfg, items in groups.items():
      room = max(1, self.max_length - cfg.max_new_tokens)
      for start in range(0, len(items), self.batch_size):
        batch = items[start:start + self.batch_size]
        prompts = [np.asarray(list(self.tok.encode(requests[k].args[0]))[-room:] or [self.prefix_id]) for k, _ in batch]
        got = sample.generate(self.served.params, self.served.model, self.tok, prompts, cfg,
                              jax.random.key(self.seed + start), mesh=self.served.mesh, rules=self.served.rules)
        for b, (k, until) in enumerate(batch):
          text = self.tok.decode(got['tokens'][b, :got['lengths'][b]])
          for stop in until:
            text = text.split(stop)[0] if stop else text
          out[k] = text
    return out
