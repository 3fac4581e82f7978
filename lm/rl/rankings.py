"""Rankings of the model's own samples: the seed's "humans rank several model-generated responses".

  records = collect(params, model, tok, examples, cfg, panel, seed, mesh, rules, policy='sft', round_=0)

For each prompt the policy samples K responses (``lm.inference.sample``, at ``cfg.temperature``); each
is scored by the lab's gold scorer and described by the rater features computed from its text
(length, tone, politeness, refusal: ``lm.lab.raters.features``), exactly as template candidates are;
the panel ranks them with its biases and noise. The records have the shape of
``lm.lab.raters.preference_records`` (``PreferenceRankings``), with ``kinds`` 'policy' and an
``origin`` naming the policy, the round and the temperature.
"""

import dataclasses

import jax
import numpy as np

from lm.inference import sample
from lm.lab import raters, tasks


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
  k: int = 4                  # responses per prompt
  temperature: float = 1.0
  max_new_tokens: int = 64
  batch_size: int = 64        # prompts x responses per sampler call


def collect(params, model, tok, examples, cfg: SamplingPlan, panel: raters.Panel, seed: int, mesh=None,
            rules=None, policy: str = 'sft', round_: int = 0) -> list[dict]:
  """``PreferenceRankings`` records of ``cfg.k`` samples per example, ranked by ``panel``; deterministic
  in ``seed`` (the sampler's key per batch and the panel's noise)."""
  if cfg.k < 2:
    raise ValueError(f'rankings need at least 2 responses per prompt, got k={cfg.k}')
  sampling = sample.SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
  # one set after another: a batch decodes until its longest sample ends, and a set's samples are alike in length
  flat = sorted(((i, ex) for i, ex in enumerate(examples) for _ in range(cfg.k)),
                key=lambda x: (x[1].family, x[1].variant))
  replies = [[] for _ in examples]
  kwargs = {} if rules is None else {'rules': rules}
  # every batch padded to the longest prompt: one sampler program, not one per prompt bucket
  kwargs['prompt_len'] = sample.longest_prompt(tok, [ex.prompt for ex in examples])
  for start in range(0, len(flat), cfg.batch_size):
    batch = flat[start:start + cfg.batch_size]
    rng = jax.random.fold_in(jax.random.key(seed), start)
    for (i, _), reply in zip(batch, sample.complete_chats(params, model, tok, [ex.prompt for _, ex in batch],
                                                          sampling, rng, mesh=mesh, **kwargs)):
      replies[i].append(reply)
  noise = np.random.default_rng([seed, round_, 3])
  records = []
  for i, ex in enumerate(examples):
    turns = [[{'role': 'assistant', 'content': r.get('content') or '',
               **({'thinking': r['thinking']} if r.get('thinking') else {})}]
             for r in replies[i]]
    cands = [raters.candidate(ex, 'policy', turn) for turn in turns]
    ranked = panel.rank(cands, noise)
    records.append(dict(
        family=ex.family, variant=ex.variant, prompt=ex.prompt, responses=turns, kinds=['policy'] * cfg.k,
        features=[c.features for c in cands], gold_scores=[c.gold_score for c in cands],
        gold_utilities=[c.utility for c in cands], rater_rankings=ranked.per_rater.tolist(),
        ranking=ranked.panel.tolist(), gold_ranking=ranked.gold.tolist(),
        meta={key: v for key, v in ex.meta.items() if key != 'world'},
        origin={'source': 'policy', 'policy': policy, 'round': round_, 'temperature': cfg.temperature}))
  return records


def distinct(records) -> list[dict]:
  """The records whose K responses are not all the same text (identical samples rank nothing)."""
  return [r for r in records if len({tasks.final_text(m) for m in r['responses']}) > 1]
