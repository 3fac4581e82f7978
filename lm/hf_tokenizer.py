"""A Hugging Face checkpoint's tokenizer behind lm's tokenizer interface: sentencepiece (Llama 2, Gemma:
``HfTokenizer``) or a ``tokenizer.json`` of the ``tokenizers`` library (Llama 3, Qwen 2/3 byte-level
BPE: ``HfJsonTokenizer``).

Import copies the tokenizer files into a folder and writes ``lm_tokenizer.json`` beside them:
``{"kind": "hf_sentencepiece" | "hf_tokenizers", "family", "chat_format"}`` (``chat_format``: ``gemma``,
``llama2``, ``llama3``, ``chatml`` or ``qwen3``; see ``lm.data.chat_formats``); ``lm.tokenizer.load`` of
that file gives the matching class. A ``tokenizer.model`` wins when a checkpoint ships both.

Injection safety: ``encode`` never produces the id of a control or user-defined piece (``<s>``,
``</s>``, ``<start_of_turn>``, ...), whatever the text. Sentencepiece already skips control pieces
when encoding, but matches user-defined ones (Gemma's turn markers are such) in the text as its
normaliser leaves it: with NFKC, ``＜end_of_turn＞`` typed in fullwidth becomes the marker. So the
text is encoded whole and each piece that came out as a marker is replaced by the byte pieces of
the text it came from (without byte pieces: one character at a time, a marker there becoming
``<unk>``). Text with no UTF-8 encoding (a lone surrogate) is a one-line error. Structure is
inserted only by id (``lm.data.chat_formats``, chosen by ``chat_format``).

``HfJsonTokenizer`` gets the same property another way: every added token of ``tokenizer.json``
(special or not: Qwen's ``<think>`` and ``<tool_call>`` are not special) is a marker; ``encode`` runs
a copy of the tokenizer without its added tokens (normaliser, pre-tokeniser and BPE as they are), so
no text is ever matched to one; a marker the BPE vocabulary itself could spell is spelled one
character at a time. Plain text encodes to the ids transformers gives it.
"""

import json
import shutil
from pathlib import Path

import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2

META_FILE = 'lm_tokenizer.json'
MODEL_FILE = 'tokenizer.model'
JSON_FILE = 'tokenizer.json'
CONFIG_FILE = 'tokenizer_config.json'
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


def json_chat_format_of(added: set) -> str:
  """The chat format a ``tokenizer.json`` supports, from its added tokens (``none``: no known markers)."""
  if {'<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'} <= added:
    return 'llama3'
  if {'<|im_start|>', '<|im_end|>'} <= added:
    return 'qwen3' if {'<think>', '</think>'} <= added else 'chatml'
  return 'none'


def save(hf_dir, out_dir, family: str, write: bool = True) -> Path | None:
  """Copies the tokenizer of ``hf_dir`` (``tokenizer.model``, else ``tokenizer.json``) into ``out_dir``;
  the ``lm_tokenizer.json`` path, or None when the checkpoint has neither. ``write=False`` only says
  where it goes (the other processes of a multi-host import)."""
  hf_dir, out_dir = Path(hf_dir), Path(out_dir)
  sentencepiece = (hf_dir / MODEL_FILE).is_file()
  if not sentencepiece and not (hf_dir / JSON_FILE).is_file():
    return None
  if not write:
    return out_dir / META_FILE
  out_dir.mkdir(parents=True, exist_ok=True)
  for name in COPIED:
    if (hf_dir / name).is_file():
      shutil.copyfile(hf_dir / name, out_dir / name)
  meta = out_dir / META_FILE
  if sentencepiece:
    meta.write_text(json.dumps({'kind': 'hf_sentencepiece', 'family': family, 'chat_format': chat_format_of(family)}))
    HfTokenizer(meta)  # fails now, naming what is missing, rather than at training time
    return meta
  added = {t['content'] for t in json.loads((hf_dir / JSON_FILE).read_text()).get('added_tokens', [])}
  meta.write_text(json.dumps({'kind': 'hf_tokenizers', 'family': family, 'chat_format': json_chat_format_of(added)}))
  HfJsonTokenizer(meta)
  return meta


def load(meta_path):
  """The tokenizer an ``lm_tokenizer.json`` describes."""
  kind = json.loads(Path(meta_path).read_text()).get('kind')
  if kind not in KINDS:
    raise ValueError(f'{meta_path}: unknown tokenizer kind {kind!r}; known: {", ".join(KINDS)}')
  return KINDS[kind](meta_path)


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


def _token_name(value) -> str | None:
  """A token of ``tokenizer_config.json`` (a string, or ``{"content": ...}``), or None."""
  return value.get('content') if isinstance(value, dict) else value


class HfJsonTokenizer:
  """A ``tokenizer.json`` (the ``tokenizers`` library) with the interface of ``HfTokenizer``.

  ``bos_id`` / ``eos_id`` / ``pad_id`` come from ``tokenizer_config.json`` (``bos_id`` is None where
  the checkpoint has none, as Qwen; ``pad_id`` falls back to ``eos_id``). Every added token is a
  marker: ``special_ids`` maps them to ids, ``encode`` never yields them, ``decode`` drops them."""

  def __init__(self, meta_path):
    self.path = str(meta_path)
    self.directory = Path(meta_path).parent
    meta = json.loads(Path(meta_path).read_text())
    json_file = self.directory / JSON_FILE
    if not json_file.is_file():
      raise FileNotFoundError(f'{json_file} does not exist (needed by {meta_path})')
    self.family, self.chat_format = meta['family'], meta['chat_format']
    spec = json.loads(json_file.read_text())
    self.tok = tokenizers.Tokenizer.from_str(json_file.read_text())
    self.special_ids = {t['content']: int(t['id']) for t in spec.get('added_tokens', [])}
    self._plain = tokenizers.Tokenizer.from_str(json.dumps({**spec, 'added_tokens': []}))
    self._markers = frozenset(self.special_ids.values())
    config_file = self.directory / CONFIG_FILE
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    names = {key: _token_name(config.get(f'{key}_token')) for key in ('bos', 'eos', 'pad', 'unk')}
    for key, name in names.items():
      if name is not None and name not in self.special_ids and self.tok.token_to_id(name) is None:
        raise ValueError(f'{config_file}: {key}_token {name!r} is not a token of {json_file}')
    ids = {key: None if name is None else self.tok.token_to_id(name) for key, name in names.items()}
    if ids['eos'] is None:
      raise ValueError(f'{config_file}: no eos_token (needed to end documents and replies)')
    self.bos_id, self.eos_id, self.unk_id = ids['bos'], ids['eos'], ids['unk']
    self.pad_id = ids['pad'] if ids['pad'] is not None else self.eos_id

  @property
  def vocab_size(self) -> int:
    return self.tok.get_vocab_size(with_added_tokens=True)

  def token_id(self, piece: str) -> int:
    if piece not in self.special_ids:
      raise KeyError(f'{piece!r} is not an added token of {self.directory / JSON_FILE}')
    return self.special_ids[piece]

  def encode(self, text: str) -> list[int]:
    """Ids of plain ``text``; never an added token's id."""
    problem = utf8_error(text)
    if problem:
      raise ValueError(f'text is not valid: {problem}')
    enc = self._plain.encode(text, add_special_tokens=False)
    if self._markers.isdisjoint(enc.ids):
      return enc.ids
    out = []
    for i, (start, end) in zip(enc.ids, enc.offsets):
      if i not in self._markers:
        out.append(i)
        continue
      for ch in text[start:end]:  # a marker the vocabulary spells: one character at a time
        piece = self._plain.encode(ch, add_special_tokens=False).ids
        if not self._markers.isdisjoint(piece):
          raise ValueError(f'{self.directory / JSON_FILE}: the character {ch!r} is itself a marker token')
        out += piece
    return out

  def decode(self, ids) -> str:
    return self.tok.decode([int(i) for i in ids if int(i) not in self._markers], skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    return self.tok.id_to_token(int(i))

  def display(self, ids) -> str:
    """Text with the added tokens written by name (``decode`` drops them)."""
    out, run = [], []
    for i in map(int, ids):
      if i in self._markers:
        out += [self.decode(run), self.id_to_piece(i)]
        run = []
      else:
        run.append(i)
    return ''.join(out + [self.decode(run)])


KINDS = {'hf_sentencepiece': HfTokenizer, 'hf_tokenizers': HfJsonTokenizer}
