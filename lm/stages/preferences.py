"""Preferences stage: rankings by the ``raters.panel`` of this config, in a dataset of their own.

Two sources, in one ``PreferenceRankings`` dataset (each record's ``origin`` says which):
  candidates  the data stage's prompts and template candidates (same splits and seeds) re-ranked by
              ``raters.panel``, so that variants of an experiment can share data, tokenizer,
              pretraining and SFT and differ only in who ranks (e.g. a length-biased panel against an
              unbiased one);
  policy      with ``rankings.n_prompts > 0``: the ``rankings.policy`` stage's model (sft by default)
              samples ``rankings.k`` responses at ``rankings.temperature`` to new prompts of the
              preferences split, and the panel ranks them as it ranks candidates
              (``lm.rl.rankings``): the seed's "rankings of model-generated responses";
  human       with ``raters.human`` (a run directory, or its ``human/rankings.jsonl``): what people
              ranked in the browser (``python -m lm.serve``'s ranking page, ``lm.data.human``), the lab
              prompts among them (those with gold); ``raters.human_mode``: ``beside`` the panel's
              rankings, or ``instead`` of them.
Validation holds whole items. Later stages read ``common.rankings_dir(inputs)``; the reward stage
picks the source with ``reward.data``. Metrics: the counts, and the panel's agreement per family and
domain over every ranking it made (``lm.lab.agreement``: ``kendall_w[<family>]``, ``alpha[...]``,
``panel_gold_accuracy[...]``; ``raters.panel.experts`` and the subjective families' tastes move them).
"""

from pathlib import Path

import jax

from lm import outputs, tokenizer
from lm.config import ConfigError
from lm.data import builders, datasets, human
from lm.lab import agreement, raters, splits, tasks
from lm.rl import rankings
from lm.stages import common


def policy_records(config, inputs, world) -> list[tuple[dict, tasks.Example]]:
  """Rankings of the ``rankings.policy`` model's own samples to ``rankings.n_prompts`` new prompts,
  each with its prompt's example."""
  r = config.rankings
  trained = common.need(inputs, r.policy, 'preferences with rankings.n_prompts > 0')
  tok = tokenizer.load(trained.tokenizer)
  model = common.model_from_config(config, tok)
  mesh, rules = common.mesh_and_rules(config)
  params = common.load_params(trained, model, mesh, rules)
  prompts = splits.draw_mix(world, config.data.preferences.mix, r.n_prompts, 'preferences', purpose='rankings',
                            options=datasets.task_options(config.data))
  for ex in prompts:
    ex.prompt = tasks.without_tools(ex.prompt)
  plan = rankings.SamplingPlan(k=r.k, temperature=r.temperature, max_new_tokens=r.max_new_tokens,
                               batch_size=r.batch_size)
  records = rankings.collect(params, model, tok, prompts, plan, raters.Panel(**config.raters.panel), config.seed,
                             mesh, rules, policy=r.policy)
  return list(zip(records, prompts))


def human_records(config, k: int) -> list[tuple[dict, tasks.Example]]:
  """The human rankings ``raters.human`` names (lab prompts only), as records with their examples."""
  where = Path(config.raters.human)
  run_dir = where.parents[1] if where.suffix == '.jsonl' else where
  records = human.read_rankings(run_dir, with_gold=True)
  if not records:
    raise ConfigError(f'raters.human={config.raters.human}: no human rankings of lab prompts in {human.path(run_dir)}')
  out = []
  for i, r in enumerate(records):
    if len(r['responses']) != k:
      raise ConfigError(f'raters.human: ranking {i} in {human.path(run_dir)} has {len(r["responses"])} responses; '
                        f'this run ranks {k} a prompt (data.preferences.k)')
    r = {**r, 'origin': {'source': 'policy', 'policy': r.get('stage', ''), 'round': 0, 'human': r.get('rater', '')}}
    out.append((r, tasks.Example(r['family'], r['variant'], r['prompt'], [], r['meta'])))
  return out


def run(config, workdir, inputs) -> outputs.Rankings:
  common.need(inputs, 'data', 'preferences')  # the same world and prompts as the data stage's rankings
  c, r = config.data, config.rankings
  if r.n_prompts < 0 or r.k < 2:
    raise ConfigError(f'rankings.n_prompts={r.n_prompts} must be >= 0 and rankings.k={r.k} >= 2')
  if r.n_prompts and r.k != c.preferences.k:
    raise ConfigError(f'rankings.k={r.k} must equal data.preferences.k={c.preferences.k}: one dataset holds both '
                      'sources, K responses a prompt')
  out = Path(workdir) / 'preferences' / 'tfds'
  world = common.world(config)
  if config.raters.human_mode not in ('beside', 'instead'):
    raise ConfigError(f'raters.human_mode={config.raters.human_mode!r}; valid: beside, instead')
  people = human_records(config, c.preferences.k) if config.raters.human else []
  sampled = policy_records(config, inputs, world) if r.n_prompts else []
  counts = {}
  if jax.process_index() == 0:
    if people and config.raters.human_mode == 'instead':
      records = datasets.split([x for x, _ in people], c.preferences.validation_fraction,
                               [datasets.item(e) for _, e in people])
    else:
      records = datasets.preference_records(world, c, config.raters.panel, extra=sampled + people)
    builders.build(builders.PreferenceRankings, out, records)
    counts = {'preference_prompts': sum(map(len, records.values())), 'policy_prompts': len(sampled),
              'policy_distinct': len(rankings.distinct([x for x, _ in sampled])), 'human_prompts': len(people),
              **agreement.summary(records['train'] + records['validation'])}
  common.sync('preferences')
  return outputs.Rankings(tfds_dir=str(out), panel=dict(config.raters.panel), metrics=counts)
