"""The subjective families' parts on hand-written answers, lay SFT writers, and the per-family reward metrics
and report table."""

import dataclasses
import hashlib
import json
import random

import numpy as np
import pytest

from lm.configs import base
from lm.data import datasets
from lm.lab import agreement, raters, splits, tasks
from lm.lab.tasks import joke, slogan
from lm.lab.world import World, stale_jokes, stale_slogans
from lm.report import card
from lm.rl import reward_model


@pytest.fixture(scope='module')
def world():
  return World(seed=0)


def _say(text):
  return [{'role': 'assistant', 'content': text}]


def _joke(world, kind, style):
  return next(ex for ex in tasks.sample(world, 'joke', 300, seed=3, style=style)
              if world.by_name[ex.meta['entity']].kind == kind)


def test_joke_parts_by_hand(world):
  ex = _joke(world, 'creature', 'question')
  c = world.by_name[ex.meta['entity']]
  other_diet = next(d for d in ('fish', 'berries', 'grass') if d != c.diet)
  parts = lambda text: joke.joke_parts(ex, _say(text))
  assert parts(f'Why does the {c.name} hum? It ate {c.diet} for breakfast.') == \
      {'pun': 1.0, 'form': 1.0, 'fresh': 1.0, 'brevity': 1.0}
  assert parts(f'Why does the {c.name} hum? It ate {other_diet} for breakfast.')['pun'] == 0.0  # not its diet
  assert parts(f'Why does the {c.name} hum? It ate {c.diet} and {other_diet}.')['pun'] == 0.0  # two diets
  assert parts(f'The {c.name} ate {c.diet} for breakfast and hummed.')['form'] == 0.5  # a one-liner, not asked
  assert parts(f'Why does the {c.name} hum?')['form'] == 0.0  # no punchline
  assert parts(f'The {c.name} hums.')['form'] == 0.0  # neither shape (a one-liner has five words or more)
  stale = stale_jokes(c)[0]
  assert parts(stale)['fresh'] == 0.0
  # half of its 4-grams from the old joke (the four of "why did the X cross the road"), half new
  assert parts(f'Why did the {c.name} cross the road? I ate its breakfast.')['fresh'] == pytest.approx(0.5)
  words = ' '.join(['very'] * 30)
  assert parts(f'Why does the {c.name} hum? It ate {c.diet} {words}.')['brevity'] == pytest.approx((50 - 38) / 25)
  assert parts(f'Why does the {c.name} hum? It ate {c.diet} {words} {words}.')['brevity'] == 0.0
  zero = dict.fromkeys(joke.TASTE_MEAN, 0.0)
  assert parts(f'Why does the cat hum? It ate {c.diet} for breakfast.') == zero  # not about the entity
  assert parts(tasks.question(ex)) == zero and parts('') == zero


def test_knock_knock_frame_is_not_stale(world):
  ex = _joke(world, 'town', 'knock-knock')
  t = world.by_name[ex.meta['entity']]
  ours = f"Knock knock. Who's there? {t.name}. {t.name} who? {t.name}, where the River {t.river} sings."
  assert joke.joke_parts(ex, _say(ours)) == {'pun': 1.0, 'form': 1.0, 'fresh': 1.0, 'brevity': 1.0}
  assert joke.joke_parts(ex, _say(stale_jokes(t)[1]))['fresh'] == 0.0
  assert joke.style_of(ours) == 'knock-knock' and joke.style_of(f'{t.name} is small. Very small.') is None


def test_slogan_parts_by_hand(world):
  ex = next(e for e in tasks.sample(world, 'slogan', 100, seed=2, audience='children')
            if world.by_name[e.meta['entity']].kind == 'town')
  t = world.by_name[ex.meta['entity']]
  a, b, c = slogan.ALLITERATIVE[slogan.initial(t)]
  parts = lambda text: slogan.slogan_parts(ex, _say(text))
  best = f'{t.name}: {a}, {b} and by the River {t.river}. Come, children!'
  assert parts(best) == dict.fromkeys(slogan.TASTE_MEAN, 1.0)
  assert parts(f'{t.name}: nice and old.')['alliteration'] == 0.0
  assert parts(f'{t.name}, {a} and {b}!')['alliteration'] == 1.0
  assert parts(f'{t.name}: {a}, {b}. Come, children!')['fact'] == 0.0
  assert parts(f'{t.name} in the {t.region}: {a}, {b}, {c}.')['fact'] == 1.0
  assert parts(f'{t.name}: {a}, {b}. Come, travellers!')['audience'] == 0.0
  assert parts(f'{t.name}: {" ".join(["lovely"] * 17)}, {a}, {b}.')['brevity'] == pytest.approx((24 - 20) / 12)
  assert parts(stale_slogans(t)[0])['fresh'] == 0.0
  assert parts(f'Another town: {a}, {b}. Come, children!') == dict.fromkeys(slogan.TASTE_MEAN, 0.0)


def test_gold_is_the_expected_utility_over_tastes(world):
  for family, module in (('joke', joke), ('slogan', slogan)):
    assert sum(module.TASTE_MEAN.values()) == pytest.approx(1.0)
    for ex in tasks.sample(world, family, 10, seed=6):
      for _, response in tasks.TASKS[family].wrong(world, ex, random.Random(0)):
        parts = tasks.TASKS[family].taste.parts(ex, response)
        assert tasks.score(ex, response) == pytest.approx(sum(module.TASTE_MEAN[p] * v for p, v in parts.items()))


def test_alternatives_trade_parts_off(world):
  """The joke alternatives each miss a different part: no one taste ranks them the same as every other."""
  ex = _joke(world, 'person', 'one-liner')
  by_label = {label: joke.TASTE.vector(ex, r) for label, r in joke.wrong_joke(world, ex, random.Random(1))}
  assert by_label['stale'] == (1.0, 1.0, 0.0, 1.0) and by_label['no_pun'][0] == 0.0
  assert by_label['other_style'] == (1.0, 0.5, 1.0, 1.0) and by_label['rambling'][3] < 0.5


def test_pretraining_tells_old_jokes_and_slogans_never_a_reference(world):
  docs = '\n'.join(splits.pretraining_documents(world, n_docs=3000))
  assert docs.count('A joke about ') > 100 and docs.count('The old slogan of ') > 50
  for family in ('joke', 'slogan'):
    for ex in splits.draw(world, family, 'direct', 'eval', 50):
      assert tasks.final_text(ex.reference) not in docs


def test_lay_writers_replace_a_fraction_of_sft_answers(world):
  c = base.get_config().data
  c.unlock()
  c.sft_examples = 200
  experts = datasets.sft_examples(world, c)
  c.sft_writers = 0.25
  mixed = datasets.sft_examples(world, c)
  assert [e.prompt for e in mixed] == [e.prompt for e in experts]  # the same prompts, other writers
  lay = [m for m, e in zip(mixed, experts) if m.reference != e.reference]
  assert 0.45 * 150 < len(lay) <= 150  # 150 lay-written; some of them wrote the reference itself
  assert np.mean([tasks.score(m, m.reference) for m in mixed]) < np.mean([tasks.score(e, e.reference) for e in experts])
  assert [e.reference for e in datasets.sft_examples(world, c)] == [e.reference for e in mixed]  # deterministic
  c.sft_writers = 1.5
  with pytest.raises(ValueError, match='data.sft_writers'):
    datasets.sft_examples(world, c)


def test_expert_panel_records_are_deterministic(world):
  def digest(seed, **panel):
    records = raters.preference_dataset(world, 40, panel=raters.Panel(noise=0.2, seed=seed, **panel), seed=0)
    return hashlib.sha256(json.dumps([r['rater_rankings'] for r in records]).encode()).hexdigest()
  assert digest(0, experts=0.4) == digest(0, experts=0.4) != digest(1, experts=0.4)
  assert digest(0, experts=0.4) != digest(0, experts=None)


def test_heldout_metrics_per_family_by_hand():
  records = [{'family': 'arithmetic', 'rater_rankings': [[0, 1, 2], [0, 1, 2]], 'ranking': [0, 1, 2],
              'gold_utilities': [1.0, 0.5, 0.0], 'responses': [[]] * 3},
             {'family': 'joke', 'rater_rankings': [[0, 1, 2], [2, 1, 0]], 'ranking': [1, 0, 2],
              'gold_utilities': [1.0, 0.8, 0.0], 'responses': [[]] * 3},
             {'family': 'slogan', 'rater_rankings': [[2, 1, 0], [2, 0, 1]], 'ranking': [2, 1, 0],
              'gold_utilities': [0.1, 0.5, 0.9], 'responses': [[]] * 3}]
  rewards = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
  rows = {'ranks': np.stack([agreement.ranks([r['ranking']])[0] for r in records]),
          'gold_utilities': np.array([r['gold_utilities'] for r in records])}
  m = reward_model.heldout_metrics(rewards, records, rows)
  assert m['heldout_gold_accuracy[arithmetic]'] == 1.0 and m['heldout_panel_accuracy[arithmetic]'] == 1.0
  assert m['heldout_gold_accuracy[joke]'] == 0.0  # reversed: every pair wrong
  assert m['heldout_panel_accuracy[joke]'] == pytest.approx(1 / 3)  # panel 1 > 0 > 2: only 1 > 0 right
  assert m['heldout_gold_accuracy[domain:subjective]'] == pytest.approx(3 / 6)  # slogan 3 of 3, joke 0 of 3
  assert m['heldout_prompts[domain:subjective]'] == 2 and m['heldout_prompts[objective]'] == 1
  assert m['heldout_kendall_w[arithmetic]'] == pytest.approx(1.0) and m['heldout_kendall_w[joke]'] == pytest.approx(0.0)
  slogan_ranks = agreement.ranks([[2, 1, 0], [2, 0, 1]])
  assert m['heldout_alpha[slogan]'] == pytest.approx(agreement.krippendorff_alpha(slogan_ranks))
  assert m['heldout_gold_accuracy'] == pytest.approx(6 / 9)  # the overall keys as before


def test_report_card_tabulates_agreement_and_accuracy_per_family(tmp_path):
  out = {'eval_panel_accuracy': 0.7, 'heldout_prompts[joke]': 4, 'heldout_kendall_w[joke]': 0.41,
         'heldout_alpha[joke]': 0.22, 'heldout_panel_accuracy[joke]': 0.6, 'heldout_gold_accuracy[joke]': 0.55,
         'heldout_prompts[domain:math]': 9, 'heldout_kendall_w[domain:math]': 0.8, 'heldout_alpha[domain:math]': 0.7,
         'heldout_panel_accuracy[domain:math]': 0.9, 'heldout_gold_accuracy[domain:math]': 0.85}
  section = card.reward_section(card.Run(tmp_path, {}, {'reward': out}, []))
  tables = [b for b in section.blocks if b[0] == 'table']
  header, rows = tables[-1][1], tables[-1][2]
  assert header[0] == 'family or domain' and header[2] == "Kendall's W"
  assert rows == [['joke', '4', '0.410', '0.220', '0.600', '0.550'],
                  ['domain:math', '9', '0.800', '0.700', '0.900', '0.850']]


def test_subjective_family_fields():
  for name in ('joke', 'slogan'):
    fam = tasks.TASKS[name]
    assert fam.domain == 'subjective' and dataclasses.is_dataclass(fam.taste) and fam.score == fam.taste.score
  assert {f.domain for f in tasks.TASKS.values()} == set(tasks.DOMAINS) | {'general'}
