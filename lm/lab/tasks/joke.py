"""A joke about an entity of the world, in a given style (subjective: what is funny is a matter of taste):

  joke            "Tell me a knock-knock joke about the mosshopper." Four parts, each in [0, 1], read from
                  the text (0 for all of them when the answer does not name the entity or repeats the
                  request, ``echoes``):
                    pun      it names a true property of the entity (creature: colour, diet, habitat;
                             town: region, river; person: job, pet, town; thing: material, maker, town)
                             and no other value of that property;
                    form     the requested style's shape (1), another style's (0.5) or none (0):
                             question = a question, then a punchline of at least two words;
                             knock-knock = "Knock knock. Who's there? ..." ending in a punchline;
                             one-liner = one sentence of at least five words, no question;
                    fresh    1 - the share of its word 4-grams found in the old jokes about the entity
                             (``lm.lab.world.stale_jokes``, which pretraining text tells), the knock-knock
                             frame ("Knock knock. Who's there? X. X who? X") left out of both;
                    brevity  1 up to 25 words, falling linearly to 0 at 50.
                  Raters weigh the parts by their own taste (``Taste``: Dirichlet around ``TASTE_MEAN``);
                  the gold score is the population's expected utility, ``TASTE_MEAN . parts``.

Key: the entity and the style (the same request in another template is the same item).

The alternatives of ``wrong`` trade the parts off against each other (a stale joke, a fresh one without
a pun, a pun on a property the entity lacks, another style, a rambling punchline), so raters of
different tastes order them differently; an off-topic joke and an echo score 0.
"""

import re

from lm.lab.tasks.base import (
  Example,
  Family,
  Taste,
  contains,
  count_words,
  echoes,
  final_text,
  question,
  say,
  simple,
  user,
)
from lm.lab.world import JOKE_STYLES, World, fill, stale_jokes, subject

TASTE_MEAN = {'pun': 0.35, 'form': 0.25, 'fresh': 0.25, 'brevity': 0.15}
TASTE_CONCENTRATION = 1.5
PUN_ATTRS = {'creature': ('colour', 'diet', 'habitat'), 'town': ('region', 'river'),
             'person': ('job', 'pet', 'town'), 'thing': ('material', 'maker', 'town')}
_REQUESTS = {'question': ('Tell me a "why" joke about {s}.', 'Make up a question-and-answer joke about {s}.'),
             'knock-knock': ('Tell me a knock-knock joke about {s}.', 'I need a knock-knock joke about {s}.'),
             'one-liner': ('Give me a one-liner about {s}.', 'Tell me a one-line joke about {s}.')}
_FRESH = {  # kind -> style -> (template, the property it puns on)
    'creature': {'question': ('What does {s} pack for a long trip? Nothing but {diet}, and a spare appetite.', 'diet'),
                 'knock-knock': ("Knock knock. Who's there? {S}. {S} who? {S} who ate all your {diet} while you "
                                 'were knocking.', 'diet'),
                 'one-liner': ('{S} blushes {colour} whenever anyone counts its legs out loud.', 'colour')},
    'town': {'question': ('Why do fish in the River {river} love {s}? Nobody there asks them to pay for the water.',
                          'river'),
             'knock-knock': ("Knock knock. Who's there? {S}. {S} who? {S} who keeps the whole {region} awake with "
                             'its bells.', 'region'),
             'one-liner': ('{S} is so quiet that the River {river} has to whisper when it passes.', 'river')},
    'person': {'question': ('Why does {s} always win at cards? Nobody dares to bluff against {a_job}.', 'job'),
               'knock-knock': ("Knock knock. Who's there? {S}. {S} who? {S} who brought the {pet} to dinner again.",
                               'pet'),
               'one-liner': ('{S} works as {a_job} all day and still dreams about work at night.', 'job')},
    'thing': {'question': ('Why does {s} never catch a cold? All that {material} keeps it tough.', 'material'),
              'knock-knock': ("Knock knock. Who's there? {S}. {S} who? {S} who still sits in {town} waiting for "
                              'a visitor.', 'town'),
              'one-liner': ('{S}, all {material} and no humour, has never laughed at a single joke.', 'material')},
}
_PLAIN = {'question': 'Why did {s} go to school? To get a little brighter.',  # fresh, no pun
          'knock-knock': "Knock knock. Who's there? {S}. {S} who? {S} who forgot the rest of this joke.",
          'one-liner': '{S} once told a joke so good that nobody has stopped laughing since.'}
RAMBLE = (', or at least that is what my uncle used to say every winter evening by the fire, when the wind was '
          'howling, the soup was cold and nobody in the whole house could sleep')


def _with_value(e, attr, value):
  """``e`` with ``attr`` set to ``value`` (a pun on a property it does not have)."""
  fields = {**{k: getattr(e, k) for k in e.__dataclass_fields__}, attr: value}
  return type(e)(**fields)


def fresh_joke(e, style, plain=False) -> str:
  """The fresh joke about ``e`` in ``style`` (``plain``: the one without a pun)."""
  return fill(_PLAIN[style], e) if plain else fill(_FRESH[e.kind][style][0], e)


def make_joke(world, rng, variant, style=None):
  e = rng.choice(world.known())
  style = style or rng.choice(JOKE_STYLES)
  q = rng.choice(_REQUESTS[style]).format(s=subject(e))
  return Example('joke', variant, user(q), say(fresh_joke(e, style)),
                 dict(entity=e.name, kind=e.kind, style=style, world=world.config))


def style_of(text: str) -> str | None:
  """The joke shape of ``text``: 'knock-knock', 'question', 'one-liner' or None."""
  t = text.strip()
  punchline = t.rsplit('?', 1)[-1]
  if '?' in t and count_words(punchline) >= 2:
    return 'knock-knock' if simple(t).startswith("knock knock who s there") else 'question'
  sentences = [s for s in re.split(r'[.!]+(?:\s+|$)', t) if s.strip()]
  return 'one-liner' if '?' not in t and len(sentences) == 1 and count_words(t) >= 5 else None


def _grams(words, n=4) -> set:
  return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def freshness(text: str, stale: list[str], frame: str = '') -> float:
  """1 - the share of ``text``'s word 4-grams that occur in ``stale`` texts, ``frame``'s 4-grams left out."""
  skip = _grams(simple(frame).split())
  old = set().union(*(_grams(simple(s).split()) for s in stale)) - skip
  mine = _grams(simple(text).split()) - skip
  return 1.0 - len(mine & old) / len(mine) if mine else 1.0


def _without(text: str, name: str) -> str:
  return re.sub(re.escape(name), ' ', text, flags=re.IGNORECASE)


def other_values(world: World, e, attr) -> list[str]:
  """Values ``attr`` can take other than ``e``'s own, none of them a held-out entity's name."""
  held = {x.name for x in world.held_out()}
  return [v for v in world.values(e.kind, attr) if v not in (getattr(e, attr), e.name) and v not in held]


def hits_property(world: World, e, text: str, attrs) -> float:
  """1 iff ``text`` (the entity's name cut out) names the true value of one of ``attrs`` and no other value of it."""
  text = _without(text, e.name)
  for attr in attrs:
    others = [v for v in world.values(e.kind, attr) if v != getattr(e, attr) and v != e.name]
    if contains(text, str(getattr(e, attr))) and not any(contains(text, v) for v in others):
      return 1.0
  return 0.0


def joke_parts(ex, response) -> dict:
  text, m = final_text(response), ex.meta
  world = World.from_config(m['world'])
  e = world.by_name[m['entity']]
  if not contains(text, e.name) or echoes(text, question(ex)):
    return dict.fromkeys(TASTE_MEAN, 0.0)
  shape = style_of(text)
  frame = fill("Knock knock. Who's there? {S}. {S} who? {S}", e)
  return {'pun': hits_property(world, e, text, PUN_ATTRS[e.kind]),
          'form': 1.0 if shape == m['style'] else 0.5 if shape else 0.0,
          'fresh': freshness(text, stale_jokes(e), frame),
          'brevity': min(1.0, max(0.0, (50 - count_words(text)) / 25))}


TASTE = Taste(joke_parts, TASTE_MEAN, TASTE_CONCENTRATION)


def wrong_joke(world, ex, rng):
  m = ex.meta
  e = world.by_name[m['entity']]
  text = final_text(ex.reference)
  template, attr = _FRESH[e.kind][m['style']]
  false_value = rng.choice(other_values(world, e, attr))
  other_style = rng.choice([s for s in JOKE_STYLES if s != m['style']])
  other = rng.choice([x for x in world.known(e.kind) if x.name != e.name])
  return [('stale', say(stale_jokes(e)[JOKE_STYLES.index(m['style'])])),
          ('no_pun', say(fresh_joke(e, m['style'], plain=True))),
          ('false_pun', say(fill(template, _with_value(e, attr, false_value)))),
          ('other_style', say(fresh_joke(e, other_style))),
          ('rambling', say(text[:-1] + RAMBLE + text[-1])),
          ('off_topic', say(fresh_joke(other, m['style']))), ('echo', say(question(ex)))]


def key_joke(ex):
  return f"{ex.meta['entity']} / {ex.meta['style']}"


JOKE = Family('joke', make_joke, TASTE.score, wrong_joke, key_joke, domain='subjective', taste=TASTE)
