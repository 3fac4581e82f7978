"""Tone and role play:

  manners         greeting -> greet the user back by name and offer help; thanks for help with a
                  town or treasure -> "you're welcome" about it; persona system prompt -> 0.5 for the
                  persona's marker + 0.5 for a correct answer. Rude words, or (greeting, thanks) an
                  answer that contains the user's whole message, or a refusal -> 0.

A persona's question is a world_qa question, and its answer is held to the world_qa rule.

Keys: greeting, the user's name; thanks, what the user thanks for; persona, the persona and the
world_qa item (subject and attribute) asked about.
"""

from lm.lab.tasks.base import (
  Example,
  Family,
  contains,
  final_text,
  has_phrase,
  is_refusal,
  is_rude,
  question,
  say,
  simple,
  user,
)
from lm.lab.tasks.qa import answer_sentence, answer_template, draw_question, other_value, qa_correct

PERSONAS = [  # (name, system prompt, where the marker goes, marker)
    ('pirate', 'You are a pirate. Always begin every answer with "Arr!"', 'prefix', 'Arr!'),
    ('knight', 'You are a knight of old. Always begin every answer with "Hark!"', 'prefix', 'Hark!'),
    ('robot', 'You are a robot. Always end every answer with "Beep boop."', 'suffix', 'Beep boop.'),
    ('owl', 'You are a wise old owl. Always end every answer with "Hoo hoo."', 'suffix', 'Hoo hoo.'),
]
GREETINGS = ('hello', 'hi', 'hey', 'good morning', 'good day', 'greetings', 'welcome')
HELP_OFFERS = ('can i help', 'may i help', 'can i do for you', 'can i assist', 'may i assist')
THANKS_REPLIES = ('welcome', 'my pleasure', 'glad', 'happy to help', 'anytime', 'no problem')


def _with_marker(text, where, marker):
  return f'{marker} {text}' if where == 'prefix' else f'{text} {marker}'


def make_manners(world, rng, variant, kind=None):
  kind = kind or rng.choice(('greeting', 'thanks', 'persona', 'persona'))
  if kind == 'greeting':
    name, town = rng.choice(world.first_names), rng.choice(world.known('town')).name
    q = rng.choice([f'Hello! I am {name}.', f'Hi there, my name is {name}.', f'Good morning! {name} here.',
                    f'Hey, how are you? It is {name}.', f'Greetings from {town}! I am {name}.'])
    a = rng.choice([f'Hello, {name}! How can I help you today?', f'Hi {name}! What can I do for you?',
                    f'Good day to you, {name}! How may I help?'])
    return Example('manners', variant, user(q), say(a), dict(kind=kind, name=name))
  if kind == 'thanks':
    topic = rng.choice(world.known('town') + world.known('thing')).name
    q = rng.choice([f'Thank you for your help with {topic}!', f'Thanks a lot, what you said about {topic} was useful.',
                    f'Many thanks for telling me about {topic}!'])
    a = rng.choice([f"You're welcome! I'm glad I could help with {topic}.",
                    f'My pleasure. Happy to help with anything about {topic}!'])
    return Example('manners', variant, user(q), say(a), dict(kind=kind, topic=topic))
  persona, system, where, marker = rng.choice(PERSONAS)
  q, a, qa = draw_question(world, rng, held_out=False)
  return Example('manners', variant, user(q, system=system), say(_with_marker(a, where, marker)),
                 dict(kind=kind, persona=persona, where=where, marker=marker, qa=qa))


def score_manners(ex, response):
  text, m = final_text(response), ex.meta
  if is_rude(text) or not text.strip():
    return 0.0
  if m['kind'] in ('greeting', 'thanks') and (is_refusal(text) or simple(question(ex)) in simple(text)):
    return 0.0
  if m['kind'] == 'greeting':
    return float(any(contains(text, g) for g in GREETINGS) and contains(text, m['name'])
                 and has_phrase(text, HELP_OFFERS))
  if m['kind'] == 'thanks':
    return float(has_phrase(text, THANKS_REPLIES) and contains(text, m['topic']))
  t, mk = simple(text), simple(m['marker'])
  marked = (t == mk or t.startswith(mk + ' ')) if m['where'] == 'prefix' else (t == mk or t.endswith(' ' + mk))
  return 0.5 * marked + 0.5 * qa_correct(m['qa'], text)


def wrong_manners(world, ex, rng):
  m = ex.meta
  rude = ('rude', say(rng.choice(['Whatever. Stop bothering me, idiot.', 'What do you want? Go away.'])))
  if m['kind'] == 'greeting':
    return [rude, ('cold', say('State your question.')), ('echo', say(question(ex))),
            ('nameless', say('Hello! How can I help you today?'))]
  if m['kind'] == 'thanks':
    return [rude, ('cold', say('Noted.')), ('echo', say(question(ex)))]
  plain = answer_sentence(answer_template(m['qa']), m['qa']['subject'], m['qa']['answer'])
  wrong_v = answer_sentence(answer_template(m['qa']), m['qa']['subject'], other_value(world, m['qa'], rng))
  return [('no_persona', say(plain)), ('wrong_answer_in_persona', say(_with_marker(wrong_v, m['where'], m['marker']))),
          ('rude', say(_with_marker(plain + ' Obviously, idiot.', m['where'], m['marker'])))]


def key_manners(ex):
  m = ex.meta
  if m['kind'] == 'persona':
    return f"persona {m['persona']} {m['qa']['subject']} / {m['qa']['attr']}"
  return f"{m['kind']} {m['name' if m['kind'] == 'greeting' else 'topic']}"


MANNERS = Family('manners', make_manners, score_manners, wrong_manners, key_manners)
