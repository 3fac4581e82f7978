"""RLHF stage: the SFT policy optimised against the reward model, with gold rewards measured throughout.

``rlhf.algorithm`` picks the arm: ppo, grpo, rloo (online), dpo, ipo (offline, from the preference
rankings: the preferences stage's, else the data stage's), trained by ``lm.rl.learner`` (the arms:
``lm.rl.online``, ``lm.rl.offline``, ``lm.rl.algorithms``); or best_of_n, no training:
``max(rlhf.best_of_n)`` samples per prompt, the reward model keeps the best of the first n for each
n; KL = log n - (n - 1) / n (``lm.rl.best_of_n``), measured on ``rlhf.iterations`` batches of
training prompts and on the eval prompts. The policy and the frozen reference both start from the
SFT stage's model; the reward model (and its normalisation on reference samples) comes from the
reward stage. Prompts: ``rlhf.n_prompts`` drawn from the lab's ``rlhf.prompt_mix`` (tools not
offered), never an eval prompt; the last ``rlhf.eval_prompts`` of them are a fixed set measured
every ``rlhf.eval_every`` iterations. ``<workdir>/rlhf/report.md`` and its PNG plots summarise the run.
"""

import random
from pathlib import Path

from lm import outputs, tokenizer
from lm.config import ConfigError
from lm.data import builders, chat
from lm.lab import tasks
from lm.rl import algorithms, best_of_n, learner, reward_model, rollouts
from lm.rl import report as rlhf_report
from lm.stages import common


def prompt_sets(config, tok, tfds_dir) -> tuple[list, list]:
  """``(train, eval)`` Examples from ``rlhf.prompt_mix`` (tools offer removed), eval-set prompts and
  prompts longer than ``rlhf.max_prompt_len`` tokens left out, shuffled by seed."""
  c = config.rlhf
  world = common.world(config)
  held = {tasks.prompt_key(tasks.without_tools(r['prompt'])) for r in builders.read(builders.EvalSet, tfds_dir, 'test')}
  total = sum(w for _, _, w in c.prompt_mix)
  examples = []
  for i, (family, variant, weight) in enumerate(c.prompt_mix):
    if family not in tasks.TASKS:
      raise ConfigError(f'rlhf.prompt_mix: unknown task family {family!r}; valid: {", ".join(tasks.TASKS)}')
    for e in tasks.sample(world, family, round(c.n_prompts * weight / total), seed=config.data.seed + 3 + i,
                          variant=variant):
      e.prompt = tasks.without_tools(e.prompt)
      if tasks.prompt_key(e.prompt) not in held and len(chat.render_prompt(tok, e.prompt)) <= c.max_prompt_len:
        examples.append(e)
  random.Random(config.seed).shuffle(examples)
  if len(examples) <= c.eval_prompts:
    raise ConfigError(f'rlhf: only {len(examples)} prompts fit rlhf.max_prompt_len={c.max_prompt_len}; '
                      f'need more than rlhf.eval_prompts={c.eval_prompts} (raise rlhf.n_prompts)')
  return examples[:-c.eval_prompts or None], examples[len(examples) - c.eval_prompts:]


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
  if c.algorithm in algorithms.ALGORITHMS:
    algorithms.ALGORITHMS[c.algorithm].check(c)


def run(config, workdir, inputs) -> outputs.Rlhf:
  c = config.rlhf
  mesh, rules = common.mesh_and_rules(config)
  _check(c, inputs, mesh.shape['data'] * mesh.shape['fsdp'])
  sft = inputs['sft']
  tok = tokenizer.load(sft.tokenizer)
  model = common.model_from_config(config, tok, c.max_prompt_len + c.max_new_tokens)
  ref = common.load_params(sft, model, mesh, rules)
  rm_params, reward_fn = reward_model.load(inputs['reward'], mesh, rules)
  train_examples, eval_examples = prompt_sets(config, tok, common.tfds_dir(inputs, 'rlhf'))
  if c.algorithm == 'best_of_n':  # the policy is the reference: SFT's checkpoint
    rollout = rollouts.Rollouts(c, tok, model, reward_fn, ref, rm_params, mesh, rules, group=max(c.best_of_n))
    metrics = best_of_n.measure(c, config.seed, workdir, rollout, train_examples, eval_examples if c.eval_every else [])
    policy = dict(checkpoint_dir=sft.checkpoint_dir, lora=sft.lora, base_checkpoint_dir=sft.base_checkpoint_dir)
  else:
    setup = learner.Setup(c=c, seed=config.seed, workdir=workdir, tok=tok, model=model, ref=ref, reward_fn=reward_fn,
                          rm_params=rm_params, reward=inputs['reward'], train_examples=train_examples,
                          eval_examples=eval_examples, mesh=mesh, rules=rules,
                          rankings_dir=common.rankings_dir(inputs, 'rlhf'))
    metrics = learner.run(setup, algorithms.ALGORITHMS[c.algorithm])
    policy = dict(checkpoint_dir=metrics.pop('checkpoint_dir'))
  return outputs.Rlhf(model=dict(config.model), tokenizer=sft.tokenizer, algorithm=c.algorithm, metrics=metrics,
                      report=rlhf_report.write(workdir, Path(workdir) / 'rlhf', c.algorithm), **policy)
