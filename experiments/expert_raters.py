"""Expert raters against lay raters: the same candidates for the same prompts, ranked by a lay panel, an
expert panel and a mixed one (each rater an expert in one domain), from one shared SFT model.

  python -m lm.launch --config=experiments/expert_raters.py --workdir=runs/expert_raters
  ...:smoke    a minutes-long version for tests (tiny sizes)

data .. sft run once in ``<workdir>/shared``; each variant re-ranks the same candidates with its panel
(``preferences`` stage, ``raters.panel.experts``: an expert judges by the gold scorer, a lay rater's
judgement of correctness leans on length, confidence and politeness, ``lm.lab.raters``), trains a
reward model on those rankings, runs PPO against it and evaluates SFT and RLHF on the same eval prompts.
The preference prompts cover the five domains of expertise (math, world facts, Veltic, safety,
subjective). ``<workdir>/comparison.md``: per domain, the panel's and the reward model's held-out
pairwise accuracy against gold, and the RLHF model's gold reward. The claim ``expert_raters``
(``lm.cli.claims``) compares the reward models of the lay and expert panels on the same held-out prompts.
"""

from experiments import rlhf_tiny
from lm.configs import base

DOMAINS = ('math', 'world', 'veltic', 'safety', 'subjective')
COLUMNS = (tuple(f'preferences.panel_gold_accuracy[domain:{d}]' for d in DOMAINS)
           + tuple(f'reward.heldout_gold_accuracy[domain:{d}]' for d in DOMAINS)
           + ('reward.heldout_gold_accuracy', 'rlhf.eval_gold_reward', 'eval.sft.accuracy', 'eval.rlhf.accuracy'))
# prompts of every domain of expertise, about as many of each
MIX = (('arithmetic', 'direct', 2.0), ('world_qa', 'direct', 1.0), ('unknown_entity', 'direct', 1.0),
       ('translation', 'direct', 2.0), ('safety', 'direct', 2.0), ('joke', 'direct', 1.0), ('slogan', 'direct', 1.0))


def get_config(arg: str = ''):
  if arg not in ('', 'smoke'):
    raise ValueError(f'unknown experiments/expert_raters.py argument {arg!r}; valid: smoke')
  c = rlhf_tiny.get_config(arg)
  # SFT and the eval on every family (the lifecycle's lab teaches only its headline skills)
  c.data.sft_mix, c.data.eval_sets = base.SFT_MIX, base.EVAL_SETS
  c.shared_stages = ('data', 'tokenizer', 'pretrain', 'sft')
  c.data.preferences.update(mix=MIX, n_prompts=160 if arg == 'smoke' else 1200, validation_fraction=0.25)
  c.rlhf.prompt_mix = MIX
  c.variants = {'lay': {'raters': {'panel': {'experts': 0.0}}},
                'expert': {'raters': {'panel': {'experts': 1.0}}},
                'mixed': {'raters': {'panel': {'experts': DOMAINS[:base.PANEL['n_raters']]}}}}
  c.comparison.columns = COLUMNS
  return c
