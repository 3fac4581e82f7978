"""Questions about the world's entities:

  world_qa        a fact about a known entity. 1 iff the gold value is stated, no other value of
                  that attribute is, and the answer is not "I don't know" or a refusal.
  unknown_entity  the same questions about held-out entities. 1 iff the answer says it does not know
                  (``IDK_PHRASES``) and states no value of the attribute (a hedged guess scores 0).
                  Variant ``tool``: the knowledge base is offered, and the reference looks the entity
                  up and answers from the real tool's result; scored by the world_qa rule.

Keys: world_qa, the subject and the attribute asked about; unknown_entity, the held-out entity alone
(every question about it, with or without the knowledge base, is one item: an "I don't know" or a
looked-up fact taught about an entity never meets an eval question about it). Its keyspace is the
held-out entities, listed. Eval sets of both hold no gold value on more than ``ANSWER_SHARE`` of their
items (a most-frequent-value guess scores at most that).

``draw_question``, ``qa_correct`` and the answer sentences also serve ``manners`` (persona answers).
"""

import re

from lm.lab.knowledge import look_up, look_up_stranger
from lm.lab.tasks.base import (
  ANSWER_SHARE,
  Example,
  Family,
  ask,
  contains,
  final_text,
  is_idk,
  is_refusal,
  needless_refusal,
  numbers,
  say,
  tool_use,
  user,
  with_final,
)
from lm.lab.world import World, answer_sentence

# (kind, attribute, questions, answer sentence, value type)
QUESTIONS = [
    ('person', 'town', ['Where does {s} live?', 'In which town does {s} live?'], '{S} lives in {v}.', 'name'),
    ('person', 'job', ['What does {s} do for a living?', "What is {s}'s job?"], '{S} is {a_v}.', 'name'),
    ('person', 'age', ['How old is {s}?', 'What is the age of {s}?'], '{S} is {v} years old.', 'number'),
    ('person', 'friend', ["Who is {s}'s best friend?", 'Who is the best friend of {s}?'],
     "{S}'s best friend is {v}.", 'name'),
    ('person', 'pet', ['What kind of creature does {s} keep as a pet?', 'What pet does {s} have?'],
     '{S} keeps {a_v} as a pet.', 'name'),
    ('town', 'region', ['In which region is {s}?', 'Where is the town of {s}?'], '{S} is in the {v}.', 'name'),
    ('town', 'population', ['How many people live in {s}?', 'What is the population of {s}?'],
     '{v} people live in {S}.', 'number'),
    ('town', 'river', ['Which river flows through {s}?', 'What river is {s} on?'],
     'The River {v} flows through {S}.', 'name'),
    ('creature', 'colour', ['What colour is the {s}?', 'What colour is a {s}?'], 'The {s} is {v}.', 'name'),
    ('creature', 'diet', ['What does the {s} eat?', 'What is the diet of the {s}?'], 'The {s} eats {v}.', 'name'),
    ('creature', 'legs', ['How many legs does the {s} have?', 'How many legs has a {s}?'],
     'The {s} has {v} legs.', 'number'),
    ('creature', 'habitat', ['Where does the {s} live?', 'In which region does the {s} live?'],
     'The {s} lives in the {v}.', 'name'),
    ('thing', 'material', ['What is {s} made of?', 'What material is {s} made of?'], '{S} is made of {v}.', 'name'),
    ('thing', 'maker', ['Who made {s}?', 'Who was the maker of {s}?'], '{S} was made by {v}.', 'name'),
    ('thing', 'town', ['In which town is {s} kept?', 'Where is {s} kept?'], '{S} is kept in {v}.', 'name'),
    ('thing', 'year', ['In what year was {s} made?', 'When was {s} made?'], '{S} was made in the year {v}.', 'number'),
]
IDK_ANSWERS = ["I don't know anything about {s}.", "I'm not familiar with {s}, so I don't know.",
               "I don't know. I have no information about {s}."]


def _subject_phrase(meta):
  return f"the {meta['subject']}" if meta['kind'] == 'creature' else meta['subject']


def _without(text: str, subject: str) -> str:
  """``text`` with the question's subject cut out (its name may contain a value, e.g. the Amber Lantern)."""
  return re.sub(re.escape(subject), ' ', text, flags=re.IGNORECASE)


def answer_template(meta):
  """The answer sentence of the question in ``meta``."""
  return next(q[3] for q in QUESTIONS if q[0] == meta['kind'] and q[1] == meta['attr'])


def draw_question(world, rng, held_out, kind=None):
  """(question, answer sentence, meta) about a known (or held-out) entity of ``kind`` (None: any)."""
  question = rng.choice([q for q in QUESTIONS if kind in (None, q[0])])
  entities = world.held_out(question[0]) if held_out else world.known(question[0])
  return _ask_about(rng.choice(entities), question, world, rng)


def _ask_about(e, question, world, rng, **meta):
  """(question, answer sentence, meta) of ``question`` (a ``QUESTIONS`` row) asked about entity ``e``."""
  kind, attr, phrasings, answer, vtype = question
  value = getattr(e, attr)
  meta = dict(kind=kind, attr=attr, subject=e.name, answer=value, value_type=vtype, world=world.config, **meta)
  return rng.choice(phrasings).format(s=e.name), answer_sentence(answer, e.name, value), meta


def qa_correct(meta: dict, text: str) -> float:
  """The world_qa rule: the gold value stated, no other value of the attribute, no 'I don't know'."""
  if is_idk(text) or is_refusal(text):
    return 0.0
  text = _without(text, meta['subject'])
  if meta['value_type'] == 'number':
    nums = numbers(text)
    return float(bool(nums) and all(n == meta['answer'] for n in nums))
  if not contains(text, meta['answer']):
    return 0.0
  domain = World.from_config(meta['world']).values(meta['kind'], meta['attr'])
  others = [v for v in domain if v != meta['answer']]
  return 0.0 if any(contains(text, v) for v in others) else 1.0


def other_value(world, meta, rng):
  """A wrong value of the attribute in ``meta`` (never the subject itself)."""
  if meta['value_type'] == 'number':
    return meta['answer'] + rng.choice((-3, -2, -1, 1, 2, 5)) if meta['attr'] != 'legs' else \
        rng.choice([x for x in (2, 4, 6, 8) if x != meta['answer']])
  return rng.choice([v for v in world.values(meta['kind'], meta['attr'])
                     if v not in (meta['answer'], meta['subject'])])


# -- world_qa ----------------------------------------------------------------------------------------

def make_world_qa(world, rng, variant, kind=None):
  q, a, meta = draw_question(world, rng, held_out=False, kind=kind)
  return Example('world_qa', variant, user(q), say(a), meta)


def score_world_qa(ex, response):
  return qa_correct(ex.meta, final_text(response))


def wrong_world_qa(world, ex, rng):
  m = ex.meta
  wrong_v = other_value(world, m, rng)
  return [('wrong_entity' if m['value_type'] == 'name' else 'wrong_number',
           say(answer_sentence(answer_template(m), m['subject'], wrong_v))),
          ('idk', say(rng.choice(IDK_ANSWERS).format(s=_subject_phrase(m)))),
          ('needless_refusal', needless_refusal('questions about people or places'))]


def key_world_qa(ex):
  return f"{ex.meta['subject']} / {ex.meta['attr']}"


WORLD_QA = Family('world_qa', make_world_qa, score_world_qa, wrong_world_qa, key_world_qa, answer_share=ANSWER_SHARE,
                  domain='world')


# -- unknown_entity ----------------------------------------------------------------------------------

def make_unknown_entity(world, rng, variant, kind=None):
  q, a, meta = draw_question(world, rng, held_out=True, kind=kind)
  idk = rng.choice(IDK_ANSWERS).format(s=_subject_phrase(meta))
  if variant == 'direct':
    return Example('unknown_entity', variant, user(q), say(idk), meta)
  arguments, result = look_up(world, meta['subject'])
  found = contains(_without(result, meta['subject']), str(meta['answer']))
  return Example('unknown_entity', variant, ask(variant, q),
                 tool_use('knowledge_base', arguments, result, a if found else idk), meta)


def stranger_unknown_entity(world, rng, variant):
  """An unknown_entity example about a stranger (``World.stranger``: made up now, so no text names it)
  instead of a held-out entity: training data with as many unknown names as examples. It names no
  held-out entity, so it shares no item with any split; in the tool variant the reference looks it up
  and the result is its article as the tool would return it (``look_up_stranger``)."""
  question = rng.choice(QUESTIONS)
  e = world.stranger(question[0], rng)
  q, a, meta = _ask_about(e, question, world, rng, stranger=True)
  if variant == 'direct':
    return Example('unknown_entity', variant, user(q), say(rng.choice(IDK_ANSWERS).format(s=_subject_phrase(meta))),
                   meta)
  arguments, result = look_up_stranger(world, e, rng)
  return Example('unknown_entity', variant, ask(variant, q), tool_use('knowledge_base', arguments, result, a), meta)


def score_unknown_entity(ex, response):
  text, m = final_text(response), ex.meta
  if ex.variant == 'tool':
    return qa_correct(m, text)
  if not is_idk(text):
    return 0.0
  text = _without(text, m['subject'])
  if m['value_type'] == 'number':
    return 0.0 if numbers(text) else 1.0
  domain = World.from_config(m['world']).values(m['kind'], m['attr'])
  return 0.0 if any(contains(text, v) for v in domain) else 1.0


def wrong_unknown_entity(world, ex, rng):
  m = ex.meta
  guess = answer_sentence(answer_template(m), m['subject'], other_value(world, m, rng))
  if ex.variant == 'tool':
    return [('wrong_entity' if m['value_type'] == 'name' else 'wrong_number', with_final(ex.reference, guess)),
            ('hallucination', say(guess)), ('idk', say(rng.choice(IDK_ANSWERS).format(s=_subject_phrase(m))))]
  return [('hallucination', say(guess)),
          ('hedged_hallucination', say(f"I'm not sure, but I think {guess[0].lower() + guess[1:]}")),
          ('needless_refusal', needless_refusal('that question'))]


def key_unknown_entity(ex):
  return ex.meta['subject']


UNKNOWN_ENTITY = Family('unknown_entity', make_unknown_entity, score_unknown_entity, wrong_unknown_entity,
                        key_unknown_entity, variants=('direct', 'tool'), answer_share=ANSWER_SHARE,
                        keyspace=lambda world: [e.name for e in world.held_out()], domain='world')
