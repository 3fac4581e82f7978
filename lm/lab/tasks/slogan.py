"""A slogan for a town or a treasure, for an audience (subjective: raters weigh catchiness differently):

  slogan          "Write a slogan for Aldmere aimed at travellers." Five parts, each in [0, 1], read from
                  the text (0 for all of them when the answer does not name the town or treasure or
                  repeats the request, ``echoes``):
                    fact          it names a true fact of it (town: river, region; treasure: material,
                                  town, maker) and no other value of that fact;
                    alliteration  at least three distinct words (beside 'the', 'and', 'of', ...) share
                                  their first letter;
                    brevity       1 up to 12 words, falling linearly to 0 at 24;
                    fresh         1 - the share of its word 4-grams found in the old slogans of it
                                  (``lm.lab.world.stale_slogans``, which pretraining text tells);
                    audience      it names the audience asked for.
                  Raters weigh the parts by their own taste (``Taste``: Dirichlet around ``TASTE_MEAN``);
                  the gold score is the population's expected utility, ``TASTE_MEAN . parts``.

Key: the town or treasure and the audience.

The alternatives of ``wrong`` trade the parts off (a stale slogan, one without a fact or with a false one,
a flat one without alliteration, a long one, one that forgets the audience); another entity's slogan and
an echo score 0.
"""

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
from lm.lab.tasks.joke import freshness, hits_property, other_values
from lm.lab.world import World, fill, stale_slogans, subject

TASTE_MEAN = {'fact': 0.25, 'alliteration': 0.25, 'brevity': 0.2, 'fresh': 0.15, 'audience': 0.15}
TASTE_CONCENTRATION = 1.5
AUDIENCES = ('travellers', 'children', 'merchants', 'families', 'pilgrims')
FACT_ATTRS = {'town': ('river', 'region'), 'thing': ('material', 'town', 'maker')}
ALLITERATIVE = {
    'a': ('ageless', 'admired', 'airy'), 'b': ('bold', 'bustling', 'bright'), 'c': ('charming', 'cosy', 'calm'),
    'd': ('dear', 'daring', 'dazzling'), 'f': ('friendly', 'fair', 'fabled'), 'g': ('grand', 'glorious', 'gentle'),
    'h': ('homely', 'hearty', 'handsome'), 'i': ('iconic', 'idyllic', 'inviting'), 'j': ('jolly', 'joyful', 'jaunty'),
    'k': ('kind', 'keen', 'kingly'), 'l': ('lovely', 'lively', 'lush'), 'm': ('merry', 'mighty', 'marvellous'),
    'n': ('noble', 'neat', 'nimble'), 'p': ('proud', 'pleasant', 'peaceful'), 'q': ('quaint', 'quirky', 'queenly'),
    'r': ('radiant', 'restful', 'rosy'), 's': ('sunny', 'splendid', 'serene'), 't': ('tranquil', 'timeless', 'tidy'),
    'v': ('vibrant', 'verdant', 'valiant'), 'w': ('warm', 'wonderful', 'wise'), 'z': ('zesty', 'zealous', 'zippy')}
FLAT = ('nice', 'old', 'pretty', 'famous', 'clean', 'useful', 'ordinary', 'simple')
STOP = frozenset('the a an and of by in on to for come with at is its it river'.split())
_REQUESTS = ('Write a slogan for {s} aimed at {audience}.', 'Give me a catchy slogan for {s}, for {audience}.',
             'Come up with a motto for {s} that speaks to {audience}.')
_FACT = {'town': 'by the River {river}', 'thing': 'made of {material}'}
_LONG = (', where the bread is warm, the streets are clean, the bells ring at noon and every visitor leaves '
         'with a smile')


def initial(e) -> str:
  """The letter a slogan of ``e`` alliterates on: a town's first, a thing's second word's ('the Ashen Lantern')."""
  return (e.name if e.kind == 'town' else e.name.split()[1])[0].lower()


def slogan(e, adjectives, audience: str | None, fact: str | None = None, long: bool = False) -> str:
  """'{S}: a1, a2 and {fact}. Come, {audience}!' (no invitation when ``audience`` is None)."""
  fact = _FACT[e.kind] if fact is None else fact
  text = fill(f'{{S}}: {adjectives[0]}, {adjectives[1]} and {fact}' + (_LONG if long else '') + '.', e)
  return text + (f' Come, {audience}!' if audience else '')


def alliteration(text: str) -> float:
  """1 iff at least three distinct words (``STOP`` aside) start with one letter."""
  counts = {}
  for w in set(simple(text).split()) - STOP:
    counts[w[0]] = counts.get(w[0], 0) + 1
  return float(max(counts.values(), default=0) >= 3)


def make_slogan(world, rng, variant, audience=None):
  e = rng.choice(world.known('town') + world.known('thing'))
  audience = audience or rng.choice(AUDIENCES)
  q = rng.choice(_REQUESTS).format(s=subject(e), audience=audience)
  adjectives = rng.sample(ALLITERATIVE[initial(e)], 2)
  return Example('slogan', variant, user(q), say(slogan(e, adjectives, audience)),
                 dict(entity=e.name, kind=e.kind, audience=audience, adjectives=adjectives, world=world.config))


def slogan_parts(ex, response) -> dict:
  text, m = final_text(response), ex.meta
  world = World.from_config(m['world'])
  e = world.by_name[m['entity']]
  if not contains(text, e.name) or echoes(text, question(ex)):
    return dict.fromkeys(TASTE_MEAN, 0.0)
  return {'fact': hits_property(world, e, text, FACT_ATTRS[e.kind]), 'alliteration': alliteration(text),
          'brevity': min(1.0, max(0.0, (24 - count_words(text)) / 12)), 'fresh': freshness(text, stale_slogans(e)),
          'audience': float(contains(text, m['audience']))}


TASTE = Taste(slogan_parts, TASTE_MEAN, TASTE_CONCENTRATION)


def wrong_slogan(world, ex, rng):
  m = ex.meta
  e = world.by_name[m['entity']]
  adjectives = m['adjectives']
  attr = 'river' if e.kind == 'town' else 'material'
  false_fact = _FACT[e.kind].replace(f'{{{attr}}}', rng.choice(other_values(world, e, attr)))
  other = rng.choice([x for x in world.known(e.kind) if x.name != e.name])
  outs = [('stale', say(rng.choice(stale_slogans(e)))),
          ('no_fact', say(slogan(e, adjectives, m['audience'], fact='always glad to see you'))),
          ('false_fact', say(slogan(e, adjectives, m['audience'], fact=false_fact))),
          ('long', say(slogan(e, adjectives, m['audience'], long=True))),
          ('no_audience', say(slogan(e, adjectives, None))),
          ('off_topic', say(slogan(other, rng.sample(ALLITERATIVE[initial(other)], 2), m['audience']))),
          ('echo', say(question(ex)))]
  flat = [f for f in (slogan(e, pair, m['audience']) for pair in zip(FLAT[::2], FLAT[1::2])) if not alliteration(f)]
  return outs + ([('flat', say(flat[0]))] if flat else [])


def key_slogan(ex):
  return f"{ex.meta['entity']} / {ex.meta['audience']}"


SLOGAN = Family('slogan', make_slogan, TASTE.score, wrong_slogan, key_slogan, domain='subjective', taste=TASTE)
