"""Where lm's CPU train step spends its time: the JAX profiler's per-op events of XLA:CPU, grouped by kind.

  python benchmarks/train_step_profile.py                    # tiny shape, float32, 3 profiled steps
  python benchmarks/train_step_profile.py --dtype bfloat16 --steps 5

The step is benchmarks/train_step.py's (the same shape, batch and optimizer). XLA:CPU runs each
operation of the compiled program as a thunk; the profiler records each one's duration on the thread
that ran it. Ops are grouped by name without the numeric suffix (``ynn_fusion.41`` -> ``ynn_fusion``:
YNNPACK's dot fusions, the matmuls; ``*_fusion``: XLA's elementwise loops; ``bitcast_*``: layout copies).
The table gives thread-milliseconds per step for each kind and the idle remainder: threads x wall time -
the ops' total, time when a thread waited (an op that runs on one thread while the other has nothing).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import train_step  # noqa: E402

CONTAINERS = ('while', 'conditional', 'call')  # thunks whose time is their body's ops, counted themselves


def op_events(trace_dir: str) -> list[dict]:
  """The complete events of XLA:CPU's ops (not the runtime's or Python's own spans, nor containers)."""
  path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[0]
  events = json.load(gzip.open(path))['traceEvents']
  return [e for e in events if e.get('ph') == 'X' and 'dur' in e and not e['name'].startswith('$')
          and '::' not in e['name'] and not e['name'].startswith('PjitFunction')
          and re.sub(r'\.\d+$', '', e['name']) not in CONTAINERS]


def by_kind(events, steps: int) -> dict[str, tuple[int, float]]:
  """``kind -> (ops per step, thread-ms per step)``."""
  ms, count = collections.Counter(), collections.Counter()
  for e in events:
    kind = re.sub(r'\.\d+$', '', e['name'])
    ms[kind] += e['dur'] / 1e3 / steps
    count[kind] += 1
  return {k: (count[k] // steps, ms[k]) for k, _ in ms.most_common()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--size', default='tiny', choices=sorted(train_step.SIZES))
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--top', type=int, default=12, help='kinds listed; the rest are summed in one row')
  args = p.parse_args(argv)
  shape = dict(train_step.SIZES[args.size])
  tokens, targets = train_step.random_batch(shape)
  run, _ = train_step.jax_runner(shape, args.dtype, True, tokens, targets)
  run(2)  # compile and warm up
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    t0 = time.perf_counter()
    run(args.steps)
    wall_ms = (time.perf_counter() - t0) * 1e3 / args.steps
    jax.profiler.stop_trace()
    kinds = by_kind(op_events(trace_dir), args.steps)
  threads = len(os.sched_getaffinity(0))
  busy = sum(ms for _, ms in kinds.values())
  print(train_step.cpu_description())
  print(f'{args.size} {args.dtype}: {wall_ms:.0f} ms per step (profiled), {threads} threads: '
        f'{threads * wall_ms:.0f} thread-ms available, {busy:.0f} in ops\n')
  print('| op kind | ops per step | thread-ms per step | share of available |')
  print('|---|---|---|---|')
  rows = list(kinds.items())
  for kind, (n, ms) in rows[:args.top]:
    print(f'| {kind} | {n} | {ms:.1f} | {ms / (threads * wall_ms):.1%} |')
  rest = rows[args.top:]
  if rest:
    ms = sum(m for _, (_, m) in rest)
    print(f'| {len(rest)} other kinds | {sum(n for _, (n, _) in rest)} | {ms:.1f} | {ms / (threads * wall_ms):.1%} |')
  idle = threads * wall_ms - busy
  print(f'| idle (threads x wall - ops) | - | {idle:.1f} | {idle / (threads * wall_ms):.1%} |')


if __name__ == '__main__':
  main()
