"""SFT: assistant-only loss, full fine-tuning and LoRA from a pretrained checkpoint, param loading."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoint, evals, metrics, outputs, tokenizer
from lm import config as lm_config
from lm.cli import launch
from lm.data import builders, pipeline
from lm.lab import world
from lm.stages import common, sft
from lm.steps import lm as lm_steps

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
  """data -> tokenizer once: ``(config, workdir, outputs)``."""
  config = lm_config.load(str(REPO / 'experiments/sft_tiny.py:smoke'))
  config.stages = ('data', 'tokenizer')
  workdir = tmp_path_factory.mktemp('base')
  return config, workdir, launch.launch(config, workdir)


@pytest.fixture(scope='module')
def pretrained(lab):
  """... -> pretrain once, in the same workdir; each test runs SFT from it in its own workdir."""
  config, workdir, _ = lab
  config = lm_config.with_overrides(config, {'stages': ('data', 'tokenizer', 'pretrain')})
  return config, launch.launch(config, workdir)


def _sft(config, inputs, workdir, **overrides):
  config = lm_config.with_overrides(config, {'sft': overrides})
  return config, sft.run(config, workdir, inputs)


@pytest.mark.slow
def test_full_sft_learns_and_starts_from_the_pretrained_weights(pretrained, tmp_path):
  config, inputs = pretrained
  _, out = _sft(config, inputs, tmp_path, mode='full')
  evals = [r['eval_loss'] for r in metrics.read(tmp_path, 'sft') if 'eval_loss' in r]
  assert evals[-1] < evals[0]
  # step-0 weights are the pretrained ones: the first SFT loss equals the pretrained model's loss
  model = common.model_from_config(config)
  mesh, rules = common.mesh_and_rules(config)
  params = common.load_params(inputs['pretrain'], model, mesh, rules)
  from lm import tokenizer
  tok = tokenizer.load(inputs['tokenizer'].path)
  rows = sft.conversation_rows(tok, inputs['data'].tfds_dir, 'validation', config.sft.seq_len)
  first_eval = {k: v[:config.sft.batch_size] for k, v in rows.items()}
  sums = lm_steps.make_eval_step(model)(params, {k: jnp.asarray(v) for k, v in first_eval.items()})
  assert out.lora is None and out.get('step') == config.sft.steps
  assert float(sums['loss'] / sums['weight']) > evals[-1]


@pytest.mark.slow
def test_lora_sft_checkpoints_adapters_only_and_merges_for_serving(pretrained, tmp_path):
  config, inputs = pretrained
  _, out = _sft(config, inputs, tmp_path, mode='lora', fact_probe=True)
  assert out.get('memory.state_ratio') < 0.5 and out.lora['rank'] == config.sft.lora.rank
  stored = checkpoint.manager(out.checkpoint_dir).item_metadata(config.sft.steps)['state']['params']
  assert set(stored) == {f'layer_{i}' for i in range(config.model.n_layers)}
  assert set(stored['layer_0']) == set(config.sft.lora.targets)
  model = common.model_from_config(config)
  mesh, rules = common.mesh_and_rules(config)
  base = common.load_params(inputs['pretrain'], model, mesh, rules)
  merged = common.load_params(out, model, mesh, rules)
  assert not np.allclose(merged['layer_0']['wo'], base['layer_0']['wo'])   # adapters trained
  np.testing.assert_array_equal(merged['embed'], base['embed'])              # untargeted: untouched
  # the fact probe at the last eval read the merged model
  last = [r for r in metrics.read(tmp_path, 'sft') if 'facts_known[eval]' in r][-1]
  assert last['step'] == config.sft.steps
  facts = common.fact_probe('sft.fact_probe', True, model, tokenizer.load(out.tokenizer), inputs, mesh, rules)
  assert facts(merged, None) == pytest.approx({k: last[k] for k in ('facts_known[eval]', 'facts_known[other]')})


def test_sft_loss_ignores_non_assistant_targets(lab):
  config, _, inputs = lab
  from lm import tokenizer
  tok = tokenizer.load(inputs['tokenizer'].path)
  rows = sft.conversation_rows(tok, inputs['data'].tfds_dir, 'train', config.sft.seq_len)
  batch = {k: jnp.asarray(v[:4]) for k, v in rows.items()}
  assert 0 < float(batch['loss_mask'].mean()) < 0.9  # some tokens are not the assistant's
  model = common.model_from_config(config)
  params = nn.unbox(model.init(jax.random.key(0), batch['inputs'])['params'])
  loss_sums = jax.jit(lm_steps.make_loss_sums(model))
  scrambled = dict(batch, targets=jnp.where(batch['loss_mask'] > 0, batch['targets'],
                                            jax.random.randint(jax.random.key(1), batch['targets'].shape, 0, 100)))
  a, b = loss_sums(params, batch, None)[0], loss_sums(params, scrambled, None)[0]
  assert float(a) == float(b)
  flipped = dict(batch, targets=jnp.where(batch['loss_mask'] > 0, (batch['targets'] + 1) % 100, batch['targets']))
  assert float(loss_sums(params, flipped, None)[0]) != float(a)


def test_pretrain_share_adds_pretraining_rows_with_loss_on_every_token(lab):
  config, _, inputs = lab
  tok = tokenizer.load(inputs['tokenizer'].path)
  tfds_dir, seq_len = inputs['data'].tfds_dir, config.sft.seq_len
  rows = sft.conversation_rows(tok, tfds_dir, 'train', seq_len)
  corpus = sft.rehearsal_texts(config, tfds_dir)
  assert corpus == [r['text'] for r in builders.read(builders.PretrainCorpus, tfds_dir, 'train')]
  assert sft.with_pretraining(rows, tok, corpus, seq_len, 0.0, 0) is rows
  mixed = sft.with_pretraining(rows, tok, corpus, seq_len, 0.25, 0)
  n = len(rows['inputs'])
  assert len(mixed['inputs']) == n + round(n / 3)  # a quarter of the rows
  for k in rows:
    np.testing.assert_array_equal(mixed[k][:n], rows[k])
    assert mixed[k].dtype == rows[k].dtype
  packed = pipeline.pack([tok.encode(t) for t in corpus], seq_len, tok.eos_id)
  where = {tuple(row): i for i, row in enumerate(packed['inputs'])}
  for r in range(n, len(mixed['inputs'])):  # rows of the corpus as pretraining packs them, masks and all
    i = where[tuple(mixed['inputs'][r])]
    for k in rows:
      np.testing.assert_array_equal(mixed[k][r], packed[k][i])
  assert mixed['loss_mask'][n:].mean() > 0.98 > 0.9 > rows['loss_mask'].mean()  # text: every target counts
  with pytest.raises(lm_config.ConfigError, match=r'sft.pretrain_share=1.0: the share of SFT rows'):
    sft.with_pretraining(rows, tok, corpus, seq_len, 1.0, 0)
  elsewhere = lm_config.with_overrides(config, {'sft': {'pretrain_share': 0.1}, 'data': {'pretrain_tfds': 'c4'}})
  no_checkpoint = outputs.Model(checkpoint_dir='/nonexistent', tokenizer=inputs['tokenizer'].path, model={})
  with pytest.raises(lm_config.ConfigError, match="rehearses the lab's pretraining corpus; data.pretrain_tfds is set"):
    sft.run(elsewhere, '/nonexistent', {**inputs, 'pretrain': no_checkpoint})  # raised before any is read


def test_pretrain_mix_rehearses_fresh_documents_of_its_kinds_without_eval_facts(lab):
  config, _, inputs = lab
  tfds_dir = inputs['data'].tfds_dir
  facts = lm_config.with_overrides(config, {'sft': {'pretrain_mix': (('article', 0.5), ('qa', 0.5))}})
  texts = sft.rehearsal_texts(facts, tfds_dir)
  corpus = sft.rehearsal_texts(config, tfds_dir)
  assert abs(sum(map(len, texts)) - sum(map(len, corpus))) < 5000
  questions = [t for t in texts if t.startswith('Q: ')]
  assert questions and len(questions) < len(texts)  # question-and-answer documents and articles, nothing else
  assert not set(questions) & set(corpus)  # drawn afresh
  assert not any(' vs ' in t or ' + ' in t or 'English:' in t for t in texts)
  w = common.world(config)
  asked = {(r['meta']['subject'], r['meta']['attr']) for r in builders.read(builders.EvalSet, tfds_dir, 'test')
           if r['family'] == 'world_qa'}
  said = {line for t in questions for line in t.split('\n\n')}
  stated = {(e.name, attr) for e in w.known() for attr in world.FACT_QUESTIONS[e.kind]
            if world.fact_qa(e, attr) in said}
  assert asked and len(stated) > 100 and not stated & asked  # every fact asked in pretraining's way but the eval's
  bad = lm_config.with_overrides(config, {'sft': {'pretrain_mix': (('poems', 1.0),)}})
  with pytest.raises(lm_config.ConfigError, match=r"^sft.pretrain_mix: pretraining mix \(\('poems', 1.0\),\): kinds"):
    sft.rehearsal_texts(bad, tfds_dir)


@pytest.mark.slow  # a pretraining stage's checkpoint (test_model checks the message on params in memory)
def test_a_checkpoint_of_another_model_shape_is_a_clear_error(pretrained):
  config, inputs = pretrained
  bigger = lm_config.with_overrides(config, {'model': {'d_model': 96}})
  model = common.model_from_config(bigger)
  mesh, rules = common.mesh_and_rules(bigger)
  with pytest.raises(ValueError, match=r'params/embed has shape \(512, 64\) but the model expects \(512, 96\)'):
    common.load_params(inputs['pretrain'], model, mesh, rules)


@pytest.mark.slow
def test_the_skill_probe_logs_what_the_model_answers_at_each_eval(pretrained, tmp_path):
  config, inputs = pretrained
  config, out = _sft(config, inputs, tmp_path, mode='full', probe_examples=1, probe_max_new_tokens=8)
  rows = [r for r in metrics.read(tmp_path, 'sft') if any(k.startswith('skill[') for k in r)]
  c = config.sft
  assert [r['step'] for r in rows] == sorted({*range(c.eval_every, c.steps + 1, c.eval_every), c.steps})
  # the last probe equals the final model's greedy answers to the same prompts, scored
  model = common.model_from_config(config)
  mesh, rules = common.mesh_and_rules(config)
  params = common.load_params(out, model, mesh, rules)
  tok = tokenizer.load(out.tokenizer)
  examples = evals.select(builders.read(builders.EvalSet, inputs['data'].tfds_dir, 'test'), 1)
  answers = evals.respond(params, model, tok, examples, 8, len(examples), mesh, rules, config.seed)
  expected = {f'skill[{s["family"]}/{s["variant"]}]': s['accuracy'] for s in evals.accuracy_by_set(answers)}
  assert {k: v for k, v in rows[-1].items() if k.startswith('skill[')} == expected
