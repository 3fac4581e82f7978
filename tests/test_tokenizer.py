"""Tokenizers: fixed control ids that text can never produce, lossless round trips, save and load."""


import pytest
import sentencepiece as spm

from lm import tokenizer
from lm.lab.world import World
from lm.tokenizer import CONTROL_TOKENS, SPECIAL_TOKENS

ALL_NAMES = SPECIAL_TOKENS + CONTROL_TOKENS
TRICKY = ['', 'plain words', '  two  spaces\n\nand\ttabs ', ' leading and trailing ', 'ünïcödé 漢字 🙂',
          '12345 + 678 = 13023', ''.join(ALL_NAMES), 'say <|assistant|> then <|end|><|/think|>', '▁ <0x41> \x00']


@pytest.fixture(scope='module')
def sp_tok(tmp_path_factory):
  return tokenizer.train(World(seed=0).pretraining_documents(n_docs=2000), tmp_path_factory.mktemp('tok') / 'sp.model',
                         vocab_size=500)


@pytest.fixture(scope='module')
def char_tok(tmp_path_factory):
  return tokenizer.CharTokenizer.train(World(seed=0).pretraining_documents(n_docs=500),
                                       tmp_path_factory.mktemp('tok') / 'char.json')


@pytest.fixture(params=['sp', 'char'])
def tok(request, sp_tok, char_tok):
  return {'sp': sp_tok, 'char': char_tok}[request.param]


def test_special_and_control_ids_are_fixed(tok):
  assert [tok.id_to_piece(i) for i in range(14)] == list(ALL_NAMES)
  assert (tokenizer.SYSTEM_ID, tokenizer.USER_ID, tokenizer.ASSISTANT_ID, tokenizer.END_ID) == (4, 5, 6, 7)
  assert (tokenizer.THINK_ID, tokenizer.END_THINK_ID, tokenizer.TOOL_CALL_ID, tokenizer.END_TOOL_CALL_ID,
          tokenizer.TOOL_RESULT_ID, tokenizer.END_TOOL_RESULT_ID) == (8, 9, 10, 11, 12, 13)
  assert tok.token_id('<|end|>') == 7 and tok.token_id('<|/tool_result|>') == 13 and tok.token_id('</s>') == 3
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert tok.special_ids['<|assistant|>'] == 6 and len(tok.special_ids) == 14
  assert tok.id_to_piece(14) == '<0x00>' and tok.id_to_piece(269) == '<0xFF>'
  with pytest.raises(KeyError, match='not a special or control token'):
    tok.token_id('<|bogus|>')


@pytest.mark.parametrize('text', TRICKY)
def test_encode_never_gives_a_special_id_and_round_trips(tok, text):
  ids = tok.encode(text)
  assert all(14 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text


def test_token_names_in_text_become_ordinary_pieces(sp_tok, char_tok):
  ids = sp_tok.encode('<|end|>')
  assert sp_tok.decode(ids) == '<|end|>' and len(ids) > 1 and min(ids) >= 14
  assert char_tok.encode('<|end|>') == [char_tok.char_ids[c] if c in char_tok.char_ids else 14 + ord(c)
                                        for c in '<|end|>']


def test_decode_drops_control_ids_and_display_names_them(tok):
  ids = [tokenizer.USER_ID, *tok.encode('hi there'), tokenizer.END_ID, tokenizer.EOS_ID]
  assert tok.decode(ids) == 'hi there'
  assert tok.display(ids) == '<|user|>hi there<|end|></s>'


def test_sentencepiece_splits_digits(sp_tok):
  pieces = [sp_tok.id_to_piece(i) for i in sp_tok.encode('in 2024 and 99')]
  assert [p for p in pieces if p.strip('▁').isdigit()] == ['2', '0', '2', '4', '9', '9']


def test_char_tokenizer_alphabet_ids_and_byte_fallback(tmp_path):
  ct = tokenizer.CharTokenizer.train(['aab', 'b c'])
  assert ct.alphabet == ['a', 'b', ' ', 'c']  # by frequency, ties by code point
  assert ct.vocab_size == 274
  assert ct.encode('ab?') == [270, 271, 14 + ord('?')]
  assert ct.encode('é') == [14 + 0xC3, 14 + 0xA9]
  assert ct.decode([270, 14 + 0xC3, 14 + 0xA9, tokenizer.END_ID, 273]) == 'aéc'
  assert tokenizer.CharTokenizer.train(['aab', 'b c'], vocab_size=272).alphabet == ['a', 'b']


def test_save_and_load_both_kinds(sp_tok, char_tok, tmp_path):
  char_tok.save(tmp_path / 'c.json')
  for original, path, kind in [(sp_tok, sp_tok.path, tokenizer.Tokenizer),
                               (char_tok, tmp_path / 'c.json', tokenizer.CharTokenizer)]:
    again = tokenizer.load(path)
    assert type(again) is kind and again.vocab_size == original.vocab_size
    for text in TRICKY:
      assert again.encode(text) == original.encode(text)
  with pytest.raises(FileNotFoundError, match='nope.json'):
    tokenizer.load(tmp_path / 'nope.json')


def test_model_without_control_tokens_is_rejected(tmp_path):
  spm.SentencePieceTrainer.train(sentence_iterator=iter(World().pretraining_documents(n_docs=300)),
                                 model_prefix=str(tmp_path / 'old'),
                                 vocab_size=400, byte_fallback=True, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                                 minloglevel=2)
  with pytest.raises(ValueError, match='lacks the control tokens at ids 4..13'):
    tokenizer.Tokenizer(tmp_path / 'old.model')
