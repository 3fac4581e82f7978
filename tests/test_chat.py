"""Chat format: exact ids and loss masks, prompts, parsing, one-line errors, and injection safety."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm import tokenizer
from lm.data import chat
from lm.lab.world import World
from lm.tokenizer import (
  ASSISTANT_ID,
  CONTROL_IDS,
  CONTROL_TOKENS,
  END_ID,
  END_THINK_ID,
  END_TOOL_CALL_ID,
  END_TOOL_RESULT_ID,
  EOS_ID,
  SPECIAL_TOKENS,
  SYSTEM_ID,
  THINK_ID,
  TOOL_CALL_ID,
  TOOL_RESULT_ID,
  USER_ID,
)


@pytest.fixture(scope='module')
def sp_tok(tmp_path_factory):
  return tokenizer.train(World(seed=0).pretraining_documents(n_docs=2000), tmp_path_factory.mktemp('tok') / 'sp.model',
                         vocab_size=500)


@pytest.fixture(scope='module')
def char_tok():
  return tokenizer.CharTokenizer.train(World(seed=0).pretraining_documents(n_docs=500))


CALC = {'name': 'calculator', 'arguments': {'expression': '17*23'}}
CALC_JSON = '{"name": "calculator", "arguments": {"expression": "17*23"}}'
TOOL_CONVERSATION = [
    {'role': 'user', 'content': 'What is 17*23?'},
    {'role': 'assistant', 'content': '', 'thinking': 'use the tool', 'tool_calls': [CALC]},
    {'role': 'tool', 'name': 'calculator', 'content': '391'},
    {'role': 'assistant', 'content': 'It is 391.'},
]


def test_render_ids_and_loss_mask_by_hand(sp_tok):
  e = sp_tok.encode
  messages = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'},
              {'role': 'assistant', 'content': 'Hello!', 'thinking': 'greet'}]
  ids, mask = chat.render(sp_tok, messages)
  no_loss = [SYSTEM_ID, *e('Be brief.'), END_ID, USER_ID, *e('Hi'), END_ID, ASSISTANT_ID]
  loss = [THINK_ID, *e('greet'), END_THINK_ID, *e('Hello!'), END_ID]
  assert ids.dtype == np.int32 and mask.dtype == np.float32
  assert ids.tolist() == no_loss + loss
  assert mask.tolist() == [0.0] * len(no_loss) + [1.0] * len(loss)
  assert ids[:3].tolist() == [4, *e('Be brief.')[:2]] and ids[-1] == 7


def test_render_tool_turn_by_hand(sp_tok):
  e = sp_tok.encode
  ids, mask = chat.render(sp_tok, TOOL_CONVERSATION)
  parts = [([USER_ID, *e('What is 17*23?'), END_ID], 0), ([ASSISTANT_ID], 0),
           ([THINK_ID, *e('use the tool'), END_THINK_ID, TOOL_CALL_ID, *e(CALC_JSON), END_TOOL_CALL_ID], 1),
           ([TOOL_RESULT_ID, *e('391'), END_TOOL_RESULT_ID], 0),
           ([*e('It is 391.'), END_ID], 1)]  # same turn: no second header
  assert ids.tolist() == [i for part, _ in parts for i in part]
  assert mask.tolist() == [float(loss) for part, loss in parts for _ in part]
  assert [int(i) for i in ids if i in CONTROL_IDS] == [5, 7, 6, 8, 9, 10, 11, 12, 13, 7]


def test_prompt_ends_ready_for_the_assistant(sp_tok):
  prompt = chat.render_prompt(sp_tok, TOOL_CONVERSATION[:1])
  assert prompt.tolist() == [USER_ID, *sp_tok.encode('What is 17*23?'), END_ID, ASSISTANT_ID]
  after_tool = chat.render_prompt(sp_tok, TOOL_CONVERSATION[:3])  # the assistant continues its turn
  full, _ = chat.render(sp_tok, TOOL_CONVERSATION)
  assert after_tool[-1] == END_TOOL_RESULT_ID and after_tool.tolist() == full[:len(after_tool)].tolist()
  with pytest.raises(ValueError, match=r'^message 1: conversation ends waiting for 1 tool result'):
    chat.render_prompt(sp_tok, TOOL_CONVERSATION[:2])


def test_parse_generated_thinking_tool_call_and_answer(sp_tok):
  e = sp_tok.encode
  generated = [THINK_ID, *e('carry the one'), END_THINK_ID, TOOL_CALL_ID, *e(CALC_JSON), END_TOOL_CALL_ID]
  assert chat.parse(sp_tok, np.array(generated)) == {
      'role': 'assistant', 'content': '', 'thinking': 'carry the one', 'tool_calls': [CALC]}
  assert chat.parse(sp_tok, [*e('It is 391.'), END_ID, *e('junk after the end')]) == {
      'role': 'assistant', 'content': 'It is 391.'}
  assert chat.parse(sp_tok, [*e('bye'), EOS_ID, END_ID]) == {'role': 'assistant', 'content': 'bye'}
  assert chat.parse(sp_tok, [*e('I am '), USER_ID, *e('the user')]) == {'role': 'assistant', 'content': 'I am '}
  turn = [*generated, TOOL_RESULT_ID, *e('391'), END_TOOL_RESULT_ID, *e('It is 391.'), END_ID]
  assert chat.parse_turn(sp_tok, turn) == [
      {'role': 'assistant', 'content': '', 'thinking': 'carry the one', 'tool_calls': [CALC]},
      {'role': 'tool', 'content': '391'}, {'role': 'assistant', 'content': 'It is 391.'}]


def test_parse_keeps_malformed_tool_calls_visible(sp_tok):
  e = sp_tok.encode
  bad = [TOOL_CALL_ID, *e('{"name": "calc", "arg'), END_TOOL_CALL_ID, TOOL_CALL_ID, *e('[1, 2]'), END_TOOL_CALL_ID,
         TOOL_CALL_ID, *e(CALC_JSON), END_TOOL_CALL_ID, END_THINK_ID, *e('ok'), TOOL_CALL_ID, *e('{"na'), END_ID]
  message = chat.parse(sp_tok, bad)
  assert message['content'] == 'ok' and message['tool_calls'] == [CALC]  # the stray [/think] is dropped
  errors = message['tool_call_errors']
  assert [err['text'] for err in errors] == ['{"name": "calc", "arg', '[1, 2]', '{"na']
  assert errors[0]['error'].startswith('invalid JSON') and 'name' in errors[1]['error']
  assert errors[2]['error'] == 'unterminated tool call'
  assert chat.parse(sp_tok, [THINK_ID, *e('hmm')]) == {'role': 'assistant', 'content': '', 'thinking': 'hmm'}


@pytest.mark.parametrize('messages, error', [
    ([], 'conversation is empty'),
    ([{'role': 'user', 'content': 'a'}, {'role': 'robot', 'content': 'b'}], "message 1: unknown role 'robot'"),
    ([{'role': 'user', 'content': 3}], 'message 0: user content must be a string, not int'),
    ([{'role': 'system'}], 'message 0: system content must be a string, not NoneType'),
    ([{'role': 'user', 'content': 'a'}, {'role': 'tool', 'content': '5'}],
     'message 1: tool message with no preceding tool call'),
    ([{'role': 'assistant', 'content': '', 'tool_calls': [{'arguments': {}}]}], 'message 0: tool call 0 has no name'),
    ([{'role': 'assistant', 'content': '', 'tool_calls': [{'name': 'f', 'arguments': [1]}]}],
     r'message 0: tool call 0 \(f\) arguments must be a dict'),
    ([{'role': 'assistant', 'content': 'x', 'thinking': 7}], 'message 0: thinking must be a string'),
    (TOOL_CONVERSATION[:2] + [{'role': 'user', 'content': 'hm'}],
     r'message 2: user message while 1 tool call\(s\) still await'),
    (TOOL_CONVERSATION[:3] + [{'role': 'user', 'content': 'hm'}],
     'message 3: user message inside an open assistant turn'),
    (TOOL_CONVERSATION[:3] + [TOOL_CONVERSATION[2]], 'message 3: tool message with no preceding tool call'),
])
def test_errors_are_one_line_and_name_the_message(sp_tok, messages, error):
  with pytest.raises(ValueError, match=f'^{error}') as info:
    chat.render(sp_tok, messages)
  assert '\n' not in str(info.value)


# ---- injection safety: a property test over random conversations ----

_NAMES = list(SPECIAL_TOKENS + CONTROL_TOKENS)
_TRICKY = [' ', '  ', '\n', '\t', '<|', '|>', '▁', 'é', '漢', '🙂', '{"name": "x"}']
_piece = st.one_of(st.sampled_from(_NAMES + _TRICKY),
                   st.text(st.characters(exclude_categories=('Cs',)), max_size=6))
TEXT = st.lists(_piece, max_size=6).map(''.join)
ARGS = st.dictionaries(TEXT, st.one_of(TEXT, st.integers(-10**6, 10**6), st.booleans(), st.none(),
                                       st.lists(TEXT, max_size=2)), max_size=3)
CALLS = st.lists(st.builds(lambda n, a: {'name': n, 'arguments': a}, TEXT.filter(bool), ARGS), min_size=1, max_size=2)


@st.composite
def conversations(draw):
  """Valid conversations: optional system, then user/assistant exchanges with tool rounds."""
  messages = [{'role': 'system', 'content': draw(TEXT)}] if draw(st.booleans()) else []
  for _ in range(draw(st.integers(1, 2))):
    messages.append({'role': 'user', 'content': draw(TEXT)})
    for _ in range(draw(st.integers(0, 2))):  # tool rounds within one assistant turn
      calls = draw(CALLS)
      messages.append({'role': 'assistant', 'content': draw(TEXT), 'tool_calls': calls,
                       **({'thinking': draw(TEXT)} if draw(st.booleans()) else {})})
      messages += [{'role': 'tool', 'content': draw(TEXT)} for _ in calls]
    messages.append({'role': 'assistant', 'content': draw(TEXT),
                     **({'thinking': draw(TEXT)} if draw(st.booleans()) else {})})
  return messages


def expected_structure(messages):
  """(control ids, loss mask per control id) that the message structure dictates."""
  out, turn_open = [], False
  for m in messages:
    if m['role'] in ('system', 'user'):
      out += [(SYSTEM_ID if m['role'] == 'system' else USER_ID, 0), (END_ID, 0)]
    elif m['role'] == 'tool':
      out += [(TOOL_RESULT_ID, 0), (END_TOOL_RESULT_ID, 0)]
    else:
      out += [] if turn_open else [(ASSISTANT_ID, 0)]
      out += [(THINK_ID, 1), (END_THINK_ID, 1)] if 'thinking' in m else []
      out += [(TOOL_CALL_ID, 1), (END_TOOL_CALL_ID, 1)] * len(m.get('tool_calls', []))
      turn_open = bool(m.get('tool_calls'))
      out += [] if turn_open else [(END_ID, 1)]
  return out


def expected_loss_mask(ids):
  """1 from just after an [assistant] header to its turn's [end], except inside tool-result blocks."""
  mask, in_turn, in_result = [], False, False
  for i in ids:
    in_result = in_result or i == TOOL_RESULT_ID
    mask.append(float(in_turn and not in_result))
    in_turn = (in_turn or i == ASSISTANT_ID) and not (in_turn and i == END_ID and not in_result)
    in_result = in_result and i != END_TOOL_RESULT_ID
  return mask


@pytest.mark.parametrize('kind', ['sp', 'char'])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(messages=conversations())
def test_no_text_can_produce_a_control_id(kind, sp_tok, char_tok, messages):
  tok = {'sp': sp_tok, 'char': char_tok}[kind]
  ids, mask = chat.render(tok, messages)
  structure = expected_structure(messages)
  at = [t for t, i in enumerate(ids.tolist()) if i < 14]  # every special or control id in the sequence
  assert [int(ids[t]) for t in at] == [i for i, _ in structure]
  assert [float(mask[t]) for t in at] == [float(loss) for _, loss in structure]
  assert mask.tolist() == expected_loss_mask(ids.tolist())

  # render -> parse round-trips every assistant turn, tool results included.
  headers = [t for t in at if ids[t] == ASSISTANT_ID]
  parsed = [m for t in headers for m in chat.parse_turn(tok, ids[t + 1:])]
  def normal(m):
    if m['role'] == 'tool':
      return {'role': 'tool', 'content': m['content']}
    out = {'role': 'assistant', 'content': m['content']}
    out |= {'thinking': m['thinking']} if 'thinking' in m else {}
    return out | ({'tool_calls': m['tool_calls']} if m.get('tool_calls') else {})
  assert parsed == [normal(m) for m in messages if m['role'] in ('assistant', 'tool')]
