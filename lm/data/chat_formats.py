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

  gemma and llama2 have no thinking or tools and reject them.

  llama3   <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>... (Meta's Llama 3
           template; the 3.1 template's default "Cutting Knowledge Date" system message is not added)
           Tool calls in Llama 3.1's JSON convention: an assistant message holding one call and nothing
           else, ``{"name": ..., "parameters": {...}}<|eot_id|>``; its result is an ``ipython`` message.
           No thinking (the family has no format for it).
  chatml   <|im_start|>{role}\n{text}<|im_end|>\n... (Qwen 2/2.5; no default system message): tool calls
           as Qwen's ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`` after the content,
           results as ``<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>``.
  qwen3    chatml plus Qwen 3's thinking: ``<think>\n{thinking}\n</think>\n\n`` before the content of
           the assistant messages after the last user question (and an empty block in the last one),
           exactly as Qwen 3's template lays it out; thinking of earlier turns is dropped, as there.

In llama3, chatml and qwen3 every marker is an added token of ``tokenizer.json`` inserted by id (the
JSON of a call and the text around markers are encoded, so nothing a user types becomes a marker),
and the text between two markers is encoded as one string, as transformers encodes the template's
output. Lm's tool messages answer the calls in order; the sampler's tool loop (``lm.inference.agent``)
uses ``call_stop_ids``, ``call_in``, ``result_ids`` and ``parse_turn``. Text that cannot be encoded (a
lone surrogate) is an error naming the message.
"""

import json
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


class _Marked(_Format):
  """A format whose markers are added tokens (llama3, chatml, qwen3): conversations with tool calls,
  rendered from parts that are marker ids or text (consecutive texts encoded as one string)."""

  thinking = False
  stop_names: tuple = ()
  call_stop_ids: tuple = ()

  def __init__(self, tok):
    super().__init__(tok)
    self.stop_ids = tuple(dict.fromkeys(tok.token_id(n) for n in self.stop_names if n in tok.special_ids))
    self.end_ids = self.stop_ids

  def _messages(self, messages):
    """The messages after checking roles, fields, and that tool messages answer calls."""
    if not isinstance(messages, (list, tuple)) or not messages:
      raise ValueError('conversation is empty (or not a list of messages)')
    pending = 0
    for i, m in enumerate(messages):
      role = m.get('role') if isinstance(m, dict) else None
      if role not in ('system', 'user', 'assistant', 'tool'):
        raise ValueError(f'message {i}: role {role!r} is not in the {self.name} chat format '
                         f'(system, user, assistant, tool)')
      content = m.get('content')
      if not isinstance(content, str) and not (role == 'assistant' and content is None):
        raise ValueError(f'message {i}: {role} content must be a string')
      check_text(i, 'content', content or '')
      if role == 'system' and i:
        raise ValueError(f'message {i}: a system message must come first')
      if role == 'tool' and not pending:
        raise ValueError(f'message {i}: tool message with no preceding tool call to answer')
      if role != 'tool' and pending:
        raise ValueError(f'message {i}: {role} message while {pending} tool call(s) still await a tool message')
      pending = pending - 1 if role == 'tool' else pending
      if role != 'assistant':
        continue
      if m.get('thinking') is not None:
        if not self.thinking:
          raise ValueError(f'message {i}: thinking is not in the {self.name} chat format')
        if not isinstance(m['thinking'], str):
          raise ValueError(f'message {i}: thinking must be a string')
        check_text(i, 'thinking', m['thinking'])
      calls = m.get('tool_calls') or []
      if not isinstance(calls, list):
        raise ValueError(f'message {i}: tool_calls must be a list')
      for k, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get('name'), str) or not call['name']:
          raise ValueError(f'message {i}: tool call {k} has no name')
        if not isinstance(call.get('arguments', {}), dict):
          raise ValueError(f'message {i}: tool call {k} ({call["name"]}) arguments must be a dict')
        try:
          text = self._call_text(call)
        except (TypeError, ValueError) as e:
          raise ValueError(f'message {i}: tool call {k} ({call["name"]}) arguments are not JSON: {e}') from None
        check_text(i, f'tool call {k}', text)
      self._check_calls(i, m, calls)
      pending = len(calls)
    return None, list(messages)

  def _check_calls(self, i, message, calls):
    del i, message, calls

  def render(self, messages):
    return self._encode(self._parts(self._messages(messages)[1]))

  def render_prompt(self, messages):
    rest = self._messages(messages)[1]
    if rest[-1]['role'] == 'assistant':
      raise ValueError(f'message {len(messages) - 1}: the conversation ends with the assistant; '
                       f'the {self.name} chat format prompts after a user or tool message')
    return self._encode(self._parts(rest) + self._generation_prompt())[0]

  def _encode(self, parts) -> tuple[np.ndarray, np.ndarray]:
    """Ids and loss mask of ``parts`` (``(int id | str text, loss)``). Each run of texts is encoded as
    one string; a token belongs to the text where the encodings of the growing prefixes leave it."""
    ids, mask, run = [], [], []

    def flush():
      done = []
      for k in range(len(run)):
        prefix = self.tok.encode(''.join(t for t, _ in run[:k + 1]))
        common = next((j for j, (a, b) in enumerate(zip(prefix, done)) if a != b), min(len(prefix), len(done)))
        del mask[len(mask) - (len(done) - common):]
        mask.extend([float(run[k][1])] * (len(prefix) - common))
        done = prefix
      ids.extend(done)
      run.clear()

    for part, loss in parts:
      if isinstance(part, str):
        if part:
          run.append((part, loss))
        continue
      flush()
      ids.append(int(part))
      mask.append(float(loss))
    flush()
    return np.asarray(ids, np.int32), np.asarray(mask, np.float32)

  def _call_text(self, call) -> str:
    return json.dumps({'name': call['name'], 'arguments': call.get('arguments', {})}, ensure_ascii=False)

  def parse(self, ids) -> dict:
    return self.parse_turn(ids)[0]

  def result_ids(self, text: str, room: int) -> tuple[list[int], bool]:
    """The ids that put a tool's result after a call and give the assistant the turn back, the
    result's text cut to fit ``room`` ids; ``(ids, truncated)``."""
    fixed = self._encode(self._result_parts(''))[0]
    text_ids = self.tok.encode(text)
    keep = max(0, room - len(fixed) - 2)  # the cut text may merge with what surrounds it
    truncated = len(text_ids) > keep
    ids = self._encode(self._result_parts(self.tok.decode(text_ids[:keep]) if truncated else text))[0]
    while len(ids) > room and keep:
      keep -= 1
      ids = self._encode(self._result_parts(self.tok.decode(text_ids[:keep])))[0]
    if len(ids) > room:
      raise ValueError(f'agent result_tokens={room} leaves no room for a {self.name} tool result ({len(ids)} ids)')
    return [int(i) for i in ids], truncated

  def _parse_call(self, text, calls, errors):
    try:
      call = json.loads(text)
    except json.JSONDecodeError as e:
      errors.append({'text': text, 'error': f'invalid JSON: {e}'})
      return
    args = call.get(self.arguments_key, call.get('arguments', {})) if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(call.get('name'), str) or not call['name']:
      errors.append({'text': text, 'error': 'tool call is not an object with a "name" string'})
    elif not isinstance(args, dict):
      errors.append({'text': text, 'error': f'tool call "{self.arguments_key}" is not an object'})
    else:
      calls.append({'name': call['name'], 'arguments': args})

  def call_in(self, segment_ids):
    """``None`` when generated ``segment_ids`` ended the turn; else ``(call, None)`` for the call that
    ends them, or ``(None, what is wrong with it)``."""
    segment_ids = [int(i) for i in segment_ids]
    if not segment_ids or segment_ids[-1] not in self._call_ends():
      return None
    message = self.parse_turn(segment_ids)[0]
    if message.get('tool_calls'):
      return message['tool_calls'][-1], None
    errors = message.get('tool_call_errors')
    return (None, errors[-1]['error']) if errors else None


class Llama3(_Marked):
  name = 'llama3'
  stop_names = ('<|eot_id|>', '<|eom_id|>', '<|end_of_text|>')
  arguments_key = 'parameters'

  def __init__(self, tok):
    super().__init__(tok)
    self.start_id, self.end_header_id = tok.token_id('<|start_header_id|>'), tok.token_id('<|end_header_id|>')
    self.eot_id = tok.token_id('<|eot_id|>')

  def _check_calls(self, i, message, calls):
    if len(calls) > 1 or (calls and (message.get('content') or '').strip()):
      raise ValueError(f'message {i}: the llama3 chat format holds one tool call alone in an assistant message')

  def _call_text(self, call) -> str:
    return json.dumps({'name': call['name'], 'parameters': call.get('arguments', {})}, ensure_ascii=False)

  def _header(self, role):
    return [(self.start_id, 0), (role, 0), (self.end_header_id, 0), ('\n\n', 0)]

  def _parts(self, messages):
    parts = [(self.tok.bos_id, 0)] if self.tok.bos_id is not None else []
    for m in messages:
      role = {'tool': 'ipython'}.get(m['role'], m['role'])
      loss = m['role'] == 'assistant'
      text = m['content'] if m['role'] == 'tool' else (m.get('content') or '').strip()
      if m.get('tool_calls'):
        text = self._call_text(m['tool_calls'][0])
      parts += self._header(role) + [(text, loss), (self.eot_id, loss)]
    return parts

  def _generation_prompt(self):
    return self._header('assistant')

  def _result_parts(self, text):
    return self._header('ipython') + [(text, 0), (self.eot_id, 0)] + self._header('assistant')

  def _call_ends(self):
    return self.stop_ids

  def parse_turn(self, ids) -> list[dict]:
    """Messages of generated ids: assistant, then ``ipython`` results as tool messages and the
    assistant messages after them."""
    ids = [int(i) for i in ids]
    messages, pos = [], 0
    while True:
      end = next((k for k in range(pos, len(ids)) if ids[k] in self.stop_ids or ids[k] == self.start_id), len(ids))
      text = self.tok.decode(ids[pos:end]).strip()
      message, calls, errors = {'role': 'assistant', 'content': text}, [], []
      if text.startswith('{') and '"name"' in text:
        self._parse_call(text, calls, errors)
        if calls:
          message.update(content='', tool_calls=calls)
        else:
          message['tool_call_errors'] = errors
      messages.append(message)
      header = end + 1 if end < len(ids) and ids[end] != self.start_id else end
      if header + 1 >= len(ids) or ids[header] != self.start_id:
        return messages
      close = ids.index(self.end_header_id, header) if self.end_header_id in ids[header:] else len(ids)
      if self.tok.decode(ids[header + 1:close]).strip() != 'ipython':
        return messages
      stop = next((k for k in range(close, len(ids)) if ids[k] == self.eot_id), len(ids))
      messages.append({'role': 'tool', 'content': self.tok.decode(ids[close + 1:stop]).removeprefix('\n\n')})
      pos = stop + 1
      if pos < len(ids) and ids[pos] == self.start_id:  # the assistant's header
        close = ids.index(self.end_header_id, pos) if self.end_header_id in ids[pos:] else len(ids)
        pos = close + 1
      if pos >= len(ids):
        return messages


class ChatML(_Marked):
  name = 'chatml'
  stop_names = ('<|im_end|>', '<|endoftext|>')
  arguments_key = 'arguments'

  def __init__(self, tok):
    super().__init__(tok)
    self.start_id, self.end_id = tok.token_id('<|im_start|>'), tok.token_id('<|im_end|>')
    markers = ('<tool_call>', '</tool_call>', '<tool_response>', '</tool_response>')  # Qwen 2.5 on; not Qwen 2
    self.tools = all(m in tok.special_ids for m in markers)
    self.call_id, self.end_call_id, self.response_id, self.end_response_id = (
        tok.special_ids.get(m, -1) for m in markers)
    self.call_stop_ids = (self.end_call_id,) if self.tools else ()
    if self.thinking:
      self.think_id, self.end_think_id = tok.token_id('<think>'), tok.token_id('</think>')

  def _check_calls(self, i, message, calls):
    if calls and not self.tools:
      raise ValueError(f'message {i}: tool calls need the <tool_call> markers this tokenizer lacks')

  def _call_text(self, call) -> str:
    args = json.dumps(call.get('arguments', {}), ensure_ascii=False)
    return f'{{"name": {json.dumps(call["name"], ensure_ascii=False)}, "arguments": {args}}}'

  def _parts(self, messages):
    parts, last_query = [], len(messages) - 1
    for k in range(len(messages) - 1, -1, -1):  # Qwen 3: the last question that is not a wrapped tool result
      c = messages[k].get('content') or ''
      if messages[k]['role'] == 'user' and not (c.startswith('<tool_response>') and c.endswith('</tool_response>')):
        last_query = k
        break
    for k, m in enumerate(messages):
      content = m.get('content') or ''
      if m['role'] in ('system', 'user'):
        parts += [(self.start_id, 0), (f'{m["role"]}\n{content}', 0), (self.end_id, 0), ('\n', 0)]
      elif m['role'] == 'tool':
        if messages[k - 1]['role'] != 'tool':
          parts += [(self.start_id, 0), ('user', 0)]
        parts += [('\n', 0), (self.response_id, 0), (f'\n{content}\n', 0), (self.end_response_id, 0)]
        if k + 1 == len(messages) or messages[k + 1]['role'] != 'tool':
          parts += [(self.end_id, 0), ('\n', 0)]
      else:
        parts += [(self.start_id, 0), ('assistant\n', 0)]
        reasoning = m.get('thinking') or ''
        if self.thinking and k > last_query and (k + 1 == len(messages) or reasoning):
          parts += [(self.think_id, 1), (f'\n{reasoning.strip(chr(10))}\n', 1), (self.end_think_id, 1),
                    ('\n\n' + content.lstrip('\n'), 1)]
        else:
          parts.append((content, 1))
        for j, call in enumerate(m.get('tool_calls') or []):
          parts += [('\n' if j or content else '', 1), (self.call_id, 1), (f'\n{self._call_text(call)}\n', 1),
                    (self.end_call_id, 1)]
        parts += [(self.end_id, 1), ('\n', 0)]
    return parts

  def _generation_prompt(self):
    return [(self.start_id, 0), ('assistant\n', 0)]

  def _result_parts(self, text):
    return [(self.end_id, 0), ('\n', 0), (self.start_id, 0), ('user\n', 0), (self.response_id, 0),
            (f'\n{text}\n', 0), (self.end_response_id, 0), (self.end_id, 0), ('\n', 0),
            *self._generation_prompt()]

  def _call_ends(self):
    return self.call_stop_ids

  def parse_turn(self, ids) -> list[dict]:
    """Messages of generated ids: assistant (thinking, content, tool calls), then each
    ``<tool_response>`` as a tool message and the assistant messages after them."""
    ids = [int(i) for i in ids]
    messages, pos = [], 0
    while True:
      message, pos = self._parse_assistant(ids, pos)
      messages.append(message)
      while pos < len(ids) and ids[pos] != self.response_id and ids[pos] != self.start_id:
        pos += 1  # <|im_end|> and the newline after it
      if pos < len(ids) and ids[pos] == self.start_id:
        pos += 1 + len(self.tok.encode('user\n'))
      if pos >= len(ids) or ids[pos] != self.response_id:
        return messages
      while pos < len(ids) and ids[pos] == self.response_id:
        close = ids.index(self.end_response_id, pos) if self.end_response_id in ids[pos:] else len(ids)
        text = self.tok.decode(ids[pos + 1:close])
        messages.append({'role': 'tool', 'content': text.removeprefix('\n').removesuffix('\n')})
        pos = close + 1
        if pos < len(ids) and ids[pos] != self.response_id:
          nl = self.tok.encode('\n')
          pos += len(nl) if ids[pos:pos + len(nl)] == nl else 0
      while pos < len(ids) and ids[pos] != self.start_id:
        pos += 1
      pos += 1 + len(self.tok.encode('assistant\n'))
      if pos >= len(ids):
        return messages

  def _parse_assistant(self, ids, pos):
    stops = set(self.stop_ids) | {self.start_id, self.response_id}
    content, calls, errors, thinking = [], [], [], None
    while pos < len(ids) and ids[pos] not in stops:
      i = ids[pos]
      if self.thinking and i == self.think_id:
        close = ids.index(self.end_think_id, pos) if self.end_think_id in ids[pos:] else len(ids)
        thinking = self.tok.decode(ids[pos + 1:close]).strip('\n')
        pos = close + 1
      elif i == self.call_id:
        close = next((k for k in range(pos + 1, len(ids)) if ids[k] in stops or ids[k] in (
            self.end_call_id, self.call_id)), len(ids))
        text = self.tok.decode(ids[pos + 1:close]).strip()
        if close < len(ids) and ids[close] == self.end_call_id:
          self._parse_call(text, calls, errors)
          close += 1
        else:
          errors.append({'text': text, 'error': 'unterminated tool call'})
        pos = close
      else:
        start = pos
        while pos < len(ids) and ids[pos] not in stops and ids[pos] != self.call_id and not (
            self.thinking and ids[pos] == self.think_id):
          pos += 1
        content.append(self.tok.decode(ids[start:pos]))
    message = {'role': 'assistant', 'content': ''.join(content).strip()}
    if thinking is not None:
      message['thinking'] = thinking
    if calls:
      message['tool_calls'] = calls
    if errors:
      message['tool_call_errors'] = errors
    return message, pos


class Qwen3(ChatML):
  name = 'qwen3'
  thinking = True


FORMATS = {'gemma': Gemma, 'llama2': Llama2, 'llama3': Llama3, 'chatml': ChatML, 'qwen3': Qwen3}


def get(name: str, tok) -> _Format:
  if name not in FORMATS:
    raise ValueError(f'unknown chat format {name!r} (the tokenizer has no markers of a known format); '
                     f'known: {", ".join(FORMATS)}')
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
