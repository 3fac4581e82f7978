"""``python -m lm.chat``: a multi-turn chat with a trained run on stdin/stdout; thinking, tool calls and
their results shown apart from the answer.

  python -m lm.chat --workdir=runs/sft_tiny [--stage=sft] [--system="You are terse."] [--temperature=0.7]
"""

import argparse
import itertools
import json
import sys

import jax

from lm.inference import agent, sample, serving
from lm.tools import available


def parse_tools(text: str) -> tuple[str, ...]:
  """``--tools``: comma-separated names, or ``none``."""
  names = () if text.strip() in ('', 'none') else tuple(n.strip() for n in text.split(','))
  unknown = [n for n in names if n not in available()]
  if unknown:
    raise ValueError(f'--tools has {unknown[0]!r}; available: {", ".join(available())} (or none)')
  return names


def show(message, dim: bool = False) -> str:
  """An assistant message as terminal lines: thinking and tool calls apart from the answer."""
  return show_turn([message], dim)


def show_turn(messages, dim: bool = False) -> str:
  """An assistant turn (assistant, tool, ..., assistant) as terminal lines: thinking, tool calls and
  their results (faint on a terminal) apart from the answer, the last assistant message's content."""
  faint = (lambda s: f'\033[2m{s}\033[0m') if dim else (lambda s: s)
  lines, answer = [], ''
  for m in messages:
    if m['role'] == 'tool':
      lines += [faint(f'  [tool result] {line}') for line in (m.get('content') or '').splitlines() or ['']]
      continue
    lines += [faint(f'  [think] {line}') for line in (m.get('thinking') or '').splitlines()]
    if m.get('tool_calls') and m.get('content'):
      lines.append(faint(f'  [before the call] {m["content"]}'))
    lines += [faint(f'  [tool call] {c["name"]}({json.dumps(c["arguments"], ensure_ascii=False)})')
              for c in m.get('tool_calls', [])]
    lines += [faint(f'  [bad tool call] {e["error"]}: {e["text"]}') for e in m.get('tool_call_errors', [])]
    answer = '' if m.get('tool_calls') else m.get('content') or ''
  return '\n'.join(lines + [f'assistant> {answer}'])


def main(argv=None):
  """Multi-turn chat with a trained run on stdin/stdout; an empty line or EOF quits."""
  p = argparse.ArgumentParser(prog='python -m lm.chat', description=main.__doc__)
  p.add_argument('--workdir', required=True, help='a run directory written by lm.launch')
  p.add_argument('--stage', default='sft', help='which trained stage to load (pretrain, sft, ...)')
  p.add_argument('--system', default='', help='an optional system prompt')
  p.add_argument('--temperature', type=float, default=0.7, help='0: greedy')
  p.add_argument('--top_p', type=float, default=0.95)
  p.add_argument('--max_new_tokens', type=int, default=256)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--tools', default='calculator,python,knowledge_base', help='tools to run, comma-separated, or none')
  p.add_argument('--max_tool_calls', type=int, default=3, help='tool calls per answer')
  args = p.parse_args(argv)
  try:
    cfg = sample.SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    agent_cfg = agent.AgentConfig(max_calls=args.max_tool_calls)
    tools = serving.load_tools(args.workdir, parse_tools(args.tools))
    served = serving.load(args.workdir, args.stage)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'lm.chat: error: {e}')
  messages = [{'role': 'system', 'content': args.system}] if args.system else []
  if tools:
    messages = serving.offer_tools(messages)
  dim = sys.stdout.isatty()
  print(f'chatting with {args.workdir} ({args.stage}); an empty line quits. '
        f'Tools: {", ".join(tools) or "none"}.', flush=True)
  for turn in itertools.count():
    try:
      line = input('you> ')
    except EOFError:
      break
    if not sys.stdin.isatty():
      print(line)  # piped input: echo it, so the transcript reads as a conversation
    if not line.strip():
      break
    messages.append({'role': 'user', 'content': line})
    t = serving.reply(served, [messages], cfg, jax.random.fold_in(jax.random.key(args.seed), turn), tools,
                       agent_cfg)[0]
    print(show_turn(t['messages'], dim), flush=True)
    messages += _history(t['messages'])


def _history(turn) -> list[dict]:
  """The messages of a generated turn that the conversation keeps: thinking, answers, and the calls
  that ran with their results (a call that did not parse or was not run is dropped, with any result)."""
  out = []
  for i, m in enumerate(turn):
    if m['role'] == 'tool':
      if out and out[-1].get('tool_calls'):
        out.append({'role': 'tool', 'content': m['content']})
      continue
    message = {k: m[k] for k in ('role', 'content', 'thinking') if k in m}
    if m.get('tool_calls') and i + 1 < len(turn) and turn[i + 1]['role'] == 'tool':
      message['tool_calls'] = m['tool_calls'][-1:]  # the sampler stops at the first closed call
    out.append(message)
  return out


if __name__ == '__main__':
  main()
