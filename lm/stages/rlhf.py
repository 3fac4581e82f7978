"""RLHF stage: the SFT policy optimised against a reward, with gold rewards measured throughout.

``rlhf.algorithm`` picks the arm: ppo, grpo, rloo, dapo, dr_grpo, gspo, reinforce_pp (online), dpo, ipo
(offline, from the preference rankings: the preferences stage's, else the data stage's), trained by
``lm.rl.learner`` (``lm.rl.algorithms`` names them); or best_of_n, no training: ``max(rlhf.best_of_n)``
samples per prompt, the reward model keeps the best of the first n for each n; KL = log n - (n - 1)
/ n (``lm.rl.best_of_n``). The policy and the frozen reference both start from the SFT stage's model.

What it trains on (``rlhf.reward``): the reward stage's model (``model``: RLHF), the lab's gold
scorers (``gold``: RL from verifiable rewards) or ``rlhf.reward_weights`` of both (``mix``); gold
reward is logged whatever it trains on. ``rlhf.tools``: prompts that offer tools keep the offer and
the calls run inside the rollouts (``lm.inference.agent``; tool results carry no gradient).

Prompts: ``rlhf.n_prompts`` of ``rlhf.prompt_mix`` from the lab's ``rlhf`` split and
``rlhf.eval_prompts`` held-out ones from its ``eval`` split (``lm.lab.splits.rl_prompts``), measured
every ``rlhf.eval_every`` iterations.

Iterated RLHF (``rlhf.rounds`` > 1, online arms): the iterations are split into rounds. Before each
round after the first, the current policy samples ``rankings.k`` responses to ``rankings.n_prompts``
new prompts of the preferences split, the panel (``raters.panel``) ranks them (``lm.rl.rankings``),
and the reward model continues training on every ranking so far (the reward stage's and each round's:
``lm.rl.reward_model.fit`` under ``<workdir>/reward_round<r>``, normalised on the current policy's
samples); PPO then continues from where the policy is, against the new reward model. The KL reference
stays SFT. Each round is resumable: its rankings and reward model are kept and reused. Metrics rows
carry their ``round``. ``<workdir>/rlhf/report.md`` and its PNG plots summarise the run.
"""

import dataclasses
from pathlib import Path

import jax

from lm import outputs, tokenizer
from lm import tools as tools_lib
from lm.config import ConfigError
from lm.data import builders, chat, datasets
from lm.lab import raters, splits, tasks
from lm.model import params as params_lib
from lm.rl import algorithms, best_of_n, learner, rankings, reward_model, rollouts
from lm.rl import report as rlhf_report
from lm.stages import common


def prompt_sets(config, tok) -> tuple[list, list]:
  """``(train, eval)`` Examples of ``rlhf.prompt_mix`` from the rlhf and eval splits, those longer than
  ``rlhf.max_prompt_len`` tokens left out (twice the eval prompts are drawn, the first that fit kept);
  the tools offer kept only when ``rlhf.tools`` are run."""
  c = config.rlhf
  for family, _, _ in c.prompt_mix:
    if family not in tasks.TASKS:
      raise ConfigError(f'rlhf.prompt_mix: unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
  fits = lambda e: len(chat.render_prompt(tok, e.prompt)) <= c.max_prompt_len
  train, held = splits.rl_prompts(common.world(config), c.prompt_mix, c.n_prompts, 2 * c.eval_prompts,
                                  offer_tools=bool(c.tools), options=datasets.task_options(config.data))
  train, held = [e for e in train if fits(e)], [e for e in held if fits(e)][:c.eval_prompts]
  if not train or len(held) < c.eval_prompts:
    raise ConfigError(f'rlhf: {len(train)} training and {len(held)} eval prompts fit rlhf.max_prompt_len='
                      f'{c.max_prompt_len}; need some and rlhf.eval_prompts={c.eval_prompts}')
  return train, held


def _check(c, inputs, shards: int) -> None:
  choices = (*algorithms.ALGORITHMS, 'best_of_n')
  if c.algorithm not in choices:
    raise ConfigError(f'rlhf.algorithm={c.algorithm!r}; valid: {", ".join(choices)}')
  for stage in ('data', 'sft', 'reward'):
    common.need(inputs, stage, 'rlhf')
  rollout = c.prompts_per_iteration * (max(c.best_of_n) if c.algorithm == 'best_of_n' else c.group_size)
  if rollout % shards or c.eval_prompts % shards:
    raise ConfigError(f'rlhf: rollout batch {rollout} (prompts_per_iteration x group_size) and rlhf.eval_prompts='
                      f'{c.eval_prompts} must be multiples of the mesh batch shards ({shards})')
  rollouts.reward_weights(c)  # an unknown reward source fails now
  unknown = sorted(set(c.tools) - set(tools_lib.available()))
  if unknown:
    raise ConfigError(f'rlhf.tools has {unknown[0]!r}; valid: {", ".join(tools_lib.available())}')
  if c.rounds < 1 or c.iterations % c.rounds:
    raise ConfigError(f'rlhf.rounds={c.rounds} must be >= 1 and divide rlhf.iterations={c.iterations}')
  if c.algorithm in algorithms.ALGORITHMS:
    algo = algorithms.ALGORITHMS[c.algorithm]
    if c.rounds > 1 and not algo.online:
      raise ConfigError(f'rlhf.rounds={c.rounds}: rounds collect rankings of the policy, which {c.algorithm} '
                        'does not sample while it trains; use an online algorithm')
    algo.check(c)


def run(config, workdir, inputs) -> outputs.Rlhf:
  c = config.rlhf
  mesh, rules = common.mesh_and_rules(config)
  _check(c, inputs, mesh.shape['data'] * mesh.shape['fsdp'])
  sft = inputs['sft']
  tok = tokenizer.load(sft.tokenizer)
  model = common.model_from_config(config, tok, c.max_prompt_len + c.max_new_tokens)
  ref = common.load_params(sft, model, mesh, rules)
  rm_params, reward_fn = reward_model.load(inputs['reward'], mesh, rules)
  train_examples, eval_examples = prompt_sets(config, tok)
  width = rollouts.prompt_width(tok, train_examples + eval_examples, c.max_prompt_len)  # one for the whole run
  tools = tools_lib.build(c.tools, dict(seed=config.data.seed, **config.data.world))
  if c.algorithm == 'best_of_n':  # the policy is the reference: SFT's checkpoint
    rollout = rollouts.Rollouts(c, tok, model, reward_fn, ref, rm_params, mesh, rules, group=max(c.best_of_n),
                                tools=tools, width=width)
    metrics = best_of_n.measure(c, config.seed, workdir, rollout, train_examples, eval_examples if c.eval_every else [])
    policy = dict(checkpoint_dir=sft.checkpoint_dir, lora=sft.lora, base_checkpoint_dir=sft.base_checkpoint_dir)
  else:
    setup = learner.Setup(c=c, seed=config.seed, workdir=workdir, tok=tok, model=model, ref=ref, reward_fn=reward_fn,
                          rm_params=rm_params, reward=inputs['reward'], train_examples=train_examples,
                          eval_examples=eval_examples, mesh=mesh, rules=rules,
                          rankings_dir=common.rankings_dir(inputs, 'rlhf'), tools=tools, prompt_width=width)
    algo, per_round, reward = algorithms.ALGORITHMS[c.algorithm], c.iterations // c.rounds, inputs['reward']
    for r in range(c.rounds):
      if r:
        reward = _next_reward(config, workdir, inputs, r, reward, tok, model, metrics['checkpoint_dir'], mesh, rules)
        rm_params, reward_fn = reward_model.load(reward, mesh, rules)
        setup = dataclasses.replace(setup, rm_params=rm_params, reward_fn=reward_fn, round_=r)
      metrics = learner.run(setup, algo, until=(r + 1) * per_round)
    policy = dict(checkpoint_dir=metrics.pop('checkpoint_dir'))
  return outputs.Rlhf(model=dict(config.model), tokenizer=sft.tokenizer, algorithm=c.algorithm, metrics=metrics,
                      report=rlhf_report.write(workdir, Path(workdir) / 'rlhf', c.algorithm), **policy)


def _next_reward(config, workdir, inputs, r: int, previous: outputs.Reward, tok, model, policy_dir, mesh,
                 rules) -> outputs.Reward:
  """Round ``r``'s reward model: the current policy's samples ranked, every ranking so far, the previous
  reward model trained on (kept in ``<workdir>/reward_round<r>``; a finished round is read back)."""
  name = f'reward_round{r}'
  done = Path(workdir) / name / 'outputs.json'
  if done.exists():
    return outputs.load(done)
  rk = config.rankings
  if rk.n_prompts < 1:
    raise ConfigError('rlhf.rounds > 1 needs rankings.n_prompts > 0: the prompts each round ranks')
  policy = params_lib.load_trained(model, mesh, rules, policy_dir)
  world = common.world(config)
  prompts = splits.draw_mix(world, config.data.preferences.mix, rk.n_prompts, 'preferences',
                            purpose=f'rankings round {r}', options=datasets.task_options(config.data))
  for ex in prompts:
    ex.prompt = tasks.without_tools(ex.prompt)
  plan = rankings.SamplingPlan(k=rk.k, temperature=rk.temperature, max_new_tokens=rk.max_new_tokens,
                               batch_size=rk.batch_size)
  new = rankings.collect(policy, model, tok, prompts, plan, raters.Panel(**config.raters.panel), config.seed + r,
                         mesh, rules, policy='rlhf', round_=r)
  rounds_dir = Path(workdir) / name / 'rankings'
  if jax.process_index() == 0:
    split = datasets.split(new, config.data.preferences.validation_fraction, [datasets.item(e) for e in prompts],
                           [e.family for e in prompts])
    builders.build(builders.PreferenceRankings, rounds_dir, split)
  common.sync(name)
  first = lambda s: reward_model.select(builders.read(builders.PreferenceRankings, common.rankings_dir(inputs, 'rlhf'),
                                                     s), config.reward.data)
  def round_records(q, s):
    return builders.read(builders.PreferenceRankings, Path(workdir) / f'reward_round{q}' / 'rankings', s)
  records = {s: first(s) + [rec for q in range(1, r + 1) for rec in round_records(q, s)]
             for s in ('train', 'validation')}
  c = config.reward
  init = reward_model.load(previous, mesh, rules)[0]
  trained = reward_model.fit(name, c, records, tok, model, policy, workdir, mesh, rules, config.seed + r, init=init)
  out = outputs.Reward(checkpoint_dir=trained.checkpoint_dir, model=dataclasses.asdict(trained.model),
                       tokenizer=previous.tokenizer, reward_mean=trained.reward_mean, reward_std=trained.reward_std,
                       metrics={**trained.metrics, 'round': r, 'new_rankings': len(new)})
  if jax.process_index() == 0:
    outputs.save(out, done)
  print(f'[rlhf] round {r}: {len(new)} rankings of the policy\'s samples; the reward model\'s held-out accuracy '
        f'{trained.metrics.get("heldout_policy_panel_accuracy", float("nan")):.3f} (panel) '
        f'{trained.metrics.get("heldout_policy_gold_accuracy", float("nan")):.3f} (gold) on policy samples',
        flush=True)
  return out
