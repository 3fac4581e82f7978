"""Thinking and tools around the sampler: tool-use data, the SFT switches, scoring the answer only,
breakdowns, and showing a turn's thinking and tool calls apart from its answer."""

import random

import pytest

from lm import evals, stats, tools
from lm.cli import chat as chat_cli
from lm.configs import base as base_config
from lm.data import chat, datasets
from lm.lab import tasks
from lm.lab.world import World
from lm.stages import sft
from lm.tokenizer import END_ID, END_THINK_ID, THINK_ID

WORLD = World()


def test_held_out_facts_are_looked_up_with_the_real_tool():
  kb = tools.get('knowledge_base', world=WORLD)
  examples = tasks.sample(WORLD, 'unknown_entity', 40, seed=1, variant='tool')
  for ex in examples:
    call, result, answer = ex.reference
    assert ex.prompt[0] == {'role': 'system', 'content': tasks.TOOLS_SYSTEM} and tasks.offers_tools(ex.prompt)
    assert call['tool_calls'] == [{'name': 'knowledge_base', 'arguments': {'query': ex.meta['subject'], 'k': 1}}]
    assert result['content'] == kb(call['tool_calls'][0]['arguments']).text  # what the tool really returns
    assert tasks.contains(answer['content'], str(ex.meta['answer'])) and tasks.score(ex, ex.reference) == 1.0
    assert ex.meta['subject'] in {e.name for e in WORLD.held_out()}
  # without the lookup, "I don't know" is no longer the right answer, and a wrong value scores 0
  ex = examples[0]
  assert tasks.score(ex, tasks.say(f"I don't know anything about {ex.meta['subject']}.")) == 0.0
  labels = dict(tasks.TASKS['unknown_entity'].wrong(WORLD, ex, random.Random(0)))
  assert all(tasks.score(ex, msgs) == 0.0 for msgs in labels.values())
  # the direct variant still wants "I don't know"
  direct = tasks.sample(WORLD, 'unknown_entity', 1, seed=1, variant='direct')[0]
  assert not tasks.offers_tools(direct.prompt) and tasks.score(direct, direct.reference) == 1.0


def test_strangers_replace_a_fraction_of_the_unknown_entity_sft_examples():
  c = base_config.get_config().data
  c.unlock()
  c.sft_examples, c.eval_examples = 300, 10
  c.sft_mix = (('unknown_entity', 'direct', 1.0), ('unknown_entity', 'tool', 1.0), ('world_qa', 'direct', 1.0))
  c.eval_sets = (('unknown_entity', 'direct'), ('unknown_entity', 'tool'))
  plain, plain_eval = datasets.sft_examples(WORLD, c), datasets.eval_examples(WORLD, c)
  c.sft_strangers = 0.5
  mixed = datasets.sft_examples(WORLD, c)
  assert datasets.eval_examples(WORLD, c) == plain_eval  # the eval set is the held-out entities', unchanged
  unknown = [i for i, e in enumerate(plain) if e.family == 'unknown_entity']
  strangers = [m for m in mixed if m.meta.get('stranger')]
  assert len(strangers) == round(0.5 * len(unknown)) and len(unknown) > 150
  for m, e in zip(mixed, plain, strict=True):  # an unknown_entity example replaced in place, by one of its variant
    assert m == e or (m.meta.get('stranger') and e.family == 'unknown_entity' and m.variant == e.variant)
  assert len({m.meta['subject'] for m in strangers}) > 0.9 * len(strangers)  # a new name nearly every example
  for m in strangers:
    assert m.meta['subject'] not in WORLD.by_name and tasks.score(m, m.reference) == 1.0
    if m.variant == 'tool':  # looked up as the tool would, answered from the result
      call, result, answer = m.reference
      assert call['tool_calls'] == [{'name': 'knowledge_base', 'arguments': {'query': m.meta['subject'], 'k': 1}}]
      assert result['content'].startswith(f"[1] {m.meta['subject'][:1].upper()}{m.meta['subject'][1:]}: ")
      assert str(m.meta['answer']) in result['content'] and tasks.contains(answer['content'], str(m.meta['answer']))
    else:
      assert m.meta['subject'] in tasks.final_text(m.reference) and tasks.is_idk(tasks.final_text(m.reference))
  c.sft_strangers = 1.5
  with pytest.raises(ValueError, match='data.sft_strangers'):
    datasets.sft_examples(WORLD, c)


def test_tools_are_used_where_they_help_and_not_for_one_digit_sums():
  for ex in tasks.sample(WORLD, 'arithmetic', 60, seed=2, variant='tool'):
    calls = [m for m in ex.reference if m.get('tool_calls')]
    assert tasks.offers_tools(ex.prompt) and tasks.score(ex, ex.reference) == 1.0
    if ex.meta['digits'] == 1:
      assert len(ex.reference) == 1 and not calls and ex.reference[0]['content'].endswith(f"= {ex.meta['answer']}")
    else:
      assert calls[0]['tool_calls'][0]['name'] == 'calculator'
      assert tools.get('calculator')(calls[0]['tool_calls'][0]['arguments']).text == str(ex.meta['answer'])
  digits = {ex.meta['digits'] for ex in tasks.sample(WORLD, 'arithmetic', 60, seed=2, variant='tool')}
  assert 1 in digits and len(digits) > 2
  for ex in tasks.sample(WORLD, 'char_count', 10, seed=3, variant='tool'):
    code = ex.reference[0]['tool_calls'][0]['arguments']
    assert ex.reference[1]['content'] == str(ex.meta['answer']) == tools.get('python')(code).text.strip()
    assert ex.meta['length'] == len(ex.meta['word'])


def test_sft_switches_strip_thinking_and_drop_tool_conversations():
  think = tasks.sample(WORLD, 'arithmetic', 1, seed=4, variant='thinking')[0]
  direct = tasks.sample(WORLD, 'arithmetic', 1, seed=4, variant='direct')[0]
  tool = tasks.sample(WORLD, 'arithmetic', 1, seed=4, variant='tool', digits=3)[0]
  one_digit = tasks.sample(WORLD, 'arithmetic', 1, seed=4, variant='tool', digits=1)[0]
  convs = [e.prompt + e.reference for e in (think, direct, tool, one_digit)]
  assert sft.select(convs) == convs
  stripped = sft.select(convs, thinking=False)
  assert 'thinking' in convs[0][1] and stripped[0] == think.prompt + [{'role': 'assistant',
                                                                        'content': think.reference[0]['content']}]
  assert stripped[1:] == convs[1:]
  assert sft.select(convs, tools=False) == convs[:2]  # the tool offer alone (one_digit) is left out too
  assert sft.select(convs, thinking=False, tools=False) == stripped[:2]


def test_scorers_read_the_answer_not_the_thinking_nor_the_tool_result():
  ex = tasks.sample(WORLD, 'arithmetic', 1, seed=5, variant='thinking', digits=3)[0]
  right, wrong = ex.meta['answer'], ex.meta['answer'] + 1
  assert tasks.score(ex, [{'role': 'assistant', 'thinking': f'so it is {right}', 'content': f'It is {wrong}.'}]) == 0
  assert tasks.score(ex, [{'role': 'assistant', 'thinking': f'so it is {wrong}', 'content': f'It is {right}.'}]) == 1
  turn = [{'role': 'assistant', 'content': '', 'tool_calls': [{'name': 'calculator', 'arguments': {}}]},
          {'role': 'tool', 'content': str(right)}, {'role': 'assistant', 'content': f'It is {wrong}.'}]
  assert tasks.score(ex, turn) == 0
  # what the sampler parses: thinking is kept apart from the content the scorer reads
  class Tok:
    def encode(self, text):
      return [ord(c) + 14 for c in text]

    def decode(self, ids):
      return ''.join(chr(i - 14) for i in ids if i >= 14)
  tok = Tok()
  ids = [THINK_ID, *tok.encode(f'so it is {right}'), END_THINK_ID, *tok.encode(f'It is {wrong}.'), END_ID]
  message = chat.parse(tok, ids)
  assert message == {'role': 'assistant', 'content': f'It is {wrong}.', 'thinking': f'so it is {right}'}
  assert tasks.score(ex, [message]) == 0


def _row(family, variant, score, **meta):
  return {'family': family, 'variant': variant, 'score': score, 'meta': meta, 'finished': True, 'calls': [],
          'response': {'role': 'assistant', 'content': "I don't know" if family == 'unknown_entity' else 'x'}}


def test_breakdowns_and_hallucination_without_tools():
  rows = [_row('arithmetic', 'direct', 1.0, digits=1), _row('arithmetic', 'tool', 0.0, digits=1),
          _row('arithmetic', 'direct', 1.0, digits=3), _row('arithmetic', 'direct', 0.0, digits=3),
          _row('arithmetic', 'direct', 0.0, digits=3), _row('char_count', 'direct', 1.0, length=5),
          _row('unknown_entity', 'direct', 1.0), _row('unknown_entity', 'tool', 0.0, subject='the Amber Lantern')]
  rows[-1]['response']['content'] = 'The Amber Lantern is made of bone.'
  rows[-1]['calls'] = [{'name': 'knowledge_base'}, {'name': 'knowledge_base'}]
  card = evals.report(rows, ('arithmetic:digits', 'arithmetic/direct:digits', 'char_count', 'unknown_entity/tool'))
  m = card['metrics']
  assert m['acc[arithmetic:digits=1]'] == 0.5 and m['acc[arithmetic:digits=3]'] == pytest.approx(1 / 3)
  assert m['acc[arithmetic/direct:digits=1]'] == 1.0 and m['acc[char_count]'] == 1.0
  assert m['acc[unknown_entity/tool]'] == 0.0
  assert card['intervals']['acc[arithmetic:digits=3]'] == stats.mean([1.0, 0.0, 0.0]).to_json()  # n=3 with its interval
  assert m['hallucination_rate'] == 0.0  # the tool row is not a question the model had to decline
  assert m['tool_calls_per_answer'] == 2 / 8
  assert m['look_up_names_the_subject'] == 0.0  # the calls ask for nothing
  with pytest.raises(ValueError, match=r"eval.breakdowns has 'arithmetic:nope': arithmetic examples have no meta "
                                       r"'nope' \(they have digits\)"):
    evals.report(rows, ('arithmetic:nope',))
  with pytest.raises(ValueError, match=r"eval.breakdowns has 'maths': unknown task family 'maths'"):
    evals.breakdown([], 'maths')


def test_a_turn_shows_thinking_calls_and_results_apart_from_the_answer():
  turn = [{'role': 'assistant', 'content': '', 'thinking': 'big numbers\nuse the calculator',
           'tool_calls': [{'name': 'calculator', 'arguments': {'expression': '123*45'}}]},
          {'role': 'tool', 'content': '5535'},
          {'role': 'assistant', 'content': '123 * 45 = 5535'}]
  assert chat_cli.show_turn(turn).splitlines() == [
      '  [think] big numbers', '  [think] use the calculator', '  [tool call] calculator({"expression": "123*45"})',
      '  [tool result] 5535', 'assistant> 123 * 45 = 5535']
  # the chat history keeps the call and its result, and renders as one open-then-closed assistant turn
  history = chat_cli._history(turn)
  assert history == [{'role': 'assistant', 'content': '', 'thinking': 'big numbers\nuse the calculator',
                      'tool_calls': turn[0]['tool_calls']}, {'role': 'tool', 'content': '5535'},
                     {'role': 'assistant', 'content': '123 * 45 = 5535'}]
  # a call left unanswered (over the budget) is dropped, so the conversation can go on
  stopped = [*turn[:2], {'role': 'assistant', 'content': '', 'tool_calls': [{'name': 'calculator', 'arguments': {}}]}]
  assert chat_cli._history(stopped)[-1] == {'role': 'assistant', 'content': ''}
