"""The tool loop in the sampler: rows calling at different steps, the cache after resuming, masks, budget."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import tools
from lm.data import chat
from lm.inference import agent
from lm.inference import sample as S
from lm.model.transformer import Transformer
from lm.tokenizer import (
  END_ID,
  END_THINK_ID,
  END_TOOL_CALL_ID,
  END_TOOL_RESULT_ID,
  THINK_ID,
  TOOL_CALL_ID,
  TOOL_RESULT_ID,
)
from lm.tools import base as tool_base

ALPHABET = ' abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789{}":,.-_?[]()\'=+*/'


class Tok:
  """One id per character of ALPHABET from 14 on (others read as '?'); control ids come from lm.chat."""
  def encode(self, text):
    return [14 + ALPHABET.index(c if c in ALPHABET else '?') for c in text]

  def decode(self, ids):
    return ''.join(ALPHABET[i - 14] for i in map(int, ids) if 14 <= i < 14 + len(ALPHABET))


class Echo(tools.Tool):
  name, description, parameters = 'echo', 'repeats t twice', {'t': (str, True)}

  def run(self, arguments):
    return tools.ToolResult(arguments['t'] * 2, True)


TOK, TOOLS = Tok(), {'echo': Echo()}
BIAS = 6.0  # added to the scripted token's logit: it wins the argmax, and its log-prob still varies
CFG = S.SamplingConfig(temperature=0.0, max_new_tokens=64)
AGENT = agent.AgentConfig(max_calls=2, result_tokens=12)


class Scripted:
  """The real model, with ``BIAS`` added at every position p of row b to the logit of ``script[b, p]``
  (-1: nothing). The same function of (row, position) in the sampler and in a full forward. Its
  params are ``{'model': the real model's, 'script': int32 [B, S]}``, so a new script compiles nothing."""

  def __init__(self, model):
    self.model, self.config = model, model.config

  def apply(self, variables, tokens_BxT, positions_BxT=None, segment_ids_BxT=None, cache=None):
    params = variables['params']
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
    out = self.model.apply({'params': params['model']}, tokens_BxT, positions_BxT, segment_ids_BxT, cache=cache)
    forced_BxT = jnp.take_along_axis(params['script'], positions_BxT, axis=1)
    bias_BxTxV = jax.nn.one_hot(forced_BxT, self.config.vocab_size) * BIAS  # one_hot(-1) is all zeros
    return {**out, 'logits': out['logits'] + bias_BxTxV}


def call_ids(t='ab'):
  return [TOOL_CALL_ID, *TOK.encode(json.dumps({'name': 'echo', 'arguments': {'t': t}})), END_TOOL_CALL_ID]


def result_ids(text):
  return [TOOL_RESULT_ID, *TOK.encode(text), END_TOOL_RESULT_ID]


BAD_CALL = [TOOL_CALL_ID, *TOK.encode('{"name": echo}'), END_TOOL_CALL_ID]
BAD_RESULT = tool_base.error(f'invalid tool call: {agent._call_of(TOK, BAD_CALL)[1]}').text
# each row's turn: (ids, written by the model?) pieces; rows call at different steps, or never
TURNS = [
    [(call_ids('ab'), 1), (result_ids('abab'), 0), (TOK.encode('ok'), 1), ([END_ID], 1)],
    [([THINK_ID, *TOK.encode('hmm let me see'), END_THINK_ID], 1), (call_ids('xyz'), 1), (result_ids('xyzxyz'), 0),
     (TOK.encode('it is xyzxyz'), 1), ([END_ID], 1)],
    [(TOK.encode('no tools needed'), 1), ([END_ID], 1)],
    [(call_ids('a'), 1), (result_ids('aa'), 0), (TOK.encode('again'), 1), (call_ids('b'), 1), (result_ids('bb'), 0),
     (call_ids('c'), 1)],  # loops on calls: the third is over the budget of 2 and stops the row
    [(BAD_CALL, 1), (result_ids(BAD_RESULT[:AGENT.result_tokens - 2]), 0), (TOK.encode('sorry'), 1), ([END_ID], 1)],
]
PROMPT_LENS = (5, 11, 3, 16, 8)


def script_of(prompts, turns):
  """int32 [8, 256]: at each position, the token the model should write next (-1: none)."""
  script = np.full((8, 256), -1, np.int32)
  for b, (prompt, turn) in enumerate(zip(prompts, turns)):
    pos = len(prompt)
    for ids, by_model in turn:
      if by_model:
        script[b, pos - 1:pos - 1 + len(ids)] = ids  # the logits at p predict the token at p + 1
      pos += len(ids)
  return jnp.asarray(script)


@pytest.fixture(scope='module')
def setup(make_config):
  base = Transformer(make_config(max_seq_len=256))
  params = nn.unbox(jax.jit(base.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  rng = np.random.default_rng(0)
  prompts = [rng.integers(14, 14 + len(ALPHABET), n).astype(np.int32) for n in PROMPT_LENS]
  return Scripted(base), {'model': params, 'script': script_of(prompts, TURNS)}, prompts


def test_rows_calling_at_different_steps_resume_as_if_prefilled(setup):
  model, params, prompts = setup
  before = agent.compile_count()
  out = agent.generate(params, model, TOK, prompts, CFG, jax.random.key(1), TOOLS, AGENT)
  for b, turn in enumerate(TURNS):
    want = np.concatenate([ids for ids, _ in turn])
    n = len(want)
    np.testing.assert_array_equal(out['tokens'][b, :n], want)
    assert out['lengths'][b] == n and out['mask'][b].sum() == n and (out['tokens'][b, n:] == CFG.pad_id).all()
    # the response mask is 1 exactly on what the model wrote, 0 on the inserted results
    np.testing.assert_array_equal(out['response_mask'][b, :n], np.concatenate([[m] * len(ids) for ids, m in turn]))
    assert not out['response_mask'][b, n:].any() and (out['logprobs'][b][~out['response_mask'][b]] == 0).all()

  # the log-prob of every sampled token equals a full forward over prompt + calls + results (the
  # cache after each resume holds exactly that transcript); one forward for the whole batch
  T = 256
  full_BxT = np.zeros((8, T), np.int32)  # the batch the sampler ran: 5 rows and 3 of filler
  for b, prompt in enumerate(prompts):
    seq = np.concatenate([prompt, out['tokens'][b, :out['lengths'][b]]])
    full_BxT[b, :len(seq)] = seq
  logp_BxTxV = jax.nn.log_softmax(jax.jit(lambda p, t: model.apply({'params': p}, t)['logits'])(params, full_BxT))
  logp_BxTxV = np.asarray(logp_BxTxV)
  spread = []
  for b, prompt in enumerate(prompts):
    where = np.flatnonzero(out['response_mask'][b])
    got = out['logprobs'][b, where]
    want = np.take_along_axis(logp_BxTxV[b, len(prompt) - 1 + where], out['tokens'][b, where][:, None], -1)[:, 0]
    np.testing.assert_allclose(got, want, atol=2e-5)
    spread.append(np.ptp(got))
  assert max(spread) > 1e-3  # the scripted tokens are likely, not certain: the comparison is not 0 == 0

  traces = out['traces']
  assert [t['stopped'] for t in traces] == [None, None, None, 'tool_budget', None]
  assert [t['finished'] for t in traces] == [True, True, True, False, True]
  assert traces[0]['calls'] == [{'name': 'echo', 'arguments': {'t': 'ab'}, 'result': 'abab', 'ok': True,
                                 'truncated': False, 'executed': True}]
  assert traces[0]['messages'] == [
      {'role': 'assistant', 'content': '', 'tool_calls': [{'name': 'echo', 'arguments': {'t': 'ab'}}]},
      {'role': 'tool', 'content': 'abab'}, {'role': 'assistant', 'content': 'ok'}]
  assert traces[1]['messages'][0]['thinking'] == 'hmm let me see' and traces[1]['answer']['content'] == 'it is xyzxyz'
  assert traces[2]['messages'] == [{'role': 'assistant', 'content': 'no tools needed'}] and traces[2]['calls'] == []
  assert [(c['arguments']['t'], c['executed']) for c in traces[3]['calls']] == [('a', True), ('b', True), ('c', False)]
  assert 'result' not in traces[3]['calls'][2]
  bad = traces[4]['calls'][0]
  assert bad['ok'] is False and bad['truncated'] and bad['result'].startswith('invalid tool call: invalid JSON')
  assert traces[4]['answer']['content'] == 'sorry'

  # another batch with the same shapes: no new programs, however many calls and rounds
  agent.generate(params, model, TOK, prompts[::-1], CFG, jax.random.key(2), TOOLS, AGENT)
  assert agent.compile_count() - before <= 1


def test_the_budget_stops_a_model_that_loops_on_calls(setup):
  """Every row calls again after each result, from its first token or after some text: each is
  stopped at its third call (budget 2) and the loop ends after three rounds."""
  model, params, prompts = setup
  loops = [[(TOK.encode('x' * b), 1)] + [(call_ids('q'), 1), (result_ids('qq'), 0)] * 2 + [(call_ids('q'), 1)]
           for b in range(len(prompts))]
  out = agent.generate(params | {'script': script_of(prompts, loops)}, model, TOK, prompts, CFG, jax.random.key(3),
                       TOOLS, AGENT)
  for b, (t, turn) in enumerate(zip(out['traces'], loops)):
    assert t['stopped'] == 'tool_budget' and not t['finished'] and not t['end_of_turn']
    assert [c['executed'] for c in t['calls']] == [True, True, False]
    np.testing.assert_array_equal(out['tokens'][b, :out['lengths'][b]], np.concatenate([ids for ids, _ in turn]))
    assert out['tokens'][b, out['lengths'][b] - 1] == END_TOOL_CALL_ID


TURN_MESSAGES = [{'role': 'assistant', 'content': '', 'tool_calls': [{'name': 'echo', 'arguments': {'t': 'ab'}}]},
                 {'role': 'tool', 'content': 'abab'}, {'role': 'assistant', 'content': 'ok'}]


def test_tool_results_carry_no_loss_in_sft():
  conversation = [{'role': 'user', 'content': 'hi'}, *TURN_MESSAGES]
  ids, loss_mask = chat.render(TOK, conversation)
  opened = np.cumsum(ids == TOOL_RESULT_ID) - np.cumsum(ids == END_TOOL_RESULT_ID)
  inside = (opened > 0) | (ids == END_TOOL_RESULT_ID)
  assert inside.sum() == len(result_ids('abab')) and (loss_mask[inside] == 0).all()
  outside = loss_mask[~inside]  # [user] h i [end] [assistant]: no loss; every token after them: loss
  assert (outside[:5] == 0).all() and (outside[5:] == 1).all() and len(outside) > 5


def test_agent_config_is_checked():
  with pytest.raises(ValueError, match='max_calls=-1 must be >= 0'):
    agent.AgentConfig(max_calls=-1)
  with pytest.raises(ValueError, match='result_tokens=2 must be >= 3'):
    agent.AgentConfig(result_tokens=2)
