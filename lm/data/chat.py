"""Chat format: a conversation to token ids and a loss mask, a prompt for sampling, and parsing.

A conversation is a list of Hugging Face style messages ``{"role", "content"}``, roles ``system``,
``user``, ``assistant`` and ``tool``. An assistant message may also carry ``thinking`` (str) and
``tool_calls`` (a list of ``{"name": str, "arguments": dict}``); its content may be empty or None.
A tool message has ``content`` (and an optional ``name``, not rendered).

Rendering (``[X]`` is the control id of ``<|X|>``, inserted by id; text is encoded by
``tokenizer.encode`` on its own, so no text can ever produce a control id):

  system      [system] text [end]
  user        [user] text [end]
  assistant   [assistant] ([think] thinking [/think]) content [end]
  with calls  [assistant] ([think] thinking [/think]) content ([tool_call] JSON [/tool_call])...
  tool        [tool_result] content [/tool_result]

An assistant message with tool calls leaves its turn open (no ``[end]``); the tool messages that
follow answer its calls, and the next assistant message continues the same turn without a new
``[assistant]`` header. That is what the sampler does: it pauses at ``[/tool_call]``, runs the tool,
appends the result block and resumes. A tool call's JSON is
``json.dumps({"name": ..., "arguments": ...}, ensure_ascii=False)``.

Loss (``loss_mask[t] == 1`` means the model learns to produce ``ids[t]``; it is aligned with
``ids``, so a next-token pipeline shifts it along with the targets): every token of an assistant
message after its header, i.e. ``[think]``, the thinking, ``[/think]``, the content, each
``[tool_call]`` JSON ``[/tool_call]``, and the ``[end]`` that closes the turn. No loss on system,
user and tool-result tokens (their headers, text and closers) nor on the ``[assistant]`` header,
which the prompt supplies. No BOS or EOS is added: packing adds what it needs.
"""

import json

import numpy as np

from lm.data import chat_formats
from lm.tokenizer import (
  ASSISTANT_ID,
  END_ID,
  END_THINK_ID,
  END_TOOL_CALL_ID,
  END_TOOL_RESULT_ID,
  EOS_ID,
  SYSTEM_ID,
  THINK_ID,
  TOOL_CALL_ID,
  TOOL_RESULT_ID,
  USER_ID,
)
from lm.tools import base as tool_base

ROLES = ('system', 'user', 'assistant', 'tool')
_HEADERS = {'system': SYSTEM_ID, 'user': USER_ID}
_OPENERS = {THINK_ID: 'think', TOOL_CALL_ID: 'call'}
_CLOSERS = {END_THINK_ID: 'think', END_TOOL_CALL_ID: 'call'}  # a closer that matches no open block is dropped


def render(tokenizer, messages) -> tuple[np.ndarray, np.ndarray]:
  """``(ids int32 [L], loss_mask float32 [L])`` of a whole conversation (see the module doc)."""
  fmt = chat_formats.of(tokenizer)  # an imported checkpoint's own format
  if fmt is not None:
    return fmt.render(messages)
  ids, mask, _ = _render(tokenizer, messages)
  return np.asarray(ids, np.int32), np.asarray(mask, np.float32)


def render_prompt(tokenizer, messages) -> np.ndarray:
  """Ids int32 [L] of ``messages`` followed by what lets the assistant speak next.

  That is a new ``[assistant]`` header, unless the conversation ends inside an assistant turn
  whose tool calls have all been answered: then the assistant continues that turn.
  """
  fmt = chat_formats.of(tokenizer)
  if fmt is not None:
    return fmt.render_prompt(messages)
  ids, _, state = _render(tokenizer, messages)
  if state['pending_calls']:
    raise ValueError(f'message {len(messages) - 1}: conversation ends waiting for '
                     f'{state["pending_calls"]} tool result(s); cannot prompt the assistant')
  if not state['turn_open']:
    ids.append(ASSISTANT_ID)
  return np.asarray(ids, np.int32)


def check(messages) -> None:
  """The one-line ValueError ``render`` would raise for ``messages`` (its roles, fields, tool calls
  and the results that answer them, in order), without a tokenizer: datasets check conversations
  with it before writing them."""
  state = _start(messages)
  for i, m in enumerate(messages):
    _advance(state, _check(i, m, state), m)


def _start(messages) -> dict:
  """The state before the first message: no assistant turn open, no tool call awaiting its result."""
  if not isinstance(messages, (list, tuple)) or not messages:
    raise ValueError('conversation is empty (or not a list of messages)')
  return {'turn_open': False, 'pending_calls': 0}


def _advance(state: dict, role: str, m: dict) -> None:
  """The state after (checked) message ``m``: a tool result answers a call; an assistant message with
  calls leaves its turn open, awaiting their results."""
  if role == 'tool':
    state['pending_calls'] -= 1
  elif role == 'assistant':
    calls = m.get('tool_calls') or []
    state['turn_open'], state['pending_calls'] = bool(calls), len(calls)


def _render(tokenizer, messages):
  state = _start(messages)
  ids, mask = [], []

  def add(tokens, loss):
    ids.extend(tokens)
    mask.extend([float(loss)] * len(tokens))

  for i, m in enumerate(messages):
    role = _check(i, m, state)
    if role in _HEADERS:
      add([_HEADERS[role], *tokenizer.encode(m['content']), END_ID], 0)
    elif role == 'tool':
      add([TOOL_RESULT_ID, *tokenizer.encode(m['content']), END_TOOL_RESULT_ID], 0)
    else:
      if not state['turn_open']:
        add([ASSISTANT_ID], 0)
      if m.get('thinking') is not None:
        add([THINK_ID, *tokenizer.encode(m['thinking']), END_THINK_ID], 1)
      add(tokenizer.encode(m.get('content') or ''), 1)
      calls = m.get('tool_calls') or []
      for call in calls:
        text = json.dumps({'name': call['name'], 'arguments': call.get('arguments', {})}, ensure_ascii=False)
        add([TOOL_CALL_ID, *tokenizer.encode(text), END_TOOL_CALL_ID], 1)
      if not calls:
        add([END_ID], 1)
    _advance(state, role, m)
  return ids, mask, state


def _check(i, m, state) -> str:
  """Validates message ``i`` against the conversation so far; returns its role."""
  def fail(what):
    raise ValueError(f'message {i}: {what}')

  if not isinstance(m, dict):
    fail(f'is a {type(m).__name__}, not a dict')
  role = m.get('role')
  if role not in ROLES:
    fail(f'unknown role {role!r} (expected one of {", ".join(ROLES)})')
  content = m.get('content')
  if not isinstance(content, str) and not (role == 'assistant' and content is None):
    fail(f'{role} content must be a string, not {type(content).__name__}')
  chat_formats.check_text(i, 'content', content or '')
  if role == 'tool':
    if not state['pending_calls']:
      fail('tool message with no preceding tool call to answer')
    return role
  if state['pending_calls']:
    fail(f'{role} message while {state["pending_calls"]} tool call(s) still await a tool message')
  if role != 'assistant':
    if state['turn_open']:
      fail(f'{role} message inside an open assistant turn (after tool results the assistant must finish)')
    return role
  if m.get('thinking') is not None and not isinstance(m['thinking'], str):
    fail(f'thinking must be a string, not {type(m["thinking"]).__name__}')
  chat_formats.check_text(i, 'thinking', m.get('thinking') or '')
  calls = m.get('tool_calls') or []
  if not isinstance(calls, list):
    fail('tool_calls must be a list')
  for k, call in enumerate(calls):
    if not isinstance(call, dict) or not isinstance(call.get('name'), str) or not call['name']:
      fail(f'tool call {k} has no name')
    chat_formats.check_text(i, f'tool call {k} name', call['name'])
    arguments, name = call.get('arguments', {}), call['name'][:60]
    if not isinstance(arguments, dict):
      fail(f'tool call {k} ({name}) arguments must be a dict, not {type(arguments).__name__}')
    problem = tool_base.json_problem(arguments)
    if problem:
      fail(f'tool call {k} ({name}) arguments are not JSON: {problem}')
  return role


def parse(tokenizer, ids) -> dict:
  """The assistant message in generated ``ids`` (those after the ``[assistant]`` header).

  Stops at ``[end]``, EOS, a role header or a ``[tool_result]`` block (which belongs to the next,
  tool, message; see ``parse_turn``). Returns ``{"role": "assistant", "content"}`` plus
  ``thinking`` if a think block was opened, ``tool_calls`` for the well-formed calls, and
  ``tool_call_errors`` (``[{"text", "error"}]``) for calls whose JSON is bad or unterminated.
  """
  fmt = chat_formats.of(tokenizer)
  if fmt is not None:
    return fmt.parse(ids)
  return _parse_assistant(tokenizer, [int(i) for i in ids])[0]


def parse_turn(tokenizer, ids) -> list[dict]:
  """All messages of a generated turn, tool results included: ``[assistant, tool, ..., assistant]``."""
  fmt = chat_formats.of(tokenizer)
  if fmt is not None:
    return [fmt.parse(ids)]
  ids = [int(i) for i in ids]
  messages, pos = [], 0
  while True:
    message, pos = _parse_assistant(tokenizer, ids, pos)
    messages.append(message)
    if pos >= len(ids) or ids[pos] != TOOL_RESULT_ID:
      return messages
    while pos < len(ids) and ids[pos] == TOOL_RESULT_ID:
      close = ids.index(END_TOOL_RESULT_ID, pos) if END_TOOL_RESULT_ID in ids[pos:] else len(ids)
      messages.append({'role': 'tool', 'content': tokenizer.decode(ids[pos + 1:close])})
      pos = close + 1
    if pos >= len(ids):
      return messages


def _parse_assistant(tokenizer, ids, pos=0):
  """(message, position of the token that stopped it) for the assistant text starting at ``pos``."""
  stops = {END_ID, EOS_ID, SYSTEM_ID, USER_ID, ASSISTANT_ID, TOOL_RESULT_ID}
  content, thinking, calls, errors = [], None, [], []
  section, run = 'content', []  # section: 'content', 'think' or 'call'

  def close_section():
    nonlocal thinking
    text = tokenizer.decode(run)
    run.clear()
    if section == 'think':
      thinking = (thinking or '') + text
    elif section == 'call':
      _add_call(text, calls, errors)
    else:
      content.append(text)

  def drop_unterminated_call():
    errors.append({'text': tokenizer.decode(run), 'error': 'unterminated tool call'})
    run.clear()

  while pos < len(ids) and ids[pos] not in stops:
    i = ids[pos]
    pos += 1
    if i in _OPENERS:  # an opener breaks an open call and ends an open think block
      if section == 'call':
        drop_unterminated_call()
      else:
        close_section()
      section = _OPENERS[i]
    elif i in _CLOSERS:
      if _CLOSERS[i] == section:
        close_section()
        section = 'content'
    else:
      run.append(i)
  if section == 'call':
    drop_unterminated_call()
  else:
    close_section()
  message = {'role': 'assistant', 'content': ''.join(content)}
  if thinking is not None:
    message['thinking'] = thinking
  if calls:
    message['tool_calls'] = calls
  if errors:
    message['tool_call_errors'] = errors
  return message, pos


def _add_call(text, calls, errors):
  try:
    call = json.loads(text)
  except json.JSONDecodeError as e:
    errors.append({'text': text, 'error': f'invalid JSON: {e}'})
    return
  if not isinstance(call, dict) or not isinstance(call.get('name'), str) or not call['name']:
    errors.append({'text': text, 'error': 'tool call is not an object with a "name" string'})
  elif not isinstance(call.get('arguments', {}), dict):
    errors.append({'text': text, 'error': 'tool call "arguments" is not an object'})
  else:
    calls.append({'name': call['name'], 'arguments': call.get('arguments', {})})
