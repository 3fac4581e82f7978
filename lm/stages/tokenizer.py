"""Tokenizer stage: a sentencepiece BPE (or character-level) tokenizer trained on the lab's text."""

from pathlib import Path

import jax

from lm import outputs, tokenizer
from lm.config import ConfigError
from lm.data import builders
from lm.stages import common


def training_texts(tfds_dir) -> list[str]:
  """The pretraining corpus and the text of every SFT message, so chat turns tokenize well."""
  texts = [r['text'] for r in builders.read(builders.PretrainCorpus, tfds_dir, 'train')]
  for record in builders.read(builders.SftConversations, tfds_dir, 'train'):
    texts += [m.get('thinking') or '' for m in record['messages']] + [m['content'] or '' for m in record['messages']]
  return [t for t in texts if t]


def run(config, workdir, inputs) -> outputs.Tokenizer:
  c = config.tokenizer
  if c.kind not in ('bpe', 'char'):
    raise ConfigError(f'tokenizer.kind={c.kind!r}; valid: bpe, char')
  path = Path(workdir) / 'tokenizer' / ('tokenizer.model' if c.kind == 'bpe' else 'tokenizer.json')
  if jax.process_index() == 0:
    texts = training_texts(common.tfds_dir(inputs, 'tokenizer'))
    if c.kind == 'char':
      tokenizer.CharTokenizer.train(texts, path)
    else:
      try:
        tokenizer.train(texts, path, c.vocab_size, split_digits=c.split_digits)
      except RuntimeError as e:
        raise ConfigError(f'tokenizer.vocab_size={c.vocab_size}: {str(e).splitlines()[-1].split("] ")[-1]}') from None
  common.sync('tokenizer')
  return outputs.Tokenizer(path=str(path), vocab_size=tokenizer.load(path).vocab_size)
