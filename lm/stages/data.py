"""Data stage: generate the corpus, build it as a tfds array_record dataset, train the tokenizer."""

from pathlib import Path

import jax

from lm import tokenizer
from lm.config import ConfigError
from lm.data import corpus, text_builder


def run(config, workdir, inputs) -> dict:
  del inputs
  c = config.data
  out = Path(workdir) / 'data'
  tfds_dir, model_path = out / 'tfds', out / 'tokenizer.model'
  if jax.process_index() == 0:
    docs = corpus.documents(c.n_documents + c.n_validation, seed=config.seed)
    text_builder.write_source(out / 'source', {'train': docs[:c.n_documents], 'validation': docs[c.n_documents:]})
    text_builder.build(out / 'source', tfds_dir)
    try:
      tokenizer.train(text_builder.read_texts(tfds_dir, 'train'), model_path, c.vocab_size, c.split_digits)
    except RuntimeError as e:
      raise ConfigError(f'data.vocab_size={c.vocab_size}: {str(e).splitlines()[-1].split("] ")[-1]}') from None
  _sync('data')
  return {'tfds_dir': str(tfds_dir), 'tokenizer': str(model_path), 'vocab_size': tokenizer.Tokenizer(model_path).vocab_size}


def _sync(name):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
