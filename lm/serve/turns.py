"""An assistant turn as the pages show it: thinking, tool calls and their results apart from the
answer (the parts of ``lm.cli.chat.show_turn``'s lines, one dict each), and a token as JSON."""

import json

from lm.data import chat_formats
from lm.inference import stream
from lm.tokenizer import FIRST_BYTE_ID

PART_KINDS = ('think', 'before_call', 'call', 'bad_call', 'result', 'answer')


def parts(messages) -> list[dict]:
  """``[{"kind", "text"}]`` of a turn (assistant, tool, ..., assistant), in ``show_turn``'s order:
  thinking, text before a call, calls, calls that did not parse, results; the answer (the last
  assistant message's content, empty when it ended at a call) last."""
  out, answer = [], ''
  for m in messages:
    if m['role'] == 'tool':
      out.append({'kind': 'result', 'text': m.get('content') or ''})
      continue
    if m.get('thinking'):
      out.append({'kind': 'think', 'text': m['thinking']})
    if m.get('tool_calls') and m.get('content'):
      out.append({'kind': 'before_call', 'text': m['content']})
    out += [{'kind': 'call', 'text': f'{c["name"]}({json.dumps(c["arguments"], ensure_ascii=False)})'}
            for c in m.get('tool_calls', [])]
    out += [{'kind': 'bad_call', 'text': f'{e["error"]}: {e["text"]}'} for e in m.get('tool_call_errors', [])]
    answer = '' if m.get('tool_calls') else m.get('content') or ''
  return out + [{'kind': 'answer', 'text': answer}]


def history(messages) -> list[dict]:
  """The messages of a generated turn that the conversation keeps (``lm.cli.chat``'s rule): thinking,
  answers, and the calls that ran with their results; a call that did not parse or was not run is
  dropped, with any result."""
  out = []
  for i, m in enumerate(messages):
    if m['role'] == 'tool':
      if out and out[-1].get('tool_calls'):
        out.append({'role': 'tool', 'content': m['content']})
      continue
    message = {k: m[k] for k in ('role', 'content', 'thinking') if k in m}
    if m.get('tool_calls') and i + 1 < len(messages) and messages[i + 1]['role'] == 'tool':
      message['tool_calls'] = m['tool_calls'][-1:]  # the sampler stops at the first closed call
    out.append(message)
  return out


def is_control(tok, i: int) -> bool:
  """A special or control id of lm's own tokenizers (an imported checkpoint's format has its own)."""
  return chat_formats.of(tok) is None and int(i) < FIRST_BYTE_ID


def piece(tok, i: int) -> str:
  """How token ``i`` reads on its own: its text, a control token's name, a lone byte as ``<0xNN>``."""
  i = int(i)
  if is_control(tok, i):
    return tok.id_to_piece(i)
  text = tok.decode([i])
  return text if text and '\ufffd' not in text else tok.id_to_piece(i)


def token_json(tok, event: stream.Token) -> dict:
  return {'id': event.id, 'text': piece(tok, event.id), 'logprob': event.logprob, 'entropy': event.entropy,
          'source': event.source, 'control': is_control(tok, event.id),
          'top': [[i, piece(tok, i), lp] for i, lp in zip(event.top_ids, event.top_logprobs)]}


def done_json(tok, event: stream.Done) -> dict:
  t = event.trace
  return {'ids': event.ids, 'sources': event.sources, 'calls': event.calls, 'stopped': event.stopped,
          'finished': t['finished'], 'messages': t['messages'], 'answer': t['answer'], 'parts': parts(t['messages']),
          'history': history(t['messages'])}
