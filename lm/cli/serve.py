"""``python -m lm.serve``: the web app over a run's trained models (``lm.serve``), on this machine.

  python -m lm.serve --workdir=runs/lifecycle [--port=8000] [--host=127.0.0.1]

Pages: runs (report card, metric curves), chat (streamed answers, thinking and tools apart), token
trajectories (probabilities, alternatives, regenerating from another token; eval traces and RLHF
rollouts), and ranking (people rank K samples; ``<workdir>/human/rankings.jsonl``).
"""

import argparse
import logging
import sys

import uvicorn

from lm.serve import app as app_lib


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.serve', description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True, help='a run directory written by lm.launch (or a sweep of runs)')
  p.add_argument('--port', type=int, default=8000)
  p.add_argument('--host', default='127.0.0.1', help='the address to listen on (default: this machine only)')
  p.add_argument('--max_rows', type=int, default=8, help='rows decoded together in one batch')
  args = p.parse_args(argv)
  try:
    if args.max_rows < 1:
      raise ValueError(f'--max_rows={args.max_rows} must be >= 1')
    app = app_lib.create_app(args.workdir, max_rows=args.max_rows)
  except ValueError as e:
    sys.exit(f'lm.serve: error: {e}')
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(levelname)s %(message)s')
  print(f'lm.serve: {app.state.workdir.root} at http://{args.host}:{args.port}/', flush=True)
  uvicorn.run(app, host=args.host, port=args.port, log_level='warning')


if __name__ == '__main__':
  main()
