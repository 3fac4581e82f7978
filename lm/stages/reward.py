"""Reward model stage: the SFT transformer with a scalar head, fit to the rater panel's K-way rankings.

The rankings are the preferences stage's (when it ran), else the data stage's; ``reward.data`` picks
which of them train it: ``candidates`` (template candidates: the reference, labelled wrong answers,
restyled copies), ``policy`` (the SFT model's own samples, ranked by the panel: the preferences
stage's ``rankings``) or ``mix`` (both). The work is ``lm.rl.reward_model.fit``: the LM head
dropped, a zero-initialised scalar head read at the response's last token, loss ``reward.loss``
(``plackett_luce`` or ``bradley_terry``, optional ``reward.margin``), then the reference policy's
samples fix the normalisation (mean 0, std 1 there).

Outputs: ``checkpoint_dir``, ``model`` (the reward model's config), ``tokenizer``, ``reward_mean``,
``reward_std``; metrics: the final ``eval_panel_accuracy`` / ``eval_gold_accuracy`` and, on the held-out
rankings, ``heldout_<source>_panel_accuracy`` / ``heldout_<source>_gold_accuracy`` per source
(candidates, policy) and the length correlations. ``<workdir>/reward/heldout.json`` holds, per
held-out prompt, the K rewards, word counts, panel ranks, gold utilities and source.
"""

import dataclasses
import json
from pathlib import Path

import jax

from lm import outputs, tokenizer
from lm.config import ConfigError
from lm.data import builders
from lm.rl import reward_model
from lm.stages import common


def run(config, workdir, inputs) -> outputs.Reward:
  c = config.reward
  sft = common.need(inputs, 'sft', 'reward')
  tok = tokenizer.load(sft.tokenizer)
  policy_model = common.model_from_config(config, tok, c.seq_len)
  mesh, rules = common.mesh_and_rules(config)
  tfds_dir = common.rankings_dir(inputs, 'reward')
  records = {}
  for split in ('train', 'validation'):
    try:
      records[split] = reward_model.select(builders.read(builders.PreferenceRankings, tfds_dir, split), c.data)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if not records[split]:
      raise ConfigError(f'reward.data={c.data!r}: no {split} rankings of that source in {tfds_dir} '
                        '(policy rankings come from the preferences stage with rankings.n_prompts > 0)')
  policy_params = common.load_params(sft, policy_model, mesh, rules)
  trained = reward_model.fit('reward', c, records, tok, policy_model, policy_params, workdir, mesh, rules,
                               config.seed)
  if jax.process_index() == 0:  # per held-out prompt, for intervals over prompts (lm.cli.claims)
    (Path(workdir) / 'reward' / 'heldout.json').write_text(json.dumps(trained.heldout) + '\n')
  m = trained.metrics
  print(f'[reward] held-out pairwise accuracy: panel {m.get("heldout_panel_accuracy", float("nan")):.3f}, gold '
        f'{m.get("heldout_gold_accuracy", float("nan")):.3f}; reference rewards mean {trained.reward_mean:.3f} '
        f'std {trained.reward_std:.3f}; ' + ', '.join(f'{k} {v:.3f}' for k, v in m.items()
                                                      if k.startswith('length_correlation')), flush=True)
  return outputs.Reward(checkpoint_dir=trained.checkpoint_dir, model=dataclasses.asdict(trained.model),
                        tokenizer=sft.tokenizer, reward_mean=trained.reward_mean, reward_std=trained.reward_std,
                        metrics=trained.metrics)
