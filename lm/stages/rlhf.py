"""RLHF stage: the SFT policy optimised against the reward model, with gold rewards measured throughout.

``rlhf.algorithm`` picks the arm:
  ppo         rollouts, GAE against a value model initialised from the reward model, clipped PPO
              epochs over minibatches (``lm.steps.ppo``; its docstring lists the details adopted)
  grpo, rloo  ``rlhf.group_size`` responses per prompt, group baselines, no critic
              (``lm.steps.advantages``); GRPO's KL is a k3 term in the loss, RLOO's is in the reward
  dpo, ipo    offline, from the preference rankings (the preferences stage's, else the data stage's;
              ``lm.steps.preference``;
              ``rlhf.preference``: beta, pairs all / best, panel or gold ranking)
  best_of_n   no training: ``max(rlhf.best_of_n)`` samples per prompt, the reward model keeps the
              best of the first n for each n; KL = log n - (n - 1) / n (``lm.best_of_n``); measured
              on ``rlhf.iterations`` batches of training prompts and on the eval prompts
The policy and the frozen reference both start from the SFT stage's model; the reward model (and
its normalisation on reference samples) comes from the reward stage. Prompts: ``rlhf.n_prompts``
drawn from the lab's ``rlhf.prompt_mix`` (tools not offered), never an eval prompt; the last
``rlhf.eval_prompts`` of them are a fixed set measured every ``rlhf.eval_every`` iterations.

Every iteration samples ``prompts_per_iteration x group_size`` responses (``lm.sample``, static
shapes) and logs to ``metrics.jsonl`` (stage ``rlhf``, step = iteration): proxy reward (reward
model), gold reward (the lab's scorers), KL to the reference (k1 and k3, summed over the response),
response length, finished fraction, accuracy per task family, refusal and over-refusal rates, the
loss terms, the KL coefficient, and seconds spent sampling, scoring and updating. Checkpoints (the
policy as ``params``, so later stages load it like SFT's) every ``checkpoint_every`` iterations;
an interrupted run resumes, SIGTERM saves and exits, a non-finite loss stops with the last good
checkpoint kept. ``<workdir>/rlhf/report.md`` and its PNG plots summarise the run.
"""

import random
import signal
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import checkpoint, metrics, optim, outputs, sharding, tokenizer, train
from lm.config import ConfigError
from lm.data import builders, chat, pipeline
from lm.inference import sample
from lm.lab import tasks
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer
from lm.rl import advantages, best_of_n, ppo, rollouts
from lm.rl import preference as preference_steps
from lm.rl import report as rlhf_report
from lm.stages import common
from lm.steps.common import make_train_step

ONLINE = {'ppo': 'gae', 'grpo': 'grpo', 'rloo': 'rloo'}   # algorithm -> advantage estimator
OFFLINE = ('dpo', 'ipo')
ALGORITHMS = (*ONLINE, *OFFLINE, 'best_of_n')


# ------------------------------------------------------------------------------ data

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


# ------------------------------------------------------------------------------ the run

def _check(c, inputs, shards: int):
  if c.algorithm not in ALGORITHMS:
    raise ConfigError(f'rlhf.algorithm={c.algorithm!r}; valid: {", ".join(ALGORITHMS)}')
  for stage in ('data', 'sft', 'reward'):
    if stage not in inputs:
      raise ConfigError(f'rlhf needs the {stage} stage before it (ran: {", ".join(inputs) or "none"})')
  group = max(c.best_of_n) if c.algorithm == 'best_of_n' else c.group_size
  if c.algorithm in ('grpo', 'rloo') and group < 2:
    raise ConfigError(f'rlhf.algorithm={c.algorithm} needs rlhf.group_size >= 2, got {group}')
  rollout = c.prompts_per_iteration * group
  if rollout % shards or c.eval_prompts % shards:
    raise ConfigError(f'rlhf: rollout batch {rollout} (prompts_per_iteration x group_size) and rlhf.eval_prompts='
                      f'{c.eval_prompts} must be multiples of the mesh batch shards ({shards})')
  if c.algorithm in OFFLINE and c.preference.steps_per_iteration < 1:
    raise ConfigError(f'rlhf.preference.steps_per_iteration={c.preference.steps_per_iteration} must be >= 1')
  if c.algorithm in ONLINE and rollout % c.minibatch_size:
    raise ConfigError(f'rlhf.minibatch_size={c.minibatch_size} must divide the rollout batch {rollout}')


def run(config, workdir, inputs) -> outputs.Rlhf:
  c = config.rlhf
  mesh, rules = common.mesh_and_rules(config)
  _check(c, inputs, mesh.shape['data'] * mesh.shape['fsdp'])
  sft = inputs['sft']
  tok = tokenizer.load(sft.tokenizer)
  model = common.model_from_config(config, tok, c.max_prompt_len + c.max_new_tokens)
  ref = common.load_params(sft, model, mesh, rules)
  rm_params, reward_fn = common.load_reward_fn(inputs['reward'], mesh, rules)
  train_examples, eval_examples = prompt_sets(config, tok, common.tfds_dir(inputs, 'rlhf'))
  estimator = advantages.get(ONLINE[c.algorithm]) if c.algorithm in ONLINE else None
  value_model = None
  if estimator is not None and estimator.critic:
    value_model = Transformer(ModelConfig.from_config(inputs['reward'].model))
  group = max(c.best_of_n) if c.algorithm == 'best_of_n' else c.group_size
  rollout = _Rollout(c, tok, model, value_model, reward_fn, estimator, ref, rm_params, mesh, rules, group)
  stage_dir = Path(workdir) / 'rlhf'
  if c.algorithm == 'best_of_n':  # the policy is the reference: SFT's checkpoint
    metrics = _run_best_of_n(c, config.seed, workdir, rollout, train_examples, eval_examples if c.eval_every else [])
    policy = dict(checkpoint_dir=sft.checkpoint_dir, lora=sft.lora, base_checkpoint_dir=sft.base_checkpoint_dir)
  else:
    metrics = _Loop(config, workdir, model, value_model, ref, rollout, train_examples, eval_examples, inputs).run()
    policy = dict(checkpoint_dir=metrics.pop('checkpoint_dir'))
  return outputs.Rlhf(model=dict(config.model), tokenizer=sft.tokenizer, algorithm=c.algorithm, metrics=metrics,
                      report=rlhf_report.write(workdir, stage_dir, c.algorithm), **policy)


class _Rollout:
  """Sampling and scoring of prompt batches: one compiled program each, for the whole run."""

  def __init__(self, c, tok, model, value_model, reward_fn, estimator, ref, rm_params, mesh, rules, group):
    self.c, self.tok, self.model, self.mesh, self.rules, self.group = c, tok, model, mesh, rules, group
    self.ref, self.rm_params = ref, rm_params
    self.sampling = sample.SamplingConfig(temperature=c.temperature, max_new_tokens=c.max_new_tokens)
    est_cfg = advantages.EstimatorConfig(gamma=c.ppo.gamma, lam=c.ppo.lam, whiten=c.ppo.whiten_advantages,
                                         scale_by_std=c.grpo.scale_by_std)
    penalty = c.unfinished_penalty if c.penalize_unfinished else None
    self.score_fn = jax.jit(rollouts.make_score(model, value_model, reward_fn, estimator, est_cfg, c.temperature,
                                                penalty, group))
    self.measure_fn = jax.jit(rollouts.make_score(model, None, reward_fn, None, est_cfg, c.temperature, penalty))

  def __call__(self, params, examples, rng, kl_coef=0.0, train: bool = True, group: int | None = None):
    """``(batch, stats, rows, seconds)`` for ``examples`` (each repeated ``group`` times)."""
    group = self.group if group is None else group
    examples = [e for e in examples for _ in range(group)]
    prompt_BxP, mask_BxP = rollouts.encode_prompts(self.tok, [e.prompt for e in examples], self.c.max_prompt_len)
    put = lambda x: jax.device_put(x, sharding.batch_sharding(self.mesh, x.ndim))
    prompt_BxP, mask_BxP = put(prompt_BxP), put(mask_BxP)
    t0 = time.time()
    out = sample.sample_jit(params['policy'], self.model, prompt_BxP, mask_BxP, rng, self.sampling,
                            mesh=self.mesh, rules=self.rules)
    sampled = {k: out[k] for k in ('tokens', 'mask', 'done', 'logprobs')}
    jax.block_until_ready(sampled)
    t1 = time.time()
    with sharding.use_mesh(self.mesh, self.rules):
      fn = self.score_fn if train else self.measure_fn
      batch, stats = fn(params, self.ref, self.rm_params, prompt_BxP, mask_BxP, sampled, jnp.float32(kl_coef))
      stats = {k: rollouts.to_host(v) for k, v in stats.items()}
    t2 = time.time()
    rows = rollouts.gold_rows(self.tok, examples, rollouts.to_host(sampled['tokens']),
                              stats['response_length'], stats['finished'])
    seconds = {'sample_s': t1 - t0, 'score_s': t2 - t1, 'gold_s': time.time() - t2}
    return batch, stats, rows, seconds


def _run_best_of_n(c, seed, workdir, rollout, examples, eval_examples) -> dict:
  """Proxy and gold reward of best-of-n for each n in ``rlhf.best_of_n``, over ``rlhf.iterations``
  batches of training prompts and over the fixed eval prompts (``eval_*``); metrics rows have
  step = n; the outputs are those of the largest n (plus ``n<k>.*`` for every n)."""

  def collect(batches, key):
    proxy, gold, length = [], [], []
    for i, batch_examples in enumerate(batches):
      _, stats, rows, _ = rollout({'policy': rollout.ref}, batch_examples, jax.random.fold_in(key, i), train=False)
      proxy.append(stats['score'].reshape(-1, rollout.group))
      gold.append(np.array([r['score'] for r in rows]).reshape(-1, rollout.group))
      length.append(stats['response_length'].reshape(-1, rollout.group))
    return np.concatenate(proxy), np.concatenate(gold), np.concatenate(length)

  prompts = pipeline.Batches({'index': np.arange(len(examples))}, c.prompts_per_iteration, seed=seed)
  train = collect([[examples[i] for i in prompts.host_batch(it)['index']] for it in range(c.iterations)],
                  jax.random.key(seed))
  held = collect([eval_examples], jax.random.key(seed + 1)) if eval_examples else None
  writer = metrics.Writer(workdir, 'rlhf')
  out = {}
  for n in sorted(c.best_of_n):
    row = {'n': n, 'kl': best_of_n.kl(n)}
    for prefix, measured in (('', train), ('eval_', held)):
      if measured is not None:
        proxy, gold, length = measured
        row.update({f'{prefix}proxy_reward': float(np.mean(best_of_n.select(proxy, proxy, n))),
                    f'{prefix}gold_reward': float(np.mean(best_of_n.select(gold, proxy, n))),
                    f'{prefix}response_length': float(np.mean(best_of_n.select(length, proxy, n))),
                    f'{prefix}kl': best_of_n.kl(n)})
    writer.write(n, row)
    out.update({f'n{n}.{k}': v for k, v in row.items() if k != 'n'})
  writer.close()
  return {**out, **{k: v for k, v in row.items() if k != 'n'}, 'n': max(c.best_of_n)}


class _Loop:
  """The training arms: state on the mesh, iterations of rollouts and updates, checkpoints, metrics."""

  def __init__(self, config, workdir, model, value_model, ref, rollout, train_examples, eval_examples, inputs):
    self.config, self.c, self.workdir = config, config.rlhf, workdir
    self.model, self.value_model, self.rollout = model, value_model, rollout
    self.train_examples, self.eval_examples = train_examples, eval_examples
    self.mesh, self.rules = rollout.mesh, rollout.rules
    c = self.c
    self.offline = c.algorithm in OFFLINE
    if self.offline:
      records = builders.read(builders.PreferenceRankings, common.rankings_dir(inputs, 'rlhf'), 'train')
      try:
        rows = pipeline.preference_rows(rollout.tok, records, c.preference.seq_len, c.preference.ranking)
      except ValueError as e:
        raise ConfigError(f'rlhf.preference: {e}') from None
      self.pref_rows = {k: rows[k] for k in ('tokens', 'segment_ids', 'positions', 'response_mask', 'ranks')}
      steps = c.iterations * c.preference.steps_per_iteration
      loss_sums = preference_steps.make_loss_sums(model, c.algorithm, c.preference.beta, c.preference.pairs)
    else:
      per_iter = c.prompts_per_iteration * c.group_size // c.minibatch_size * c.epochs
      steps = c.iterations * per_iter
      loss_cfg = ppo.LossConfig(clip_ratio=c.ppo.clip_ratio, value_clip=c.ppo.value_clip, vf_coef=c.ppo.vf_coef,
                                entropy_coef=c.ppo.entropy_coef, temperature=c.temperature)
      loss_sums = ppo.make_loss_sums(model, value_model, loss_cfg)
    self.tx, self.schedule = optim.make_optimizer(c.optim, steps)
    self.loss_sums = loss_sums
    self.init_params = self._initial_params(ref, inputs)

  def _initial_params(self, ref, inputs):
    params = {'policy': ref}
    if self.value_model is not None:  # the value model starts as the reward model
      target = params_lib.abstract_params(self.value_model, self.mesh, self.rules)
      params['value'] = checkpoint.restore_params(inputs['reward'].checkpoint_dir, target)
    return params

  # -- state: in memory {'params': {'policy', 'value'?}, ...}; on disk the policy is 'params'
  @staticmethod
  def _to_disk(state):
    disk = {k: v for k, v in state.items() if k != 'params'}
    disk['params'] = state['params']['policy']
    if 'value' in state['params']:
      disk['value'] = state['params']['value']
    return disk

  @staticmethod
  def _from_disk(disk):
    params = {'policy': disk['params'], **({'value': disk['value']} if 'value' in disk else {})}
    return {'step': disk['step'], 'params': params, 'opt_state': disk['opt_state'], 'rng': disk['rng']}

  def run(self) -> dict:
    c, mesh, rules = self.c, self.mesh, self.rules
    def boxed_state(rng):
      params = {'policy': params_lib.boxed_init(self.model)(rng)}
      if self.value_model is not None:
        params['value'] = params_lib.boxed_init(self.value_model)(rng)
      return _new_state(params, self.tx, self.config.seed)

    abstract_boxed = jax.eval_shape(boxed_state, jax.random.key(0))
    state_shardings = nn.unbox(sharding.logical_shardings(abstract_boxed, mesh, rules))
    abstract = checkpoint.abstract_like(nn.unbox(abstract_boxed), state_shardings)
    self.state_shardings = state_shardings
    mgr = checkpoint.manager(Path(self.workdir) / 'rlhf' / 'checkpoints', keep=c.keep_checkpoints)
    start, kl_coef = mgr.latest_step(), float(c.kl_coef)
    with sharding.use_mesh(mesh, rules):
      if start is None:
        start = 0
        state = jax.jit(lambda p: _new_state(p, self.tx, self.config.seed), out_shardings=state_shardings)(
            self.init_params)
      else:
        disk, meta = checkpoint.restore(mgr, start, self._to_disk(abstract))
        state, kl_coef = self._from_disk(disk), float(meta['kl_coef'])
      self._compile()
    writer = metrics.Writer(self.workdir, 'rlhf', resume_step=start)
    stop = {'requested': False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    last = {}
    try:
      for it in range(start, c.iterations):
        state, row, kl_coef = self._iteration(state, it, kl_coef)
        step = it + 1
        if not np.isfinite(row['loss']):
          mgr.wait_until_finished()
          raise train.Diverged(f'rlhf: loss is {row["loss"]} at iteration {step}; stopped. '
                               f'Last good checkpoint: step {mgr.latest_step()} in {mgr.directory}')
        if c.eval_every and (step % c.eval_every == 0 or step == c.iterations):
          row.update(self._evaluate(state, step))
        writer.write(step, row)
        last = row
        if step % c.checkpoint_every == 0 or step == c.iterations or stop['requested']:
          checkpoint.save(mgr, step, self._to_disk(state), {'step': step, 'kl_coef': kl_coef, 'stage': 'rlhf'})
        if stop['requested']:
          raise train.Preempted(f'rlhf: SIGTERM at iteration {step}; checkpoint saved in {mgr.directory}; '
                                'run the same command again to resume')
    finally:
      signal.signal(signal.SIGTERM, previous)
      mgr.wait_until_finished()
      mgr.close()
      writer.close()
    if not last:  # resumed after the last iteration: the logged row is the result
      last = (metrics.read(self.workdir, 'rlhf') or [{}])[-1]
    keys = ('proxy_reward', 'gold_reward', 'kl', 'response_length', 'eval_proxy_reward', 'eval_gold_reward', 'eval_kl')
    out = {'checkpoint_dir': str(mgr.directory), 'iterations': c.iterations,
           **{k: last[k] for k in keys if k in last}}
    return out

  def _compile(self):
    c = self.c
    if self.offline:
      step = make_train_step(self.loss_sums, self.tx, self.schedule, c.microbatches)
      self.step_fn = jax.jit(step, out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
                             donate_argnums=0)
      ref_logps = jax.jit(lambda p, b: preference_steps.sequence_logprobs(
          self.model, p, b['tokens'], b['segment_ids'], b['positions'], b['response_mask']))
      self.pref_rows['ref_logprobs'] = self._over_rows(ref_logps, self.rollout.ref)
      self.pref_batches = pipeline.Batches(self.pref_rows, c.preference.batch_size, seed=self.config.seed)
    else:
      update = ppo.make_update(self.loss_sums, self.tx, self.schedule, c.minibatch_size, c.epochs, c.microbatches)
      self.step_fn = jax.jit(update, out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
                             donate_argnums=0)
    self.prompts = pipeline.Batches({'index': np.arange(len(self.train_examples))}, c.prompts_per_iteration,
                                    seed=self.config.seed)

  def _over_rows(self, fn, params) -> np.ndarray:
    """``fn(params, batch)`` over every preference row, in order: ``[N, ...]`` numpy."""
    bs, n = self.c.preference.batch_size, len(self.pref_rows['ranks'])
    batches = pipeline.Batches(self.pref_rows, bs, seed=0, shuffle=False)
    host = sharding.host_batch_slice(bs)
    out = [rollouts.to_host(fn(params, sharding.place_batch(batches.host_batch(i, host), self.mesh)))
           for i in range(-(-n // bs))]
    return np.concatenate(out)[:n]

  def _iteration(self, state, it, kl_coef):
    c = self.c
    rng = jax.random.fold_in(jax.random.key(self.config.seed), it)
    examples = [self.train_examples[i] for i in self.prompts.host_batch(it)['index']]
    t0 = time.time()
    if self.offline:
      host = sharding.host_batch_slice(c.preference.batch_size)
      with sharding.use_mesh(self.mesh, self.rules):
        for s in range(it * c.preference.steps_per_iteration, (it + 1) * c.preference.steps_per_iteration):
          batch = sharding.place_batch(self.pref_batches.host_batch(s, host), self.mesh)
          state, update = self.step_fn(state, batch)
      update = jax.device_get(update)
      update_s = time.time() - t0
      _, stats, rows, seconds = self.rollout(state['params'], examples, jax.random.fold_in(rng, 0), train=False)
    else:
      batch, stats, rows, seconds = self.rollout(state['params'], examples, jax.random.fold_in(rng, 0), kl_coef)
      t0 = time.time()
      with sharding.use_mesh(self.mesh, self.rules):
        state, update = self.step_fn(state, batch, jax.random.fold_in(rng, 1))
      update = jax.device_get(update)
      update_s = time.time() - t0
    row = {**rollouts.metrics(rows, stats), **{k: float(v) for k, v in update.items()}, **seconds,
           'update_s': update_s, 'kl_coef': kl_coef}
    row['tokens_per_s'] = float(np.sum(stats['response_length'])) / max(
        seconds['sample_s'] + seconds['score_s'] + update_s, 1e-9)
    if c.kl_target > 0 and not self.offline:
      kl_coef = float(ppo.adaptive_kl_coef(kl_coef, row['kl'], len(rows), c.kl_target, c.kl_horizon))
    return state, row, kl_coef

  def _evaluate(self, state, step) -> dict:
    """The fixed eval prompts, one response each, measured like the rollouts: ``eval_*`` metrics."""
    rng = jax.random.fold_in(jax.random.key(self.config.seed + 1), step)
    _, stats, rows, _ = self.rollout(state['params'], self.eval_examples, rng, train=False, group=1)
    return {f'eval_{k}': v for k, v in rollouts.metrics(rows, stats).items()}


def _new_state(params, tx, seed: int):
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
          'rng': jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))}
