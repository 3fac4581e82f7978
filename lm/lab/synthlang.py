"""Veltic, the lab's synthetic language: an invented lexicon and its own word order.

English sentences of a small grammar translate exactly, both ways:

  English  S  := NP VERB NP [in TOWN] .      NP := Name | (the|a|an) ADJ* NOUN
  Veltic   S  := [TOWN ne] NP NP VERB .      NP := Name | NOUN ADJ* (ka|mi)

So Veltic is subject-object-verb, puts the place first with the postposition ``ne``, puts adjectives
after the noun (in reverse order) and marks definiteness with a particle after the noun phrase:
``ka`` for "the", ``mi`` for "a". Proper names (capitalised words outside the lexicon) stay as
they are. Each English word of the lexicon gets one invented word, a pure function of the seed.

  >>> lang = SynthLang(0)
  >>> s = lang.en_to_syn('The old baker sees a red fox in Aldmere.')
  >>> lang.syn_to_en(s)
  'The old baker sees a red fox in Aldmere.'
"""

import random
import re

LANG_NAME = 'Veltic'
THE, A, IN = 'ka', 'mi', 'ne'

NOUNS = ('baker smith weaver miller potter healer sailor scribe farmer hunter fisher guard merchant shepherd '
         'carpenter brewer tailor mason cooper herbalist child woman man king queen fox dog cat goat owl horse '
         'crow hare wolf bear fish bird mouse lamp boat house bridge river tree stone bread cup book letter key '
         'door window road field garden well tower market ship coin ring sword basket apple candle rope wheel '
         'cart moon sun star mountain hill lake sea island forest cave castle village farm barn mill shop inn '
         'school song story gift hat coat shoe pot knife jar bell drum flute').split()
ADJECTIVES = ('red blue green white black golden grey brown big small old young tall short quiet loud brave kind '
              'wise happy sad tired hungry clever gentle proud rich poor strong swift slow bright dark warm cold '
              'heavy light new wild shy').split()
VERBS = ('sees carries finds follows feeds paints builds sells buys helps watches chases mends visits greets '
         'fears loves hides holds pulls pushes cleans draws keeps loses meets calls counts guards washes opens '
         'closes brings takes likes needs wants leaves reaches thanks').split()
ENGLISH_WORDS = tuple(NOUNS + ADJECTIVES + VERBS)

_CONSONANTS = 'bdfgklmnprstvz'
_VOWELS = 'aeiou'
_CODAS = ('', '', '', 'n', 'r', 'l', 's')


def _invent(rng: random.Random) -> str:
  n = rng.choice((2, 2, 3))
  return ''.join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n)) + rng.choice(_CODAS)


class SynthLang:
  """The lexicon (``en -> syn`` and back) and the two translation directions."""

  def __init__(self, seed: int = 0, avoid: frozenset = frozenset()):
    rng = random.Random(f'synthlang:{seed}')
    taken = set(ENGLISH_WORDS) | {THE, A, IN} | {w.lower() for w in avoid}
    self.lexicon: dict[str, str] = {}
    for word in ENGLISH_WORDS:
      syn = _invent(rng)
      while syn in taken:
        syn = _invent(rng)
      taken.add(syn)
      self.lexicon[word] = syn
    self.reverse = {s: e for e, s in self.lexicon.items()}
    self._nouns, self._adjs, self._verbs = set(NOUNS), set(ADJECTIVES), set(VERBS)

  def words(self) -> list[str]:
    return list(self.lexicon.values())

  # -- generation ---------------------------------------------------------------------------

  def random_sentence(self, rng: random.Random, names=(), towns=(), adjectives=(0, 1, 1, 1, 2),
                      vocabulary=None) -> str:
    """An English sentence of the grammar; ``names`` may fill noun phrases, ``towns`` the place. A noun
    phrase has one of ``adjectives`` adjectives (drawn uniformly from the tuple); ``vocabulary=(n, a)``
    uses only the first ``n`` nouns and ``a`` adjectives."""
    nouns, adj_words = (NOUNS[:vocabulary[0]], ADJECTIVES[:vocabulary[1]]) if vocabulary else (NOUNS, ADJECTIVES)

    def np_():
      if names and rng.random() < 0.2:
        return [rng.choice(names)]
      det = rng.choice(('the', 'the', 'a'))
      adjs = rng.sample(adj_words, min(rng.choice(adjectives), len(adj_words)))
      return [det, *adjs, rng.choice(nouns)]
    words = np_() + [rng.choice(VERBS)] + np_()
    if towns and rng.random() < 0.4:
      words += ['in', rng.choice(towns)]
    return _english_surface(words)

  # -- English -> Veltic --------------------------------------------------------------------

  def _parse_english_np(self, toks, i):
    if toks[i] in ('the', 'a', 'an'):
      det, i = toks[i], i + 1
      adjs = []
      while i < len(toks) and toks[i] in self._adjs:
        adjs.append(toks[i])
        i += 1
      if i >= len(toks) or toks[i] not in self._nouns:
        raise ValueError(f'expected a noun at word {i}: {" ".join(toks)!r}')
      return ('np', 'the' if det == 'the' else 'a', adjs, toks[i]), i + 1
    return ('name', toks[i]), i + 1

  def en_to_syn(self, sentence: str) -> str:
    """Translates an English sentence of the grammar into Veltic (raises ValueError otherwise)."""
    raw = _tokens(sentence)
    if len(raw) < 3:
      raise ValueError(f'not a sentence of the grammar: {sentence!r}')
    toks = [t if t[0].isupper() and t.lower() not in self.lexicon and t.lower() not in ('the', 'a', 'an', 'in')
            else t.lower() for t in raw]
    subj, i = self._parse_english_np(toks, 0)
    if i >= len(toks) or toks[i] not in self._verbs:
      raise ValueError(f'expected a verb at word {i}: {sentence!r}')
    verb = toks[i]
    obj, i = self._parse_english_np(toks, i + 1)
    place = None
    if i < len(toks):
      if toks[i] != 'in' or i + 2 != len(toks):
        raise ValueError(f'unexpected words after the object: {sentence!r}')
      place = toks[i + 1]
    out = [place, IN] if place else []
    for np_ in (subj, obj):
      if np_[0] == 'name':
        out.append(np_[1])
      else:
        _, det, adjs, noun = np_
        out += [self.lexicon[noun], *[self.lexicon[a] for a in reversed(adjs)], THE if det == 'the' else A]
    out.append(self.lexicon[verb])
    return _capitalise(' '.join(out)) + '.'

  # -- Veltic -> English --------------------------------------------------------------------

  def _parse_syn_np(self, toks, i):
    eng = self.reverse.get(toks[i].lower())
    if eng is None or eng not in self._nouns:
      return ('name', toks[i]), i + 1
    noun, i = eng, i + 1
    adjs = []
    while i < len(toks) and self.reverse.get(toks[i].lower()) in self._adjs:
      adjs.append(self.reverse[toks[i].lower()])
      i += 1
    if i >= len(toks) or toks[i].lower() not in (THE, A):
      raise ValueError(f'expected {THE!r} or {A!r} at word {i}: {" ".join(toks)!r}')
    return ('np', 'the' if toks[i].lower() == THE else 'a', list(reversed(adjs)), noun), i + 1

  def syn_to_en(self, sentence: str) -> str:
    """Translates a Veltic sentence back into English (raises ValueError if it does not parse)."""
    toks = _tokens(sentence)
    place, i = None, 0
    if len(toks) > 1 and toks[1].lower() == IN:
      place, i = toks[0], 2
    if len(toks) - i < 3:
      raise ValueError(f'not a Veltic sentence: {sentence!r}')
    subj, i = self._parse_syn_np(toks, i)
    obj, i = self._parse_syn_np(toks, i)
    if i != len(toks) - 1 or self.reverse.get(toks[i].lower()) not in self._verbs:
      raise ValueError(f'expected the verb last: {sentence!r}')
    words = []
    for np_, after in ((subj, [self.reverse[toks[i].lower()]]), (obj, [])):
      if np_[0] == 'name':
        words.append(np_[1])
      else:
        _, det, adjs, noun = np_
        words += [det, *adjs, noun]
      words += after
    if place:
      words += ['in', place]
    return _english_surface(words)


def _tokens(sentence: str) -> list[str]:
  return re.findall(r"[A-Za-z]+", sentence)


def _capitalise(s: str) -> str:
  return s[:1].upper() + s[1:]


def _english_surface(words: list[str]) -> str:
  """Joins words into a sentence: 'a' becomes 'an' before a vowel, capital first letter, full stop."""
  out = []
  for i, w in enumerate(words):
    if w == 'a' and i + 1 < len(words) and words[i + 1][0].lower() in 'aeiou':
      w = 'an'
    out.append(w)
  return _capitalise(' '.join(out)) + '.'
