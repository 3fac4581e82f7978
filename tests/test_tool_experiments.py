"""The thinking, tools and tokenization experiments: their configs, and tools_vs_none end to end."""

import json
from pathlib import Path

import pytest

from lm import config as lm_config
from lm import evals
from lm.cli import launch
from lm.lab import tasks

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = {  # experiment -> {variant: what its overrides must set}
    'thinking_vs_direct': {'direct': {'sft.thinking': False}, 'thinking': {'sft.thinking': True}},
    'tools_vs_none': {'none': {'sft.tools': False, 'eval.tools': ()},
                      'tools': {'sft.tools': True, 'eval.tools': tasks.TOOL_NAMES}},
    'tokenization_counting': {'bpe': {'tokenizer.kind': 'bpe', 'sft.thinking': False},
                              'char': {'tokenizer.kind': 'char', 'sft.thinking': False},
                              'bpe_spelled': {'tokenizer.kind': 'bpe', 'sft.thinking': True}},
}


def _get(config, dotted):
  for key in dotted.split('.'):
    config = config[key]
  return tuple(config) if isinstance(config, (list, tuple)) else config


@pytest.mark.parametrize('name', sorted(EXPERIMENTS))
@pytest.mark.parametrize('arg', ['', ':smoke'])
def test_experiment_configs_compose(name, arg):
  config = lm_config.load(str(REPO / f'experiments/{name}.py{arg}'))
  assert config.stages[-2:] == ('sft', 'eval') and config.eval.models == ('sft',)
  for family, variant, _ in config.data.sft_mix:
    assert variant in tasks.TASKS[family].variants
  for family, variant in config.data.eval_sets:
    assert variant in tasks.TASKS[family].variants
  for spec in config.eval.breakdowns:
    evals.breakdown([], spec)
  assert set(config.variants) == set(EXPERIMENTS[name])
  for variant, expected in EXPERIMENTS[name].items():
    resolved = lm_config.with_overrides(config, dict(config.variants[variant]), prefix='')
    assert {k: _get(resolved, k) for k in expected} == expected
  with pytest.raises(ValueError, match=f"unknown experiments/{name}.py argument 'big'; valid: smoke"):
    lm_config.load(str(REPO / f'experiments/{name}.py:big'))


def test_tools_vs_none_end_to_end(tmp_path):
  config = lm_config.load(str(REPO / 'experiments/tools_vs_none.py:smoke'))
  results = launch.launch(config, tmp_path)
  table = (tmp_path / 'comparison.md').read_text().splitlines()
  header = [c.strip() for c in table[0].strip('|').split('|')]
  for column in ('eval.sft.acc[unknown_entity/tool]', 'eval.sft.acc[world_qa]', 'eval.sft.tool_calls_per_answer',
                 'sft.train_rows'):
    assert column in header
  assert any(c.startswith('eval.sft.acc[arithmetic:digits=') for c in header)
  assert [line.split('|')[1].strip() for line in table[2:]] == ['none', 'tools']
  # without tools, SFT leaves the tool conversations out and the eval removes the tools offer
  assert results['none']['sft'].get('train_rows') < results['tools']['sft'].get('train_rows')
  for variant, offered in (('none', False), ('tools', True)):
    rows = [json.loads(line) for line in (tmp_path / variant / 'eval' / 'traces_sft.jsonl').read_text().splitlines()]
    assert {'turn', 'calls', 'response', 'score'} <= set(rows[0])
    tool_sets = [r for r in rows if r['variant'] == 'tool']
    assert tool_sets and all(tasks.offers_tools(r['prompt']) == offered for r in tool_sets)
    assert all(r['turn'][-1]['role'] == 'assistant' for r in rows)
