"""A reward model trained on R-way rankings: the reward stage's work, and each round of iterated RLHF's.

  trained = fit(name, c, records, tok, policy_model, policy_params, workdir, mesh, rules, seed)

The policy's transformer with its LM head dropped and a zero-initialised scalar head (or a previous
reward model's params, ``init``) is fit to the rankings (``lm.steps.reward``: Plackett-Luce or
Bradley-Terry, ``c.loss``, ``c.margin``) by ``lm.train.run`` under ``<workdir>/<name>``. Then the
reference policy samples responses to ``c.normalize_prompts`` training prompts and the mean and std
of their raw rewards are kept, so that ``load`` gives rewards of mean 0, std 1 on the reference
policy. Held-out records measure it: pairwise accuracy against the panel and
against gold, overall and per origin (``candidates``: template candidates; ``policy``: samples of a
model), and the within-prompt length correlations of reward model, panel and gold.
"""

import dataclasses
from collections import defaultdict

import flax.linen as nn
import jax
import numpy as np

from lm import checkpoint, outputs, sharding, train
from lm.data import chat, pipeline
from lm.inference import sample
from lm.lab import agreement, raters, tasks
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer
from lm.steps import reward as reward_steps

ROW_KEYS = ('tokens', 'segment_ids', 'positions', 'last_index', 'ranks', 'gold_utilities')  # what the loss reads
SOURCES = ('candidates', 'policy')


@dataclasses.dataclass
class Trained:
  checkpoint_dir: str
  model: ModelConfig
  reward_mean: float
  reward_std: float
  metrics: dict
  heldout: dict  # per held-out record: 'rewards' [B, R], 'words', 'panel_ranks', 'gold_utilities', 'sources'


DATA = ('candidates', 'policy', 'mix')


def source_of(record) -> str:
  """'candidates' or 'policy': where a record's responses came from."""
  return (record.get('origin') or {}).get('source', 'candidates')


def select(records, data: str) -> list[dict]:
  """The records a reward model with ``reward.data = data`` trains on (candidates, policy or mix)."""
  if data not in DATA:
    raise ValueError(f'reward.data={data!r}; valid: {", ".join(DATA)}')
  return [r for r in records if data == 'mix' or source_of(r) == data]


def model_config(policy_config: ModelConfig) -> ModelConfig:
  return dataclasses.replace(policy_config, lm_head=False, scalar_head=True)


def _within_prompt_correlation(x_BxR, y_BxR) -> float:
  x, y = x_BxR - x_BxR.mean(1, keepdims=True), y_BxR - y_BxR.mean(1, keepdims=True)
  return float(np.sum(x * y) / max(np.sqrt(np.sum(x * x) * np.sum(y * y)), 1e-12))


def length_correlations(rewards_BxR, words_BxR, ranks_BxR, gold_BxR) -> dict[str, float]:
  """How much each judge likes length: the within-prompt correlation of log(1 + words) with the
  reward model's reward, the panel's preference (minus its rank) and the gold utility."""
  words = np.log1p(np.asarray(words_BxR, np.float64))
  return {'length_correlation_reward': _within_prompt_correlation(words, np.asarray(rewards_BxR)),
          'length_correlation_panel': _within_prompt_correlation(words, -np.asarray(ranks_BxR, np.float64)),
          'length_correlation_gold': _within_prompt_correlation(words, np.asarray(gold_BxR, np.float64))}


def pairwise_accuracy(rewards_BxR, ranks_BxR=None, gold_BxR=None) -> float:
  """The fraction of ordered pairs the rewards put in the order of the ranks (0 = best) or of strictly
  different gold utilities, a tied reward counting half (``lm.steps.reward.pairwise_agreement``); NaN
  without pairs."""
  r = np.asarray(rewards_BxR, np.float64)
  if ranks_BxR is not None:
    prefer = np.asarray(ranks_BxR)[:, :, None] < np.asarray(ranks_BxR)[:, None, :]
  else:
    g = np.asarray(gold_BxR, np.float64)
    prefer = g[:, :, None] > g[:, None, :]
  right, pairs = reward_steps.pairwise_agreement(r, prefer)
  return float(right) / float(pairs) if pairs else float('nan')


def _with_scalar_head(policy_params, boxed_init, shardings, rng):
  """The policy's trunk under the reward model's param tree (its LM head dropped), the scalar head drawn
  from ``boxed_init(rng)``: only the params the policy lacks are computed (the trunk's initialisers are
  dead code to XLA, nothing of theirs compiled or run), their values those of the whole tree's init."""
  new = [k for k in shardings if k not in policy_params]
  head = jax.jit(lambda r: {k: nn.unbox(boxed_init(r))[k] for k in new},
                 out_shardings={k: shardings[k] for k in new})(rng)
  return {k: policy_params[k] if k in policy_params else head[k] for k in shardings}


def rows_of(tok, records, seq_len: int) -> dict:
  return {k: v for k, v in pipeline.preference_rows(tok, records, seq_len).items() if k in ROW_KEYS}


def rewards(fn, params, rows, batch_size: int, mesh, rules) -> np.ndarray:
  """``fn(params, tokens, segment_ids, positions, last_index)`` over ``[B, R, T]`` rows: ``[B, R]``. The
  ``B x R`` responses are packed into rows of ``T`` (``pipeline.pack_rankings``), ``batch_size`` rows a call,
  each call reading the reward at every position (a response's own row is mostly padding)."""
  T = rows['tokens'].shape[-1]
  lengths_BxR = rows['last_index'] + 1
  n_rows = -(-pipeline.rows_to_pack(lengths_BxR, T) // batch_size) * batch_size
  packed = pipeline.pack_rankings(rows['tokens'], lengths_BxR, n_rows)
  every_position = np.arange(batch_size * T, dtype=np.int32).reshape(batch_size, T)
  jitted = jax.jit(lambda p, b: fn(p, b['tokens'], b['segment_ids'], b['positions'], every_position))
  out = []
  with sharding.use_mesh(mesh, rules):
    for start in range(0, n_rows, batch_size):
      batch = {k: packed[k][start:start + batch_size] for k in ('tokens', 'segment_ids', 'positions')}
      out.append(np.asarray(jitted(params, sharding.place_batch(batch, mesh))).reshape(-1))
  return np.concatenate(out)[packed['last_index']]


def policy_samples(tok, model, params, prompts, cfg: sample.SamplingConfig, batch_size: int, seed: int, mesh,
                   rules) -> list[np.ndarray]:
  """Prompt + sampled response ids of the policy ``params`` for each prompt, in batches of ``batch_size``."""
  ids = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    replies = sample.complete_chats(params, model, tok, chunk, cfg, jax.random.key(seed + start), mesh=mesh,
                                    rules=rules)
    ids += [np.concatenate([chat.render_prompt(tok, p), r['ids']]) for p, r in zip(chunk, replies)]
  return ids


def score_rows(ids_list, seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Token rows ``[B, T]`` (right-padded; longer ones keep their last ``seq_len`` tokens) with
  the segment ids, positions and ``last_index`` that ``reward_steps.sequence_rewards`` reads."""
  B = len(ids_list)
  out = {'tokens': np.full((B, seq_len), pad_id, np.int32), 'segment_ids': np.zeros((B, seq_len), np.int32),
         'positions': np.zeros((B, seq_len), np.int32), 'last_index': np.zeros((B,), np.int32)}
  for n, ids in enumerate(ids_list):
    ids = np.asarray(ids, np.int32)[-seq_len:]
    out['tokens'][n, :len(ids)] = ids
    out['segment_ids'][n, :len(ids)] = 1
    out['positions'][n, :len(ids)] = np.arange(len(ids))
    out['last_index'][n] = len(ids) - 1
  return out


def batched_rewards(reward_fn, params, rows, batch_size: int, mesh, rules):
  """``reward_fn`` over ``score_rows``-style rows, in fixed-size batches (one compile), as numpy."""
  fn = jax.jit(lambda p, b: reward_fn(p, b['tokens'], b['segment_ids'], b['positions'], b['last_index']))
  B, out = len(rows['tokens']), []
  with sharding.use_mesh(mesh, rules):
    for start in range(0, B, batch_size):
      idx = np.arange(start, start + batch_size) % B  # the last batch wraps around to a full one
      out.append(np.asarray(fn(params, sharding.place_batch({k: v[idx] for k, v in rows.items()}, mesh))))
  return np.concatenate(out)[:B]


def heldout_metrics(rewards_BxR, records, rows) -> dict:
  """Pairwise accuracy against panel and gold, overall and per source, and the length correlations; per
  family and domain (``[<family>]``, ``[domain:<name>]``: ``lm.lab.agreement.groups``) the accuracies,
  the prompts and the panel's agreement on those rankings (``heldout_kendall_w``, ``heldout_alpha``)."""
  out = {}
  sources = np.asarray([source_of(r) for r in records])
  for name, keep in [('', np.ones(len(records), bool))] + [(f'{s}_', sources == s) for s in SOURCES]:
    if keep.any():
      out[f'heldout_{name}panel_accuracy'] = pairwise_accuracy(rewards_BxR[keep], ranks_BxR=rows['ranks'][keep])
      out[f'heldout_{name}gold_accuracy'] = pairwise_accuracy(rewards_BxR[keep], gold_BxR=rows['gold_utilities'][keep])
      out[f'heldout_{name}prompts'] = int(keep.sum())
  index = {id(r): i for i, r in enumerate(records)}
  for group, recs in agreement.groups(records).items():
    if not group:
      continue
    keep = np.asarray([index[id(r)] for r in recs])
    agreed = agreement.measures(recs)
    out.update({f'heldout_panel_accuracy[{group}]': pairwise_accuracy(rewards_BxR[keep], ranks_BxR=rows['ranks'][keep]),
                f'heldout_gold_accuracy[{group}]': pairwise_accuracy(rewards_BxR[keep],
                                                                     gold_BxR=rows['gold_utilities'][keep]),
                f'heldout_prompts[{group}]': len(recs), f'heldout_kendall_w[{group}]': agreed['kendall_w'],
                f'heldout_alpha[{group}]': agreed['alpha']})
  words = [[raters.features(resp)['n_words'] for resp in r['responses']] for r in records]
  out.update(length_correlations(rewards_BxR, words, rows['ranks'], rows['gold_utilities']))
  return out


def load(trained: outputs.Reward, mesh, rules):
  """``(params, reward_fn)``: ``reward_fn(params, tokens, segment_ids, positions, last_index)`` is the
  reward at ``last_index`` of each row, normalised to mean 0, std 1 on reference-policy samples."""
  model = Transformer(ModelConfig.from_config(trained.model))
  params = checkpoint.restore_params(trained.checkpoint_dir, params_lib.abstract_params(model, mesh, rules))
  mean, std = float(trained.reward_mean), float(trained.reward_std)

  def reward_fn(params, tokens, segment_ids, positions, last_index):
    raw = reward_steps.sequence_rewards(model, params, tokens, segment_ids, positions, last_index)
    return (raw - mean) / std

  return params, reward_fn


def fit(name: str, c, records: dict, tok, policy_model: Transformer, policy_params, workdir, mesh, rules,
          seed: int, init=None) -> Trained:
  """Fits a reward model to ``records`` (``{'train', 'validation'}`` PreferenceRankings records) under
  ``<workdir>/<name>``; ``c`` is a reward config section. ``init``: params to start from (a previous
  reward model's), else the policy's trunk with a new scalar head."""
  reward_steps.ranking_loss(c.loss)  # an unknown loss fails before any work
  model = Transformer(model_config(policy_model.config))
  rows = {split: rows_of(tok, recs, c.seq_len) for split, recs in records.items()}
  n_eval = max(1, min(c.eval_batches, len(rows['validation']['tokens']) // c.batch_size))
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  packed = jax.process_count() == 1  # several hosts would each need their rows' offsets
  eval_rows = (pipeline.PackedRankings(rows['validation'], c.batch_size, 0, n_eval, shuffle=False, multiple=shards)
               if packed else pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False))
  boxed = params_lib.boxed_init(model)

  def start(shardings):
    if init is not None:
      return init
    return _with_scalar_head(policy_params, boxed, shardings, jax.random.key(seed))

  task = train.Task(
      name=name, init_params=boxed, weight_name='prompts', load_params=start,
      loss_sums=reward_steps.make_loss_sums(model, c.loss, c.margin),
      eval_step=reward_steps.make_eval_step(model, c.loss, c.margin),
      train_batches=(pipeline.PackedRankings(rows['train'], c.batch_size, seed, c.steps, multiple=shards, shapes=2)
                     if packed else pipeline.Batches(rows['train'], c.batch_size, seed)),
      eval_batches=[eval_rows.host_batch(i) for i in range(n_eval)])
  out = train.run(task, c, workdir, mesh, rules, seed=seed)

  params = checkpoint.restore_params(out['checkpoint_dir'], params_lib.abstract_params(model, mesh, rules))
  prompts = [tasks.without_tools(r['prompt']) for r in records['train'][:c.normalize_prompts]]
  sampling = sample.SamplingConfig(temperature=c.normalize_temperature, max_new_tokens=c.normalize_max_new_tokens)
  samples = policy_samples(tok, policy_model, policy_params, prompts, sampling, c.batch_size * 4, seed, mesh, rules)
  raw_fn = lambda p, *args: reward_steps.sequence_rewards(model, p, *args)
  raw = batched_rewards(raw_fn, params, score_rows(samples, c.seq_len, tok.pad_id), c.batch_size * 4, mesh, rules)
  mean, std = float(np.mean(raw)), float(np.std(raw) + 1e-6)
  held_BxR = rewards(raw_fn, params, rows['validation'], c.batch_size * 4, mesh, rules)
  metrics = {**{k: v for k, v in out.items() if k != 'checkpoint_dir'},
             **heldout_metrics(held_BxR, records['validation'], rows['validation']),
             'train_prompts': int(len(rows['train']['tokens']))}
  by_source = defaultdict(int)
  for r in records['train']:
    by_source[source_of(r)] += 1
  metrics.update({f'train_prompts_{s}': n for s, n in by_source.items()})
  heldout = {'rewards': held_BxR.tolist(),
             'words': [[raters.features(resp)['n_words'] for resp in r['responses']] for r in records['validation']],
             'panel_ranks': rows['validation']['ranks'].tolist(),
             'gold_utilities': rows['validation']['gold_utilities'].tolist(),
             'sources': [source_of(r) for r in records['validation']]}
  return Trained(out['checkpoint_dir'], model.config, mean, std, metrics, heldout)
