"""Writing under constraints:

  creative        a poem under constraints (N lines, mention a place, use 3 given words): the fraction
                  of the 5 constraints met; 0 for an answer that does not name the creature or
                  repeats the request (``echoes``: a run of 5 of its words).

Key: the creature, N, the place and the set of words: the whole request.
"""

import re

from lm.lab.tasks.base import Example, Family, contains, count_lines, echoes, final_text, question, say, user
from lm.lab.tasks.length_control import poem

CREATIVE_WORDS = ('lantern', 'feather', 'salt', 'bell', 'ember', 'thread', 'harbour', 'whistle', 'copper',
                  'honey', 'shadow', 'ribbon', 'anchor', 'orchard', 'kettle', 'velvet', 'chimney', 'pebble')


def make_creative(world, rng, variant):
  c = rng.choice(world.known('creature'))
  place = rng.choice(world.known('town')).name
  words = rng.sample(CREATIVE_WORDS, 3)
  n = rng.randint(3, 8)
  q = (f'Write a poem of {n} lines about the {c.name}. Mention {place}, and use the words '
       f'"{words[0]}", "{words[1]}" and "{words[2]}".')
  return Example('creative', variant, user(q), say(poem(world, rng, c.name, n, extra=[place] + words)),
                 dict(n=n, place=place, words=words, topic=c.name))


def score_creative(ex, response):
  text, m = final_text(response), ex.meta
  if not contains(text, m['topic']) or echoes(text, question(ex)):
    return 0.0
  checks = [count_lines(text) == m['n'], contains(text, m['place'])] + [contains(text, w) for w in m['words']]
  return sum(checks) / len(checks)


def wrong_creative(world, ex, rng):
  text, m = final_text(ex.reference), ex.meta
  w = rng.choice(m['words'])
  lines = text.split('\n')
  return [('missing_word', say(re.sub(rf'\b{w}\b', 'thing', text))),
          ('no_place', say(re.sub(rf'\b{m["place"]}\b', 'town', text))),
          ('wrong_lines', say('\n'.join(lines + lines[:1]))), ('echo', say(question(ex)))]


def key_creative(ex):
  m = ex.meta
  return f"{m['topic']} / {m['n']} / {m['place']} / {' '.join(sorted(m['words']))}"


CREATIVE = Family('creative', make_creative, score_creative, wrong_creative, key_creative)
