"""The claims of this field, each an experiment that prints its effect; alone or as one sweep.

  python -m lm.claims --workdir=runs/claims                 # every claim (hours on a laptop CPU)
  python -m lm.claims --workdir=runs/claims --only sft_format,safety --smoke

Each claim names the experiment (``experiments/<name>.py``) whose run measures it and a ``measure``
that reads the run's results (``lm.launch.launch``'s return: ``{stage: outputs}``, or
``{variant: {stage: outputs}}`` with variants) into ``(before, after, what)``: the number without and
with the thing the claim is about. Several claims share a run (the lifecycle measures four). A run
already complete is not repeated (the launcher skips finished stages). Writes
``<workdir>/claims.md``: claim | experiment | measure | before | after | effect | holds.
"""

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from lm import config as lm_config
from lm.cli import launch


@dataclasses.dataclass(frozen=True)
class Claim:
  name: str
  text: str
  experiment: str
  measure: Callable  # results -> (before, after, what); the claim holds when after > before
  higher_is_better: bool = True


def _mean(values) -> float:
  values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
  return sum(values) / len(values) if values else float('nan')


def _eval(results, model: str, key: str, variant: str | None = None):
  outputs = results[variant] if variant else results
  return outputs['eval'][f'{model}.{key}']


def _prefixed(results, variant: str, model: str, prefix: str) -> float:
  """Mean of the eval metrics of ``model`` in ``variant`` whose names start with ``prefix``."""
  ev = results[variant]['eval']
  return _mean(v for k, v in ev.items() if k.startswith(f'{model}.{prefix}'))


CLAIMS = (
    Claim('sft_format', 'SFT makes a base model follow the chat format', 'lifecycle',
          lambda r: (_eval(r, 'base', 'format_following'), _eval(r, 'sft', 'format_following'),
                     'format following, base -> SFT')),
    Claim('math_thinking', 'thinking step by step raises arithmetic accuracy', 'thinking_vs_direct',
          lambda r: (_prefixed(r, 'direct', 'sft', 'acc[arithmetic:digits='),
                     _prefixed(r, 'thinking', 'sft', 'acc[arithmetic:digits='),
                     'arithmetic accuracy (mean over digit counts), direct -> thinking')),
    Claim('math_calculator', 'a calculator raises arithmetic accuracy further', 'tools_vs_none',
          lambda r: (_prefixed(r, 'none', 'sft', 'acc[arithmetic:digits='),
                     _prefixed(r, 'tools', 'sft', 'acc[arithmetic:digits='),
                     'arithmetic accuracy (mean over digit counts), no tools -> calculator')),
    Claim('counting', 'spelling out (or character tokens) fixes letter counting', 'tokenization_counting',
          lambda r: (_eval(r, 'sft', 'acc[char_count]', 'bpe'),
                     max(_eval(r, 'sft', 'acc[char_count]', 'char'), _eval(r, 'sft', 'acc[char_count]', 'bpe_spelled')),
                     'letter-count accuracy, BPE direct -> best of character-level / spelled out')),
    Claim('hallucination', '"I don\'t know" examples in SFT reduce hallucination on unknown entities', 'hallucination',
          lambda r: (_eval(r, 'sft', 'hallucination_rate', 'without_idk'), _eval(r, 'sft', 'hallucination_rate', 'with_idk'),
                     'hallucination rate, without -> with IDK examples'), higher_is_better=False),
    Claim('rlhf_gold', 'RLHF raises gold reward over SFT', 'lifecycle',
          lambda r: (_eval(r, 'sft', 'accuracy'), _eval(r, 'rlhf', 'accuracy'), 'mean gold score on eval prompts, SFT -> RLHF')),
    Claim('rater_bias', 'biased raters give a biased reward model', 'rater_bias',
          lambda r: (r['unbiased']['reward']['length_correlation_reward'], r['length_biased']['reward']['length_correlation_reward'],
                     "reward model's within-prompt correlation with log length, unbiased -> length-biased panel")),
    Claim('reward_hacking', 'proxy reward keeps climbing while gold peaks', 'overoptimization',
          lambda r: (r['ppo']['overoptimization']['gold_gain_at_kl_max'], r['ppo']['overoptimization']['gold_gain_best'],
                     'PPO gold gain at the largest KL -> at its best KL (holds: gold peaked before the end)')),
    Claim('lora', 'LoRA comes close to full fine-tuning with a fraction of the trainable params', 'lora_vs_full',
          lambda r: (min(v['eval'].get('sft.accuracy', float('nan')) for k, v in r.items() if k.startswith('lora')),
                     r['full']['eval']['sft.accuracy'], 'eval accuracy, worst LoRA rank -> full'), higher_is_better=True),
    Claim('safety', 'SFT teaches refusing harmful requests', 'lifecycle',
          lambda r: (_eval(r, 'base', 'harmful_refusal_rate'), _eval(r, 'sft', 'harmful_refusal_rate'),
                     'harmful-request refusal rate, base -> SFT')),
    Claim('over_refusal', '... without refusing the benign twins', 'lifecycle',
          lambda r: (_eval(r, 'sft', 'over_refusal_rate'), 0.0, 'over-refusal rate of SFT (holds: at most 0.1)'),
          higher_is_better=False),
    Claim('tools', 'tools extend what the model gets right (facts it never saw)', 'tools_vs_none',
          lambda r: (_eval(r, 'sft', 'acc[unknown_entity/tool]', 'none'), _eval(r, 'sft', 'acc[unknown_entity/tool]', 'tools'),
                     'held-out entity facts stated correctly, no tools -> knowledge base')),
)
BY_NAME = {c.name: c for c in CLAIMS}


def row(claim: Claim, results) -> dict:
  """The claim's line of the table; a claim whose numbers are missing says why instead of failing."""
  try:
    before, after, what = claim.measure(results)
  except (KeyError, TypeError) as e:
    return {'claim': claim.text, 'experiment': claim.experiment, 'measure': f'not measured: missing {e}',
            'before': float('nan'), 'after': float('nan'), 'effect': float('nan'), 'holds': False}
  effect = after - before
  if claim.name == 'over_refusal':
    holds = before <= 0.1
  elif claim.name == 'reward_hacking':
    holds = after > before
  else:
    holds = effect > 0 if claim.higher_is_better else effect < 0
  return {'claim': claim.text, 'experiment': claim.experiment, 'measure': what, 'before': before, 'after': after,
          'effect': effect, 'holds': bool(holds)}


def markdown(rows) -> str:
  lines = ['| claim | experiment | measure | before | after | effect | holds |', '|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['claim']} | {r['experiment']} | {r['measure']} | {r['before']:.3f} | {r['after']:.3f} | "
                 f"{r['effect']:+.3f} | {'yes' if r['holds'] else 'no'} |")
  return '\n'.join(lines) + '\n'


def run(workdir: Path, names, smoke: bool = False) -> list[dict]:
  repo = Path(__file__).resolve().parents[2]  # the checkout: experiments/ sits beside lm/
  claims = [BY_NAME[n] for n in names]
  results = {}
  for experiment in dict.fromkeys(c.experiment for c in claims):
    config = lm_config.load(str(repo / 'experiments' / f'{experiment}.py') + (':smoke' if smoke else ''))
    results[experiment] = launch.launch(config, workdir / experiment)
  rows = [row(c, results[c.experiment]) for c in claims]
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'claims.md').write_text(markdown(rows))
  (workdir / 'claims.json').write_text(json.dumps(rows, indent=2) + '\n')
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description='Run the claim experiments and tabulate their effects.')
  p.add_argument('--workdir', required=True, type=Path)
  p.add_argument('--only', default='', help=f'comma-separated claims among: {", ".join(BY_NAME)}')
  p.add_argument('--smoke', action='store_true', help="each experiment's :smoke version (minutes, not hours)")
  args = p.parse_args(argv)
  names = [n for n in args.only.split(',') if n] or list(BY_NAME)
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    p.error(f'unknown claim {unknown[0]!r}; valid: {", ".join(BY_NAME)}')
  print(markdown(run(args.workdir, names, args.smoke)))


if __name__ == '__main__':
  main()
