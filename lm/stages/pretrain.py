"""Pretraining stage: next-token loss on every token of the packed corpus.

The corpus is the data stage's ``PretrainCorpus``, loaded and packed in memory; with
``data.pretrain_stream=True``, or a public tfds source (``data.pretrain_tfds='c4:train:text'``, read
from the prepared dataset itself rather than from the data stage's sample of it), it streams instead
(``lm.data.streaming``: grain, a global shuffle, per-host shards, packing on the fly); the stream's
positions go to ``<stage>/stream/`` so that a resumed run sees exactly the batches it would have seen.
"""

import hashlib
from pathlib import Path

import jax

from lm import outputs, probes, tokenizer, train
from lm.data import builders, induction, pipeline, streaming
from lm.model import params as params_lib
from lm.stages import common
from lm.steps import lm as lm_steps


def in_memory(tok, tfds_dir, c, seed):
  """``(train batches, eval batches, pipeline.cut_share of the train rows)`` of the data stage's corpus, packed
  in memory; ``pretrain.induction_share`` of the train tokens are repeated random strings (the eval's are not)."""
  docs = {split: [tok.encode(r['text']) for r in builders.read(builders.PretrainCorpus, tfds_dir, split)]
          for split in ('train', 'validation')}
  cut = pipeline.cut_share(docs['train'], c.seq_len)
  docs['train'] = induction.add_to(docs['train'], c.induction_share, tok, seed)
  rows = {split: pipeline.pack(d, c.seq_len, tok.eos_id) for split, d in docs.items()}
  return (pipeline.Batches(rows['train'], c.batch_size, seed=seed),
          pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False), cut)


def streamed(tok, tfds_dir, c, seed, data, workdir):
  """``(train stream, eval stream)``: ``data.pretrain_tfds`` if set, else the data stage's corpus."""
  if data.pretrain_tfds:
    texts, held = streaming.named(data.pretrain_tfds)
  else:
    corpus = builders.PretrainCorpus(data_dir=str(tfds_dir))
    texts, held = streaming.TfdsTexts(corpus, 'train'), streaming.TfdsTexts(corpus, 'validation')
  key = f'{data.pretrain_tfds or tfds_dir}|{len(texts)}|{seed}|{c.seq_len}|{c.batch_size}|{tok.vocab_size}'
  state = (Path(workdir) / 'pretrain' / 'stream' /
           f'{hashlib.sha256(key.encode()).hexdigest()[:12]}-host{jax.process_index()}.jsonl')
  return (streaming.PackedStream(texts, tok.encode, c.seq_len, tok.eos_id, c.batch_size, seed, state_path=state),
          streaming.PackedStream(held, tok.encode, c.seq_len, tok.eos_id, c.batch_size, shuffle=False))


def run(config, workdir, inputs) -> outputs.Model:
  tok_path = common.need(inputs, 'tokenizer', 'pretrain').path
  tok = tokenizer.load(tok_path)
  c = config.pretrain
  model = common.model_from_config(config, tok, c.seq_len)
  tfds_dir = common.tfds_dir(inputs, 'pretrain')
  cut = None
  if config.data.get('pretrain_stream') or config.data.pretrain_tfds:
    if c.induction_share:
      raise ValueError(f'pretrain.induction_share={c.induction_share} needs the in-memory corpus: set it to 0 '
                       'with data.pretrain_stream or data.pretrain_tfds')
    train_batches, eval_rows = streamed(tok, tfds_dir, c, config.seed, config.data, workdir)
  else:
    train_batches, eval_rows, cut = in_memory(tok, tfds_dir, c, config.seed)
  mesh, rules = common.mesh_and_rules(config)
  task = train.Task(
      name='pretrain',
      init_params=params_lib.boxed_init(model),
      loss_sums=lm_steps.make_loss_sums(model, c.z_loss_weight),
      train_batches=train_batches,
      eval_step=lm_steps.make_eval_step(model),
      eval_batches=[eval_rows.host_batch(i) for i in range(c.eval_batches)],
      weight_name='tokens',
      probe=probes.combined(probes.make_copy_probe(model, tok, c.copy_probe, mesh, rules),
                            common.fact_probe('pretrain.fact_probe', c.fact_probe, model, tok, inputs, mesh, rules)),
  )
  out = train.run(task, c, workdir, mesh, rules, seed=config.seed)
  if cut is not None:
    out['cut_from_doc_start'] = cut
  return common.model_outputs(config, out, tok_path)
