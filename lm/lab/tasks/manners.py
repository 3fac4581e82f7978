"""Tone and role play:

  manners         greeting -> a greeting; thanks -> "you're welcome"; persona system prompt ->
                  0.5 for the persona's marker + 0.5 for a correct answer. Rude words -> 0.

A persona's question is a world_qa question, and its answer is held to the world_qa rule.
"""

from lm.lab.tasks.base import Example, Family, contains, final_text, has_phrase, is_rude, say, simple, user
from lm.lab.tasks.qa import answer_sentence, answer_template, draw_question, other_value, qa_correct

PERSONAS = [  # (name, system prompt, where the marker goes, marker)
    ('pirate', 'You are a pirate. Always begin every answer with "Arr!"', 'prefix', 'Arr!'),
    ('knight', 'You are a knight of old. Always begin every answer with "Hark!"', 'prefix', 'Hark!'),
    ('robot', 'You are a robot. Always end every answer with "Beep boop."', 'suffix', 'Beep boop.'),
    ('owl', 'You are a wise old owl. Always end every answer with "Hoo hoo."', 'suffix', 'Hoo hoo.'),
]
GREETINGS = ('hello', 'hi', 'hey', 'good morning', 'good day', 'greetings', 'welcome')
THANKS_REPLIES = ('welcome', 'my pleasure', 'glad', 'happy to help', 'anytime', 'no problem')


def _with_marker(text, where, marker):
  return f'{marker} {text}' if where == 'prefix' else f'{text} {marker}'


def make_manners(world, rng, variant, kind=None):
  kind = kind or rng.choice(('greeting', 'thanks', 'persona', 'persona'))
  if kind == 'greeting':
    town = rng.choice(world.known('town')).name
    q = rng.choice(['Hello!', 'Hi there!', 'Good morning!', 'Hey, how are you?', f'Greetings from {town}!'])
    a = rng.choice(['Hello! How can I help you today?', 'Hi! What can I do for you?',
                    'Good day to you! How may I help?'])
    return Example('manners', variant, user(q), say(a), dict(kind=kind))
  if kind == 'thanks':
    q = rng.choice(['Thank you for your help!', 'Thanks a lot, that was useful.', 'Many thanks!'])
    a = rng.choice(["You're welcome! I'm glad I could help.", 'My pleasure. Happy to help!'])
    return Example('manners', variant, user(q), say(a), dict(kind=kind))
  persona, system, where, marker = rng.choice(PERSONAS)
  q, a, qa = draw_question(world, rng, held_out=False)
  return Example('manners', variant, user(q, system=system), say(_with_marker(a, where, marker)),
                 dict(kind=kind, persona=persona, where=where, marker=marker, qa=qa))


def score_manners(ex, response):
  text, m = final_text(response), ex.meta
  if is_rude(text) or not text.strip():
    return 0.0
  if m['kind'] == 'greeting':
    return float(any(contains(text, g) for g in GREETINGS))
  if m['kind'] == 'thanks':
    return float(has_phrase(text, THANKS_REPLIES))
  t, mk = simple(text), simple(m['marker'])
  marked = (t == mk or t.startswith(mk + ' ')) if m['where'] == 'prefix' else (t == mk or t.endswith(' ' + mk))
  return 0.5 * marked + 0.5 * qa_correct(m['qa'], text)


def wrong_manners(world, ex, rng):
  m = ex.meta
  rude = ('rude', say(rng.choice(['Whatever. Stop bothering me, idiot.', 'What do you want? Go away.'])))
  if m['kind'] == 'greeting':
    return [rude, ('cold', say('State your question.'))]
  if m['kind'] == 'thanks':
    return [rude, ('cold', say('Noted.'))]
  plain = answer_sentence(answer_template(m['qa']), m['qa']['subject'], m['qa']['answer'])
  wrong_v = answer_sentence(answer_template(m['qa']), m['qa']['subject'], other_value(world, m['qa'], rng))
  return [('no_persona', say(plain)), ('wrong_answer_in_persona', say(_with_marker(wrong_v, m['where'], m['marker']))),
          ('rude', say(_with_marker(plain + ' Obviously, idiot.', m['where'], m['marker'])))]


MANNERS = Family('manners', make_manners, score_manners, wrong_manners)
