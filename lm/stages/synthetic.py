"""Synthetic stage: SFT data from a trained model by rejection sampling.

The model of ``synthetic.model`` (``sft``, ``rlhf``, or ``latest``: rlhf when it ran, else sft)
samples ``synthetic.samples_per_prompt`` responses at ``synthetic.temperature`` to each of
``synthetic.n_prompts`` NEW prompts from the lab: ``synthetic.mix`` drawn from the ``synthetic`` split
(``lm.lab.splits``, seed stream ``synthetic <synthetic.seed>``), so none shares an item with an eval,
SFT, preference or RL prompt, in any template, with or without the tools offer. Prompts that
offer tools run through ``lm.agent`` with ``synthetic.tools`` (``()``: the offer is removed).

A judge accepts a response that ended its turn (tool calls well formed) and that
  gold    the lab's scorer (``lm.lab.tasks.score``) gives at least ``synthetic.gold_threshold``;
  reward  the reward model (``lm.stages.reward.load_reward_fn``: mean 0, std 1 on the reference
          policy's samples) scores at least ``synthetic.reward_threshold``.
Up to ``synthetic.keep_per_prompt`` distinct accepted responses per prompt are kept, as the
conversations of an ``SftConversations`` dataset (split ``train``) in ``<workdir>/synthetic/tfds``;
``samples.jsonl`` beside it holds every candidate with its gold score, reward and verdict. The
stages ``sft_synthetic`` and ``sft_original`` (``lm/stages/sft.py``) then continue SFT with and
without it.

Outputs: ``tfds_dir``, ``samples_file``, ``source``, ``judge``, ``threshold``, ``prompts``,
``samples``, ``accepted``, ``kept``, ``acceptance_rate``, and per family ``acceptance[<family>]``
(accepted / sampled) and ``kept[<family>]``.
"""

from collections import defaultdict
from pathlib import Path

import jax

from lm import evals, outputs, tokenizer
from lm import tools as tools_lib
from lm.config import ConfigError
from lm.data import builders, chat, datasets
from lm.inference import agent
from lm.lab import splits, tasks
from lm.rl import reward_model
from lm.stages import common

JUDGES = ('gold', 'reward')
SOURCES = ('sft', 'rlhf', 'latest')


def well_formed(turn) -> bool:
  """A turn SFT can train on as sampled: every tool call parsed, none left unanswered."""
  return all(not m.get('tool_call_errors') for m in turn) and not turn[-1].get('tool_calls')


def select(rows, rewards, threshold: float, keep_per_prompt: int) -> tuple[list[dict], dict]:
  """Judges ``lm.evals.respond`` rows (marking each ``accepted``, with its ``reward`` when ``rewards``
  is given: then the reward is judged, else the gold ``score``) and keeps up to ``keep_per_prompt``
  distinct accepted turns per prompt. Returns the kept SftConversations records and, per family,
  ``[sampled, accepted, kept]`` counts."""
  kept, per_prompt, counts = [], defaultdict(list), defaultdict(lambda: [0, 0, 0])
  for i, row in enumerate(rows):
    row['reward'] = None if rewards is None else float(rewards[i])
    judged = row['score'] if rewards is None else row['reward']
    row['accepted'] = bool(row['finished'] and well_formed(row['turn']) and judged >= threshold)
    count, seen = counts[row['family']], per_prompt[tasks.prompt_key(row['prompt'])]
    count[0] += 1
    count[1] += row['accepted']
    if row['accepted'] and tasks.prompt_key(row['turn']) not in seen and len(seen) < keep_per_prompt:
      seen.append(tasks.prompt_key(row['turn']))
      kept.append({'messages': row['prompt'] + row['turn'], 'family': row['family'], 'variant': row['variant']})
      count[2] += 1
  return kept, dict(counts)


def source_stage(c, inputs) -> str:
  if c.model not in SOURCES:
    raise ConfigError(f'synthetic.model={c.model!r}; valid: {", ".join(SOURCES)}')
  name = ('rlhf' if 'rlhf' in inputs else 'sft') if c.model == 'latest' else c.model
  if name not in inputs:
    raise ConfigError(f'synthetic.model={c.model!r} needs the {name} stage before it (ran: {", ".join(inputs)})')
  return name


def new_prompts(config) -> list[tasks.Example]:
  """``synthetic.n_prompts`` examples of ``synthetic.mix`` from the synthetic split."""
  c = config.synthetic
  try:
    return splits.draw_mix(common.world(config), c.mix, c.n_prompts, 'synthetic', f'synthetic {c.seed}',
                           options=datasets.task_options(config.data))
  except ValueError as e:
    raise ConfigError(f'synthetic.mix: {e}') from None


def _rewards(config, inputs, tok, rows, mesh, rules):
  """The reward model's normalised reward of each row's prompt + turn."""
  params, reward_fn = reward_model.load(inputs['reward'], mesh, rules)
  ids = [chat.render(tok, r['prompt'] + r['turn'])[0] for r in rows]
  rows_NxT = reward_model.score_rows(ids, config.reward.seq_len, tok.pad_id)
  return reward_model.batched_rewards(reward_fn, params, rows_NxT, config.reward.batch_size * 4, mesh, rules)


def _check(c, inputs):
  if c.judge not in JUDGES:
    raise ConfigError(f'synthetic.judge={c.judge!r}; valid: {", ".join(JUDGES)}')
  if c.judge == 'reward' and 'reward' not in inputs:
    raise ConfigError(f'synthetic.judge=reward needs the reward stage before it (ran: {", ".join(inputs)})')
  if c.temperature <= 0 or c.samples_per_prompt < 1:
    raise ConfigError(f'synthetic: temperature={c.temperature} must be > 0 and samples_per_prompt='
                      f'{c.samples_per_prompt} >= 1 (rejection sampling needs varied samples)')
  unknown = sorted(set(c.tools) - set(tools_lib.available()))
  if unknown:
    raise ConfigError(f'synthetic.tools has {unknown[0]!r}; valid: {", ".join(tools_lib.available())}')


def run(config, workdir, inputs) -> outputs.Synthetic:
  c = config.synthetic
  _check(c, inputs)
  source = source_stage(c, inputs)
  common.need(inputs, 'data', 'synthetic')
  tok = tokenizer.load(inputs[source].tokenizer)
  model = common.model_from_config(config, tok)
  mesh, rules = common.mesh_and_rules(config)
  prompts = new_prompts(config)
  candidates = [e for e in prompts for _ in range(c.samples_per_prompt)]
  params = common.load_params(inputs[source], model, mesh, rules)
  tools = tools_lib.build(c.tools, dict(seed=config.data.seed, **config.data.world))
  agent_cfg = agent.AgentConfig(max_calls=c.max_tool_calls, result_tokens=c.result_tokens)
  rows = evals.respond(params, model, tok, candidates, c.max_new_tokens, c.batch_size, mesh, rules,
                       config.seed + c.seed, tools, agent_cfg, temperature=c.temperature)
  rewards = _rewards(config, inputs, tok, rows, mesh, rules) if c.judge == 'reward' else None
  threshold = c.gold_threshold if c.judge == 'gold' else c.reward_threshold
  kept, counts = select(rows, rewards, threshold, c.keep_per_prompt)
  out = Path(workdir) / 'synthetic'
  if jax.process_index() == 0:
    evals.write_traces(out / 'samples.jsonl', rows)
  if not kept:
    key = 'gold_threshold' if c.judge == 'gold' else 'reward_threshold'
    raise ConfigError(f'synthetic: no sample of {len(rows)} reached synthetic.{key}={threshold} (see '
                      f'{out / "samples.jsonl"}); train the {source} model longer or lower the threshold')
  if jax.process_index() == 0:
    builders.build(builders.SftConversations, out / 'tfds', {'train': kept})
  common.sync('synthetic')
  samples, accepted = (sum(n[i] for n in counts.values()) for i in (0, 1))
  result = {'threshold': threshold, 'prompts': len(prompts), 'samples': samples,
            'accepted': accepted, 'kept': len(kept), 'acceptance_rate': accepted / samples}
  for family in sorted(counts):
    n, accepted, k = counts[family]
    result.update({f'acceptance[{family}]': accepted / n, f'kept[{family}]': k})
  print(f'[synthetic] {len(kept)} conversations kept; acceptance ' + ', '.join(
      f'{f} {result[f"acceptance[{f}]"]:.2f}' for f in sorted(counts)), flush=True)
  return outputs.Synthetic(tfds_dir=str(out / 'tfds'), samples_file=str(out / 'samples.jsonl'),
                           metrics={**result, 'source': source, 'judge': c.judge})
