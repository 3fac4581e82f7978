"""The chat formats of imported families, for lm's conversations (``lm.data.chat`` messages).

Each renders a conversation to ``(ids, loss_mask)`` exactly as the family's own chat template lays
out its text, with structure inserted by id and every text encoded by the tokenizer's injection-safe
``encode``; the loss is on the assistant's reply and the token that ends it. ``render_prompt`` ends
with what lets the model answer; ``parse`` reads a reply up to a stop id.

  gemma    <bos><start_of_turn>user\\n{user}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n
           A system message (the template has none) is put before the first user message's text,
           separated by a blank line, as Gemma's documentation advises.
  llama2   <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {reply} </s><s>[INST] ...
           Its markers are text in its own format, so there only ``<s>``/``</s>`` are id-only; a
           user's text can spell ``[INST]``, as with Meta's reference code.

Thinking, tool calls and tool messages are lm's own format's; these formats reject them. Text that
cannot be encoded (a lone surrogate) is an error naming the message.
"""

import weakref

import numpy as np

from lm import hf_tokenizer


def check_text(i: int, field: str, text: str) -> None:
  """A one-line error naming message ``i`` and ``field`` when ``text`` cannot be encoded (a lone
  surrogate); ``lm.data.chat`` checks its messages with it too."""
  problem = hf_tokenizer.utf8_error(text)
  if problem:
    raise ValueError(f'message {i}: {field} is not valid text: {problem}')


class _Format:
  def __init__(self, tok):
    self.tok = tok

  def _messages(self, messages) -> tuple[str | None, list[dict]]:
    """(system text or None, the rest) after checking roles and fields."""
    if not isinstance(messages, (list, tuple)) or not messages:
      raise ValueError('conversation is empty (or not a list of messages)')
    system = None
    for i, m in enumerate(messages):
      role = m.get('role') if isinstance(m, dict) else None
      if role not in ('system', 'user', 'assistant'):
        raise ValueError(f'message {i}: role {role!r} is not in the {self.name} chat format (system, user, assistant)')
      for key in ('thinking', 'tool_calls'):
        if m.get(key):
          raise ValueError(f'message {i}: {key} is not in the {self.name} chat format')
      if not isinstance(m.get('content'), str):
        raise ValueError(f'message {i}: {role} content must be a string')
      check_text(i, 'content', m['content'])
      if role == 'system' and i:
        raise ValueError(f'message {i}: a system message must come first')
      expected = 'user' if (i - (messages[0]['role'] == 'system')) % 2 == 0 else 'assistant'
      if role != 'system' and role != expected:
        raise ValueError(f'message {i}: {role} where the {self.name} chat format needs {expected} (turns alternate)')
    if messages[0]['role'] == 'system':
      system, messages = messages[0]['content'], messages[1:]
    return system, list(messages)

  def render(self, messages) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = self._render(messages)
    return np.asarray(ids, np.int32), np.asarray(mask, np.float32)

  def render_prompt(self, messages) -> np.ndarray:
    _, rest = self._messages(messages)
    if rest and rest[-1]['role'] == 'assistant':
      raise ValueError(f'message {len(messages) - 1}: the conversation ends with the assistant; '
                       f'the {self.name} chat format prompts after a user message')
    return np.asarray(self._render(messages, prompt=True)[0], np.int32)

  def parse(self, ids) -> dict:
    out = []
    for i in map(int, ids):
      if i in self.stop_ids:
        break
      out.append(i)
    return {'role': 'assistant', 'content': self.tok.decode(out).strip()}


class Gemma(_Format):
  name = 'gemma'

  def __init__(self, tok):
    super().__init__(tok)
    self.start_id, self.end_id = tok.token_id('<start_of_turn>'), tok.token_id('<end_of_turn>')
    self.stop_ids = (self.end_id, tok.eos_id)

  def _render(self, messages, prompt=False):
    system, rest = self._messages(messages)
    ids, mask = [self.tok.bos_id], [0.0]

    def add(tokens, loss):
      ids.extend(tokens)
      mask.extend([float(loss)] * len(tokens))

    for k, m in enumerate(rest):
      text = m['content']
      if k == 0 and system is not None:
        text = f'{system.strip()}\n\n{text.strip()}'
      role = 'model' if m['role'] == 'assistant' else 'user'
      add([self.start_id, *self.tok.encode(f'{role}\n')], 0)
      add([*self.tok.encode(text.strip()), self.end_id], m['role'] == 'assistant')
      add(self.tok.encode('\n'), 0)
    if prompt:
      add([self.start_id, *self.tok.encode('model\n')], 0)
    return ids, mask


class Llama2(_Format):
  name = 'llama2'

  def __init__(self, tok):
    super().__init__(tok)
    self.stop_ids = (tok.eos_id,)

  def _render(self, messages, prompt=False):
    system, rest = self._messages(messages)
    ids, mask = [], []
    for k in range(0, len(rest), 2):
      user = rest[k]['content']
      if k == 0 and system is not None:
        user = f'<<SYS>>\n{system}\n<</SYS>>\n\n{user}'
      question = f'[INST] {user.strip()} [/INST]'
      q_ids = self.tok.encode(question)
      ids += [self.tok.bos_id, *q_ids]
      mask += [0.0] * (1 + len(q_ids))
      if k + 1 < len(rest):
        # Meta's reference encodes question and answer as one text; the answer is what follows.
        both = self.tok.encode(f'{question} {rest[k + 1]["content"].strip()} ')
        a_ids = both[len(q_ids):] if both[:len(q_ids)] == q_ids else self.tok.encode(rest[k + 1]['content'].strip())
        ids += [*a_ids, self.tok.eos_id]
        mask += [1.0] * (len(a_ids) + 1)
    return ids, mask


FORMATS = {'gemma': Gemma, 'llama2': Llama2}


def get(name: str, tok) -> _Format:
  if name not in FORMATS:
    raise ValueError(f'unknown chat format {name!r}; known: {", ".join(FORMATS)}')
  return FORMATS[name](tok)


_OF = weakref.WeakKeyDictionary()


def of(tok) -> _Format | None:
  """The chat format of an imported checkpoint's tokenizer (its ``chat_format`` name), or None for
  lm's own tokenizers, whose format is ``lm.data.chat``'s."""
  name = getattr(tok, 'chat_format', None)
  if name is None:
    return None
  if tok not in _OF:
    _OF[tok] = get(name, tok)
  return _OF[tok]
