"""What stages share, so that no stage imports another: the mesh and model from config, the inputs a
stage needs (typed ``lm.outputs``), trained params back from a stage's outputs, the reward model's
contract (load, score rows, normalise), the lab's world, and the multi-host barrier."""

import jax
import numpy as np

from lm import checkpoint, outputs, sharding
from lm.config import ConfigError
from lm.data import chat
from lm.inference import sample
from lm.lab.world import World
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer
from lm.steps import reward as reward_steps


def mesh_and_rules(config):
  return sharding.make_mesh(config.mesh.shape), sharding.rules_from_config(config.mesh.rules)


def model_from_config(config, tok=None, seq_len: int | None = None) -> Transformer:
  """The model of ``config.model``, checked against the tokenizer and the sequence length."""
  model_cfg = ModelConfig.from_config(config.model)
  if tok is not None and tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f'model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer\'s {tok.vocab_size}')
  if seq_len is not None and seq_len > model_cfg.max_seq_len:
    raise ConfigError(f'seq_len={seq_len} is longer than model.max_seq_len={model_cfg.max_seq_len}')
  return Transformer(model_cfg)


def need(inputs: dict, stage: str, by: str):
  """``inputs[stage]``, or a one-line error saying that ``by`` needs that stage before it."""
  if stage not in inputs:
    raise ConfigError(f'{by} needs the {stage} stage before it (ran: {", ".join(inputs) or "none"})')
  return inputs[stage]


def tfds_dir(inputs: dict, by: str) -> str:
  """The data stage's datasets."""
  return need(inputs, 'data', by).tfds_dir


def rankings_dir(inputs: dict, by: str) -> str:
  """Where the preference rankings are: the preferences stage's dataset when it ran, else the data stage's."""
  return inputs['preferences'].tfds_dir if 'preferences' in inputs else tfds_dir(inputs, by)


def world(config) -> World:
  """The lab's world of this run (``data.seed``, ``data.world``)."""
  return World(seed=config.data.seed, **config.data.world)


def load_params(trained: outputs.Model, model: Transformer, mesh, rules):
  """The params ``trained`` names, on the mesh (LoRA adapters merged into their base)."""
  return params_lib.load_trained(model, mesh, rules, trained.checkpoint_dir, trained.lora,
                                 trained.base_checkpoint_dir)


def model_outputs(config, out: dict, tokenizer: str, **fields) -> outputs.Model:
  """``outputs.Model`` of a training stage: ``train.run``'s result (checkpoint dir, final metrics)
  with the model's config and tokenizer."""
  return outputs.Model(checkpoint_dir=out['checkpoint_dir'], model=dict(config.model), tokenizer=tokenizer,
                       metrics={k: v for k, v in out.items() if k != 'checkpoint_dir'}, **fields)


def sync(name: str) -> None:
  """Every process waits here (what process 0 wrote exists for all)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------ the reward model's contract

def load_reward_fn(trained: outputs.Reward, mesh, rules):
  """``(params, reward_fn)``: ``reward_fn(params, tokens, segment_ids, positions, last_index)`` is the
  reward at ``last_index`` of each row, normalised to mean 0, std 1 on reference-policy samples."""
  model = Transformer(ModelConfig(**trained.model))
  params = checkpoint.restore_params(trained.checkpoint_dir, params_lib.abstract_params(model, mesh, rules))
  mean, std = float(trained.reward_mean), float(trained.reward_std)

  def reward_fn(params, tokens, segment_ids, positions, last_index):
    raw = reward_steps.sequence_rewards(model, params, tokens, segment_ids, positions, last_index)
    return (raw - mean) / std

  return params, reward_fn


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


def batched_rewards(reward_fn, params, rows, batch_size: int, mesh, rules):
  """``reward_fn`` over ``score_rows``-style rows, in fixed-size batches (one compile), as numpy."""
  fn = jax.jit(lambda p, b: reward_fn(p, b['tokens'], b['segment_ids'], b['positions'], b['last_index']))
  N, out = len(rows['tokens']), []
  with sharding.use_mesh(mesh, rules):
    for start in range(0, N, batch_size):
      idx = np.arange(start, start + batch_size) % N  # the last batch wraps around to a full one
      out.append(np.asarray(fn(params, sharding.place_batch({k: v[idx] for k, v in rows.items()}, mesh))))
  return np.concatenate(out)[:N]


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
