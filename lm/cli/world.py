"""``python -m lm.world``: samples of the lab's task families, pretraining documents, generation speed.

  python -m lm.world --task=arithmetic --n=5 --variant=thinking
  python -m lm.world --docs=3
  python -m lm.world --chars=2000000 --out=corpus.txt
"""

import argparse
import json
import sys
import time

from lm.lab import tasks
from lm.lab.world import World


def _show(messages):
  out = []
  for m in messages:
    head = f'[{m["role"]}{":" + m["name"] if m.get("name") else ""}]'
    if m.get('thinking'):
      out.append(f'{head} <thinking>\n{m["thinking"]}\n</thinking>')
    for call in m.get('tool_calls', []):
      out.append(f'{head} <tool_call> {call["name"]}({json.dumps(call["arguments"])})')
    if m.get('content'):
      out.append(f'{head} {m["content"]}')
  return '\n'.join(out)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--task', choices=sorted(tasks.TASKS), help='print samples of this task family')
  ap.add_argument('--n', type=int, default=5)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--variant', default='direct')
  ap.add_argument('--world_seed', type=int, default=0)
  ap.add_argument('--docs', type=int, default=0, help='print this many pretraining documents')
  ap.add_argument('--chars', type=int, default=0, help='generate this many characters of pretraining text, timed')
  ap.add_argument('--out', help='with --chars: write the documents here, one blank line apart')
  args = ap.parse_args(argv)
  world = World(seed=args.world_seed)
  if args.task:
    for i, ex in enumerate(tasks.sample(world, args.task, args.n, seed=args.seed, variant=args.variant)):
      print(f'=== {ex.family} #{i} (variant {ex.variant}) ===')
      print(_show(ex.prompt))
      print('--- reference ---')
      print(_show(ex.reference))
      print('meta:', json.dumps({k: v for k, v in ex.meta.items() if k != 'world'}))
      print(f'gold score of the reference: {tasks.score(ex, ex.reference)}\n')
  for doc in world.pretraining_documents(n_docs=args.docs, seed=args.seed) if args.docs else []:
    print(doc, end='\n\n---\n\n')
  if args.chars:
    t0 = time.perf_counter()
    docs = world.pretraining_documents(target_chars=args.chars, seed=args.seed)
    dt = time.perf_counter() - t0
    n_chars = sum(map(len, docs))
    print(f'{len(docs)} documents, {n_chars} characters, ~{sum(len(d.split()) for d in docs)} words '
          f'in {dt:.2f} s ({n_chars / dt / 1e6:.1f} M chars/s)', file=sys.stderr)
    if args.out:
      with open(args.out, 'w') as f:
        f.write('\n\n'.join(docs))
  if not (args.task or args.docs or args.chars):
    ap.print_help()


if __name__ == '__main__':
  main()
