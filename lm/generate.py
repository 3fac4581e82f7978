"""Batch generation from a trained run, and the loading that ``python -m lm.chat`` shares.

  python -m lm.generate --workdir=<run> --prompts=<file.jsonl> [--out=<file.jsonl>] [--stage sft]

Each input line is ``{"messages": [...]}`` (a conversation, see ``lm.chat``) or ``{"prompt": "text"}``
(one user message). Each output line (to ``--out``, else stdout) is ``{"response": the parsed
assistant message, "finished": whether the turn ended before the token budget}``.
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


def reply(served: Served, conversations, cfg, rng) -> list[dict]:
  """The assistant's next message for each conversation (``lm.sample.complete_chats``)."""
  from lm import sample
  return sample.complete_chats(served.params, served.model, served.tokenizer, conversations, cfg, rng,
                               mesh=served.mesh, rules=served.rules)


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
  args = p.parse_args(argv)
  try:
    conversations = read_prompts(args.prompts)
    import jax
    from lm import chat, sample
    cfg = sample.SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
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
      for r in reply(served, conversations[start:start + args.batch_size], cfg, rng):
        finished = r.pop('finished')
        r.pop('ids')
        out.write(json.dumps({'response': r, 'finished': finished}, ensure_ascii=False) + '\n')
      out.flush()
  finally:
    if args.out:
      out.close()


if __name__ == '__main__':
  main()
