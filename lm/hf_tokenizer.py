"""A Hugging Face checkpoint's sentencepiece tokenizer (Llama 2, Gemma) behind lm's tokenizer interface.

Import copies ``tokenizer.model`` (and the other tokenizer files, for export) into a folder and
writes ``lm_tokenizer.json`` beside it: ``{"kind": "hf_sentencepiece", "chat_format": "gemma" |
"llama2"}``; ``lm.tokenizer.load`` of that file gives an ``HfTokenizer``.

Injection safety: ``encode`` never produces the id of a control or user-defined piece (``<s>``,
``</s>``, ``<start_of_turn>``, ...), whatever the text. Sentencepiece already skips control pieces
when encoding, but matches user-defined ones (Gemma's turn markers are such) in the text as its
normaliser leaves it: with NFKC, ``＜end_of_turn＞`` typed in fullwidth becomes the marker. So the
text is encoded whole and each piece that came out as a marker is replaced by the byte pieces of
the text it came from (without byte pieces: one character at a time, a marker there becoming
``<unk>``). Text with no UTF-8 encoding (a lone surrogate) is a one-line error. Structure is
inserted only by id (``lm.data.chat_formats``, chosen by ``chat_format``).
"""

import json
import shutil
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

META_FILE = 'lm_tokenizer.json'
MODEL_FILE = 'tokenizer.model'
COPIED = ('tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.json',
          'generation_config.json')
_TYPE = sentencepiece_model_pb2.ModelProto.SentencePiece.Type


def utf8_error(text: str) -> str | None:
  """What stops ``text`` being encoded as UTF-8 (a lone surrogate), or None."""
  try:
    text.encode('utf-8')
  except UnicodeEncodeError as e:
    return f'{e.reason} (U+{ord(text[e.start]):04X} at position {e.start})'
  return None


def chat_format_of(family: str) -> str:
  return 'gemma' if family.startswith('gemma') else 'llama2'


def save(hf_dir, out_dir, family: str, write: bool = True) -> Path | None:
  """Copies the sentencepiece tokenizer of ``hf_dir`` into ``out_dir``; the ``lm_tokenizer.json``
  path, or None when the checkpoint has no ``tokenizer.model`` (Llama 3 and Qwen use BPE JSON).
  ``write=False`` only says where it goes (the other processes of a multi-host import)."""
  hf_dir, out_dir = Path(hf_dir), Path(out_dir)
  if not (hf_dir / MODEL_FILE).is_file():
    return None
  if not write:
    return out_dir / META_FILE
  out_dir.mkdir(parents=True, exist_ok=True)
  for name in COPIED:
    if (hf_dir / name).is_file():
      shutil.copyfile(hf_dir / name, out_dir / name)
  meta = out_dir / META_FILE
  meta.write_text(json.dumps({'kind': 'hf_sentencepiece', 'family': family, 'chat_format': chat_format_of(family)}))
  HfTokenizer(meta)  # fails now, naming what is missing, rather than at training time
  return meta


class HfTokenizer:
  """``encode`` / ``decode`` / ids like ``lm.tokenizer.Tokenizer``, plus ``chat_format``: the name of
  the family's chat format (``lm.data.chat_formats``)."""

  def __init__(self, meta_path):
    self.path = str(meta_path)
    self.directory = Path(meta_path).parent
    meta = json.loads(Path(meta_path).read_text())
    model_file = self.directory / MODEL_FILE
    if not model_file.is_file():
      raise FileNotFoundError(f'{model_file} does not exist (needed by {meta_path})')
    self.family = meta['family']
    self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    types = [p.type for p in proto.pieces]
    self.special_ids = {p.piece: i for i, p in enumerate(proto.pieces) if p.type in (_TYPE.CONTROL, _TYPE.USER_DEFINED)}
    self.special_ids.update({self.sp.id_to_piece(i): i for i in range(len(types)) if types[i] == _TYPE.UNKNOWN})
    self._markers = frozenset(i for i, t in enumerate(types) if t in (_TYPE.CONTROL, _TYPE.USER_DEFINED))
    self._byte_ids = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == _TYPE.BYTE}
    self.bos_id, self.eos_id, self.unk_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
    self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
    self._specials = frozenset(self.special_ids.values())
    self.chat_format = meta['chat_format']

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def token_id(self, piece: str) -> int:
    if piece not in self.special_ids:
      raise KeyError(f'{piece!r} is not a special piece of {self.directory / MODEL_FILE}')
    return self.special_ids[piece]

  def _spell(self, text: str) -> list[int]:
    """``text`` without matching any marker: byte pieces, or one character at a time."""
    if self._byte_ids:
      return [self._byte_ids[f'<0x{b:02X}>'] for b in text.encode('utf-8')]
    return [self.unk_id if i in self._markers else i for ch in text for i in self.sp.encode(ch)]

  def encode(self, text: str) -> list[int]:
    """Ids of plain ``text``; never a control or user-defined piece's id."""
    problem = utf8_error(text)
    if problem:
      raise ValueError(f'text is not valid: {problem}')
    ids = self.sp.encode(text)
    if self._markers.isdisjoint(ids):
      return ids
    out = []
    for piece in self.sp.encode(text, return_type='proto').pieces:  # surface: the text the piece came from
      out += self._spell(piece.surface or piece.piece) if piece.id in self._markers else [piece.id]
    return out

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids if int(i) not in self._specials])

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))

  def display(self, ids) -> str:
    """Text with special pieces written by name (``decode`` drops them)."""
    out, run = [], []
    for i in map(int, ids):
      if i in self._specials:
        out += [self.sp.decode(run), self.id_to_piece(i)]
        run = []
      else:
        run.append(i)
    return ''.join(out + [self.sp.decode(run)])
