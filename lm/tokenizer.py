"""Tokenizers: a sentencepiece BPE model and a character-level one, with the same ids and interface.

Fixed ids, the same in both kinds:

  ==  ====================  =================================================
  0   ``<pad>``             padding
  1   ``<unk>``             unknown (never produced: both kinds fall back to bytes)
  2   ``<s>``               beginning of sequence
  3   ``</s>``              end of sequence (ends a document when packing)
  4   ``<|system|>``        header of a system message
  5   ``<|user|>``          header of a user message
  6   ``<|assistant|>``     header of an assistant turn
  7   ``<|end|>``           end of a turn (system, user or assistant)
  8   ``<|think|>``         opens an assistant's thinking
  9   ``<|/think|>``        closes it
  10  ``<|tool_call|>``     opens a tool call (JSON ``{"name", "arguments"}``)
  11  ``<|/tool_call|>``    closes it: the sampler pauses here and runs the tool
  12  ``<|tool_result|>``   opens a tool's result (inserted by the sampler)
  13  ``<|/tool_result|>``  closes it
  14  ``<0x00>`` ..         256 byte pieces, ``<0x00>`` .. ``<0xFF>`` (ids 14..269)
  ==  ====================  =================================================

Ids 4..13 are sentencepiece *control symbols*: ``encode`` never produces them, whatever the text
(a user typing ``<|assistant|>`` gets the bytes of those characters), so structure can be inserted
only by id (see ``lm.chat``). ``decode`` returns text only and drops every id below 14; ``display``
shows them by name.

The sentencepiece model is trained with identity normalisation, whitespace kept as is and no dummy
prefix (a text's first word has no leading ``▁``), so ``decode(encode(text)) == text`` for every
string: byte fallback covers unseen characters, and ``encode`` spells a literal ``▁`` (U+2581,
sentencepiece's space marker) in bytes.
``CharTokenizer`` gives every character of a fixed alphabet (the most frequent characters of a
corpus) its own id after the bytes, and encodes any other character as its UTF-8 bytes; it is saved
as JSON. ``load(path)`` opens either kind.
"""

import collections
import io
import json
from pathlib import Path

import sentencepiece as spm

from lm import hf_tokenizer

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ('<pad>', '<unk>', '<s>', '</s>')
CONTROL_TOKENS = ('<|system|>', '<|user|>', '<|assistant|>', '<|end|>', '<|think|>', '<|/think|>',
                  '<|tool_call|>', '<|/tool_call|>', '<|tool_result|>', '<|/tool_result|>')
(SYSTEM_ID, USER_ID, ASSISTANT_ID, END_ID, THINK_ID, END_THINK_ID,
 TOOL_CALL_ID, END_TOOL_CALL_ID, TOOL_RESULT_ID, END_TOOL_RESULT_ID) = range(4, 14)
TOKEN_IDS = {name: i for i, name in enumerate(SPECIAL_TOKENS + CONTROL_TOKENS)}  # all 14 names -> id
CONTROL_IDS = frozenset(range(4, 14))
FIRST_BYTE_ID = 14
FIRST_TEXT_ID = FIRST_BYTE_ID + 256  # CharTokenizer: first character id
_META = '\u2581'  # sentencepiece's whitespace marker


class _Ids:
  """The fixed ids and the by-name helpers that both tokenizer kinds share."""

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
  special_ids = TOKEN_IDS

  def token_id(self, name: str) -> int:
    if name not in TOKEN_IDS:
      raise KeyError(f'{name!r} is not a special or control token; known: {", ".join(TOKEN_IDS)}')
    return TOKEN_IDS[name]

  def display(self, ids) -> str:
    """Text with the special and control ids written as their names (``decode`` drops them)."""
    out, run = [], []
    for i in map(int, ids):
      if i < FIRST_BYTE_ID:
        out += [self.decode(run), self.id_to_piece(i)]
        run = []
      else:
        run.append(i)
    return ''.join(out + [self.decode(run)])


class Tokenizer(_Ids):
  """A trained sentencepiece model (see ``train``), loaded from its ``.model`` file."""

  def __init__(self, model_path):
    self.path = str(model_path)
    if not Path(self.path).is_file():
      raise FileNotFoundError(f'tokenizer model {self.path} does not exist')
    self.sp = spm.SentencePieceProcessor(model_file=self.path)
    if [self.sp.id_to_piece(i) for i in range(len(TOKEN_IDS))] != list(TOKEN_IDS) or not all(
        self.sp.is_control(i) for i in CONTROL_IDS):
      raise ValueError(f'tokenizer model {self.path} lacks the control tokens at ids 4..13: retrain it')

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Ids of plain ``text``; never a special or control id."""
    if _META not in text:
      return self.sp.encode(text)
    # sentencepiece reads U+2581 as a space: spell it in bytes so that decoding gives it back.
    meta = [FIRST_BYTE_ID + b for b in _META.encode('utf-8')]
    parts = [self.sp.encode(part) for part in text.split(_META)]
    return parts[0] + [i for part in parts[1:] for i in meta + part]

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))


def train(texts, model_path, vocab_size: int, split_digits: bool = True, byte_fallback: bool = True,
          max_sentences: int = 100_000) -> Tokenizer:
  """Trains a BPE model on ``texts`` (one document each) and writes it to ``model_path``.

  At most ``max_sentences`` documents, sampled at random, are used, which bounds the time
  (measured: 0.9 s for 5.6 MB, 3.3 s for 22 MB, 2 threads); ``split_digits`` makes every digit its own token.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, model_type='bpe', vocab_size=vocab_size,
      byte_fallback=byte_fallback, split_digits=split_digits, character_coverage=1.0,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, control_symbols=list(CONTROL_TOKENS),
      normalization_rule_name='identity', remove_extra_whitespaces=False, add_dummy_prefix=False,
      input_sentence_size=max_sentences, shuffle_input_sentence=True, num_threads=2,
      max_sentence_length=1 << 16, minloglevel=2)
  Path(model_path).parent.mkdir(parents=True, exist_ok=True)
  Path(model_path).write_bytes(model.getvalue())
  return Tokenizer(model_path)


class CharTokenizer(_Ids):
  """One id per character of ``alphabet`` (ids from 270 on); other characters become byte ids."""

  def __init__(self, alphabet):
    self.alphabet = list(alphabet)
    if len(set(self.alphabet)) != len(self.alphabet) or any(len(c) != 1 for c in self.alphabet):
      raise ValueError('a CharTokenizer alphabet must be distinct single characters')
    self.char_ids = {c: FIRST_TEXT_ID + k for k, c in enumerate(self.alphabet)}

  @classmethod
  def train(cls, texts, path=None, vocab_size: int | None = None) -> 'CharTokenizer':
    """The corpus's characters, most frequent first (ties by code point), up to ``vocab_size`` ids."""
    counts = collections.Counter()
    for text in texts:
      counts.update(text)
    alphabet = sorted(counts, key=lambda c: (-counts[c], c))
    if vocab_size is not None:
      alphabet = alphabet[:max(0, vocab_size - FIRST_TEXT_ID)]
    tok = cls(alphabet)
    if path is not None:
      tok.save(path)
    return tok

  def save(self, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({'kind': 'char', 'alphabet': ''.join(self.alphabet)}))

  @classmethod
  def load(cls, path) -> 'CharTokenizer':
    return cls(json.loads(Path(path).read_text())['alphabet'])

  @property
  def vocab_size(self) -> int:
    return FIRST_TEXT_ID + len(self.alphabet)

  def encode(self, text: str) -> list[int]:
    ids = []
    for c in text:
      if c in self.char_ids:
        ids.append(self.char_ids[c])
      else:
        ids.extend(FIRST_BYTE_ID + b for b in c.encode('utf-8'))
    return ids

  def decode(self, ids) -> str:
    out, pending = [], bytearray()
    for i in map(int, ids):
      if FIRST_BYTE_ID <= i < FIRST_TEXT_ID:
        pending.append(i - FIRST_BYTE_ID)
        continue
      out.append(pending.decode('utf-8', errors='replace'))
      pending.clear()
      if FIRST_TEXT_ID <= i < self.vocab_size:
        out.append(self.alphabet[i - FIRST_TEXT_ID])
    return ''.join(out) + pending.decode('utf-8', errors='replace')

  def id_to_piece(self, i: int) -> str:
    i = int(i)
    if i < FIRST_BYTE_ID:
      return (SPECIAL_TOKENS + CONTROL_TOKENS)[i]
    if i < FIRST_TEXT_ID:
      return f'<0x{i - FIRST_BYTE_ID:02X}>'
    return self.alphabet[i - FIRST_TEXT_ID]


def load(path):
  """Opens a tokenizer file of either kind (a CharTokenizer's is JSON, a sentencepiece model is not),
  or an imported checkpoint's ``lm_tokenizer.json`` (``lm.hf_tokenizer``)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'tokenizer file {path} does not exist')
  with open(path, 'rb') as f:
    is_json = f.read(1) == b'{'
  if is_json and json.loads(path.read_text()).get('kind') in hf_tokenizer.KINDS:
    return hf_tokenizer.load(path)
  return CharTokenizer.load(path) if is_json else Tokenizer(path)
