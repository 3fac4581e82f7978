"""Where lm's CPU train step spends its time: the JAX profiler's per-op events of XLA:CPU, grouped by kind.

  python benchmarks/train_step_profile.py                    # tiny shape, float32, 3 profiled steps
  python benchmarks/train_step_profile.py --dtype bfloat16 --steps 5

The step is benchmarks/train_step.py's (the same shape, batch and optimizer). XLA:CPU runs each
operation of the compiled program as a thunk; the profiler records one event per thunk, on the thread
that started it. Ops are grouped by name without the numeric suffix (``ynn_fusion.41`` -> ``ynn_fusion``:
YNNPACK's fusions, the matmuls and some reductions; ``*_fusion``: XLA's elementwise loops; ``bitcast_*``:
layout copies). The table gives each kind's milliseconds per step (the events' durations) and their share
of the step's wall time. The shares do not add up to threads' busy time: a YNNPACK fusion spreads its
work over the intra-op pool's threads under one event (a lone 4096x256x1408 float32 dot here: one event
as long as the call, at two threads' speed), and independent thunks run at once. Idle threads cannot be
read from these events.
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
  """The complete events of XLA:CPU's ops: those naming an HLO op (not the runtime's or Python's own spans,
  such as ``np.asarray(jax.Array)`` waiting for the step, nor containers)."""
  path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[0]
  events = json.load(gzip.open(path))['traceEvents']
  return [e for e in events if e.get('ph') == 'X' and 'dur' in e and 'hlo_op' in e.get('args', {})
          and re.sub(r'\.\d+$', '', e['name']) not in CONTAINERS]


def by_kind(events, steps: int) -> dict[str, tuple[int, float]]:
  """``kind -> (ops per step, ms of events per step)``."""
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
  busy = sum(ms for _, ms in kinds.values())
  print(train_step.cpu_description())
  print(f'{args.size} {args.dtype}: {wall_ms:.0f} ms per step (profiled), {len(os.sched_getaffinity(0))} threads; '
        f'the ops\' events sum to {busy:.0f} ms per step\n')
  print('| op kind | ops per step | ms per step (events) | share of the step\'s wall |')
  print('|---|---|---|---|')
  rows = list(kinds.items())
  for kind, (n, ms) in rows[:args.top]:
    print(f'| {kind} | {n} | {ms:.1f} | {ms / wall_ms:.1%} |')
  rest = rows[args.top:]
  if rest:
    ms = sum(m for _, (_, m) in rest)
    print(f'| {len(rest)} other kinds | {sum(n for _, (n, _) in rest)} | {ms:.1f} | {ms / wall_ms:.1%} |')


if __name__ == '__main__':
  main()
