"""``python -m lm.report --workdir=<run>``: (re)writes a run's report card (``lm.report.card``)."""

import argparse
import sys

from lm.report import card


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.report', description='Writes <workdir>/report.md, PNGs, report.html.')
  p.add_argument('--workdir', required=True)
  p.add_argument('--peak_flops', type=float, default=None,
                 help='peak FLOP/s of all the run\'s devices together, for MFU (default: known accelerator peaks; '
                      'on CPU a matmul measured now)')
  args = p.parse_args(argv)
  try:
    print(card.write(args.workdir, args.peak_flops))
  except ValueError as e:
    sys.exit(f'lm.report: error: {e}')


if __name__ == '__main__':
  main()
