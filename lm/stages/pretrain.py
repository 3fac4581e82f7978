"""Pretraining stage: next-token loss on every token of the packed corpus."""

import jax.numpy as jnp

from lm import tokenizer, train
from lm.config import ConfigError
from lm.data import builders, pipeline
from lm.model import ModelConfig, Transformer
from lm.sharding import make_mesh, rules_from_config
from lm.steps import lm as lm_steps


def run(config, workdir, inputs) -> dict:
  tok = tokenizer.load(inputs['tokenizer']['path'])
  model_cfg = ModelConfig.from_config(config.model)
  if tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f'model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer\'s {tok.vocab_size}')
  c = config.pretrain
  if c.seq_len > model_cfg.max_seq_len:
    raise ConfigError(f'pretrain.seq_len={c.seq_len} is longer than model.max_seq_len={model_cfg.max_seq_len}')
  tfds_dir = inputs['data']['tfds_dir']
  rows = {split: pipeline.pack([tok.encode(r['text']) for r in builders.read(builders.PretrainCorpus, tfds_dir, split)],
                               c.seq_len, tok.eos_id)
          for split in ('train', 'validation')}
  model = Transformer(model_cfg)
  mesh = make_mesh(config.mesh.shape)
  rules = rules_from_config(config.mesh.rules)
  eval_rows = pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False)
  task = train.Task(
      name='pretrain',
      init_params=lambda rng: model.init(rng, jnp.zeros((1, 8), jnp.int32))['params'],
      loss_sums=lm_steps.make_loss_sums(model, c.z_loss_weight),
      train_batches=pipeline.Batches(rows['train'], c.batch_size, seed=config.seed),
      eval_step=lm_steps.make_eval_step(model),
      eval_batches=[eval_rows.host_batch(i) for i in range(c.eval_batches)],
      weight_name='tokens',
  )
  out = train.run(task, c, workdir, mesh, rules, seed=config.seed)
  return {**out, 'tokenizer': inputs['tokenizer']['path'], 'model': model_cfg.__dict__}
