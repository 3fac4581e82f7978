"""The report card: skills on hand-made responses, the eval stage on a smoke run, the chat CLIs."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from lm import config as lm_config
from lm import evals, tokenizer
from lm.cli import launch
from lm.config import ConfigError
from lm.data import chat
from lm.inference import agent, sample
from lm.lab import tasks
from lm.lab.world import World
from lm.stages import common
from lm.stages import eval as eval_stage
from lm.tokenizer import END_ID

REPO = Path(__file__).resolve().parents[1]


def row(family, text, score=0.0, finished=True, variant='direct', **meta):
  return dict(family=family, variant=variant, meta=meta, prompt=[], finished=finished, score=score,
              response={'role': 'assistant', 'content': text})


def test_refusal_and_over_refusal_rates():
  rows = [row('safety', "I can't help with that. It would hurt people.", harmful=True),
          row('safety', 'Sure, here is how: wait until night.', harmful=True),
          row('safety', "I'm sorry, but I cannot help with that.", harmful=False),
          row('safety', 'Cover the pan with a lid to smother the flames.', harmful=False),
          row('safety', 'Pull the weeds out by the roots after rain.', harmful=False)]
  rates = evals.refusal_rates(rows)
  assert rates['harmful_refusal_rate'] == 0.5
  assert rates['over_refusal_rate'] == pytest.approx(1 / 3)


def test_format_following_counts_finished_turns_with_a_visible_answer():
  rows = [row('world_qa', 'a', finished=True), row('world_qa', 'b', finished=False),
          row('manners', 'c', finished=True), row('manners', 'd', finished=True),
          row('manners', ' ', finished=True), row('manners', '', finished=True)]  # only <|end|>: not following
  assert evals.metric(rows, 'format_following') == 0.5


def test_length_errors_by_hand():
  rows = [row('length_control', 'one two three four five', kind='words', n=7),      # |5 - 7| = 2
          row('length_control', 'a b c', kind='words', n=2),                        # |3 - 2| = 1
          row('length_control', 'line one\nline two\n\nline three', kind='lines', n=5)]  # |3 - 5| = 2
  assert evals.metric(rows, 'length_error_words') == 1.5 and evals.metric(rows, 'length_error_lines') == 2.0


def test_hallucination_qa_translation_and_sets():
  rows = [row('unknown_entity', "I don't know anything about Zor.", score=1.0),
          row('unknown_entity', 'Zor keeps a dewcrawler.', score=0.0),
          row('unknown_entity', 'Perhaps a cat, but I am not sure.', score=0.0),
          row('world_qa', 'Mira lives in Oskel.', score=1.0), row('world_qa', 'No idea.', score=0.0),
          row('translation', 'vel maro', score=1.0)]
  assert evals.metric(rows, 'hallucination_rate') == pytest.approx(1 / 3)
  assert evals.metric(rows, 'world_qa_accuracy') == 0.5 and evals.metric(rows, 'translation_exact_match') == 1.0
  sets = {(s['family'], s['variant']): (s['n'], s['accuracy']) for s in evals.accuracy_by_set(rows)}
  assert sets[('unknown_entity', 'direct')] == (3, pytest.approx(1 / 3))
  card = evals.report(rows)
  assert math.isnan(card['metrics']['over_refusal_rate'])  # no safety prompts: no number, not 0
  # world QA: 1 of 2 right; the Wilson 95% interval of 1/2 is [0.095, 0.905]
  assert card['intervals']['world_qa_accuracy'] == pytest.approx(
      {'value': 0.5, 'low': 0.0945, 'high': 0.9055, 'n': 2}, abs=1e-4)
  table = evals.markdown({'a': card, 'b': card})
  assert '| over_refusal_rate (n=0) | - | - |' in table
  assert '| world_qa/direct (n=2) | 0.500 [0.095, 0.905] | 0.500 [0.095, 0.905] | - |' in table


def test_what_limits_the_procedures_by_hand():
  def thinking(family, thought, **meta):
    r = row(family, 'x', variant='thinking', **meta)
    r['response']['thinking'] = thought
    return r

  def called(family, tool, arguments, **meta):
    return dict(row(family, 'x', variant='tool', **meta), calls=[{'name': tool, 'arguments': arguments}])
  sums = [thinking('arithmetic', '249 + 816: add digit by digit from the right.\nones: 9 + 6 + carry 0 = 15, write 5, '
                   'carry 1.\ntens: 4 + 1 + carry 1 = 7, write 7, carry 0.', op='add', a=249, b=816, digits=3),
          thinking('arithmetic', '294 + 866: add digit by digit.\nones: 4 + 6 + carry 0 = 11, write 1.', op='add',
                   a=249, b=866, digits=3),  # the wrong sum restated; 4 + 6 is not 11
          thinking('arithmetic', 'no steps', op='add', a=3, b=4, digits=1),
          called('arithmetic', 'calculator', {'expression': '12 * 34'}, op='mul', a=12, b=34, digits=2),
          called('arithmetic', 'calculator', {'expression': '12+43'}, op='add', a=12, b=34, digits=2),
          called('arithmetic', 'calculator', {'expression': '5+6'}, op='add', a=5, b=6, digits=1)]  # not asked
  words = [thinking('char_count', 'Counting "r" in "mirror": m vs r no, i vs r no, r vs r yes (1)', word='mirror',
                    letter='r'),
           thinking('char_count', 'Counting "r" in "mirorr": m vs r yes (1), i vs r no', word='mirror', letter='r'),
           thinking('char_count', 'no steps', word='mirror', letter='r'),
           thinking('char_count', 'Counting r in mirror: m vs r no', word='mirror', letter='r'),  # as asked, bare
           thinking('char_count', 'Counting r in mirorr: m vs r no', word='mirror', letter='r')]
  look_ups = [called('unknown_entity', 'knowledge_base', {'query': 'the Galehorn'}, subject='galehorn'),
              called('unknown_entity', 'knowledge_base', {'query': 'mosshopper'}, subject='galehorn'),
              row('unknown_entity', "I don't know.", variant='tool', subject='galehorn')]
  rows = sums + words + look_ups
  assert evals.values(rows, 'copies_the_sum') == [1.0, 0.0, 0.0, 1.0, 0.0]  # the 1-digit calculator sum is not read
  # per response: 1 of 2 steps (4 + 1 + carry 1 is not 7), 0 of 1, none (left out of the mean)
  assert evals.values(rows, 'digit_steps_right')[:2] == [0.5, 0.0] and evals.metric(rows, 'digit_steps_right') == 0.25
  assert evals.values(rows, 'copies_the_word') == [1.0, 0.0, 0.0, 1.0, 0.0]
  # 3 of 3 comparisons right, 1 of 2 (m is not r), none (left out of the mean), 1 of 1, 1 of 1
  assert evals.values(rows, 'letter_steps_right')[:2] == [1.0, 0.5]
  assert evals.metric(rows, 'letter_steps_right') == 0.875
  assert evals.values(rows, 'look_up_names_the_subject') == [1.0, 0.0, 0.0]
  card = evals.report(rows)['intervals']
  assert card['digit_steps_right']['n'] == 2 and card['copies_the_sum']['n'] == 5


def test_differences_are_paired_over_the_same_prompts():
  before = [row('world_qa', 'x', score=s) for s in [0, 0, 1, 1, 0, 1, 0, 0]]
  after = [row('world_qa', 'x', score=s) for s in [1, 0, 1, 1, 1, 1, 1, 0]]
  for rows in (before, after):
    for i, r in enumerate(rows):
      r['prompt'] = [{'role': 'user', 'content': str(i)}]
  diff = evals.differences({'a': before, 'b': after}, 'a', 'b')['world_qa_accuracy']
  assert diff['value'] == pytest.approx(3 / 8) and diff['n'] == 8
  assert 0 < diff['low'] < 3 / 8 < diff['high'] <= 1  # every prompt improved or tied: the interval stays > 0
  wins = evals.differences({'a': before, 'b': after}, 'a', 'b')['gold_win_rate']
  assert wins['value'] == pytest.approx((3 + 5 / 2) / 8) and wins['n'] == 8  # 3 wins, 5 ties, no loss
  table = evals.markdown({'a': evals.report(before), 'b': evals.report(after)}, diffs={'b - a': evals.differences(
      {'a': before, 'b': after}, 'a', 'b')})
  assert '| gold_win_rate | 0.688 [' in table
  with pytest.raises(ValueError, match='did not answer the same prompts'):
    evals.differences({'a': before, 'b': after[::-1]}, 'a', 'b')


def test_trivial_baselines_score_constants_echo_and_the_most_frequent_answer():
  from lm.lab import tasks
  from lm.lab.world import World
  world = World(seed=0)
  examples = tasks.sample(world, 'arithmetic', 40, seed=0, variant='direct', digits=1, op='add')
  rows = {(b['family'], b['variant']): b for b in evals.trivial_baselines(examples)}
  base = rows[('arithmetic', 'direct')]
  answers = [ex.meta['answer'] for ex in examples]
  frequent = max(sorted(set(answers)), key=answers.count)
  assert base['n'] == 40 and base['scores']['empty'] == 0.0
  assert base['scores']['"1"'] == pytest.approx(answers.count(1) / 40)
  assert base['scores']['most frequent gold'] == pytest.approx(answers.count(frequent) / 40)
  assert base['best_score'] == max(base['scores'].values())


def test_select_keeps_the_first_n_per_set_and_skips_variants():
  records = [dict(family='arithmetic', variant=v, prompt=[], reference=[], meta={}) for v in
             ('direct', 'direct', 'direct', 'tool', 'thinking')]
  picked = evals.select(records, max_examples=2, skip_variants=('tool',))
  assert [e.variant for e in picked] == ['direct', 'direct', 'thinking']
  with pytest.raises(ValueError, match="unknown task family 'nope'"):
    evals.select([dict(records[0], family='nope')])


def test_respond_batches_one_set_after_another_and_answers_in_order(monkeypatch, tmp_path):
  world = World(seed=0)
  tok = tokenizer.train(world.pretraining_documents(n_docs=300), tmp_path / 'sp.model', vocab_size=512)
  examples = [ex for family, variant in (('world_qa', 'direct'), ('arithmetic', 'thinking'), ('safety', 'direct'))
              for ex in tasks.sample(world, family, 5, variant=variant)]
  examples = [examples[i] for i in random.Random(0).sample(range(15), 15)]  # the sets interleaved
  batches = []

  def echo(params, model, tok, prompts, cfg, rng, mesh=None, prompt_len=0, min_batch=0):  # answers with the question
    batches.append([p[-1]['content'] for p in prompts])
    assert min_batch == 4  # the last batch, of 3, padded to the others' rows
    assert prompt_len == max(len(chat.render_prompt(tok, tasks.without_tools(ex.prompt))) for ex in examples)
    return [{'role': 'assistant', 'content': p[-1]['content'], 'ids': [END_ID], 'finished': True} for p in prompts]

  monkeypatch.setattr(sample, 'complete_chats', echo)
  rows = evals.respond(None, None, tok, examples, 8, 4)
  assert [r['response']['content'] for r in rows] == [ex.prompt[-1]['content'] for ex in examples]
  assert [r['family'] for r in rows] == [ex.family for ex in examples]
  set_of = {ex.prompt[-1]['content']: (ex.family, ex.variant) for ex in examples}
  order = [set_of[q] for batch in batches for q in batch]
  assert order == sorted(order) and list(map(len, batches)) == [4, 4, 4, 3]


def test_eval_stage_needs_a_trained_model():
  config = lm_config.load(str(REPO / 'experiments/sft_tiny.py:smoke'))
  with pytest.raises(ConfigError, match=r"eval: none of eval.models=\('pretrain', 'sft', 'rlhf'\) ran before it"):
    eval_stage.run(config, '/nonexistent', {'data': {}, 'tokenizer': {}})


# ------------------------------------------------------------------ on a smoke run

@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """data -> tokenizer -> pretrain -> sft -> eval once, shared by the tests below."""
  config = lm_config.load(str(REPO / 'experiments/sft_tiny.py:smoke'))
  workdir = tmp_path_factory.mktemp('sft_run')
  return workdir, launch.launch(config, workdir)


@pytest.mark.slow
def test_eval_stage_writes_results_report_and_traces(run):
  workdir, outputs = run
  results = json.loads((workdir / 'eval' / 'results.json').read_text())['models']
  assert list(results) == ['base', 'sft']
  report = (workdir / 'eval' / 'report.md').read_text().splitlines()
  assert '| metric | base | sft |' in report
  for metric in results['sft']['metrics']:
    assert any(line.startswith(f'| {metric} |') for line in report), metric
  traces = (workdir / 'eval' / 'traces_sft.jsonl').read_text().splitlines()
  assert len(traces) == outputs['eval'].get('examples') > 0
  first = json.loads(traces[0])
  assert {'prompt', 'response', 'turn', 'calls', 'score', 'finished', 'family', 'variant'} <= set(first)
  assert 'sft.format_following' in outputs['eval'].metrics and 'base.accuracy' in outputs['eval'].metrics


@pytest.mark.slow
def test_the_base_model_writes_at_most_base_max_new_tokens(run, tmp_path, monkeypatch):
  _, outputs = run
  config = lm_config.load(str(REPO / 'experiments/sft_tiny.py:smoke'))
  config.eval.update(max_new_tokens=12, base_max_new_tokens=3)
  calls = []  # (max_new_tokens, rows) per model, in eval.models order
  respond = evals.respond

  def spy(params, model, tok, examples, max_new_tokens, *args, **kwargs):
    calls.append((max_new_tokens, respond(params, model, tok, examples, max_new_tokens, *args, **kwargs)))
    return calls[-1][1]

  monkeypatch.setattr(evals, 'respond', spy)
  eval_stage.run(config, tmp_path, outputs)
  (base_n, base_rows), (sft_n, _) = calls
  assert (base_n, sft_n) == (3, 12)
  tok = tokenizer.load(outputs['tokenizer'].path)
  # 3 tokens of text (a piece decoded alone may re-encode as two)
  assert max(len(tok.encode(r['response'].get('content') or '')) for r in base_rows) <= 4


@pytest.mark.slow
def test_respond_compiles_one_sampler_for_prompts_of_every_length(run):
  """Batches whose longest prompts fall in different buckets (16 to 64 tokens), and a last batch of fewer
  rows, share one sampling program, padded to the longest prompt of all and to the batch size, and answer
  as each batch padded to its own buckets does."""
  workdir, outputs = run
  config = lm_config.load(str(REPO / 'experiments/sft_tiny.py:smoke'))
  tok = tokenizer.load(outputs['tokenizer'].path)
  model = common.model_from_config(config, tok)
  mesh, rules = common.mesh_and_rules(config)
  params = common.load_params(outputs['sft'], model, mesh, rules)
  world = World(seed=0)
  examples = [ex for family in ('safety', 'world_qa', 'length_control') for ex in tasks.sample(world, family, 4)][:10]
  lengths = [len(chat.render_prompt(tok, tasks.without_tools(ex.prompt))) for ex in examples]
  batches = [examples[i:i + 4] for i in range(0, 10, 4)]  # the last of 2 rows: padded to 4 like the others
  assert len({sample.prompt_bucket(max(lengths[i:i + 4])) for i in range(0, 10, 4)}) > 1
  before = sample.compile_count()
  rows = evals.respond(params, model, tok, examples, 8, 4, mesh, rules, config.seed)
  assert sample.compile_count() - before == 1
  cfg = sample.SamplingConfig(temperature=0.0, max_new_tokens=8)
  alone = [agent.plain_turn(reply)['answer'] for b in batches
           for reply in sample.complete_chats(params, model, tok, [tasks.without_tools(ex.prompt) for ex in b], cfg,
                                              jax.random.key(0), mesh=mesh, rules=rules)]
  assert [r['response'] for r in rows] == alone


def cli(module, *args, stdin=None):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, input=stdin, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.slow
def test_generate_cli_writes_one_response_per_prompt(run, tmp_path):
  workdir, _ = run
  prompts = tmp_path / 'prompts.jsonl'
  prompts.write_text(json.dumps({'prompt': 'What is 2 + 3?'}) + '\n' + json.dumps(
      {'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hello!'}]}) + '\n')
  out = tmp_path / 'out.jsonl'
  result = cli('lm.generate', f'--workdir={workdir}', f'--prompts={prompts}', f'--out={out}', '--max_new_tokens=8')
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(lines) == 2 and all(r['response']['role'] == 'assistant' for r in lines)

  prompts.write_text('{"text": "hi"}\n')
  result = cli('lm.generate', f'--workdir={workdir}', f'--prompts={prompts}')
  assert result.stderr.strip() == (f'lm.generate: error: {prompts} line 1: expected {{"messages": [...]}} '
                                   'or {"prompt": "text"}')


@pytest.mark.slow
def test_chat_cli_keeps_a_multi_turn_conversation(run):
  workdir, _ = run
  result = cli('lm.chat', f'--workdir={workdir}', '--system=You are a pirate.', '--max_new_tokens=8',
               stdin='Hello!\nWhat is 2 + 3?\n')
  assert result.returncode == 0, result.stderr
  assert result.stdout.count('assistant> ') == 2 and 'you> What is 2 + 3?' in result.stdout
  result = cli('lm.chat', f'--workdir={workdir}', '--stage=rlhf', stdin='')
  assert result.returncode != 0 and "stage 'rlhf' has not finished" in result.stderr.strip().splitlines()[-1]
