"""Translating one sentence:

  translation     English <-> Veltic; exact match after lowercasing and dropping punctuation.

Key: the English sentence of the pair (``lm.lab.world.translation_key``), whichever the direction.
"""

from lm.lab.synthlang import ADJECTIVES, LANG_NAME, NOUNS
from lm.lab.tasks.base import Example, Family, final_text, say, simple, user
from lm.lab.world import translation_key


def make_translation(world, rng, variant, direction=None, adjectives=(), vocabulary=()):
  """A sentence to translate either way; ``adjectives`` (the counts per noun phrase to draw from) and
  ``vocabulary`` (how many nouns and adjectives) set its length and words (``SynthLang.random_sentence``)."""
  direction = direction or rng.choice(('en2syn', 'syn2en'))
  en = world.lang.random_sentence(rng, world.first_names, [t.name for t in world.known('town')],
                                  tuple(adjectives) or (0, 1, 1, 1, 2), tuple(vocabulary) or None)
  syn = world.lang.en_to_syn(en)
  src, tgt = (en, syn) if direction == 'en2syn' else (syn, en)
  lang = LANG_NAME if direction == 'en2syn' else 'English'
  q = rng.choice([f'Translate into {lang}: {src}', f'How do you say this in {lang}? {src}',
                  f'Translate this sentence into {lang}.\n{src}'])
  return Example('translation', variant, user(q), say(tgt), dict(direction=direction, source=src, answer=tgt))


def score_translation(ex, response):
  return float(simple(final_text(response)) == simple(ex.meta['answer']))


def wrong_translation(world, ex, rng):
  toks = ex.meta['answer'].rstrip('.').split()
  lex = list(world.lang.lexicon.values()) if ex.meta['direction'] == 'en2syn' else list(NOUNS + ADJECTIVES)
  i = rng.randrange(len(toks))
  swapped = toks[:i] + [rng.choice([w for w in lex if w.lower() != toks[i].lower()])] + toks[i + 1:]
  outs = [('wrong_word', say(' '.join(swapped) + '.'))]
  if len(toks) > 2:
    outs.append(('wrong_order', say(' '.join(toks[1:] + toks[:1]) + '.')))
  outs.append(('untranslated', say(ex.meta['source'])))
  return outs


def key_translation(ex):
  m = ex.meta
  return translation_key(m['source'] if m['direction'] == 'en2syn' else m['answer'])


TRANSLATION = Family('translation', make_translation, score_translation, wrong_translation, key_translation,
                     domain='veltic')
