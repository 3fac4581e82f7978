"""Subjective tasks against objective ones: raters agree less where what is good is a matter of taste
(jokes, slogans: ``lm.lab.tasks.joke``, ``slogan``), and the reward model and RLHF learn less there.

  python -m lm.launch --config=experiments/subjective.py --workdir=runs/subjective
  ...:smoke    a minutes-long version for tests (tiny sizes)

data .. sft run once in ``<workdir>/shared``; each variant ranks the same candidates for the same
prompts (half objective families, half subjective ones) with its panel, trains a reward model on the
rankings, runs PPO against it and evaluates SFT and RLHF. ``tastes``: the default panel, each rater
weighing a joke's parts by a taste of their own; ``critics``: every rater an expert, judging by the
population's expected taste (the gold score), the control that shows the disagreement is the tastes'.
``<workdir>/comparison.md``: agreement (Kendall's W, Krippendorff's alpha) and the reward model's
held-out pairwise accuracy against gold, objective against subjective, and the RLHF model's gold reward;
each stage's outputs and the report card hold them per family. The claims ``subjective`` and
``subjective_rlhf`` (``lm.cli.claims``) read the ``tastes`` run: accuracy and RLHF gain, subjective
against objective families, with intervals.
"""

from experiments import rlhf_tiny
from lm.configs import base

GROUPS = ('objective', 'domain:subjective')
COLUMNS = (tuple(f'preferences.{m}[{g}]' for m in ('kendall_w', 'alpha', 'panel_gold_accuracy') for g in GROUPS)
           + tuple(f'reward.heldout_gold_accuracy[{g}]' for g in GROUPS)
           + ('rlhf.eval_gold_reward', 'eval.sft.accuracy', 'eval.rlhf.accuracy'))
OBJECTIVE = (('arithmetic', 'direct', 1.0), ('world_qa', 'direct', 1.0), ('translation', 'direct', 1.0),
             ('safety', 'direct', 1.0))
SUBJECTIVE = (('joke', 'direct', 2.0), ('slogan', 'direct', 2.0))
BREAKDOWNS = tuple(f for f, _, _ in OBJECTIVE + SUBJECTIVE)


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/subjective.py argument {arg!r}; valid: smoke')
  c = rlhf_tiny.get_config(arg)
  # SFT and the eval on every family (the lifecycle's lab teaches only its headline skills)
  c.data.sft_mix, c.data.eval_sets = base.SFT_MIX, base.EVAL_SETS
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft')
  c.data.preferences.update(mix=OBJECTIVE + SUBJECTIVE, n_prompts=160 if arg == 'smoke' else 1200,
                            validation_fraction=0.25)
  c.rlhf.prompt_mix = OBJECTIVE + SUBJECTIVE
  c.eval.breakdowns = BREAKDOWNS
  c.variants = {'tastes': {}, 'critics': {'raters': {'panel': {'experts': 1.0}}}}
  c.comparison.columns = COLUMNS
  return c
