"""``python -m lm.benchmark``: public benchmarks (EleutherAI's lm-evaluation-harness) on a trained run.

  python -m lm.benchmark --workdir=<run> --tasks=gsm8k,hellaswag,mmlu [--limit=N] [--stage=sft]
                         [--include_path=<dir of task yamls>] [--num_fewshot=K] [--batch_size=16]

Any stage of any workdir (lm's own tokenizer or an imported checkpoint's) goes through
``lm.inference.harness``. The harness's tasks download their datasets; on a machine without internet,
``--include_path`` names a directory of task yamls whose ``dataset_path: json`` reads local files. The
results (the harness's ``results`` and ``configs`` per task) go to ``<workdir>/benchmark/<stage>.json``
and a table to stdout. Needs the ``[eval]`` extra.
"""

import argparse
import functools
import json
import sys
from pathlib import Path

from lm.inference import serving

try:
  from lm.inference import harness
except ImportError as e:  # lm-eval is the [eval] extra
  harness, _MISSING = None, e

STAGES = ('rlhf', 'sft', 'pretrain', 'import')  # the default: the latest that finished


def default_stage(workdir) -> str:
  for stage in STAGES:
    if (Path(workdir) / stage / 'outputs.json').is_file():
      return stage
  raise ValueError(f'{workdir}: no finished {"/".join(STAGES)} stage to evaluate')


@functools.lru_cache(maxsize=4)
def task_manager(include_path=None):
  """lm-eval's tasks and those under ``include_path`` (indexing them takes seconds: once a process)."""
  from lm_eval.tasks import TaskManager
  return TaskManager(include_path=include_path)


def evaluate(workdir, tasks, stage=None, limit=None, include_path=None, num_fewshot=None, batch_size=16,
             max_gen_toks=256, log_samples=False, seed=0) -> dict:
  """``lm_eval.simple_evaluate`` of ``tasks`` on a stage of ``workdir``; its result dict."""
  if harness is None:
    raise ValueError(f'python -m lm.benchmark needs the [eval] extra (pip install -e ".[eval]"): {_MISSING}')
  from lm_eval import evaluator
  stage = stage or default_stage(workdir)
  manager = task_manager(include_path)
  unknown = [t for t in tasks if t not in manager.all_tasks]
  if unknown:
    where = f' (nor in {include_path})' if include_path else ''
    raise ValueError(f'--tasks has {unknown[0]!r}: not a task of lm-eval{where}')
  model = harness.Harness(serving.load(workdir, stage), batch_size=batch_size, max_gen_toks=max_gen_toks, seed=seed)
  out = evaluator.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, limit=limit,
                                  num_fewshot=num_fewshot, log_samples=log_samples, bootstrap_iters=0,
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed)
  out['stage'] = stage
  return out


def table(results: dict) -> str:
  lines = []
  for task, metrics in sorted(results.items()):
    for name, value in sorted(metrics.items()):
      if isinstance(value, (int, float)) and not name.startswith('alias') and 'stderr' not in name:
        lines.append(f'{task:<24} {name:<28} {value:.4f}')
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.benchmark', description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True, help='a run directory written by lm.launch or lm.interop import')
  p.add_argument('--tasks', required=True, help='comma-separated lm-eval task names (gsm8k,hellaswag,mmlu,...)')
  p.add_argument('--stage', default=None, help=f'which trained stage (default: the latest of {", ".join(STAGES)})')
  p.add_argument('--limit', type=float, default=None, help='examples per task (a fraction if < 1)')
  p.add_argument('--include_path', default=None, help='a directory of local task yamls')
  p.add_argument('--num_fewshot', type=int, default=None)
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--max_gen_toks', type=int, default=256, help='generate_until tokens when a task sets none')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default=None, help='results JSON (default: <workdir>/benchmark/<stage>.json)')
  args = p.parse_args(argv)
  tasks = [t.strip() for t in args.tasks.split(',') if t.strip()]
  limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
  try:
    out = evaluate(args.workdir, tasks, args.stage, limit, args.include_path, args.num_fewshot, args.batch_size,
                   args.max_gen_toks, seed=args.seed)
  except (ValueError, FileNotFoundError, KeyError) as e:
    sys.exit(f'lm.benchmark: error: {str(e).strip(chr(39))}')
  path = Path(args.out or Path(args.workdir) / 'benchmark' / f'{out["stage"]}.json')
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({k: out[k] for k in ('stage', 'results', 'configs', 'n-shot') if k in out},
                             indent=1, default=str) + '\n')
  print(table(out['results']))
  print(f'wrote {path}')
  return out


if __name__ == '__main__':
  main()
