"""``python -m lm.generate``: batch answers from a trained run.

  python -m lm.generate --workdir=<run> --prompts=<file.jsonl> [--out=<file.jsonl>] [--stage=sft]
                        [--tools=calculator,python,knowledge_base | --tools=none]

Each input line is ``{"messages": [...]}`` (a conversation, see ``lm.data.chat``) or ``{"prompt": "text"}``
(one user message). Each output line (to ``--out``, else stdout) is ``{"response": the final
assistant message (answer in ``content``, ``thinking`` apart), "turn": every message of the turn
(assistant, tool results, ...), "calls": the tool calls with their results, "finished": whether the
turn ended before the token budget}``. With tools (the default: all the lab's), each conversation
gets the tools offer (``lm.lab.tasks.TOOLS_SYSTEM``) first and ``lm.inference.agent`` runs the calls.
"""

import argparse
import json
import sys
from pathlib import Path

import jax

from lm.cli.chat import parse_tools
from lm.data import chat
from lm.inference import agent, sample, serving


def read_prompts(path) -> list[list[dict]]:
  """Conversations from a JSONL file of ``{"messages": [...]}`` or ``{"prompt": "text"}`` lines."""
  conversations = []
  for n, line in enumerate(Path(path).read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      item = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} line {n}: not JSON ({e})') from None
    if isinstance(item, dict) and isinstance(item.get('messages'), list):
      conversations.append(item['messages'])
    elif isinstance(item, dict) and isinstance(item.get('prompt'), str):
      conversations.append([{'role': 'user', 'content': item['prompt']}])
    else:
      raise ValueError(f'{path} line {n}: expected {{"messages": [...]}} or {{"prompt": "text"}}')
  if not conversations:
    raise ValueError(f'{path} has no prompts')
  return conversations


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.generate', description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True, help='a run directory written by lm.launch')
  p.add_argument('--prompts', required=True, help='JSONL of {"messages": [...]} or {"prompt": "text"}')
  p.add_argument('--out', help='output JSONL (default: stdout)')
  p.add_argument('--stage', default='sft', help='which trained stage to load (pretrain, sft, ...)')
  p.add_argument('--temperature', type=float, default=0.0, help='0: greedy')
  p.add_argument('--top_p', type=float, default=1.0)
  p.add_argument('--max_new_tokens', type=int, default=256)
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--tools', default='calculator,python,knowledge_base', help='tools to run, comma-separated, or none')
  p.add_argument('--max_tool_calls', type=int, default=3, help='tool calls per answer')
  args = p.parse_args(argv)
  try:
    conversations = read_prompts(args.prompts)
    cfg = sample.SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    agent_cfg = agent.AgentConfig(max_calls=args.max_tool_calls)
    tools = serving.load_tools(args.workdir, parse_tools(args.tools))
    if tools:
      conversations = [serving.offer_tools(m) for m in conversations]
    served = serving.load(args.workdir, args.stage)
    for n, messages in enumerate(conversations, 1):
      try:
        chat.render_prompt(served.tokenizer, messages)
      except ValueError as e:
        raise ValueError(f'{args.prompts} prompt {n}: {e}') from None
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'lm.generate: error: {e}')
  out = open(args.out, 'w') if args.out else sys.stdout
  try:
    for start in range(0, len(conversations), args.batch_size):
      rng = jax.random.fold_in(jax.random.key(args.seed), start)
      for t in serving.reply(served, conversations[start:start + args.batch_size], cfg, rng, tools, agent_cfg):
        line = {'response': t['answer'], 'turn': t['messages'], 'calls': t['calls'], 'finished': t['finished']}
        out.write(json.dumps(line, ensure_ascii=False) + '\n')
      out.flush()
  finally:
    if args.out:
      out.close()


if __name__ == '__main__':
  main()
