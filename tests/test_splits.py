"""Splits of the lab's items: no key in two splits (any template, with or without tools), pretraining text
without eval items of the text families, eval draws distinct, balanced and spread, one-line errors."""

import re
from collections import Counter, defaultdict

import pytest

from lm.configs import base
from lm.data import datasets
from lm.lab import splits, tasks
from lm.lab.world import FACT_QUESTIONS, SPELL_WORDS, World, a_an, arithmetic_key, cap, char_count_key, subject

FAMILY_VARIANTS = [(name, v) for name, fam in tasks.TASKS.items() for v in fam.variants]


@pytest.fixture(scope='module')
def config():
  return base.get_config()


@pytest.fixture(scope='module')
def world(config):
  return World(seed=config.data.seed, **config.data.world)


@pytest.fixture(scope='module')
def drawn(config, world):
  """Every example the default config's data stages draw, by the split they were drawn for."""
  c, r, s = config.data, config.rlhf, config.synthetic
  rl_train, rl_eval = splits.rl_prompts(world, r.prompt_mix, r.n_prompts - r.eval_prompts, r.eval_prompts)
  return {'eval': datasets.eval_examples(world, c) + rl_eval, 'sft': datasets.sft_examples(world, c),
          'preferences': datasets.preference_prompts(world, c), 'rlhf': rl_train,
          'synthetic': splits.draw_mix(world, s.mix, s.n_prompts, 'synthetic', f'synthetic {s.seed}')}


def _without_tools(ex):
  return tasks.prompt_key(tasks.without_tools(ex.prompt))


def test_no_item_in_two_splits_on_the_default_config(config, world, drawn):
  c = config.data
  assert len(drawn['eval']) == c.eval_examples * len(c.eval_sets) + config.rlhf.eval_prompts
  assert len(drawn['sft']) == c.sft_examples and len(drawn['preferences']) == c.preferences.n_prompts
  splits_of_key, splits_of_prompt = defaultdict(set), defaultdict(set)
  for split, examples in drawn.items():
    for ex in examples:
      key = (ex.family, tasks.key(ex))
      assert splits.split_of(world, *key) == split, (split, key)
      splits_of_key[key].add(split)
      splits_of_prompt[_without_tools(ex)].add(split)
      # the tools offer added or removed: the same item
      other = tasks.Example(ex.family, ex.variant, [{'role': 'system', 'content': tasks.TOOLS_SYSTEM}]
                            + tasks.without_tools(ex.prompt), ex.reference, ex.meta)
      assert tasks.key(other) == key[1]
  assert all(len(s) == 1 for s in splits_of_key.values())
  assert all(len(s) == 1 for s in splits_of_prompt.values())
  families = Counter(f for f, _ in splits_of_key)
  assert set(families) == {f for f, _, _ in c.sft_mix}
  # the eval items SFT used to teach: "I don't know" and looked-up facts about held-out entities
  eval_entities = {ex.meta['subject'] for ex in drawn['eval'] if ex.family == 'unknown_entity'}
  sft_text = ' '.join(m.get('content') or '' for ex in drawn['sft'] for m in ex.prompt + ex.reference)
  assert eval_entities and not any(name in sft_text for name in eval_entities)


@pytest.mark.parametrize('family,variant', FAMILY_VARIANTS)
def test_every_family_and_variant_draws_from_every_split_with_disjoint_keys(world, family, variant):
  owner = {}
  for split in splits.SPLITS:
    for ex in splits.draw(world, family, variant, split, 12):
      key = tasks.key(ex)
      assert owner.setdefault(key, split) == split, (key, owner[key], split)
      assert splits.split_of(world, family, key) == split
  assert len(set(owner.values())) == len(splits.SPLITS)


_OPS = {'+': 'add', 'plus': 'add', '-': 'sub', 'minus': 'sub', '*': 'mul', 'times': 'mul'}
_SUM = re.compile(r'(?<![\d,])(\d+) (\+|-|\*|plus|minus|times) (\d+)(?= = | is |:)')


def _text_items(text):
  """(family, key) of every arithmetic, spelling, char_count and translation item ``text`` states,
  read back from the text (a scratchpad's digit steps, "ones: 3 + 5 + carry 0 = 8", aside)."""
  items = set()
  for line in text.splitlines():
    if ' carry ' in line or ' borrow ' in line:
      continue
    items |= {('arithmetic', arithmetic_key(_OPS[op], int(a), int(b))) for a, op, b in _SUM.findall(line)}
    for w in re.findall(r'^(\w+) is spelled [a-z-]+\.$|^"(\w+)" has \d+ letters: ', line):
      items.add(('spelling', ''.join(w)))
    for letter, w in re.findall(r'Counting "(\w)" in "(\w+)":', line):
      items |= {('spelling', w), ('char_count', char_count_key(w, letter))}
    for letter, w in re.findall(r'The letter "(\w)" appears \d+ times? in "(\w+)"', line):
      items.add(('char_count', char_count_key(w, letter)))
    if line.startswith('English: '):
      items.add(('translation', line[len('English: '):]))
  return items


def test_pretraining_text_states_no_eval_item_of_the_text_families(config, world):
  c = config.data
  stated = _text_items('\n'.join(datasets.pretraining_texts(world, c)))
  by_family = Counter(f for f, _ in stated)
  assert all(by_family[f] > 150 for f in splits.TEXT_FAMILIES), by_family  # the reader finds them
  assert not [item for item in stated if splits.split_of(world, *item) == 'eval']
  # the same documents without leave_out state eval items: the check above can fail
  plain = _text_items('\n'.join(world.pretraining_documents(target_chars=c.pretrain_chars, seed=c.seed)))
  leaked = Counter(f for f, k in plain if splits.split_of(world, f, k) == 'eval')
  assert all(leaked[f] > 20 for f in splits.TEXT_FAMILIES), leaked
  held = '\n'.join(splits.pretraining_documents(world, n_docs=400)).lower()
  for e in world.held_out():  # world facts stay, held-out entities never appear
    assert not re.search(r'(?<![a-z])' + re.escape(e.name.lower()) + r'(?![a-z])', held), e.name


def test_split_of_is_a_stable_weighted_hash(world):
  keys = [arithmetic_key('add', a, b) for a in range(150) for b in range(a, 150)]
  got = Counter(splits.split_of(world, 'arithmetic', k) for k in keys)
  for name, weight in splits.WEIGHTS.items():
    assert got[name] / len(keys) == pytest.approx(weight, abs=0.015), (name, got)
  assert [splits.split_of(world, 'arithmetic', k) for k in keys[:300]] == \
         [splits.split_of(World(seed=0), 'arithmetic', k) for k in keys[:300]]
  other = World(seed=1)
  assert sum(splits.split_of(world, 'arithmetic', k) != splits.split_of(other, 'arithmetic', k) for k in keys) > 1000
  # listed keyspaces are cut in exact proportions
  for family, keys, weights in (('spelling', SPELL_WORDS, splits.WEIGHTS),
                                ('unknown_entity', [e.name for e in world.held_out()],
                                 splits.FAMILY_WEIGHTS['unknown_entity'])):
    got = Counter(splits.split_of(world, family, k) for k in keys)
    for name, weight in weights.items():
      assert abs(got[name] - weight * len(keys)) <= 1, (family, name, got)
  with pytest.raises(ValueError, match="unknown_entity: key 'Nobody' is not in its keyspace"):
    splits.split_of(world, 'unknown_entity', 'Nobody')


def test_eval_draws_are_distinct_balanced_and_spread(world):
  for family, variant in FAMILY_VARIANTS:
    exs = splits.draw(world, family, variant, 'eval', 50)
    assert len(exs) == 50 and len({_without_tools(e) for e in exs}) == 50, family
    fam = tasks.TASKS[family]
    if fam.answer_share:
      golds = Counter(str(e.meta['answer']) for e in exs)
      assert max(golds.values()) <= fam.answer_share * 50, (family, golds.most_common(3))
  safety = splits.draw(world, 'safety', 'direct', 'eval', 50)
  assert [e.meta['harmful'] for e in safety] == [True, False] * 25  # every even prefix balanced
  # training splits may repeat an item, in any template
  sft = splits.draw(world, 'unknown_entity', 'direct', 'sft', 200)
  entities = [e.name for e in world.held_out() if splits.split_of(world, 'unknown_entity', e.name) == 'sft']
  assert {tasks.key(e) for e in sft} == set(entities) and len(entities) < 200


def test_draws_follow_named_streams(world):
  a = splits.draw(world, 'arithmetic', 'tool', 'eval', 20)
  assert [e.to_dict() for e in a] == [e.to_dict() for e in splits.draw(world, 'arithmetic', 'tool', 'eval', 20)]
  other = splits.draw(world, 'arithmetic', 'tool', 'eval', 20, purpose='rlhf eval')
  assert [e.prompt for e in other] != [e.prompt for e in a]
  assert splits.stream(world, 'eval', 'x').random() == splits.stream(World(seed=0), 'eval', 'x').random()
  assert splits.stream(world, 'eval', 'x').random() != splits.stream(world, 'sft', 'x').random()
  mix = [('arithmetic', 'direct', 1.0), ('spelling', 'direct', 2.0), ('safety', 'direct', 0.5)]
  drawn = splits.draw_mix(world, mix, 35, 'sft')
  assert Counter(e.family for e in drawn) == {'arithmetic': 10, 'spelling': 20, 'safety': 5}


def test_rl_prompts_train_and_held_out_apart(world):
  train, held = splits.rl_prompts(world, [('arithmetic', 'tool', 1.0), ('world_qa', 'direct', 1.0)], 40, 10,
                                  keep=lambda e: len(e.prompt[-1]['content']) < 40)
  assert len(train) == 40 and len(held) == 10
  assert not any(tasks.offers_tools(e.prompt) for e in train + held)
  assert all(len(e.prompt[-1]['content']) < 40 for e in train + held)
  assert {splits.split_of(world, e.family, tasks.key(e)) for e in train} == {'rlhf'}
  assert {splits.split_of(world, e.family, tasks.key(e)) for e in held} == {'eval'}


def test_too_few_items_and_unknown_names_are_one_line_errors(world):
  with pytest.raises(ValueError, match=r'^unknown_entity/direct: the eval split holds too few items for 500 '
                                       r'examples \(\d+ drawn in \d+ tries\)$'):
    splits.draw(world, 'unknown_entity', 'direct', 'eval', 500)
  with pytest.raises(ValueError, match="data mix: unknown task family 'world_q'"):
    splits.draw_mix(world, [('world_q', 'direct', 1.0)], 4, 'sft')
  with pytest.raises(ValueError, match=r"translation has variants \('direct',\), not 'tool'"):
    splits.draw(world, 'translation', 'tool', 'sft', 1)
  with pytest.raises(ValueError, match="unknown split 'test'"):
    splits.draw(world, 'translation', 'direct', 'test', 1)


def test_validation_holds_whole_items():
  records = list(range(20))
  keys = ['a', 'b', 'a', 'c', 'b', 'd'] + [f'k{i}' for i in range(14)]
  out = datasets.split(records, 0.1, keys)
  assert out['validation'] == [0, 2] and out['train'] == [r for r in records if r not in (0, 2)]
  out = datasets.split(records, 0.2, keys)  # 4 wanted: a (2) then b (2)
  assert out['validation'] == [0, 1, 2, 4]
  assert datasets.split(records, 0.1) == {'train': records[2:], 'validation': records[:2]}


def test_a_stratified_split_holds_each_stratums_share_of_whole_items():
  # stratum u: one key with 8 records first (the unstratified split would hold only it), then 12 keys
  keys = ['u0'] * 8 + [f'u{i}' for i in range(1, 13)] + [f'w{i}' for i in range(20)] + ['u3', 'w0']
  strata = ['u'] * 20 + ['w'] * 20 + ['u', 'w']
  records = list(range(len(keys)))
  assert datasets.split(records, 0.2, keys)['validation'] == list(range(8))  # u0's 8 records: 8 of 42
  out = datasets.split(records, 0.2, keys, strata)
  held = {keys[r] for r in out['validation']}
  assert held == {'u0', 'w0', 'w1', 'w2'}  # u: 8 of 21 (>= 4); w: w0 (2 records), w1, w2: 4 of 21
  assert sorted(out['train'] + out['validation']) == records
  assert not held & {keys[r] for r in out['train']}


def test_an_item_asked_by_two_families_is_in_one_split(world, drawn):
  """A letter count spells its word out (its thinking): no split counts the letters of a spelling-eval word;
  a persona's question is a world fact: no eval world question is answered in SFT's persona examples."""
  def words(examples, family):
    return {ex.meta['word'] for ex in examples if ex.family == family}

  def facts(examples):
    return {(m['subject'], m['attr']) for m in (ex.meta['qa'] for ex in examples
                                                 if ex.family == 'manners' and ex.meta['kind'] == 'persona')}
  spelled_in_eval = words(drawn['eval'], 'spelling')
  counted = set().union(*(words(examples, 'char_count') for examples in drawn.values()))
  assert spelled_in_eval and counted and not spelled_in_eval & counted
  eval_counts = {(ex.meta['word'], ex.meta['letter']) for ex in drawn['eval'] if ex.family == 'char_count'}
  sft_counts = {(ex.meta['word'], ex.meta['letter']) for ex in drawn['sft'] if ex.family == 'char_count'}
  assert eval_counts and not eval_counts & sft_counts
  eval_facts = {(ex.meta['subject'], ex.meta['attr']) for ex in drawn['eval'] if ex.family == 'world_qa'}
  assert eval_facts and facts(drawn['sft']) and not eval_facts & facts(drawn['sft'])
  held = [w for w in SPELL_WORDS if splits.split_of(world, 'spelling', w) == 'eval']
  assert held and all(splits.split_of(world, 'char_count', char_count_key(w, w[0])) == splits.HELD for w in held)


def test_question_and_answer_documents_state_no_eval_fact(world):
  docs = splits.pretraining_documents(world, n_docs=300, mix=(('qa', 1.0),))
  asked = re.findall(r'^Q: .*\nA: (.*)$', '\n\n'.join(docs), flags=re.M)
  assert len(asked) > 900
  eval_facts = [(e, attr) for kind, attrs in FACT_QUESTIONS.items() for e in world.known(kind) for attr in attrs
                if splits.split_of(world, 'world_qa', f'{e.name} / {attr}') == 'eval']
  stated = set()
  for kind, attrs in FACT_QUESTIONS.items():
    for attr, (_, answer) in attrs.items():
      for e in world.known(kind):
        v = getattr(e, attr)
        text = answer.format(S=cap(subject(e)), v=v, a_v=a_an(v) if isinstance(v, str) else v)
        if text in asked:
          stated.add((e.name, attr))
  assert stated and not stated & {(e.name, attr) for e, attr in eval_facts}
  with pytest.raises(ValueError, match='kinds among article, story'):
    world.pretraining_documents(n_docs=1, mix=(('ads', 1.0),))


def test_task_options_shape_every_split(config, world):
  c = config.data.copy_and_resolve_references()
  c.task_options.arithmetic.ops, c.task_options.arithmetic.digit_range = ('add',), (2, 3)
  c.task_options.char_count.word_lengths = (4, 6)
  options = datasets.task_options(c)
  assert options == {'arithmetic': {'ops': ('add',), 'digit_range': (2, 3)}, 'char_count': {'word_lengths': (4, 6)}}
  for examples in (datasets.eval_examples(world, c), datasets.sft_examples(world, c)):
    sums = [e.meta for e in examples if e.family == 'arithmetic']
    assert sums and {m['op'] for m in sums} == {'add'} and {m['digits'] for m in sums} == {2, 3}
    assert all(len(str(m['a'])) == m['digits'] for m in sums)
    words = [e.meta['word'] for e in examples if e.family == 'char_count']
    assert words and all(4 <= len(w) <= 6 for w in words)
