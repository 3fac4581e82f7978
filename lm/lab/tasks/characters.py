"""The letters inside words:

  char_count      "how many r in strawberry?" (direct, thinking, tool); the answer names the word, and
                  its last number (digits or number words zero..twenty; elsewhere only digits count)
                  is the count.
  spelling        "spell strawberry" (direct, thinking, tool); some run of single letters
                  (s-t-r-..., "s t r ...", "s, t, ...") must spell the word.

Keys: char_count, the word and the letter (``lm.lab.world.char_count_key``); spelling, the word (all of
``SPELL_WORDS``: its keyspace is listed; an eval set asks about one word in at most ``ANSWER_SHARE`` of
its items, whatever the template).
"""

import re

from lm.lab.tasks.base import (
  ANSWER_SHARE,
  NUMBER_WORDS,
  Example,
  Family,
  answer_messages,
  ask,
  contains,
  final_text,
  last_number,
  replace_final,
)
from lm.lab.world import SPELL_WORDS, char_count_key, spelled_count, spelling_key

VARIANTS = ('direct', 'thinking', 'tool')
_COUNT_WORDS = tuple(w for w in SPELL_WORDS if w not in NUMBER_WORDS and len(w) >= 3)


# -- char_count --------------------------------------------------------------------------------------

def make_char_count(world, rng, variant, word=None, letter=None, word_lengths=()):
  """Letters counted in a word (``word``, else one whose length is in ``word_lengths`` (inclusive), else any)."""
  lo, hi = word_lengths or (0, 99)
  w = word or rng.choice([x for x in _COUNT_WORDS if lo <= len(x) <= hi] if word_lengths else _COUNT_WORDS)
  if letter is None:
    absent = [c for c in 'abcdefghijklmnopqrstuvwxyz' if c not in w]
    letter = rng.choice(w) if rng.random() < 0.85 else rng.choice(absent)
  n = w.count(letter)
  bare = f'How many {letter} in {w}?'
  q = rng.choice([f'How many times does the letter "{letter}" appear in "{w}"?', bare,
                  f'Count the letter "{letter}" in the word "{w}".'])
  answer = f'The letter "{letter}" appears {n} time{"s" * (n != 1)} in "{w}".'
  thinking = spelled_count(w, letter, world.counting, quoted=world.restate == 'quoted' or q != bare)
  ref = answer_messages(variant, answer, thinking, None, n, tool='python', code=f'print("{w}".count("{letter}"))')
  return Example('char_count', variant, ask(variant, q), ref, dict(word=w, letter=letter, answer=n, length=len(w)))


def score_char_count(ex, response):
  text = final_text(response)
  return float(contains(text, ex.meta['word']) and last_number(text, words=True) == ex.meta['answer'])


def wrong_char_count(world, ex, rng):
  n = ex.meta['answer']
  return [('wrong_number', replace_final(ex.reference, f' {n} time', f' {w} time'))
          for w in sorted({n + 1, n + 2, max(0, n - 1)} - {n})]


def key_char_count(ex):
  return char_count_key(ex.meta['word'], ex.meta['letter'])


CHAR_COUNT = Family('char_count', make_char_count, score_char_count, wrong_char_count, key_char_count, VARIANTS,
                    domain='math')


# -- spelling ----------------------------------------------------------------------------------------

def spelled_words(text: str) -> list[str]:
  """Words spelled out as runs of single letters in ``text`` ('s-t-r-a-w', 's t r', 's, t, r')."""
  runs = re.findall(r'(?<![a-z])[a-z](?![a-z])(?:[\s,\-]+[a-z](?![a-z]))+', text.lower())
  return [''.join(re.findall('[a-z]', r)) for r in runs]


def make_spelling(world, rng, variant, word=None):
  w = word or rng.choice(SPELL_WORDS)
  q = rng.choice([f'How do you spell "{w}"?', f'Spell the word "{w}" letter by letter.', f'Spell {w}.',
                  f'How is "{w}" spelled?', f'What are the letters of "{w}", in order?'])
  thinking = '\n'.join(f'{i + 1}. {c}' for i, c in enumerate(w))
  ref = answer_messages(variant, f'"{w}" is spelled {"-".join(w)}.', thinking, None, '-'.join(w),
                        tool='python', code=f'print("-".join("{w}"))')
  return Example('spelling', variant, ask(variant, q), ref, dict(word=w, answer='-'.join(w)))


def score_spelling(ex, response):
  return float(ex.meta['word'] in spelled_words(final_text(response)))


def wrong_spelling(world, ex, rng):
  w = ex.meta['word']
  i = rng.randrange(len(w) - 1)
  variants = [w[:i] + w[i + 1] + w[i] + w[i + 2:], w[:i] + w[i + 1:], w[:i] + w[i] + w[i:]]
  return [('misspelled', replace_final(ex.reference, '-'.join(w), '-'.join(v))) for v in variants if v != w]


def key_spelling(ex):
  return spelling_key(ex.meta['word'])


SPELLING = Family('spelling', make_spelling, score_spelling, wrong_spelling, key_spelling, VARIANTS,
                  keyspace=lambda world: [spelling_key(w) for w in SPELL_WORDS], answer_share=ANSWER_SHARE)
