"""The copying probes: which token of a worked sum plays which role, and the probe's accuracies against a
direct count on the unsharded model; the fact probe's texts, and its log-likelihoods against a direct sum."""

import json

import jax
import numpy as np
import pytest

from lm import probes, sharding, tokenizer
from lm.data import induction
from lm.lab import world
from lm.model import params as params_lib
from lm.model.transformer import Transformer
from tests.conftest import jitted_logits


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  texts = world.World(seed=0).pretraining_documents(n_docs=300) + probes.worked_sums(50, seed=5)
  return tokenizer.train(texts, tmp_path_factory.mktemp('tok') / 'sp.model', vocab_size=400)


def test_each_digit_of_a_worked_sum_gets_its_role_by_hand(tok):
  text = world.scratchpad(47, 85, 'add')
  assert text.splitlines()[1:3] == ['ones: 7 + 5 + carry 0 = 12, write 2, carry 1.',
                                    'tens: 4 + 8 + carry 1 = 13, write 3, carry 1.']
  ids, roles = probes.token_roles(tok, text)
  assert tok.decode(ids) == text
  by_role = {}
  for i, role in zip(ids, roles):
    by_role.setdefault(role, []).append(tok.decode([i]).strip())
  assert by_role['copy[operand]'] == ['7', '5', '4', '8']
  assert by_role['digit_step'] == ['1', '2', '1', '3']
  assert by_role['copy[restate]'] == ['4', '7', '8', '5']  # "So 47 + 85 = 132.": the sum is not a copy
  assert by_role[None][:3] == ['4', '7', '+'] and '132' not in ''.join(by_role['copy[restate]'])


def test_rows_hold_each_worked_sum_and_each_random_string_twice(tok):
  tokens_RxT, role_ids_RxT, names = probes.probe_rows(tok, 4)
  assert tokens_RxT.shape[0] == 8
  for r in range(4, 8):  # random strings: the second copy is scored, the first is not
    string = tokens_RxT[r, :induction.LENGTH]
    np.testing.assert_array_equal(tokens_RxT[r, induction.LENGTH:2 * induction.LENGTH], string)
    assert (string >= tokenizer.FIRST_BYTE_ID).all()  # no special or control token
    assert [names[i] if i >= 0 else None for i in role_ids_RxT[r, :2 * induction.LENGTH]] == (
        [None] * induction.LENGTH + ['copy[random]'] * induction.LENGTH)
  for r in range(4):
    assert tok.decode(tokens_RxT[r][tokens_RxT[r] != tok.pad_id].tolist()) == probes.worked_sums(4)[r]


def test_the_probe_on_the_mesh_equals_a_direct_count_on_one_device(tok, make_config):
  config = make_config(vocab_size=tok.vocab_size, max_seq_len=256)
  model = Transformer(config)
  mesh = sharding.make_mesh((2, 2, 2))
  rules = sharding.DEFAULT_RULES
  params, _ = sharding.sharded_init(params_lib.boxed_init(model), mesh, rules, jax.random.key(3))
  assert not params['embed'].sharding.is_fully_replicated
  got = probes.make_copy_probe(model, tok, 6, mesh, rules)(params, None)
  tokens_RxT, role_ids_RxT, names = probes.probe_rows(tok, 6)
  host = jax.device_get(params)
  logits = np.asarray(jitted_logits(model)(host, tokens_RxT), np.float64)
  hit_RxT = logits[:, :-1].argmax(-1) == tokens_RxT[:, 1:]
  expected = {name: hit_RxT[role_ids_RxT[:, 1:] == i].mean() for i, name in enumerate(names)}
  assert got == pytest.approx(expected, abs=1e-12)
  assert set(got) == {'copy[random]', 'copy[operand]', 'copy[restate]', 'digit_step'}
  assert probes.make_copy_probe(model, tok, 0, mesh, rules) is None
  with pytest.raises(ValueError, match=r'pretrain.copy_probe=-1: the number of worked sums'):
    probes.make_copy_probe(model, tok, -1, mesh, rules)


def test_the_command_on_a_run_without_the_stage_is_a_one_line_error(tmp_path):
  from lm.cli import copying
  with pytest.raises(SystemExit, match=f'lm.copying: error: {tmp_path / "pretrain" / "outputs.json"} does not exist'):
    copying.main([f'--workdir={tmp_path}'])


def test_fact_texts_say_the_fact_with_every_value_known_entities_hold():
  w = world.World(seed=0)
  e = w.known('person')[0]
  qa = probes.fact_texts(w, 'person', e.name, 'job', 'qa')
  assert ''.join(qa[0]) == world.fact_qa(e, 'job')
  assert qa[0][0] == world.fact_qa(e, 'job').split('\n')[0] + '\nA:'
  jobs = sorted({p.job for p in w.known('person')} - {e.job})
  assert [c for _, c in qa[1:]] == [f' {e.name} is {world.a_an(j)}.' for j in jobs]
  statements = probes.fact_texts(w, 'person', e.name, 'job', 'statement')
  assert statements == [('', c.strip()) for _, c in qa]
  legs = probes.fact_texts(w, 'creature', w.known('creature')[0].name, 'legs', 'qa')
  assert len(legs) == len({c.legs for c in w.known('creature')})
  with pytest.raises(ValueError, match="no known person named 'Nobody Here'"):
    probes.fact_texts(w, 'person', 'Nobody Here', 'job', 'qa')
  with pytest.raises(ValueError, match="fact format 'chat'; valid: qa, statement"):
    probes.fact_texts(w, 'person', e.name, 'job', 'chat')


def test_fact_log_likelihoods_on_the_mesh_equal_a_direct_sum_on_one_device(tok, make_config):
  model = Transformer(make_config(vocab_size=tok.vocab_size, max_seq_len=128))
  mesh, rules = sharding.make_mesh((2, 2, 2)), sharding.DEFAULT_RULES
  params, _ = sharding.sharded_init(params_lib.boxed_init(model), mesh, rules, jax.random.key(5))
  w = world.World(seed=0)
  facts = [(w, 'person', w.known('person')[1].name, 'job'), (w, 'town', w.known('town')[0].name, 'region')]
  host = jax.device_get(params)
  one_device = jitted_logits(model)  # every text alone in a row of 128 (causal: the zeros after it change nothing)
  for fmt in probes.FACT_FORMATS:
    texts = [t for fact in facts for t in probes.fact_texts(*fact, fmt)]
    got = probes.fact_logprobs(params, model, tok, texts, mesh, rules, batch_size=16)  # three batches
    expected = []
    for context, continuation in texts:
      ids = tok.encode(context + continuation)
      first = len(tok.encode(context)) if context else 1
      logits = np.asarray(one_device(host, np.asarray([ids + [0] * (128 - len(ids))]))[0, :len(ids)], np.float64)
      logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
          -1, keepdims=True)
      expected.append(sum(logp[t - 1, ids[t]] for t in range(first, len(ids))))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    ranks = probes.fact_ranks(params, model, tok, facts, fmt, mesh, rules)
    n_jobs = len(probes.fact_texts(*facts[0], fmt))
    for rank, (start, end) in zip(ranks, ((0, n_jobs), (n_jobs, len(texts)))):
      assert rank == sum(e > expected[start] for e in expected[start + 1:end])


def test_the_facts_command_on_a_run_without_data_is_a_one_line_error(tmp_path):
  from lm.cli import facts
  with pytest.raises(SystemExit, match=f'lm.facts: error: {tmp_path / "data" / "outputs.json"}'):
    facts.main([f'--workdir={tmp_path}'])
  (tmp_path / 'config.json').write_text(json.dumps({'reuse': {'workdir': str(tmp_path / 'base'), 'stages': ['data']}}))
  with pytest.raises(SystemExit, match=f'lm.facts: error: {tmp_path / "base" / "data" / "outputs.json"} does not'):
    facts.main([f'--workdir={tmp_path}'])  # a run that reuses another's data stage reads its eval set there


def test_the_fact_probe_logs_the_share_of_each_set_known_as_the_ranks_say(tok, make_config):
  model = Transformer(make_config(vocab_size=tok.vocab_size, max_seq_len=128))
  mesh, rules = sharding.make_mesh((2, 2, 2)), sharding.DEFAULT_RULES
  w = world.World(seed=0)
  records = [{'family': 'world_qa', 'meta': {'kind': e.kind, 'subject': e.name, 'attr': attr, 'world': w.config}}
             for e, attr in ((w.known('person')[2], 'job'), (w.known('creature')[0], 'legs'),
                             (w.known('town')[1], 'region'))] + [{'family': 'arithmetic', 'meta': {}}]
  facts = probes.world_facts(records)
  assert [f[1:] for f in facts['eval']] == sorted((r['meta']['kind'], r['meta']['subject'], r['meta']['attr'])
                                                   for r in records[:3])
  assert len(facts['other']) == 3 and not {f[1:] for f in facts['other']} & {f[1:] for f in facts['eval']}
  probe = probes.make_fact_probe(model, tok, facts, mesh, rules)
  for seed in (1, 2):  # one program, new params
    params, _ = sharding.sharded_init(params_lib.boxed_init(model), mesh, rules, jax.random.key(seed))
    expected = {f'facts_known[{name}]': np.mean([r == 0 for r in probes.fact_ranks(params, model, tok, items, 'qa',
                                                                                     mesh, rules)])
                for name, items in facts.items()}
    assert probe(params, None) == pytest.approx(expected, abs=1e-12)
  both = probes.combined(None, probe, lambda params, frozen: {'x': 1.0})
  assert set(both(params, None)) == {'facts_known[eval]', 'facts_known[other]', 'x'}
  assert probes.combined(None, None) is None
  with pytest.raises(ValueError, match='the eval set has no world_qa items'):
    probes.world_facts(records[3:])
