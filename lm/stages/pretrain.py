"""Pretraining stage: next-token loss on every token of the packed corpus."""

from lm import outputs, tokenizer, train
from lm.data import builders, pipeline
from lm.model import params as params_lib
from lm.stages import common
from lm.steps import lm as lm_steps


def run(config, workdir, inputs) -> outputs.Model:
  tok_path = common.need(inputs, 'tokenizer', 'pretrain').path
  tok = tokenizer.load(tok_path)
  c = config.pretrain
  model = common.model_from_config(config, tok, c.seq_len)
  tfds_dir = common.tfds_dir(inputs, 'pretrain')
  rows = {split: pipeline.pack([tok.encode(r['text']) for r in builders.read(builders.PretrainCorpus, tfds_dir, split)],
                               c.seq_len, tok.eos_id)
          for split in ('train', 'validation')}
  mesh, rules = common.mesh_and_rules(config)
  eval_rows = pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False)
  task = train.Task(
      name='pretrain',
      init_params=params_lib.boxed_init(model),
      loss_sums=lm_steps.make_loss_sums(model, c.z_loss_weight),
      train_batches=pipeline.Batches(rows['train'], c.batch_size, seed=config.seed),
      eval_step=lm_steps.make_eval_step(model),
      eval_batches=[eval_rows.host_batch(i) for i in range(c.eval_batches)],
      weight_name='tokens',
  )
  out = train.run(task, c, workdir, mesh, rules, seed=config.seed)
  return common.model_outputs(config, out, tok_path)
