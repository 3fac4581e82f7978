"""Reward model stage: the SFT transformer with a scalar head, fit to the rater panel's K-way rankings.

Starts from the SFT checkpoint (LoRA merged) with the LM head dropped and a zero-initialised scalar
head; the reward of a response is the scalar at its last token (the ``[end]`` that closes the turn).
Loss ``reward.loss`` (``plackett_luce`` or ``bradley_terry``, optional ``reward.margin``: see
``lm.steps.reward``). Eval reports pairwise accuracy on held-out rankings against the panel and
against the gold ranking. After training, the reference policy (SFT) samples responses to
``reward.normalize_prompts`` training prompts; the mean and std of their rewards are stored so
that ``common.load_reward_fn`` returns rewards with mean 0 and std 1 on the reference policy.

Outputs: ``checkpoint_dir``, ``model`` (the reward model's config), ``tokenizer``,
``reward_mean``, ``reward_std``, and the final ``eval_panel_accuracy`` / ``eval_gold_accuracy``;
``<workdir>/reward/heldout.json`` holds, per held-out prompt, the K rewards, word counts, panel ranks
and gold utilities (intervals over prompts).
"""

import dataclasses
import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from lm import checkpoint, outputs, tokenizer, train
from lm.data import builders, pipeline
from lm.inference import sample
from lm.lab import raters, tasks
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer
from lm.stages import common
from lm.steps import reward as reward_steps


def reward_model_config(policy_config: ModelConfig) -> ModelConfig:
  return dataclasses.replace(policy_config, lm_head=False, scalar_head=True)


REWARD_KEYS = ('tokens', 'segment_ids', 'positions', 'last_index', 'ranks', 'gold_utilities')  # what the loss reads


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


def run(config, workdir, inputs) -> outputs.Reward:
  c = config.reward
  sft = common.need(inputs, 'sft', 'reward')
  reward_steps.ranking_loss(c.loss)  # an unknown loss fails before any work
  tok = tokenizer.load(sft.tokenizer)
  policy_model = common.model_from_config(config, tok, c.seq_len)
  model = Transformer(reward_model_config(policy_model.config))
  mesh, rules = common.mesh_and_rules(config)
  tfds_dir = common.rankings_dir(inputs, 'reward')
  records = {split: builders.read(builders.PreferenceRankings, tfds_dir, split) for split in ('train', 'validation')}
  rows = {split: {k: v for k, v in pipeline.preference_rows(tok, recs, c.seq_len).items() if k in REWARD_KEYS}
          for split, recs in records.items()}
  eval_rows = pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False)
  n_eval = max(1, min(c.eval_batches, len(rows['validation']['tokens']) // c.batch_size))
  policy_params = common.load_params(sft, policy_model, mesh, rules)
  init = params_lib.boxed_init(model)
  task = train.Task(
      name='reward', init_params=init, weight_name='prompts',
      loss_sums=reward_steps.make_loss_sums(model, c.loss, c.margin),
      eval_step=reward_steps.make_eval_step(model, c.loss, c.margin),
      train_batches=pipeline.Batches(rows['train'], c.batch_size, seed=config.seed),
      eval_batches=[eval_rows.host_batch(i) for i in range(n_eval)],
      load_params=lambda shardings: _with_scalar_head(policy_params, jax.jit(
          lambda r: nn.unbox(init(r)), out_shardings=shardings)(jax.random.key(config.seed))))
  out = train.run(task, c, workdir, mesh, rules, seed=config.seed)

  params = checkpoint.restore_params(out['checkpoint_dir'], params_lib.abstract_params(model, mesh, rules))
  prompts = [tasks.without_tools(r['prompt']) for r in records['train'][:c.normalize_prompts]]
  sampling = sample.SamplingConfig(temperature=c.normalize_temperature, max_new_tokens=c.normalize_max_new_tokens)
  samples = common.policy_samples(tok, policy_model, policy_params, prompts, sampling, c.batch_size * 4, config.seed,
                                  mesh, rules)
  raw_fn = lambda p, *rows: reward_steps.sequence_rewards(model, p, *rows)
  raw = common.batched_rewards(raw_fn, params, common.score_rows(samples, c.seq_len, tok.pad_id), c.batch_size * 4,
                               mesh, rules)
  mean, std = float(np.mean(raw)), float(np.std(raw) + 1e-6)
  held_out = {k: v.reshape(-1, *v.shape[2:]) for k, v in rows['validation'].items()
              if k in ('tokens', 'segment_ids', 'positions', 'last_index')}
  held_out_NxK = common.batched_rewards(raw_fn, params, held_out, c.batch_size * 4, mesh, rules).reshape(
      rows['validation']['ranks'].shape)
  lengths = length_correlations(held_out_NxK, records['validation'], rows['validation'])
  if jax.process_index() == 0:  # per held-out prompt, for intervals over prompts (lm.cli.claims)
    words_NxK = [[raters.features(resp)['n_words'] for resp in r['responses']] for r in records['validation']]
    (Path(workdir) / 'reward' / 'heldout.json').write_text(json.dumps({
        'rewards': held_out_NxK.tolist(), 'words': words_NxK, 'panel_ranks': rows['validation']['ranks'].tolist(),
        'gold_utilities': rows['validation']['gold_utilities'].tolist()}) + '\n')
  print(f'[reward] panel accuracy {out.get("eval_panel_accuracy", float("nan")):.3f}, gold accuracy '
        f'{out.get("eval_gold_accuracy", float("nan")):.3f}; reference rewards mean {mean:.3f} std {std:.3f}; '
        + ', '.join(f'{k} {v:.3f}' for k, v in lengths.items()), flush=True)
  metrics = {k: v for k, v in out.items() if k != 'checkpoint_dir'}
  return outputs.Reward(checkpoint_dir=out['checkpoint_dir'], model=dataclasses.asdict(model.config),
                        tokenizer=sft.tokenizer, reward_mean=mean, reward_std=std,
                        metrics={**metrics, **lengths, 'train_prompts': int(len(rows['train']['tokens']))})

