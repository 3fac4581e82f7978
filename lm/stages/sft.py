"""SFT stage: the pretrained model learns the chat format on the lab's conversations, with loss on
assistant tokens only; full fine-tuning or LoRA (``sft.mode``); with or without thinking and tools
(``sft.thinking``, ``sft.tools``: see ``select``); with ``sft.pretrain_share`` of its rows pretraining text,
so that SFT rehearses what pretraining taught (``with_pretraining``).

Continued SFT after the synthetic stage (``run_synthetic``, ``run_original``: stages ``sft_synthetic``
and ``sft_original``): the sft stage's model (LoRA merged) trains on, full weights, for
``synthetic.sft_steps`` steps at peak learning rate ``synthetic.sft_lr`` (the rest as in ``sft``), the
original conversations plus the synthetic stage's, or the original ones only: the control with the
same steps, so that a difference between the two is what the synthetic data adds."""

import jax
import numpy as np

from lm import checkpoint, evals, outputs, probes, tokenizer, train
from lm import config as lm_config
from lm.config import ConfigError
from lm.data import builders, chat, pipeline
from lm.lab import splits, tasks
from lm.model import lora
from lm.model import params as params_lib
from lm.stages import common
from lm.steps import lm as lm_steps


def select(conversations, thinking: bool = True, tools: bool = True) -> list[list[dict]]:
  """The conversations SFT trains on. ``thinking=False`` strips every scratchpad (a thinking example
  becomes the direct example of the same prompt and answer); ``tools=False`` leaves out conversations
  that offer or use tools (without the tool, their answers could not be known: stripping the lookup
  from a knowledge-base answer would teach stating facts the model never saw)."""
  out = []
  for messages in conversations:
    if not tools and (tasks.offers_tools(messages) or any(m['role'] == 'tool' for m in messages)):
      continue
    out.append(messages if thinking else [{k: v for k, v in m.items() if k != 'thinking'} for m in messages])
  return out


def conversation_rows(tok, tfds_dir, split, seq_len, pack=True, thinking=True, tools=True, extra_dirs=()):
  """The conversations of ``split`` (SftConversations in ``tfds_dir``, then in each of ``extra_dirs``),
  rendered and packed."""
  records = [r for d in (tfds_dir, *extra_dirs) for r in builders.read(builders.SftConversations, d, split)]
  rendered = [chat.render(tok, m) for m in select((r['messages'] for r in records), thinking, tools)]
  return pipeline.pack_conversations(rendered, seq_len, tok.pad_id, one_per_row=not pack)


def rehearsal_texts(config, tfds_dir) -> list[str]:
  """The pretraining text SFT rehearses (``sft.pretrain_share``): the data stage's corpus, or with
  ``sft.pretrain_mix`` (``(kind, weight)`` pairs of ``lm.lab.world`` KINDS) fresh lab documents of those
  kinds, as many characters as the corpus, eval items left out as the corpus leaves them out."""
  c = config.sft
  if config.data.pretrain_tfds:
    raise ConfigError('sft.pretrain_share rehearses the lab\'s pretraining corpus; data.pretrain_tfds is set')
  corpus = [r['text'] for r in builders.read(builders.PretrainCorpus, tfds_dir, 'train')]
  if not c.pretrain_mix:
    return corpus
  try:
    return splits.pretraining_documents(common.world(config), target_chars=sum(map(len, corpus)),
                                        seed=config.data.seed + 1, mix=tuple(tuple(m) for m in c.pretrain_mix))
  except ValueError as e:
    raise ConfigError(f'sft.pretrain_mix: {e}') from None


def with_pretraining(rows, tok, texts, seq_len: int, share: float, seed: int) -> dict:
  """``rows`` and, drawn from ``texts`` packed as pretraining packs them (loss on every token), as many
  text rows as make ``share`` of the result: SFT rehearses what pretraining taught, the facts SFT never
  asks about among it."""
  if not share:
    return rows
  if not 0 <= share < 1:
    raise ConfigError(f'sft.pretrain_share={share}: the share of SFT rows that are pretraining text, in [0, 1)')
  text = pipeline.pack([tok.encode(t) for t in texts], seq_len, tok.eos_id)
  n = round(len(rows['inputs']) * share / (1 - share))
  pick = np.random.default_rng(seed).choice(len(text['inputs']), n, replace=n > len(text['inputs']))
  return {k: np.concatenate([rows[k], text[k][pick].astype(rows[k].dtype)]) for k in rows}


def skill_probe(config, tok, model, tfds_dir, mesh, rules, lora_cfg=None):
  """``probe(params, frozen) -> {'skill[<family>/<variant>]': accuracy}`` on the first ``sft.probe_examples``
  eval prompts of each set, greedy, without tools (a learning curve per skill; None when 0), in batches
  of ``eval.batch_size`` (the sampler pads a batch to a power of two: the lifecycle's 72 prompts in one
  batch decoded 128 rows)."""
  c = config.sft
  if not c.probe_examples:
    return None
  examples = evals.select(builders.read(builders.EvalSet, tfds_dir, 'test'), c.probe_examples)

  def probe(params, frozen):
    if lora_cfg is not None:
      params = lora.merge(frozen, params, lora_cfg)
    rows = evals.respond(params, model, tok, examples, c.probe_max_new_tokens, config.eval.batch_size, mesh, rules,
                         config.seed)
    return {f'skill[{s["family"]}/{s["variant"]}]': s['accuracy'] for s in evals.accuracy_by_set(rows)}

  return probe


def starting_point(inputs) -> outputs.Model:
  """The outputs of the stage SFT starts from: ``pretrain``, or ``import`` (a Hugging Face checkpoint)."""
  for name in ('pretrain', 'import'):
    if name in inputs:
      if not inputs[name].tokenizer:
        raise ConfigError(f'sft: the {name} stage has no tokenizer lm can read (the {inputs[name].get("family")} '
                          f'checkpoint has no sentencepiece tokenizer.model)')
      return inputs[name]
  raise ConfigError(f'sft needs a pretrain or import stage before it (ran: {", ".join(inputs) or "none"})')


def run(config, workdir, inputs) -> outputs.Model:
  c = config.sft
  if c.mode not in ('full', 'lora'):
    raise ConfigError(f'sft.mode={c.mode!r}; valid: full, lora')
  start = starting_point(inputs)
  tok = tokenizer.load(start.tokenizer)
  model = common.model_from_config(config, tok, c.seq_len)
  mesh, rules = common.mesh_and_rules(config)
  tfds_dir = common.tfds_dir(inputs, 'sft')
  rows = {split: conversation_rows(tok, tfds_dir, split, c.seq_len, c.pack, c.thinking, c.tools)
          for split in ('train', 'validation')}
  conversation_rows_n = len(rows['train']['inputs'])
  if c.pretrain_share:
    rows['train'] = with_pretraining(rows['train'], tok, rehearsal_texts(config, tfds_dir), c.seq_len,
                                     c.pretrain_share, config.seed)
  eval_rows = pipeline.Batches(rows['validation'], c.batch_size, seed=0, shuffle=False)
  base_loss = lm_steps.make_loss_sums(model, c.z_loss_weight)
  base_eval = lm_steps.make_eval_step(model)
  pretrained = start.checkpoint_dir
  target = params_lib.abstract_params(model, mesh, rules)
  task = dict(name='sft', train_batches=pipeline.Batches(rows['train'], c.batch_size, seed=config.seed),
              eval_batches=[eval_rows.host_batch(i) for i in range(c.eval_batches)], weight_name='tokens')
  # trainable params and their AdamW train state (params + 2 moments), flat for comparison tables
  extra = {'trainable_params': sum(int(x.size) for x in jax.tree.leaves(target)),
           'train_state_bytes': 3 * sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(target))}
  fields, lora_cfg = {}, None
  if c.mode == 'full':
    task.update(init_params=params_lib.boxed_init(model), loss_sums=base_loss, eval_step=base_eval,
                load_params=lambda shardings: checkpoint.restore_params(pretrained, target))
  else:
    lora_cfg = lora.LoraConfig.from_config(c.lora)
    base = checkpoint.restore_params(pretrained, target)
    report = lora.memory_report(base, jax.eval_shape(lambda: lora.init(jax.random.key(0), base, lora_cfg)))
    print(lora.memory_line(report), flush=True)
    task.update(init_params=lambda rng: lora.init_boxed(rng, base, lora_cfg), frozen=base,
                loss_sums=lora.frozen_base_loss_sums(lora_cfg, base_loss),
                eval_step=lambda adapters, batch, base: base_eval(lora.merge(base, adapters, lora_cfg), batch))
    extra = {**{f'memory.{k}': v for k, v in report.items()}, 'trainable_params': report['trainable_params'],
             'train_state_bytes': report['lora_state_bytes']}
    fields = {'lora': dict(c.lora), 'base_checkpoint_dir': pretrained}
  facts = common.fact_probe('sft.fact_probe', c.fact_probe, model, tok, inputs, mesh, rules)
  if facts is not None and lora_cfg is not None:
    on_merged, facts = facts, lambda adapters, base: on_merged(lora.merge(base, adapters, lora_cfg), None)
  task['probe'] = probes.combined(skill_probe(config, tok, model, tfds_dir, mesh, rules, lora_cfg), facts)
  out = train.run(train.Task(**task), c, workdir, mesh, rules, seed=config.seed)
  out.update(extra, train_rows=int(len(rows['train']['inputs'])),
             pretrain_rows=int(len(rows['train']['inputs']) - conversation_rows_n))
  return common.model_outputs(config, out, start.tokenizer, **fields)


def _continued(config, workdir, inputs, name: str, with_synthetic: bool) -> outputs.Model:
  sft = common.need(inputs, 'sft', name)
  synthetic = [common.need(inputs, 'synthetic', name).tfds_dir] if with_synthetic else []
  original = common.tfds_dir(inputs, name)
  c = lm_config.with_overrides(config, {'sft': {'steps': config.synthetic.sft_steps,
                                                'optim': {'lr': config.synthetic.sft_lr}}}).sft
  tok = tokenizer.load(sft.tokenizer)
  model = common.model_from_config(config, tok, c.seq_len)
  mesh, rules = common.mesh_and_rules(config)
  train_rows = conversation_rows(tok, original, 'train', c.seq_len, c.pack, c.thinking, c.tools, synthetic)
  eval_rows = pipeline.Batches(conversation_rows(tok, original, 'validation', c.seq_len, c.pack, c.thinking, c.tools),
                               c.batch_size, seed=0, shuffle=False)
  start = common.load_params(sft, model, mesh, rules)  # LoRA merged; outside the loop's mesh context
  task = train.Task(name=name, init_params=params_lib.boxed_init(model), weight_name='tokens',
                    loss_sums=lm_steps.make_loss_sums(model, c.z_loss_weight), eval_step=lm_steps.make_eval_step(model),
                    train_batches=pipeline.Batches(train_rows, c.batch_size, seed=config.seed),
                    eval_batches=[eval_rows.host_batch(i) for i in range(c.eval_batches)],
                    load_params=lambda shardings: start)
  out = train.run(task, c, workdir, mesh, rules, seed=config.seed)
  out.update(train_rows=int(len(train_rows['inputs'])))
  return common.model_outputs(config, out, sft.tokenizer)


def run_synthetic(config, workdir, inputs) -> outputs.Model:
  """Stage ``sft_synthetic``: continued SFT on the original and the synthetic conversations."""
  return _continued(config, workdir, inputs, 'sft_synthetic', with_synthetic=True)


def run_original(config, workdir, inputs) -> outputs.Model:
  """Stage ``sft_original``: continued SFT on the original conversations only (the control)."""
  return _continued(config, workdir, inputs, 'sft_original', with_synthetic=False)
