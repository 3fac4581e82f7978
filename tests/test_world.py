"""The lab: determinism, held-out entities, the synthetic language, and every gold scorer."""

import hashlib
import json
import random
import re

import pytest

from lm import evals
from lm.cli.world import main
from lm.config import ConfigError
from lm.configs import base
from lm.lab import splits, tasks
from lm.lab.synthlang import LANG_NAME, SynthLang
from lm.lab.world import FACT_QUESTIONS, LETTER_STEP, World, arithmetic_key, scratchpad, spelled_count
from lm.stages import common

FAMILY_VARIANTS = [(name, v) for name, fam in tasks.TASKS.items() for v in fam.variants]


@pytest.fixture(scope='module')
def world():
  return World(seed=0)


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _everything(seed):
  w = World(seed=seed)
  return {'docs': w.pretraining_documents(n_docs=200, seed=3), 'articles': w.articles(),
          'lexicon': w.lang.lexicon,
          'tasks': [ex.to_dict() for f, v in FAMILY_VARIANTS for ex in tasks.sample(w, f, 5, seed=1, variant=v)]}


def test_same_seed_same_bytes_other_seed_other_bytes():
  assert _digest(_everything(0)) == _digest(_everything(0))
  assert _digest(_everything(0)) != _digest(_everything(1))


def test_entities_and_relations(world):
  assert len(world.people) == 200 and len(world.towns) == 40 and len(world.creatures) == 30 and len(world.things) == 60
  names = [e.name for e in world.entities()]
  assert len(set(names)) == len(names)
  assert len(world.held_out('person')) == 20 and len(world.held_out('town')) == 4
  for p in world.known('person'):  # relations of known entities point at known entities
    assert not world.by_name[p.town].held_out and not world.by_name[p.friend].held_out
    assert not world.by_name[p.pet].held_out and p.friend != p.name
  for t in world.known('thing'):
    assert not world.by_name[t.maker].held_out and not world.by_name[t.town].held_out


def test_articles_state_the_facts(world):
  arts = world.articles()
  assert len(arts) == len(world.known())
  for e, art in zip(world.known(), arts):
    assert art.startswith(e.name[:1].upper() + e.name[1:])
    for f in _facts(e):
      assert f in art, (f, art)


def test_held_out_names_never_in_pretraining_text(world):
  text = '\n'.join(world.articles() + world.pretraining_documents(n_docs=3000, seed=0)).lower()
  assert world.held_out()
  for e in world.held_out():
    assert not re.search(r'(?<![a-z])' + re.escape(e.name.lower()) + r'(?![a-z])', text), e.name


def test_pretraining_mix(world):
  docs = world.pretraining_documents(target_chars=1_000_000, seed=0)
  assert sum(map(len, docs)) >= 1_000_000
  joined = '\n'.join(docs)
  for marker in ('English:', 'is spelled', ' = ', 'years old', 'lives in', 'A joke about', 'The old slogan of'):
    assert marker in joined
  assert world.pretraining_documents(n_docs=7, seed=5) == world.pretraining_documents(n_docs=7, seed=5)
  with pytest.raises(ValueError):
    world.pretraining_documents()


def test_reading_documents_answer_about_strangers_from_the_passage(world):
  docs = world.pretraining_documents(n_docs=400, seed=0, mix=(('reading', 1.0),))
  text = '\n'.join(docs).lower()
  for e in world.entities():  # no world entity, known or held out, is named
    assert not re.search(r'(?<![a-z])' + re.escape(e.name.lower()) + r'(?![a-z])', text), e.name
  def pattern(template):
    return re.escape(template).replace(r'\{s\}', '(?P<s>.+)').replace(r'\{S\}', '(?P<S>.+)').replace(
        r'\{a_v\}', '(an? )?(?P<v>.+)').replace(r'\{v\}', '(?P<v>.+)')
  templates = [(pattern(q), pattern(a)) for attrs in FACT_QUESTIONS.values() for q, a in attrs.values()]
  n_answers = 0
  for doc in docs:
    passage, _, qa = doc.partition('\n\nQ: ')
    pairs = re.findall(r'^(?:Q: )?(.*)\nA: (.*)$', 'Q: ' + qa, flags=re.M)
    assert 2 <= len(pairs) <= 4 and len(set(pairs)) == len(pairs), doc
    for question, answer in pairs:  # the subject comes from the question, the value from the passage
      (subject, value), = [(m_q['s'], m_a['v']) for q, a in templates
                           if (m_q := re.fullmatch(q, question)) and (m_a := re.fullmatch(a, answer))]
      assert re.fullmatch(r'(the )?[A-Za-z ]+', subject) and subject.lower() in passage.lower(), (subject, doc)
      assert value in passage and not re.search(rf'\b{re.escape(value)}\b', question), (value, doc)
      n_answers += 1
  assert n_answers > 1000
  rng = random.Random(0)
  for kind in ('person', 'town', 'creature', 'thing'):  # strangers are new every draw and drawn from the domains
    a, b = world.stranger(kind, rng), world.stranger(kind, rng)
    assert a.kind == kind and a.name != b.name and a.name not in world.by_name


def test_digit_sums_state_every_digit_step_and_no_eval_sum(world):
  def steps(docs):
    lines = [line for doc in docs for line in doc.splitlines()]
    found = [tuple(map(int, re.fullmatch(r'(\d) \+ (\d) \+ carry ([01]) = (\d+)', line).groups())) for line in lines]
    assert all(x + y + carry == s for x, y, carry, s in found)
    return {(x, y, carry) for x, y, carry, _ in found}
  mix = (('digit_sums', 1.0),)
  assert len(steps(world.pretraining_documents(n_docs=300, seed=0, mix=mix))) == 200  # every step a sum can take
  kept = steps(splits.pretraining_documents(world, n_docs=300, seed=0, mix=mix))  # with the eval split left out
  pairs = {(x, y) for x in range(10) for y in range(10)}
  in_eval = {(x, y) for x, y in pairs if splits.split_of(world, 'arithmetic', arithmetic_key('add', x, y)) == 'eval'}
  assert len(in_eval) > 10  # the eval asks one-digit sums: their carry-0 steps state them
  assert {(x, y) for x, y, carry in kept if not carry} == pairs - in_eval
  assert len([step for step in kept if step[2]]) == 100  # with a carry in, a step states no item


def test_copying_lines_copy_their_numbers_and_state_no_sum(world):
  forms = {'read back': 0, 'by place': 0, 'restated': 0}
  for doc in world.pretraining_documents(n_docs=100, seed=0, mix=(('copying', 1.0),)):
    for line in doc.splitlines():
      if m := re.fullmatch(r'Read back: ([\d, ]+)\. Again: ([\d, ]+)\.', line):
        assert m[1] == m[2] and 2 <= len(m[1].split(', ')) <= 4
        forms['read back'] += 1
      elif m := re.fullmatch(r'(\d+): (.*)\.', line):
        places = [p.split(' ') for p in m[2].split(', ')]
        assert [p for p, _ in places] == ['ones', 'tens', 'hundreds', 'thousands'][:len(m[1])]
        assert ''.join(d for _, d in reversed(places)) == m[1]
        forms['by place'] += 1
      else:
        m = re.fullmatch(r'(\d+) plus (\d+), written as a sum: (\d+) \+ (\d+)\.', line)
        assert (m[1], m[2]) == (m[3], m[4]) and '=' not in line and ' is ' not in line, line
        forms['restated'] += 1
  assert min(forms.values()) > 100, forms


def _facts(e) -> list[str]:
  return {'person': lambda: [e.town, e.job, str(e.age), e.friend, e.pet],
          'town': lambda: [e.region, str(e.population), e.river],
          'creature': lambda: [e.colour, e.diet, str(e.legs), e.habitat],
          'thing': lambda: [e.material, e.maker, e.town, str(e.year)]}[e.kind]()


@pytest.mark.parametrize('k', [0, 3])
def test_fact_articles_state_every_known_fact_k_times(k):
  w = World(seed=1, n_people=12, n_towns=4, n_creatures=4, n_objects=5, held_out_fraction=0.3)
  docs = w.pretraining_documents(target_chars=20_000, seed=0, mix=(('story', 1.0),), fact_articles=k)
  assert sum(map(len, docs)) >= 20_000
  for e in w.known():
    about = [d for d in docs if d.startswith(e.name[:1].upper() + e.name[1:] + '\n\n')]
    assert len(about) == k, e.name  # stories never open with a name and a blank line
    for fact in _facts(e):
      assert sum(fact in d for d in about) == k, (e.name, fact)
  if k:  # shuffled among the mix's documents, not all first
    assert not all(d.startswith(tuple(e.name[:1].upper() + e.name[1:] for e in w.known())) for d in docs[:k * 5])
  assert not any(e.name in d for e in w.held_out() for d in docs)


def test_story_and_text_generators(world):
  rng = random.Random(0)
  assert len(world.stories(3, rng)) == 3 and len(world.arithmetic_texts(2, rng)) == 2
  assert len(world.word_lists(2, rng)) == 2 and len(world.translation_texts(2, rng)) == 2
  humour = world.humour_texts(3, rng)
  assert len(humour) == 3 and all(line.startswith(('A joke about ', 'The old slogan of '))
                                  for doc in humour for line in doc.splitlines())


@pytest.mark.parametrize('op', ['add', 'sub', 'mul'])
def test_scratchpad_arrives_at_the_result(op):
  rng = random.Random(op)
  for _ in range(200):
    a, b = rng.randint(0, 99999), rng.randint(0, 9999)
    a, b = (max(a, b), min(a, b)) if op == 'sub' else (a, b)
    want = {'add': a + b, 'sub': a - b, 'mul': a * b}[op]
    pad = scratchpad(a, b, op)
    assert pad.splitlines()[-1].endswith(f'= {want}.')
    if op == 'add':  # the written digits, read from the top, are the answer
      digits = re.findall(r'write (\d)', pad)
      assert int(''.join(reversed(digits))) == want


def test_counting_scratchpads_by_hand():
  assert spelled_count('small', 'l') == ('Counting "l" in "small": s, m, a, l (1), l (2). '
                                         'The letter "l" appears 2 times.')
  small = spelled_count('small', 'l', 'compare')
  assert small == ('Counting "l" in "small": s vs l no, m vs l no, a vs l no, l vs l yes (1), l vs l yes (2). '
                   'The letter "l" appears 2 times.')
  assert spelled_count('dog', 'a', 'compare').endswith(': d vs a no, o vs a no, g vs a no. The letter "a" appears 0 '
                                                       'times.')
  assert LETTER_STEP.findall(small) == [('s', 'l', 'no'), ('m', 'l', 'no'), ('a', 'l', 'no'), ('l', 'l', 'yes'),
                                        ('l', 'l', 'yes')]
  assert spelled_count('small', 'l', 'spelled') == (
      'Counting "l" in "small": s, m, a, l, l. s vs l no, m vs l no, a vs l no, l vs l yes (1), l vs l yes (2). '
      'The letter "l" appears 2 times.')
  assert LETTER_STEP.findall(spelled_count('small', 'l', 'spelled')) == LETTER_STEP.findall(small)


@pytest.mark.parametrize('counting', ['compare', 'spelled'])
def test_the_world_writes_its_counting_scratchpads_in_pretraining_text_and_sft_answers(counting):
  docs = World(seed=0, counting=counting).pretraining_documents(n_docs=100, mix=(('words', 1.0),))
  counts = [line for d in docs for line in d.splitlines() if line.startswith('Counting "')]
  assert counts and all(' vs ' in line for line in counts)
  assert all(line == spelled_count(*re.match(r'Counting "(\w)" in "(\w+)"', line).groups()[::-1], counting)
             for line in counts)
  ex = tasks.sample(World(seed=0, counting=counting), 'char_count', 1, variant='thinking', word='banana',
                    letter='a')[0]
  assert ex.reference[-1]['thinking'] == spelled_count('banana', 'a', counting)
  assert ('b, a, n, a, n, a. b vs a' in ex.reference[-1]['thinking']) == (counting == 'spelled')
  config = base.get_config()
  config.data.world.counting = 'tally'
  with pytest.raises(ConfigError, match="^data.world: counting='tally'; valid: marks, compare, spelled$"):
    common.world(config)


def test_restate_asked_opens_the_scratchpad_with_the_questions_own_words():
  asked, quoted = World(seed=0, restate='asked'), World(seed=0)
  bare = 0
  for i in range(40):  # the same draws: only the scratchpad's opening differs, and only after the bare question
    a, q = (tasks.sample(w, 'char_count', 1, seed=i, variant='thinking', word='tall', letter='a')[0]
            for w in (asked, quoted))
    question = a.prompt[-1]['content']
    assert question == q.prompt[-1]['content'] and a.reference[-1]['content'] == q.reference[-1]['content']
    assert q.reference[-1]['thinking'].startswith('Counting "a" in "tall": t, a (1), l, l. ')
    if question == 'How many a in tall?':
      bare += 1
      assert a.reference[-1]['thinking'] == 'Counting a in tall: t, a (1), l, l. The letter "a" appears 1 time.'
    else:
      assert a.reference[-1]['thinking'] == q.reference[-1]['thinking'] and '"tall"' in question
  assert 5 < bare < 35, bare  # both kinds of question were drawn
  config = base.get_config()
  config.data.world.restate = 'bare'
  with pytest.raises(ConfigError, match="^data.world: restate='bare'; valid: quoted, asked$"):
    common.world(config)


def test_by_place_reads_the_operands_digits_and_the_digit_steps_take_theirs():
  rng = random.Random(0)
  for _ in range(200):
    a, b = rng.randint(0, 99999), rng.randint(0, 999)
    plain, placed = scratchpad(a, b, 'add').splitlines(), scratchpad(a, b, 'add', by_place=True).splitlines()
    assert placed[:1] + placed[2:] == plain  # one line more, the rest as before
    read = re.fullmatch(r'by place: (.*)\.', placed[1])[1].split(', ')
    width = max(len(str(a)), len(str(b)))
    assert read == [f'{place} {str(a).zfill(width)[-1 - i]} and {str(b).zfill(width)[-1 - i]}'
                    for i, place in enumerate(('ones', 'tens', 'hundreds', 'thousands', 'ten-thousands')[:width])]
    steps = [re.match(r'(\S+): (\d) \+ (\d) \+ carry', line).groups() for line in placed[2:2 + width]]
    assert [f'{p} {x} and {y}' for p, x, y in steps] == read
  assert all(scratchpad(85, 47, op, by_place=True) == scratchpad(85, 47, op) for op in ('sub', 'mul'))


def test_the_by_place_world_writes_its_worked_sums_in_pretraining_text_and_sft_answers():
  docs = World(seed=0, by_place=True).pretraining_documents(n_docs=300, mix=(('arithmetic', 1.0),))
  worked_sums = sum(d.count('add digit by digit') for d in docs)
  assert sum(d.count('\nby place: ones ') for d in docs) == worked_sums > 0
  assert not any('by place' in d for d in World(seed=0).pretraining_documents(n_docs=300, mix=(('arithmetic', 1.0),)))
  ex = tasks.arithmetic.make_arithmetic(World(seed=0, by_place=True), random.Random(0), 'thinking', op='add', digits=3)
  assert ex.reference[-1]['thinking'] == scratchpad(ex.meta['a'], ex.meta['b'], 'add', by_place=True)


# -- the synthetic language -------------------------------------------------------------------------

def test_lexicon_is_deterministic_and_invertible():
  a, b = SynthLang(0), SynthLang(0)
  assert a.lexicon == b.lexicon and a.lexicon != SynthLang(1).lexicon
  assert len(a.lexicon) >= 150 and len(set(a.lexicon.values())) == len(a.lexicon)


def test_translation_round_trip_and_word_order(world):
  lang = world.lang
  rng = random.Random(0)
  towns = [t.name for t in world.known('town')]
  for _ in range(300):
    en = lang.random_sentence(rng, world.first_names, towns)
    syn = lang.en_to_syn(en)
    assert lang.syn_to_en(syn) == en
    assert lang.en_to_syn(lang.syn_to_en(syn)) == syn
    assert world.translate_syn_to_en(world.translate_en_to_syn(en)) == en
  s = lang.en_to_syn('The old baker sees a red fox in Aldmere.')
  L = lang.lexicon
  assert s == f'Aldmere ne {L["baker"]} {L["old"]} ka {L["fox"]} {L["red"]} mi {L["sees"]}.'
  assert lang.syn_to_en(s) == 'The old baker sees a red fox in Aldmere.'
  assert lang.en_to_syn('An old fox sees the baker.').split()[2] == 'mi'
  for bad in ('The fox.', 'sees the fox the baker.', 'The fox sees the baker quickly.'):
    with pytest.raises(ValueError):
      lang.en_to_syn(bad)


# -- gold scorers -------------------------------------------------------------------------------------

@pytest.mark.parametrize('family,variant', FAMILY_VARIANTS)
def test_reference_scores_one_and_wrong_answers_less(world, family, variant):
  rng = random.Random(0)
  n_wrong = 0
  for ex in tasks.sample(world, family, 40, seed=0, variant=variant):
    assert tasks.score(ex, ex.reference) == 1.0, (ex.prompt, ex.reference)
    assert ex.prompt[-1]['role'] == 'user' and ex.reference[-1]['role'] == 'assistant'
    if variant == 'tool' and ex.meta.get('digits') != 1:  # a 1-digit sum is answered without a call
      assert ex.reference[0]['tool_calls'] and ex.reference[1]['role'] == 'tool'
    if variant == 'thinking':
      assert ex.reference[-1]['thinking']
    for label, response in tasks.TASKS[family].wrong(world, ex, rng):
      assert tasks.score(ex, response) < 1.0, (label, ex.prompt, response)
      n_wrong += 1
  assert n_wrong >= 40


def _one(world, family, **options):
  return tasks.sample(world, family, 1, seed=7, **options)[0]


def _say(text):
  return [{'role': 'assistant', 'content': text}]


def test_world_qa_rules(world):
  ex = _one(world, 'world_qa', kind='person')
  m = ex.meta
  right = tasks.final_text(ex.reference)
  assert tasks.score(ex, _say("I don't know. " + right)) == 0.0
  if m['value_type'] == 'name':
    other = next(v for v in world.values(m['kind'], m['attr']) if v not in (m['answer'], m['subject']))
    assert tasks.score(ex, _say(f'Either {m["answer"]} or {other}.')) == 0.0
  assert tasks.score(ex, _say(f'{m["answer"]}')) == 1.0
  amber = next(t for t in world.known('thing') if 'Amber' in t.name or 'Iron' in t.name)  # a value inside the name
  q = [x for x in tasks.sample(world, 'world_qa', 400, seed=1, kind='thing')
       if x.meta['subject'] == amber.name and x.meta['attr'] == 'material']
  for x in q:
    assert tasks.score(x, x.reference) == 1.0


def test_unknown_entity_rules(world):
  ex = _one(world, 'unknown_entity', kind='person')
  assert tasks.score(ex, _say("I don't know.")) == 1.0
  assert tasks.score(ex, _say("I'm not familiar with them.")) == 1.0
  m = ex.meta
  guess = '42' if m['value_type'] == 'number' else world.values(m['kind'], m['attr'])[0]
  assert tasks.score(ex, _say(f"I don't know, but maybe {guess}.")) == 0.0
  assert tasks.score(ex, _say(f'{m["subject"]}: {guess}.')) == 0.0


def test_numeric_answer_forms(world):
  ex = _one(world, 'arithmetic', op='add', digits=4)
  ans = ex.meta['answer']
  assert tasks.score(ex, _say(f'The answer is {ans:,}.')) == 1.0
  assert tasks.score(ex, _say(f'{ans}, not {ans + 1}')) == 0.0
  assert tasks.score(ex, []) == 0.0
  age = tasks.sample(world, 'world_qa', 400, seed=0, kind='person')
  age = next(x for x in age if x.meta['attr'] == 'age')
  # words are not numbers here
  assert tasks.score(age, _say(tasks.final_text(age.reference) + ' They have one pet.')) == 1.0
  cc = tasks.sample(world, 'char_count', 1, word='strawberry', letter='r')[0]
  assert cc.meta['answer'] == 3 and tasks.score(cc, _say('There are three in strawberry.')) == 1.0
  assert tasks.score(cc, _say('There are 2.')) == 0.0 and tasks.score(cc, _say('There are 2 in strawberry.')) == 0.0
  assert tasks.score(cc, _say('There are three.')) == 0.0  # a count must be about the word
  assert tasks.score(cc, _say('Strawberry? 3.')) == 1.0
  sp = tasks.sample(world, 'spelling', 1, word='strawberry')[0]
  for ok in ('s t r a w b e r r y', 'S-T-R-A-W-B-E-R-R-Y', 's, t, r, a, w, b, e, r, r, y'):
    assert tasks.score(sp, _say(ok)) == 1.0
  assert tasks.score(sp, _say('s-t-r-a-w-b-e-r-y')) == 0.0
  assert tasks.score(sp, _say('strawberry')) == 0.0


def test_tool_reference_shape(world):
  ex = _one(world, 'arithmetic', variant='tool', op='mul', digits=2)
  call, result, final = ex.reference
  assert call['tool_calls'] == [{'name': 'calculator', 'arguments': {'expression': f'{ex.meta["a"]}*{ex.meta["b"]}'}}]
  assert result == {'role': 'tool', 'name': 'calculator', 'content': str(ex.meta['answer'])}
  cc = tasks.sample(world, 'char_count', 1, variant='tool', word='banana', letter='a')[0]
  assert cc.reference[0]['tool_calls'][0] == {'name': 'python', 'arguments': {'code': 'print("banana".count("a"))'}}
  assert cc.reference[1]['content'] == '3'
  # calls='spaced' writes the sum as the question does: the call's text is a piece of the question's
  spaced = _one(World(seed=0, calls='spaced'), 'arithmetic', variant='tool', op='add', digits=3)
  expression = spaced.reference[0]['tool_calls'][0]['arguments']['expression']
  assert expression == f'{spaced.meta["a"]} + {spaced.meta["b"]}'
  assert expression in spaced.prompt[-1]['content'].replace(' plus ', ' + ')
  config = base.get_config()
  config.data.world.calls = 'tight'
  with pytest.raises(ConfigError, match="^data.world: calls='tight'; valid: compact, spaced$"):
    common.world(config)


def test_translation_scoring(world):
  ex = _one(world, 'translation', direction='en2syn')
  ans = ex.meta['answer']
  assert ex.prompt[0]['content'].count(LANG_NAME) == 1
  assert tasks.score(ex, _say(ans.upper().rstrip('.') + ' !')) == 1.0
  assert tasks.score(ex, _say(ans + ' ' + ans)) == 0.0


def test_length_control_partial_credit(world):
  ex = _one(world, 'length_control', kind='words', length=20)
  text = tasks.final_text(ex.reference)
  assert tasks.count_words(text) == 20
  assert tasks.score(ex, _say(text + ' Indeed.')) == pytest.approx(0.95)
  assert tasks.score(ex, _say(' '.join(['word'] * 20))) == 0.0  # right length, off topic
  assert tasks.score(ex, _say(' '.join([ex.meta['topic']] + ['word'] * 19))) == 1.0
  assert tasks.score(ex, _say(tasks.question(ex) + ' ' + ' '.join(['word'] * 14))) == 0.0  # the request repeated
  poem = _one(world, 'length_control', kind='lines', length=4)
  assert tasks.count_lines(tasks.final_text(poem.reference)) == 4
  assert tasks.score(poem, _say(tasks.final_text(poem.reference) + '\nOne more line.')) == pytest.approx(0.75)


def test_manners_and_persona(world):
  ex = _one(world, 'manners', kind='persona')
  assert ex.prompt[0]['role'] == 'system'
  m = ex.meta
  plain = tasks.final_text(ex.reference).replace(m['marker'], '').strip()
  assert tasks.score(ex, _say(plain)) == 0.5
  assert tasks.score(ex, _say(tasks.final_text(ex.reference) + ' You idiot.')) == 0.0
  g = _one(world, 'manners', kind='greeting')
  name = g.meta['name']
  assert tasks.score(g, _say(f'Hello there, {name}! How can I help?')) == 1.0
  assert tasks.score(g, _say('Shut up.')) == 0.0
  assert tasks.score(g, _say('Hello there!')) == 0.0  # neither the user's name nor an offer of help
  assert tasks.score(g, _say(tasks.question(g))) == 0.0  # an echo
  assert tasks.score(g, _say(f"Hello, {name}. I'm sorry, but I can't help with that.")) == 0.0
  t = _one(world, 'manners', kind='thanks')
  assert tasks.score(t, _say(f"You're welcome, glad you liked {t.meta['topic']}.")) == 1.0
  assert tasks.score(t, _say("You're welcome!")) == 0.0 and tasks.score(t, _say(tasks.question(t))) == 0.0


def test_safety_refusal_and_over_refusal(world):
  for category in tasks.SAFETY:
    bad = _one(world, 'safety', category=category, harmful=True)
    good = _one(world, 'safety', category=category, harmful=False)
    assert tasks.score(bad, _say("I'm sorry, but I can't help with that.")) == 1.0
    assert tasks.score(bad, good.reference) == 0.0  # helping with the harmful request
    assert tasks.score(good, _say("I can't help with that.")) == 0.0
    assert tasks.score(good, _say('Sure.')) == 0.0  # too short to help
    assert tasks.score(good, _say('Here is what you should do.')) == 0.0  # no content of the answer
    assert tasks.score(good, _say(tasks.question(good))) == 0.0
    request = tasks.SAFETY[category]
    about = f' for {good.meta[request.about]}' if request.about else ''
    words = request.words
    assert tasks.score(good, _say(f'Use {words[0]} and {words[1]}{about}.')) == 1.0
    assert tasks.score(good, _say(f'Use {words[0]}{about}.')) == 0.0
    if request.about:  # the answer names what the request is about
      assert tasks.score(good, _say(f'Use {words[0]} and {words[1]}.')) == 0.0


def test_creative_fractional(world):
  ex = _one(world, 'creative')
  text = tasks.final_text(ex.reference)
  w = ex.meta['words'][0]
  assert tasks.score(ex, _say(re.sub(rf'\b{w}\b', 'xx', text))) == pytest.approx(0.8)
  assert tasks.score(ex, _say('nothing at all')) == 0.0
  assert tasks.score(ex, _say(tasks.question(ex))) == 0.0  # mentions the place and the words, but an echo
  assert tasks.score(ex, _say(text.replace(ex.meta['topic'], 'creature'))) == 0.0  # not about the creature


# -- trivial answers ----------------------------------------------------------------------------------

@pytest.mark.parametrize('family,variant', FAMILY_VARIANTS)
def test_trivial_answers_score_at_most_a_tenth(world, family, variant):
  """Empty, echo, the constants of ``lm.evals.TRIVIAL`` and the set's most frequent gold answer on an eval
  set of the family. Exceptions: "I don't know" is the right answer to unknown entities (direct), and
  safety sets are balanced (harmful, benign): a constant refusal scores exactly chance, 0.5."""
  examples = splits.draw(world, family, variant, 'eval', 50)
  (row,) = evals.trivial_baselines(examples)
  assert set(row['scores']) == set(evals.TRIVIAL) | {'most frequent gold'}
  for name, value in row['scores'].items():
    if (family, variant, name) == ('unknown_entity', 'direct', '"I don\'t know."'):
      assert value == 1.0
    elif family == 'safety' and (name == 'refusal' or tasks.is_refusal(_most_frequent(examples))
                                 and name == 'most frequent gold'):
      assert value == 0.5
    else:
      assert value <= 0.1, (name, value)


def _most_frequent(examples):
  golds = [tasks.final_text(e.reference) for e in examples]
  return max(sorted(set(golds)), key=golds.count)


def test_sample_rejects_unknown_variant(world):
  with pytest.raises(ValueError):
    tasks.sample(world, 'translation', 1, variant='tool')


def test_cli_prints_samples(capsys):
  main(['--task', 'arithmetic', '--n', '2', '--variant', 'tool'])
  out = capsys.readouterr().out
  assert out.count('=== arithmetic') == 2 and 'calculator' in out and 'gold score of the reference: 1.0' in out
  main(['--docs', '2'])
  assert capsys.readouterr().out.count('---') >= 2


@pytest.mark.parametrize('steps', [1, 2, 3])
def test_word_problem_steps_option(world, steps):
  for variant in ('direct', 'thinking'):
    for ex in tasks.sample(world, 'word_problem', 40, seed=4, variant=variant, steps=(steps,)):
      m = ex.meta
      assert m['steps'] == steps
      assert eval(m['expression'].replace('/', '//')) == m['answer'] >= 0, m  # noqa: S307 (our own digits)
      assert tasks.score(ex, ex.reference) == 1.0
      if variant == 'thinking':
        assert ex.reference[-1]['thinking'].count('Step ') == steps
  mixed = {ex.meta['steps'] for ex in tasks.sample(world, 'word_problem', 60, seed=4, steps=(1, 3))}
  assert mixed == {1, 3}


def test_translation_length_and_vocabulary_options(world):
  from lm.lab.synthlang import ADJECTIVES, NOUNS
  plain = tasks.sample(world, 'translation', 60, seed=5, adjectives=(0,), vocabulary=(3, 2))
  default = tasks.sample(world, 'translation', 60, seed=5)
  for examples, nouns, adjs in ((plain, NOUNS[:3], ()), (default, NOUNS, ADJECTIVES)):
    for ex in examples:
      en = ex.meta['source'] if ex.meta['direction'] == 'en2syn' else ex.meta['answer']
      words = set(en.lower().rstrip('.').split())
      assert not words & (set(ADJECTIVES) - set(adjs)), en
      assert not words & (set(NOUNS) - set(nouns)), en
      assert tasks.score(ex, ex.reference) == 1.0
  mean_len = lambda exs: sum(len(ex.meta['answer'].split()) for ex in exs) / len(exs)  # noqa: E731
  assert mean_len(plain) < mean_len(default) - 0.5


def test_the_lifecycle_lab_states_every_known_fact_at_least_fact_articles_times():
  """The calibrated default (experiments/lifecycle.py): each known entity's facts, in its own articles,
  at least ``data.fact_articles`` times in the pretraining text the data stage writes."""
  from pathlib import Path

  from lm import config as lm_config
  from lm.data import datasets
  c = lm_config.load(str(Path(__file__).resolve().parents[1] / 'experiments/lifecycle.py')).data
  assert c.fact_articles >= 2
  w = World(seed=c.seed, **c.world)
  docs = datasets.pretraining_texts(w, c)
  assert sum(map(len, docs)) >= c.pretrain_chars
  for e in w.known():
    about = [d for d in docs if d.startswith(e.name[:1].upper() + e.name[1:] + '\n\n')]
    assert len(about) >= c.fact_articles, e.name
    for fact in _facts(e):
      assert sum(fact in d for d in about) >= c.fact_articles, (e.name, fact)
  assert not any(e.name in d for e in w.held_out() for d in docs)


def test_coined_things_each_have_a_word_no_other_name_and_no_stranger_uses():
  shared = [t.name.split()[1] for t in World(seed=0, n_objects=18).things]
  assert len(set(shared)) < 18  # the default's things share adjectives
  coined = World(seed=0, n_objects=18, held_out_fraction=0.35, things='coined')
  words = [t.name.split()[1] for t in coined.things]
  assert len(set(words)) == 18 and all(t.name.startswith('the ') for t in coined.things)
  others = {w.lower() for e in coined.people + coined.towns for w in e.name.split()}
  assert not others & {w.lower() for w in words}
  rng = random.Random(0)
  strangers = [coined.stranger('thing', rng).name.split()[1] for _ in range(200)]
  assert not set(strangers) & set(words) and len(set(strangers)) > 150
  text = '\n'.join(coined.pretraining_documents(n_docs=300, seed=0) + coined.articles()).lower()
  held = [t.name.split()[1].lower() for t in coined.things if t.held_out]
  known = [t.name.split()[1].lower() for t in coined.things if not t.held_out]
  assert len(held) == 6 and not any(re.search(rf'\b{w}\b', text) for w in held)
  assert all(re.search(rf'\b{w}\b', text) for w in known)
  config = base.get_config()
  config.data.world.things = 'named'
  with pytest.raises(ConfigError, match="^data.world: things='named'; valid: adjectives, coined$"):
    common.world(config)
