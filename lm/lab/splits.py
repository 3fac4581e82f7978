"""Splits: every item of every task family belongs to exactly one of ``SPLITS``, so no question is
trained on and evaluated, whatever its template and with or without the tools offer.

    splits.split_of(world, 'arithmetic', 'add 3 5')                  # -> 'sft'
    splits.draw(world, 'arithmetic', 'tool', 'eval', 50)             # 50 eval examples
    splits.draw_mix(world, config.data.sft_mix, 4000, 'sft')         # a weighted mix, shuffled
    train, held = splits.rl_prompts(world, config.rlhf.prompt_mix, 1936, 64, keep)

An item is what a family's ``key`` names (``lm.lab.tasks``: a sum's op and operands, a held-out
entity, the subject and attribute of a question, ...); a persona's question follows its world fact
(``owner``), and no split counts the letters of a word the spelling eval asks about (``HELD``).
``split_of`` is the one assignment: a keyspace
the family lists (``Family.keyspace``: few keys, e.g. the 33 held-out entities) is ordered by a stable
hash of (family, key, world seed) and cut in the proportions of the split weights; any other key
goes to the bucket its hash falls in. ``WEIGHTS`` are the proportions, ``FAMILY_WEIGHTS`` those of
families whose eval share must be larger for their eval sets to fill.

``draw`` makes examples of one (family, variant) from the named seed stream ``stream(world, purpose,
family, variant, options)`` (purpose: the split, unless a caller names another, e.g. ``'rlhf eval'``)
and rejects those whose key is in another split. In ``eval`` it also rejects a prompt it already
drew (the tools offer removed), splits ``n`` evenly over the family's ``balance`` option sets (taking
them in turn: safety alternates harmful and benign, so every even prefix is balanced), and keeps any
gold answer (``meta['answer']``) on at most ``answer_share`` of the set. Training splits
may repeat an item (in another template). A split that cannot supply ``n`` examples is a one-line
``ValueError`` naming the family, variant and split.

Pretraining text (``pretraining_documents``) states no eval item of the families whose item is text:
arithmetic, char_count, spelling and translation (world facts stay: world_qa asks about them by
design; held-out entities never appear, ``lm.lab.world``). The old jokes and slogans it tells
(``World.humour_text``) are what the joke and slogan families call stale; their references are fresh
ones, which no pretraining text tells, so those families need no leaving out.
"""

import functools
import hashlib
import itertools
import json
import random

from lm.lab import tasks
from lm.lab.world import World

SPLITS = ('sft', 'preferences', 'rlhf', 'synthetic', 'eval')
HELD = 'held'  # items of no split (see split_of); pretraining text states none of them either
WEIGHTS = {'sft': 0.45, 'preferences': 0.1, 'rlhf': 0.1, 'synthetic': 0.1, 'eval': 0.25}
FAMILY_WEIGHTS = {  # 33 held-out entities by default: 13 for eval (100 distinct questions), 10 for SFT
    'unknown_entity': {'sft': 0.3, 'preferences': 0.1, 'rlhf': 0.1, 'synthetic': 0.1, 'eval': 0.4}}
TEXT_FAMILIES = ('arithmetic', 'char_count', 'spelling', 'translation')  # items pretraining text states


def _unit(seed: int, family: str, key: str) -> float:
  """A stable hash of (seed, family, key) in [0, 1)."""
  digest = hashlib.blake2b(f'{seed}\x00{family}\x00{key}'.encode(), digest_size=8).digest()
  return int.from_bytes(digest, 'big') / 2 ** 64


def _bucket(family: str, u: float) -> str:
  """The split whose share of [0, 1) (in ``SPLITS`` order, by weight) holds ``u``."""
  weights = FAMILY_WEIGHTS.get(family, WEIGHTS)
  edge = 0.0
  for name in SPLITS:
    edge += weights[name]
    if u < edge:
      return name
  return SPLITS[-1]


@functools.lru_cache(maxsize=64)
def _listed(world_key: str, family: str) -> dict | None:
  """key -> split for a family that lists its keyspace: in hash order, cut by the weights."""
  keyspace = tasks.TASKS[family].keyspace
  if keyspace is None:
    return None
  world = World.from_config(json.loads(world_key))
  keys = sorted(set(keyspace(world)), key=lambda k: (_unit(world.seed, family, k), k))
  return {k: _bucket(family, (i + 0.5) / len(keys)) for i, k in enumerate(keys)}


def owner(family: str, key: str) -> tuple[str, str]:
  """The item whose split ``key`` of ``family`` follows: a persona's question is a world question about
  that fact."""
  if family == 'manners' and key.startswith('persona '):
    return 'world_qa', key.split(' ', 2)[2]
  return family, key


def split_of(world: World, family: str, key: str) -> str:
  """The split that item ``key`` of ``family`` belongs to (a pure function of the world seed), or
  ``HELD`` for an item no split may use: a letter count of a word the spelling eval asks about (its
  thinking would spell that word out)."""
  if family == 'char_count' and split_of(world, 'spelling', key.rsplit(' ', 1)[0]) == 'eval':
    return HELD
  family, key = owner(family, key)
  listed = _listed(json.dumps(world.config, sort_keys=True), family)
  if listed is None:
    return _bucket(family, _unit(world.seed, family, key))
  if key not in listed:
    raise ValueError(f'{family}: key {key!r} is not in its keyspace')
  return listed[key]


def stream(world: World, *names) -> random.Random:
  """The seed stream named ``names`` (strings) for this world: ``stream(world, 'eval', 'arithmetic', 'tool')``."""
  return random.Random('/'.join([f'world {world.seed}', *map(str, names)]))


def _check_family(family: str, variant: str):
  if family not in tasks.TASKS:
    raise ValueError(f'unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
  if variant not in tasks.TASKS[family].variants:
    raise ValueError(f'{family} has variants {tasks.TASKS[family].variants}, not {variant!r}')


def _gold(ex) -> str:
  return str(ex.meta['answer']) if 'answer' in ex.meta else tasks.final_text(ex.reference)


def draw(world: World, family: str, variant: str, split: str, n: int, purpose: str | None = None,
         keep=None, **options) -> list[tasks.Example]:
  """``n`` examples of ``family``/``variant`` whose keys are in ``split`` (and for which ``keep(example)``,
  if given, is true); see the module docstring for what an eval draw adds. ``options`` go to the
  family's ``make``."""
  _check_family(family, variant)
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; valid: {", ".join(SPLITS)}')
  fam = tasks.TASKS[family]
  is_eval = split == 'eval'
  balanced = is_eval and fam.balance and not set(options) & {k for stratum in fam.balance for k in stratum}
  strata = fam.balance if balanced else ({},)
  rng = stream(world, purpose or split, family, variant, json.dumps(options, sort_keys=True))
  cap = n if not is_eval or fam.answer_share is None else max(1, int(fam.answer_share * n))
  groups, prompts, golds = [], set(), {}
  for i, stratum in enumerate(strata):
    want, group, tries = n // len(strata) + (i < n % len(strata)), [], 0
    while len(group) < want:
      if tries >= 100 * want + 1000:
        raise ValueError(f'{family}/{variant}: the {split} split holds too few items for {n} examples '
                         f'({sum(map(len, groups)) + len(group)} drawn in {tries} tries)')
      tries += 1
      ex = fam.make(world, rng, variant, **options, **stratum)
      if split_of(world, family, fam.key(ex)) != split or (keep is not None and not keep(ex)):
        continue
      if is_eval:
        prompt, gold = tasks.prompt_key(tasks.without_tools(ex.prompt)), _gold(ex)
        if prompt in prompts or golds.get(gold, 0) >= cap:
          continue
        prompts.add(prompt)
        golds[gold] = golds.get(gold, 0) + 1
      group.append(ex)
    groups.append(group)
  return [ex for row in itertools.zip_longest(*groups) for ex in row if ex is not None]


def _counts(n: int, weights) -> list[int]:
  """``n`` split in proportion to ``weights`` (largest remainders; ties to the earlier entry)."""
  total = sum(weights)
  exact = [n * w / total for w in weights]
  counts = [int(x) for x in exact]
  for i in sorted(range(len(weights)), key=lambda i: counts[i] - exact[i])[:n - sum(counts)]:
    counts[i] += 1
  return counts


def draw_mix(world: World, mix, n: int, split: str, purpose: str | None = None, keep=None,
             options: dict | None = None) -> list[tasks.Example]:
  """``n`` examples of ``mix`` (``(family, variant, weight)`` triples, counts in proportion to the
  weights) from ``split``, shuffled by the stream ``(purpose or split, 'mix')``; ``options[family]``
  go to that family's ``make`` (e.g. ``{'arithmetic': {'ops': ('add',), 'digit_range': (2, 2)}}``)."""
  for family, variant, _ in mix:
    if family not in tasks.TASKS:
      raise ValueError(f'data mix: unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
    _check_family(family, variant)
  examples = []
  for (family, variant, _), k in zip(mix, _counts(n, [w for _, _, w in mix])):
    examples += draw(world, family, variant, split, k, purpose, keep, **(options or {}).get(family, {})) if k else []
  stream(world, purpose or split, 'mix').shuffle(examples)
  return examples


def rl_prompts(world: World, mix, n_train: int, n_eval: int, keep=None, offer_tools: bool = False,
               options: dict | None = None) -> tuple[list, list]:
  """RL prompts of ``mix``: ``n_train`` from the ``rlhf`` split and ``n_eval`` held-out ones from the
  ``eval`` split (purpose ``'rlhf eval'``), so none shares an item with the other set, with SFT or
  with preferences. The tools offer is removed unless ``offer_tools``; ``keep(example)`` (e.g. a
  prompt-length limit) sees the prompt as it will be asked."""
  def strip(examples):
    for e in examples:
      e.prompt = e.prompt if offer_tools else tasks.without_tools(e.prompt)
    return examples

  def kept(e):
    prompt = e.prompt if offer_tools else tasks.without_tools(e.prompt)
    return keep is None or keep(tasks.Example(e.family, e.variant, prompt, e.reference, e.meta))
  return (strip(draw_mix(world, mix, n_train, 'rlhf', keep=kept, options=options)),
          strip(draw_mix(world, mix, n_eval, 'eval', 'rlhf eval', keep=kept, options=options)))


def in_eval(world: World):
  """``leave_out(family, key)`` for ``World.pretraining_documents``: the eval items of ``TEXT_FAMILIES``
  and of world_qa (stated as questions and answers: the plain statements of articles stay)."""
  return lambda family, key: (family in TEXT_FAMILIES or family == 'world_qa') and \
      split_of(world, family, key) in ('eval', HELD)


def pretraining_documents(world: World, n_docs: int | None = None, target_chars: int | None = None,
                          seed: int = 0, mix=None, fact_articles: int = 0) -> list[str]:
  """``world.pretraining_documents`` with no line stating an eval item of ``TEXT_FAMILIES``, nor an eval
  world question among its plain questions and answers."""
  return world.pretraining_documents(n_docs, target_chars, seed, leave_out=in_eval(world), mix=mix or None,
                                     fact_articles=fact_articles)
