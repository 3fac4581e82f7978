"""SentencePiece tokenizer: train a BPE model on a corpus, load it, encode and decode.

Special ids: 0 = pad, 1 = unk, 2 = bos, 3 = eos. Byte fallback means no text is out of vocabulary.
"""

import io
from pathlib import Path

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:

  def __init__(self, model_path):
    self.path = str(model_path)
    if not Path(self.path).is_file():
      raise FileNotFoundError(f'tokenizer model {self.path} does not exist')
    self.sp = spm.SentencePieceProcessor(model_file=self.path)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids])


def train(texts, model_path, vocab_size: int, split_digits: bool = True) -> Tokenizer:
  """Trains a BPE model on ``texts`` and writes it to ``model_path`` (a ``.model`` file)."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, model_type='bpe', vocab_size=vocab_size,
      byte_fallback=True, split_digits=split_digits, character_coverage=1.0,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, num_threads=1,
      max_sentence_length=1 << 16, minloglevel=2)
  Path(model_path).parent.mkdir(parents=True, exist_ok=True)
  Path(model_path).write_bytes(model.getvalue())
  return Tokenizer(model_path)
