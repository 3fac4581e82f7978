"""``python -m lm.facts --workdir=<run> [--stages=pretrain,sft] [--formats=qa,statement]``: which world
facts a run's trained models know (``lm.probes.fact_ranks``), with no sampling: the eval set's world
questions (facts stated only in articles) and as many other facts of known entities (stated in articles,
and asked in pretraining's question-and-answer documents and SFT's answers). One markdown row per stage,
facts and format: the share known [95% interval] beside chance (1 / candidates)."""

import argparse
import json
import sys
from pathlib import Path

from lm import outputs, probes, stats
from lm.data import builders
from lm.inference import serving


def eval_and_other_facts(workdir) -> dict[str, list[tuple]]:
  """``lm.probes.world_facts`` of the run's eval set (or of the run it took its data stage from)."""
  path = Path(workdir) / 'data' / 'outputs.json'
  config = Path(workdir) / 'config.json'
  if not path.is_file() and config.is_file():  # a run that took its data stage from another (``reuse``)
    reuse = json.loads(config.read_text()).get('reuse', {})
    if 'data' in reuse.get('stages', ()):
      path = Path(reuse['workdir']) / 'data' / 'outputs.json'
  if not path.is_file():
    raise ValueError(f'{path} does not exist: the run has no finished data stage (its eval set)')
  data = outputs.load(path)
  try:
    return probes.world_facts(builders.read(builders.EvalSet, data.tfds_dir, 'test'))
  except ValueError as e:
    raise ValueError(f'{data.tfds_dir}: {e}') from None


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.facts', description='Which world facts a trained model knows.')
  p.add_argument('--workdir', required=True)
  p.add_argument('--stages', default='pretrain,sft', help='trained stages to load, comma-separated')
  p.add_argument('--formats', default=','.join(probes.FACT_FORMATS), help='comma-separated: qa, statement')
  args = p.parse_args(argv)
  try:
    facts = eval_and_other_facts(args.workdir)
    print('| stage | facts | format | known [95% interval] | chance | n |\n|---|---|---|---|---|---|')
    for stage in args.stages.split(','):
      served = serving.load(args.workdir, stage)
      for name, items in facts.items():
        for fmt in args.formats.split(','):
          ranks = probes.fact_ranks(served.params, served.model, served.tokenizer, items, fmt, served.mesh,
                                    served.rules)
          chance = sum(1 / len(probes.fact_texts(*item, fmt)) for item in items) / len(items)
          print(f'| {stage} | {name} | {fmt} | {stats.mean([r == 0 for r in ranks])} | {chance:.3f} | {len(items)} |',
                flush=True)
  except ValueError as e:
    sys.exit(f'lm.facts: error: {e}')


if __name__ == '__main__':
  main()
