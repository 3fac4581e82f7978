"""Reward model stage: the SFT transformer with a scalar head, fit to the rater panel's K-way rankings.

Starts from the SFT checkpoint (LoRA merged) with the LM head dropped and a zero-initialised scalar
head; the reward of a response is the scalar at its last token (the ``[end]`` that closes the turn).
Loss ``reward.loss`` (``plackett_luce`` or ``bradley_terry``, optional ``reward.margin``: see
``lm.steps.reward``). Eval reports pairwise accuracy on held-out rankings against the panel and
against the gold ranking. After training, the reference policy (SFT) samples responses to
``reward.normalize_prompts`` training prompts; the mean and std of their rewards are stored so
that ``load_reward_fn`` returns rewards with mean 0 and std 1 on the reference policy.

Outputs: ``checkpoint_dir``, ``model`` (the reward model's config), ``tokenizer``,
``reward_mean``, ``reward_std``, and the final ``eval_panel_accuracy`` / ``eval_gold_accuracy``.
"""

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np

from lm import chat, checkpoint, raters, sample, sharding, tokenizer, train
from lm.config import ConfigError
from lm.data import builders, pipeline, tasks
from lm.model import ModelConfig, Transformer
from lm.stages import common, preferences
from lm.steps import reward as reward_steps


def reward_model_config(policy_config: ModelConfig) -> ModelConfig:
  return dataclasses.replace(policy_config, lm_head=False, scalar_head=True)


def score_rows(ids_list, seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Token rows ``[N, seq_len]`` (right-padded; longer ones keep their last ``seq_len`` tokens) with
  the segment ids, positions and ``last_index`` that ``reward_steps.sequence_rewards`` reads."""
  N = len(ids_list)
  out = {'tokens': np.full((N, seq_len), pad_id, np.int32), 'segment_ids': np.zeros((N, seq_len), np.int32),
         'positions': np.zeros((N, seq_len), np.int32), 'last_index': np.zeros((N,), np.int32)}
  for n, ids in enumerate(ids_list):
    ids = np.asarray(ids, np.int32)[-seq_len:]
    out['tokens'][n, :len(ids)] = ids
    out['segment_ids'][n, :len(ids)] = 1
    out['positions'][n, :len(ids)] = np.arange(len(ids))
    out['last_index'][n] = len(ids) - 1
  return out


def preference_rows(tok, records, seq_len: int) -> dict[str, np.ndarray]:
  """Records of ``PreferenceRankings`` -> ``[N, K, T]`` rows (see ``lm.steps.reward``)."""
  prompts, responses = [], []
  for i, r in enumerate(records):
    prompt = r['prompt']
    prompt_ids = chat.render_prompt(tok, prompt)
    prompts.append(prompt_ids)
    per_response = []
    for resp in r['responses']:
      ids, _ = chat.render(tok, prompt + resp)
      if not np.array_equal(ids[:len(prompt_ids)], prompt_ids):
        raise ValueError(f'preference record {i}: a response does not continue its prompt\'s rendering')
      per_response.append(ids[len(prompt_ids):])
    responses.append(per_response)
  arrays = pipeline.preference_arrays(prompts, responses, [r['ranking'] for r in records], seq_len, tok.pad_id)
  T = seq_len
  filled = np.arange(T)[None, None, :] <= arrays['last_index'][..., None]
  return {'tokens': arrays['tokens'], 'segment_ids': filled.astype(np.int32),
          'positions': (np.arange(T)[None, None, :] * filled).astype(np.int32),
          'last_index': arrays['last_index'], 'ranks': arrays['ranks'],
          'gold_utilities': np.stack([np.asarray(r['gold_utilities'], np.float32) for r in records])}


def _within_prompt_correlation(x_NxK, y_NxK) -> float:
  x, y = x_NxK - x_NxK.mean(1, keepdims=True), y_NxK - y_NxK.mean(1, keepdims=True)
  return float(np.sum(x * y) / max(np.sqrt(np.sum(x * x) * np.sum(y * y)), 1e-12))


def length_correlations(rewards_NxK, records, rows) -> dict[str, float]:
  """How much each judge likes length: the within-prompt correlation of log(1 + words) with the
  reward model's reward, the panel's preference (minus its rank) and the gold utility."""
  words_NxK = np.log1p([[raters.features(resp)['n_words'] for resp in r['responses']] for r in records])
  return {'length_correlation_reward': _within_prompt_correlation(words_NxK, np.asarray(rewards_NxK)),
          'length_correlation_panel': _within_prompt_correlation(words_NxK, -rows['ranks'].astype(np.float64)),
          'length_correlation_gold': _within_prompt_correlation(words_NxK, rows['gold_utilities'])}


def _with_scalar_head(policy_params, init_params):
  """The policy's trunk under the reward model's param tree (its LM head dropped, the scalar head new)."""
  return {k: policy_params[k] if k in policy_params else v for k, v in init_params.items()}


def load_reward_fn(outputs: dict, mesh, rules):
  """``(params, reward_fn)``: ``reward_fn(params, tokens, segment_ids, positions, last_index)`` is the
  reward at ``last_index`` of each row, normalised to mean 0, std 1 on reference-policy samples."""
  model = Transformer(ModelConfig(**outputs['model']))
  params = checkpoint.restore_params(outputs['checkpoint_dir'], common.abstract_params(model, mesh, rules))
  mean, std = float(outputs['reward_mean']), float(outputs['reward_std'])

  def reward_fn(params, tokens, segment_ids, positions, last_index):
    raw = reward_steps.sequence_rewards(model, params, tokens, segment_ids, positions, last_index)
    return (raw - mean) / std

  return params, reward_fn


def reference_samples(config, tok, policy_model, policy_params, prompts, mesh, rules) -> list[np.ndarray]:
  """Prompt + sampled response ids of the reference policy for each prompt (``reward.normalize_*``)."""
  c = config.reward
  cfg = sample.SamplingConfig(temperature=c.normalize_temperature, max_new_tokens=c.normalize_max_new_tokens)
  ids = []
  for start in range(0, len(prompts), c.batch_size * 4):
    chunk = prompts[start:start + c.batch_size * 4]
    replies = sample.complete_chats(policy_params, policy_model, tok, chunk, cfg,
                                    jax.random.key(config.seed + start), mesh=mesh, rules=rules)
    ids += [np.concatenate([chat.render_prompt(tok, p), r['ids']]) for p, r in zip(chunk, replies)]
  return ids


def batched_rewards(reward_fn, params, rows, batch_size: int, mesh, rules):
  """``reward_fn`` over ``score_rows``-style rows, in fixed-size batches (one compile), as numpy."""
  fn = jax.jit(lambda p, b: reward_fn(p, b['tokens'], b['segment_ids'], b['positions'], b['last_index']))
  N, out = len(rows['tokens']), []
  with sharding.use_mesh(mesh, rules):
    for start in range(0, N, batch_size):
      idx = np.arange(start, start + batch_size) % N  # the last batch wraps around to a full one
      out.append(np.asarray(fn(params, sharding.place_batch({k: v[idx] for k, v in rows.items()}, mesh))))
  return np.concatenate(out)[:N]


def run(config, workdir, inputs) -> dict:
  c = config.reward
  if 'sft' not in inputs:
    raise ConfigError(f'reward needs the sft stage before it (ran: {", ".join(inputs) or "none"})')
  sft = inputs['sft']
  reward_steps.ranking_loss(c.loss)  # an unknown loss fails before any work
  tok = tokenizer.load(sft['tokenizer'])
  policy_model = common.model_from_config(config, tok, c.seq_len)
  model = Transformer(reward_model_config(policy_model.config))
  mesh, rules = common.mesh_and_rules(config)
  tfds_dir = preferences.preferences_dir(inputs)
  records = {split: builders.read(builders.PreferenceRankings, tfds_dir, split) for split in ('train', 'validation')}
  rows = {split: preference_rows(tok, recs, c.seq_len) for split, recs in records.items()}
  eval_rows = pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False)
  n_eval = max(1, min(c.eval_batches, len(rows['validation']['tokens']) // c.batch_size))
  policy_params = common.load_trained_params(sft, policy_model, mesh, rules)
  init = common.boxed_init(model)
  task = train.Task(
      name='reward', init_params=init, weight_name='prompts',
      loss_sums=reward_steps.make_loss_sums(model, c.loss, c.margin),
      eval_step=reward_steps.make_eval_step(model, c.loss, c.margin),
      train_batches=pipeline.Batches(rows['train'], c.batch_size, seed=config.seed),
      eval_batches=[eval_rows.host_batch(i) for i in range(n_eval)],
      load_params=lambda shardings: _with_scalar_head(policy_params, jax.jit(
          lambda r: nn.unbox(init(r)), out_shardings=shardings)(jax.random.key(config.seed))))
  out = train.run(task, c, workdir, mesh, rules, seed=config.seed)

  params = checkpoint.restore_params(out['checkpoint_dir'], common.abstract_params(model, mesh, rules))
  prompts = [tasks.without_tools(r['prompt']) for r in records['train'][:c.normalize_prompts]]
  samples = reference_samples(config, tok, policy_model, policy_params, prompts, mesh, rules)
  raw_fn = lambda p, *rows: reward_steps.sequence_rewards(model, p, *rows)
  raw = batched_rewards(raw_fn, params, score_rows(samples, c.seq_len, tok.pad_id), c.batch_size * 4, mesh, rules)
  mean, std = float(np.mean(raw)), float(np.std(raw) + 1e-6)
  held_out = {k: v.reshape(-1, *v.shape[2:]) for k, v in rows['validation'].items()
              if k in ('tokens', 'segment_ids', 'positions', 'last_index')}
  held_out_NxK = batched_rewards(raw_fn, params, held_out, c.batch_size * 4, mesh, rules).reshape(
      rows['validation']['ranks'].shape)
  lengths = length_correlations(held_out_NxK, records['validation'], rows['validation'])
  print(f'[reward] panel accuracy {out.get("eval_panel_accuracy", float("nan")):.3f}, gold accuracy '
        f'{out.get("eval_gold_accuracy", float("nan")):.3f}; reference rewards mean {mean:.3f} std {std:.3f}; '
        + ', '.join(f'{k} {v:.3f}' for k, v in lengths.items()), flush=True)
  return {**out, **lengths, 'tokenizer': sft['tokenizer'], 'reward_mean': mean, 'reward_std': std,
          'model': json.loads(json.dumps(dataclasses.asdict(model.config))),
          'train_prompts': int(len(rows['train']['tokens']))}

