"""Batch generation from a trained run, and the loading that ``python -m lm.chat`` shares.

  python -m lm.generate --workdir=<run> --prompts=<file.jsonl> [--out=<file.jsonl>] [--stage sft]
                        [--tools=calculator,python,knowledge_base | --tools=none]

Each input line is ``{"messages": [...]}`` (a conversation, see ``lm.chat``) or ``{"prompt": "text"}``
(one user message). Each output line (to ``--out``, else stdout) is ``{"response": the final
assistant message (answer in ``content``, ``thinking`` apart), "turn": every message of the turn
(assistant, tool results, ...), "calls": the tool calls with their results, "finished": whether the
turn ended before the token budget}``. With tools (the default: all the lab's), each conversation
gets the tools offer (``lm.data.tasks.TOOLS_SYSTEM``) first and ``lm.agent`` runs the calls.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path


@dataclasses.dataclass
class Served:
  params: object
  model: object
  tokenizer: object
  mesh: object
  rules: tuple


def load(workdir, stage: str = 'sft') -> Served:
  """A trained stage's model on a mesh over every local device (LoRA adapters merged)."""
  import jax  # noqa: F401  (heavy imports stay out of --help and argument errors)
  from lm import sharding, tokenizer
  from lm.model import ModelConfig, Transformer
  from lm.stages import common
  path = Path(workdir) / stage / 'outputs.json'
  if not path.is_file():
    done = sorted(p.parent.name for p in Path(workdir).glob('*/outputs.json'))
    raise ValueError(f'{path} does not exist: stage {stage!r} has not finished in {workdir} '
                     f'(finished: {", ".join(done) or "none"})')
  outputs = json.loads(path.read_text())
  if 'model' not in outputs or 'checkpoint_dir' not in outputs:
    raise ValueError(f'{path} is not a trained model stage\'s outputs (no model or checkpoint_dir)')
  model = Transformer(ModelConfig.from_config(outputs['model']))
  mesh, rules = sharding.make_mesh((-1, 1, 1)), sharding.DEFAULT_RULES
  params = common.load_trained_params(outputs, model, mesh, rules)
  return Served(params, model, tokenizer.load(outputs['tokenizer']), mesh, rules)


def load_tools(workdir, names) -> dict:
  """``lm.tools`` by name, the knowledge base and search over the run's world (its ``config.json``)."""
  from lm import agent
  if not names:
    return {}
  path = Path(workdir) / 'config.json'
  if not path.is_file():
    raise ValueError(f'{path} does not exist: the tools need the run\'s world (data.seed, data.world)')
  data = json.loads(path.read_text())['data']
  return agent.build_tools(names, dict(seed=data['seed'], **data['world']))


def offer_tools(messages) -> list[dict]:
  """``messages`` with the tools offer first (once)."""
  from lm.data import tasks
  return messages if tasks.offers_tools(messages) else [{'role': 'system', 'content': tasks.TOOLS_SYSTEM}, *messages]


def reply(served: Served, conversations, cfg, rng, tools: dict | None = None, agent_cfg=None) -> list[dict]:
  """The assistant's next turn for each conversation, as ``lm.agent.trace`` dicts (``messages``,
  ``answer``, ``calls``, ``finished``, ...). With ``tools`` the calls are run (``lm.agent``); without,
  the plain sampler answers (``lm.sample.complete_chats``) and a call is left as written."""
  from lm import agent, sample
  if tools:
    return agent.complete_chats(served.params, served.model, served.tokenizer, conversations, cfg, rng, tools,
                                agent_cfg or agent.AgentConfig(), mesh=served.mesh, rules=served.rules)
  return [agent.plain_turn(r) for r in sample.complete_chats(served.params, served.model, served.tokenizer,
                                                             conversations, cfg, rng, mesh=served.mesh,
                                                             rules=served.rules)]


def parse_tools(text: str) -> tuple[str, ...]:
  """``--tools``: comma-separated names, or ``none``."""
  from lm import tools as tools_lib
  names = () if text.strip() in ('', 'none') else tuple(n.strip() for n in text.split(','))
  unknown = [n for n in names if n not in tools_lib.available()]
  if unknown:
    raise ValueError(f'--tools has {unknown[0]!r}; available: {", ".join(tools_lib.available())} (or none)')
  return names


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
    import jax
    from lm import agent, chat, sample
    cfg = sample.SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    agent_cfg = agent.AgentConfig(max_calls=args.max_tool_calls)
    tools = load_tools(args.workdir, parse_tools(args.tools))
    if tools:
      conversations = [offer_tools(m) for m in conversations]
    served = load(args.workdir, args.stage)
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
      for t in reply(served, conversations[start:start + args.batch_size], cfg, rng, tools, agent_cfg):
        line = {'response': t['answer'], 'turn': t['messages'], 'calls': t['calls'], 'finished': t['finished']}
        out.write(json.dumps(line, ensure_ascii=False) + '\n')
      out.flush()
  finally:
    if args.out:
      out.close()


if __name__ == '__main__':
  main()
