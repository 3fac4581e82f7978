"""Eval stage: the report card of every trained model in the run (base = pretrain, sft, rlhf, ...), on
the held-out eval sets, through the sampler with the chat format. The base model gets the same chat
prompts: that it mostly fails the format is the contrast SFT should make. It never learned to end a turn,
so it writes at most ``eval.base_max_new_tokens`` tokens (a batch runs as long as its longest answer).

Prompts that offer tools run through ``lm.agent`` with ``eval.tools`` (at most ``eval.max_tool_calls``
calls per answer, each result cut to ``eval.result_tokens`` tokens); ``eval.tools=()`` removes the
offer instead. ``eval.breakdowns`` adds accuracy by task metadata (``evals.breakdown``).

Writes ``<workdir>/eval/results.json``, ``traces_<model>.jsonl`` (every prompt, response, tool call
and result, score) and ``report.md`` (rows: metrics and per-set accuracy; columns: models), printed
at the end.
"""

import json
from pathlib import Path

import jax

from lm import evals, metrics, outputs, tokenizer
from lm import tools as tools_lib
from lm.config import ConfigError
from lm.data import builders
from lm.inference import agent
from lm.stages import common

MODELS = {'pretrain': 'base', 'sft': 'sft', 'rlhf': 'rlhf',  # stage -> column name
          'sft_original': 'sft+orig', 'sft_synthetic': 'sft+synth'}  # continued SFT without / with synthetic data


def run(config, workdir, inputs) -> outputs.Eval:
  c = config.eval
  unknown = [s for s in c.models if s not in MODELS]
  if unknown:
    raise ConfigError(f'eval.models has {unknown[0]!r}; valid: {", ".join(MODELS)}')
  stages = [s for s in c.models if s in inputs]
  if not stages:
    raise ConfigError(f'eval: none of eval.models={tuple(c.models)} ran before it (stages: {", ".join(inputs)})')
  # lm's tokenizer stage, or an imported checkpoint's tokenizer, which its trained stages carry
  tok = tokenizer.load(common.need(inputs, 'tokenizer', 'eval').path if 'tokenizer' in inputs or 'import' not in inputs
                       else inputs[stages[0]].tokenizer)
  model = common.model_from_config(config, tok)
  mesh, rules = common.mesh_and_rules(config)
  examples = evals.select(builders.read(builders.EvalSet, common.tfds_dir(inputs, 'eval'), 'test'),
                          c.max_examples, tuple(c.skip_variants))
  for spec in c.breakdowns:
    evals.breakdown([], spec)  # an unknown family fails now, not after the models ran
  unknown = sorted(set(c.tools) - set(tools_lib.available()))
  if unknown:
    raise ConfigError(f'eval.tools has {unknown[0]!r}; valid: {", ".join(tools_lib.available())}')
  tools = tools_lib.build(c.tools, dict(seed=config.data.seed, **config.data.world))
  agent_cfg = agent.AgentConfig(max_calls=c.max_tool_calls, result_tokens=c.result_tokens)
  out_dir = Path(workdir) / 'eval'
  cards, rows_by_model = {}, {}
  for stage in stages:
    name = MODELS[stage]
    params = common.load_params(inputs[stage], model, mesh, rules)
    max_new_tokens = min(c.max_new_tokens, c.base_max_new_tokens) if stage == 'pretrain' else c.max_new_tokens
    rows = evals.respond(params, model, tok, examples, max_new_tokens, c.batch_size, mesh, rules, config.seed,
                         tools, agent_cfg)
    if jax.process_index() == 0:
      evals.write_traces(out_dir / f'traces_{name}.jsonl', rows)
    rows_by_model[name], cards[name] = rows, evals.report(rows, tuple(c.breakdowns))
    print(f'[eval] {name}: ' + ', '.join(f'{k}={v:.3f}' for k, v in cards[name]['metrics'].items()), flush=True)
  names = list(cards)
  diffs = {f'{b} - {a}': evals.differences(rows_by_model, a, b) for a, b in zip(names, names[1:])}
  baselines = evals.trivial_baselines(examples)
  table = evals.markdown(cards, baselines, diffs)
  if jax.process_index() == 0:
    results = {'models': cards, 'baselines': baselines, 'differences': diffs}
    (out_dir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
    (out_dir / 'report.md').write_text(
        f'# Eval: {len(examples)} prompts per model\n\nEvery value: mean [95% interval]; differences are paired '
        f'over the same prompts (bootstrap).\n\n{table}')
    metrics.log_tables(workdir, 'eval', {f'traces_{name}': rows for name, rows in rows_by_model.items()},
                       {f'{name}/{k}': v for name, card in cards.items() for k, v in card['metrics'].items()})
  print(table, flush=True)
  headline = {f'{name}.{k}': v for name, card in cards.items() for k, v in card['metrics'].items()}
  for name, card in cards.items():  # each set's and breakdown's accuracy with its interval (comparisons show both)
    for row in card['sets']:
      key = f'{name}.acc[{row["family"]}/{row["variant"]}]'
      headline.update({key: row['accuracy'], f'{key}.low': row['low'], f'{key}.high': row['high']})
    for key, est in card['intervals'].items():
      if key.startswith('acc['):
        headline.update({f'{name}.{key}.low': est['low'], f'{name}.{key}.high': est['high']})
  return outputs.Eval(results=str(out_dir / 'results.json'), report=str(out_dir / 'report.md'),
                      metrics={'examples': len(examples), **headline})
