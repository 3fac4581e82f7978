"""``python -m lm.copying --workdir=<run> [--stage=pretrain] [--n=64]``: the copying probes
(``lm.probes``) of a run's trained model, one per line."""

import argparse
import sys

from lm import probes
from lm.inference import serving


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.copying', description='Copying probes of a trained model.')
  p.add_argument('--workdir', required=True)
  p.add_argument('--stage', default='pretrain', help='which trained stage to load (pretrain, sft, ...)')
  p.add_argument('--n', type=int, default=64, help='worked sums, and random strings, to probe on')
  args = p.parse_args(argv)
  try:
    served = serving.load(args.workdir, args.stage)
    probe = probes.make_copy_probe(served.model, served.tokenizer, args.n, served.mesh, served.rules)
  except ValueError as e:
    sys.exit(f'lm.copying: error: {e}')
  for name, value in probe(served.params, None).items():
    print(f'{name:14s} {value:.3f}  {probes.ROLES[name]}')


if __name__ == '__main__':
  main()
