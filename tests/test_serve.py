"""``python -m lm.serve``: the token-by-token decoder against the sampler, the API (streaming, batching,
bad input, path traversal, tools, durable rankings, kill -9) and the pages in a real headless Chromium.

One tiny run serves every test: the lifecycle smoke config's data, tokenizer, pretrain, SFT and eval
stages (about a minute). Set ``LM_SCREENSHOTS=1`` to have the browser tests write
``docs/screenshots/*.png``.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest
import uvicorn

from lm import config as lm_config
from lm import outputs, sharding
from lm.cli import chat as cli_chat
from lm.cli import generate as cli_generate
from lm.cli import launch
from lm.cli import serve as serve_cli
from lm.data import chat, human
from lm.inference import sample, serving, stream
from lm.serve import app as app_lib
from lm.serve import ranking, turns
from lm.tools import base as tool_base
from tests.conftest import jitted_logits

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / 'docs' / 'screenshots'
QUESTION = 'What is 7 times 8?'


# ------------------------------------------------------------------------------ fixtures

def _alias_run(run: Path, workdir: Path, stages: dict) -> Path:
  """A run directory whose stages are ``workdir``'s (``{stage: stage of workdir}``): its outputs.json
  copied (the same checkpoints, perhaps under another name), and its config."""
  for stage, source in stages.items():
    (run / stage).mkdir(parents=True, exist_ok=True)
    shutil.copy(workdir / source / 'outputs.json', run / stage / 'outputs.json')
  shutil.copy(workdir / 'config.json', run / 'config.json')
  return run


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  config = lm_config.load(str(REPO / 'experiments/lifecycle.py:smoke'))
  config.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'eval')
  config.eval.max_examples = 1
  workdir = tmp_path_factory.mktemp('serve_run')
  launch.launch(config, workdir)
  # a run with saved RLHF rollouts: its "rlhf" policy is the pretrained model, the reference is SFT
  alias = _alias_run(workdir / 'with_rollouts', workdir, {'tokenizer': 'tokenizer', 'sft': 'sft', 'rlhf': 'pretrain'})
  rollout = {'iteration': 3, 'prompt': [{'role': 'user', 'content': QUESTION}],
             'response': {'role': 'assistant', 'content': '56, I think.'}, 'proxy_reward': 0.25, 'gold_reward': 1.0}
  (alias / 'rlhf' / 'rollouts.jsonl').write_text(json.dumps(rollout) + '\n')
  return workdir


class Server:
  """The app in a thread of this process, on a free port of 127.0.0.1."""

  def __init__(self, workdir):
    self.app = app_lib.create_app(workdir)
    self.port = _free_port()
    self.base = f'http://127.0.0.1:{self.port}'
    self.server = uvicorn.Server(uvicorn.Config(self.app, host='127.0.0.1', port=self.port, log_level='warning'))
    self.thread = threading.Thread(target=self.server.run, daemon=True)
    self.thread.start()
    deadline = time.time() + 30
    while not self.server.started:
      assert time.time() < deadline, 'the server did not start'
      time.sleep(0.05)

  def stop(self):
    self.server.should_exit = True
    self.thread.join(10)


@pytest.fixture(scope='module')
def server(workdir):
  s = Server(workdir)
  yield s
  s.stop()


@pytest.fixture(scope='module')
def served(workdir):
  return serving.load(workdir, 'sft')


@pytest.fixture(scope='module')
def browser():
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = '/usr/bin/chromium'
  profile = tempfile.mkdtemp(prefix='lm-serve-chromium-')
  for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--no-first-run', f'--user-data-dir={profile}',
               '--window-size=1300,900'):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=options)
  driver.set_script_timeout(120)
  yield driver
  driver.quit()
  shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name: str) -> None:
  """``docs/screenshots/<name>.png`` of the page, when ``LM_SCREENSHOTS`` is set (the docs' pictures)."""
  if os.environ.get('LM_SCREENSHOTS'):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script('return Math.min(2400, document.documentElement.scrollHeight)')
    driver.set_window_size(1300, max(900, height))
    driver.save_screenshot(str(SCREENSHOTS / f'{name}.png'))
    driver.set_window_size(1300, 900)


# ------------------------------------------------------------------------------- helpers

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def post(base, path, body, timeout=120):
  """``(status, parsed JSON body)`` of a POST."""
  req = urllib.request.Request(base + path, json.dumps(body).encode(), {'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def get(base, path, timeout=60):
  try:
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
      return r.status, r.read()
  except urllib.error.HTTPError as e:
    return e.code, e.read()


def chat_events(base, body, timeout=180) -> list[dict]:
  """The server-sent events of one ``/api/chat`` answer, each with its arrival time as ``t``."""
  req = urllib.request.Request(base + '/api/chat', json.dumps(body).encode(), {'Content-Type': 'application/json'})
  events = []
  with urllib.request.urlopen(req, timeout=timeout) as r:
    assert r.headers['Content-Type'].startswith('text/event-stream')
    for line in r:
      if line.startswith(b'data: '):
        events.append({**json.loads(line[6:]), 't': time.monotonic()})
  return events


def done_of(events) -> dict:
  assert [e['type'] for e in events][-1] == 'end', events[-1]
  return next(e for e in events if e['type'] == 'done')


def ask(question=QUESTION, **kw) -> dict:
  return {'stage': 'sft', 'messages': [{'role': 'user', 'content': question}], 'temperature': 0.0, 'top_p': 1.0,
          'max_tokens': 32, **kw}


def generate_cli(workdir, tmp_path, question, max_new_tokens) -> dict:
  """``python -m lm.generate``'s greedy answer, tools off."""
  prompts, out = tmp_path / 'prompts.jsonl', tmp_path / 'out.jsonl'
  prompts.write_text(json.dumps({'prompt': question}) + '\n')
  cli_generate.main(['--workdir', str(workdir), '--prompts', str(prompts), '--out', str(out), '--stage', 'sft',
                     '--tools', 'none', '--temperature', '0', '--max_new_tokens', str(max_new_tokens)])
  return json.loads(out.read_text())


def sampler(served, question, max_new_tokens, temperature=0.0, seed=0) -> dict:
  """``sample.generate`` of one user question: tokens and log-probs of the valid positions."""
  prompt = chat.render_prompt(served.tokenizer, [{'role': 'user', 'content': question}])
  cfg = sample.SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens)
  out = sample.generate(served.params, served.model, served.tokenizer, [prompt], cfg, jax.random.key(seed),
                        mesh=served.mesh, rules=served.rules)
  n = int(out['lengths'][0])
  return {'ids': out['tokens'][0, :n].tolist(), 'logprobs': out['logprobs'][0, :n]}


def forward_logprobs(served, prompt_ids, turn_ids) -> np.ndarray:
  """log p(turn token | everything before it) from one forward pass without a cache (float64 softmax)."""
  ids = np.concatenate([prompt_ids, turn_ids]).astype(np.int32)[None].repeat(8, 0)  # a row per device
  with sharding.use_mesh(served.mesh, served.rules):
    logits = np.asarray(jitted_logits(served.model)(served.params, ids)[0], np.float64)
  logits = logits[len(prompt_ids) - 1:-1]
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  return logp[np.arange(len(turn_ids)), turn_ids]


def wait(driver, condition, timeout=120):
  """Until ``condition(driver)`` holds; an element the page redraws while it is read is read again."""
  from selenium.common.exceptions import StaleElementReferenceException
  from selenium.webdriver.support.ui import WebDriverWait
  return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def css(driver, selector):
  from selenium.webdriver.common.by import By
  return driver.find_elements(By.CSS_SELECTOR, selector)


def answers(driver) -> list[dict]:
  """Every finished assistant turn on the chat page: its token ids, log-probs and parsed answer."""
  return driver.execute_script("""
    return [...document.querySelectorAll('.msg.assistant .turn')].filter(t => t.dataset.ids).map(t => ({
      ids: [...t.querySelectorAll('.tok')].map(s => +s.dataset.id),
      logprobs: [...t.querySelectorAll('.tok')].map(s => +s.dataset.logprob),
      done_ids: JSON.parse(t.dataset.ids), answer: t.dataset.answer}));""")


def send_in_page(driver, text, **settings):
  for key, value in settings.items():
    field = css(driver, f'#{key}')[0]
    if field.get_attribute('type') == 'checkbox':
      if field.is_selected() != value:
        field.click()
    else:
      field.clear()
      field.send_keys(str(value))
  box = css(driver, '#input')[0]
  box.clear()
  box.send_keys(text)
  css(driver, '#send')[0].click()


# ------------------------------------------------------------------------------ the decoder

def test_stream_writes_the_samplers_tokens_and_logprobs_with_one_step_program(served):
  prompts = [chat.render_prompt(served.tokenizer, [{'role': 'user', 'content': q}]) for q in (QUESTION, 'Hello there')]
  cfg = sample.SamplingConfig(temperature=0.0, max_new_tokens=24)
  ref = sample.generate(served.params, served.model, served.tokenizer, prompts, cfg, jax.random.key(0),
                        mesh=served.mesh, rules=served.rules)
  before = stream.compile_count()
  events = list(stream.stream(served.params, served.model, served.tokenizer, prompts, cfg, [0, 1], mesh=served.mesh,
                              rules=served.rules))
  done = {e.row: e for e in events if isinstance(e, stream.Done)}
  for b in range(2):
    n = int(ref['lengths'][b])
    assert done[b].ids == ref['tokens'][b, :n].tolist()
    logp = [e.logprob for e in events if isinstance(e, stream.Token) and e.row == b]
    np.testing.assert_allclose(logp, ref['logprobs'][b, :n], atol=1e-5)
    tops = [e for e in events if isinstance(e, stream.Token) and e.row == b]
    assert all(t.top_ids[0] == t.id and abs(t.top_logprobs[0] - t.logprob) < 1e-6 for t in tops)  # greedy: the top
  assert stream.compile_count() - before <= 2  # one prefill, one step: not one per token
  again = list(stream.stream(served.params, served.model, served.tokenizer, prompts, cfg, [0, 1], mesh=served.mesh,
                             rules=served.rules))
  assert stream.compile_count() - before <= 2 and len(again) == len(events)

  # entropy of the raw distribution, from a float64 forward pass at the first step
  first = next(e for e in events if isinstance(e, stream.Token) and e.row == 0)
  with sharding.use_mesh(served.mesh, served.rules):
    logits = np.asarray(jitted_logits(served.model)(served.params, prompts[0][None].repeat(8, 0))[0, -1], np.float64)
  p = np.exp(logits - logits.max())
  p /= p.sum()
  assert abs(first.entropy - float(-(p * np.log(p)).sum())) < 1e-4


def test_a_rows_sample_does_not_depend_on_its_batch(served):
  prompts = [chat.render_prompt(served.tokenizer, [{'role': 'user', 'content': q}]) for q in (QUESTION, 'Hi')]
  cfg = sample.SamplingConfig(temperature=1.0, max_new_tokens=16)

  def ids(rows, seeds):
    events = stream.stream(served.params, served.model, served.tokenizer, rows, cfg, seeds, mesh=served.mesh,
                           rules=served.rules)
    return {e.row: e.ids for e in events if isinstance(e, stream.Done)}

  together = ids(prompts, [7, 8])
  assert together[0] == ids(prompts[:1], [7])[0] and together[1] == ids(prompts[1:], [8])[0]
  assert ids(prompts[:1], [7])[0] != ids(prompts[:1], [9])[0]  # the seed matters


def test_turn_parts_and_history_are_lm_chats():
  turn = [{'role': 'assistant', 'content': 'Let me see.', 'thinking': 'multiply\nthen check',
           'tool_calls': [{'name': 'calculator', 'arguments': {'expression': '7*8'}}],
           'tool_call_errors': [{'text': '{"nam', 'error': 'invalid JSON'}]},
          {'role': 'tool', 'content': '56'},
          {'role': 'assistant', 'content': 'It is 56.'}]
  lines = []
  for p in turns.parts(turn):
    prefix = {'think': '  [think] ', 'before_call': '  [before the call] ', 'call': '  [tool call] ',
              'bad_call': '  [bad tool call] ', 'result': '  [tool result] ', 'answer': 'assistant> '}[p['kind']]
    lines += [prefix + line for line in (p['text'].splitlines() if p['kind'] in ('think', 'result') else [p['text']])]
  assert '\n'.join(lines) == cli_chat.show_turn(turn)
  assert turns.history(turn) == cli_chat._history(turn)


# ------------------------------------------------------------------------------ the API

def test_chat_streams_token_by_token_the_greedy_answer_of_lm_generate(server, workdir, served, tmp_path):
  events = chat_events(server.base, ask(max_tokens=64))
  done = done_of(events)
  tokens = [e for e in events if e['type'] == 'token']
  assert [t['id'] for t in tokens] == done['ids'] and len(tokens) >= 2  # one event per token
  assert tokens[-1]['t'] < next(e['t'] for e in events if e['type'] == 'done')
  assert next(e['t'] for e in events if e['type'] == 'done') - tokens[0]['t'] > 0.02  # they came as written
  expected = generate_cli(workdir, tmp_path, QUESTION, 64)
  assert done['answer'] == expected['response'] and done['messages'] == expected['turn']
  assert done['finished'] == expected['finished']
  ref = sampler(served, QUESTION, 64)
  assert done['ids'] == ref['ids']
  np.testing.assert_allclose([t['logprob'] for t in tokens], ref['logprobs'], atol=1e-5)


def test_regenerating_from_an_alternative_keeps_the_prefix(server):
  events = chat_events(server.base, ask())
  first, tokens = done_of(events), [e for e in events if e['type'] == 'token']
  at = 3
  alternative = next(i for i, _, _ in tokens[at]['top'] if i != tokens[at]['id'])
  branch = chat_events(server.base, ask(forced=first['ids'][:at] + [alternative]))
  new = done_of(branch)
  assert new['ids'][:at] == first['ids'][:at] and new['ids'][at] == alternative != first['ids'][at]
  assert [t['source'] for t in branch if t['type'] == 'token'][:at + 2] == ['forced'] * (at + 1) + ['model']
  # the forced tokens' probabilities are the original trajectory's
  np.testing.assert_allclose([t['logprob'] for t in branch if t['type'] == 'token'][:at],
                             [t['logprob'] for t in tokens[:at]], atol=1e-5)


def test_a_trace_is_rescored_with_the_models_probabilities(server, workdir, served):
  rows = [json.loads(line) for line in (workdir / 'eval' / 'traces_sft.jsonl').read_text().splitlines()]
  index = next(i for i, r in enumerate(rows) if app_lib.turn_ids(served.tokenizer, r))
  status, data = post(server.base, '/api/rescore', {'source': 'trace', 'name': 'sft', 'index': index})
  assert status == 200, data
  row = rows[index]
  assert data['gold'] == row['score'] and data['stage'] == 'sft' and data['prompt'] == row['prompt']
  turn = app_lib.turn_ids(served.tokenizer, row)
  assert [t['id'] for t in data['tokens']] == turn
  assert chat.parse_turn(served.tokenizer, turn) == row['turn']
  prompt = chat.render_prompt(served.tokenizer, row['prompt'])
  np.testing.assert_allclose([t['logprob'] for t in data['tokens']], forward_logprobs(served, prompt, turn), atol=2e-4)


def test_rollouts_show_proxy_gold_and_per_token_kl(server, workdir):
  status, data = get(server.base, '/api/rollouts?run=.')
  assert status == 200 and not json.loads(data)['saved'] and 'saved no RLHF rollouts' in json.loads(data)['message']
  status, listing = get(server.base, '/api/rollouts?run=with_rollouts')
  rows = json.loads(listing)['rows']
  assert rows == [{'stage': 'rlhf', 'index': 0, 'iteration': 3, 'question': QUESTION, 'proxy_reward': 0.25,
                   'gold_reward': 1.0}]
  status, data = post(server.base, '/api/rescore', {'run': 'with_rollouts', 'source': 'rollout', 'name': 'rlhf',
                                                    'index': 0})
  assert status == 200, data
  assert data['proxy_reward'] == 0.25 and data['gold'] == 1.0 and data['reference'] == 'sft'
  policy, reference = serving.load(workdir, 'pretrain'), serving.load(workdir, 'sft')
  prompt = chat.render_prompt(policy.tokenizer, [{'role': 'user', 'content': QUESTION}])
  turn = [t['id'] for t in data['tokens']]
  assert policy.tokenizer.decode(turn) == '56, I think.'
  kl = forward_logprobs(policy, prompt, turn) - forward_logprobs(reference, prompt, turn)
  np.testing.assert_allclose(data['kl'], kl, atol=3e-4)
  assert np.abs(kl).max() > 1e-3  # two different models


def test_bad_input_is_a_one_line_4xx(server, tmp_path):
  cases = [
      ('/api/chat', ask(question='   '), 400, 'empty'),
      ('/api/chat', ask(question='x' * 5000), 400, 'at most 4000'),
      ('/api/chat', ask(stage='nope'), 404, "unknown stage 'nope'"),
      ('/api/chat', ask(run='../..'), 404, 'unknown run'),
      ('/api/chat', {**ask(), 'messages': []}, 400, 'empty'),
      ('/api/chat', {**ask(), 'temperature': 'hot'}, 422, 'temperature'),
      ('/api/chat', ask(forced=[10 ** 9]), 400, 'forced'),
      ('/api/rank/submit', {'task': 'nope', 'rater': 'ada', 'ranking': [0, 1]}, 404, 'unknown ranking task'),
      ('/api/rescore', {'source': 'trace', 'name': 'nope', 'index': 0}, 404, 'no eval traces'),
  ]
  for path, body, status, words in cases:
    got, data = post(server.base, path, body)
    assert got == status and words in data['error'], (path, body, got, data)
    assert '\n' not in data['error'] and 'Traceback' not in data['error']
  status, task = post(server.base, '/api/rank/new', {'stage': 'sft', 'k': 3, 'max_tokens': 8, 'seed': 1})
  assert status == 200, task
  for bad in ([0, 0, 1], [0, 1], [0, 1, 3]):
    got, data = post(server.base, '/api/rank/submit', {'task': task['task'], 'rater': 'ada', 'ranking': bad})
    assert got == 400 and 'not a permutation of 0..2' in data['error'], data
  # a workdir where nothing is trained yet
  empty = tmp_path / 'untrained'
  (empty / 'data').mkdir(parents=True)
  outputs.save(outputs.Data(tfds_dir='x'), empty / 'data' / 'outputs.json')
  (empty / 'config.json').write_text('{}')
  s = Server(empty)
  try:
    got, data = post(s.base, '/api/chat', ask())
    assert got == 409 and data['error'] == "run '.' has no trained model yet (finished stages: data)"
  finally:
    s.stop()


def test_the_cli_refuses_a_missing_workdir(tmp_path, capsys):
  with pytest.raises(SystemExit, match=f'lm.serve: error: workdir {tmp_path / "nope"} does not exist'):
    serve_cli.main(['--workdir', str(tmp_path / 'nope')])


def test_only_the_workdir_is_served(server, workdir):
  assert get(server.base, '/report.html?run=.')[0] == 200
  secret = (REPO / 'pyproject.toml').read_bytes()[:40]
  conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=30)
  for raw in ('/static/../../../pyproject.toml', '/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml',
              '/static/..%2f..%2f..%2fpyproject.toml', '/report.html?run=..', '/report.html?run=../..',
              '/report.html?run=%2Fetc', '/api/traces?model=../../../etc/passwd', '/api/metrics?run=/',
              '/api/rollouts?run=..%2F..', '/..%2f..%2fetc/passwd', '/static/../config.json'):
    conn.request('GET', raw)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 404, (raw, r.status)
    assert secret not in body and b'root:' not in body and b'"data"' not in body, raw
  conn.close()


def test_tools_run_in_the_sandbox(server, served, monkeypatch):
  calls = []
  original = tool_base.run_call
  monkeypatch.setattr(tool_base, 'run_call', lambda tools, call: calls.append((tools, call)) or original(tools, call))
  code = f'import os; print(os.path.exists({str(REPO / "pyproject.toml")!r}), 6 * 7)'
  text = json.dumps({'name': 'python', 'arguments': {'code': code}})
  forced = [served.tokenizer.token_id('<|tool_call|>'), *served.tokenizer.encode(text),
            served.tokenizer.token_id('<|/tool_call|>')]
  events = chat_events(server.base, ask(tools=True, forced=forced, max_tokens=8))
  done = done_of(events)
  assert len(calls) == 1 and type(calls[0][0]['python']).__name__ == 'PythonSandbox'
  assert [e['call']['result'] for e in events if e['type'] == 'call'] == ['False 42']  # the repo is not in there
  assert {'kind': 'result', 'text': 'False 42'} in done['parts']
  result_id = served.tokenizer.token_id('<|tool_result|>')
  assert {t['source'] for t in events if t['type'] == 'token' and t['id'] == result_id} == {'tool'}
  assert (REPO / 'pyproject.toml').exists()


def test_a_bounded_load_finishes_without_errors_or_mixed_answers(server):
  bodies = [ask(question=q, temperature=1.0, seed=s, max_tokens=16)
            for q, s in ((QUESTION, 1), ('Name a town.', 2), ('Hello!', 3))]
  expected = [done_of(chat_events(server.base, b))['ids'] for b in bodies]
  assert len({tuple(e) for e in expected}) == 3
  runs_before = len(server.app.state.engine.batches)
  jobs = [bodies[i % 3] for i in range(24)]
  with ThreadPoolExecutor(24) as pool:
    results = list(pool.map(lambda b: done_of(chat_events(server.base, b))['ids'], jobs))
  assert results == [expected[i % 3] for i in range(24)]
  batches = list(server.app.state.engine.batches)[runs_before:]
  assert sum(batches) == 24 and max(batches) > 1  # queued, and batched where they could be


def test_rankings_are_durable_and_a_torn_last_line_is_ignored(tmp_path):
  record = {f: None for f in human.FIELDS} | {'prompt': [], 'responses': [[], []], 'ranking': [1, 0], 'rater': 'a',
                                              'time': 1.0, 'ties': [], 'panel_ranking': [], 'gold_ranking': []}
  human.append(tmp_path, record)
  with open(human.path(tmp_path), 'ab') as f:
    f.write(b'{"prompt": [], "respo')  # a writer killed mid-line
  assert human.read_rankings(tmp_path) == [record]
  human.append(tmp_path, {**record, 'rater': 'b'})
  assert [r['rater'] for r in human.read_rankings(tmp_path)] == ['a', 'b']
  assert human.path(tmp_path).read_bytes().count(b'\n') == 2
  assert human.read_rankings(tmp_path, with_gold=True) == []
  with open(human.path(tmp_path), 'ab') as f:
    f.write(b'not json\n')
  with pytest.raises(ValueError, match='rankings.jsonl line 3: not JSON'):
    human.read_rankings(tmp_path)


def test_agreement_counts_pairs_as_a_person_would():
  # reference: 2 > 0 > 1 (utilities), the person: 0 > 2 > 1 -> pairs (0,1) and (1,2) agree, (0,2) not
  assert ranking.agreement([0, 2, 1], [2, 0, 1], values=[0.5, 0.1, 0.9]) == (2, 3)
  assert ranking.agreement([0, 2, 1], [2, 0, 1], ties=[[0, 2]], values=[0.5, 0.1, 0.9]) == (2, 2)
  assert ranking.agreement([0, 2, 1], [2, 0, 1], values=[0.5, 0.5, 0.9]) == (1, 2)  # gold ties are not compared


def test_acknowledged_rankings_survive_kill_9(workdir, tmp_path):
  run = _alias_run(tmp_path / 'run', workdir, {'tokenizer': 'tokenizer', 'sft': 'sft'})
  port = _free_port()
  base = f'http://127.0.0.1:{port}'
  log = open(tmp_path / 'server.log', 'wb')
  proc = subprocess.Popen([sys.executable, '-m', 'lm.serve', f'--workdir={run}', f'--port={port}'], cwd=REPO,
                          stdout=log, stderr=log, start_new_session=True)
  try:
    deadline = time.time() + 120
    while True:
      try:
        if get(base, '/api/runs', timeout=2)[0] == 200:
          break
      except OSError:
        pass
      assert proc.poll() is None and time.time() < deadline, (tmp_path / 'server.log').read_text()[-2000:]
      time.sleep(0.2)
    status, task = post(base, '/api/rank/new', {'stage': 'sft', 'k': 3, 'max_tokens': 8, 'seed': 5})
    assert status == 200, task
    acked, stop = [], threading.Event()

    def rater(worker):
      n = 0
      while not stop.is_set():
        name = f'w{worker}-{n}'
        try:
          status, _ = post(base, '/api/rank/submit', {'task': task['task'], 'rater': name, 'ranking': [2, 0, 1]},
                           timeout=10)
        except OSError:
          return
        if status == 200:
          acked.append(name)
        n += 1

    threads = [threading.Thread(target=rater, args=(w,)) for w in range(4)]
    for t in threads:
      t.start()
    while len(acked) < 40 and time.time() < deadline:
      time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for t in threads:
      t.join(15)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    log.close()
  saved = {r['rater'] for r in human.read_rankings(run)}
  assert len(acked) >= 40 and set(acked) <= saved


# ------------------------------------------------------------------------------ the pages

def test_runs_page_shows_stages_curves_report_and_links(server, browser):
  browser.get(server.base + '/?run=.')
  wait(browser, lambda d: css(d, '#charts .chart svg polyline'))
  stages = [row.text.split()[0] for row in css(browser, '#stages tr')[1:]]
  assert stages == ['data', 'eval', 'pretrain', 'sft', 'tokenizer']
  titles = [c.get_attribute('data-title') for c in css(browser, '#charts .chart')]
  assert 'pretrain · loss' in titles and 'sft · loss' in titles
  assert css(browser, 'iframe.report')[0].get_attribute('src').endswith('/report.html?run=.')
  assert {a.text for a in css(browser, '#runs a')} == {'. (the workdir)', 'with_rollouts'}
  screenshot(browser, 'runs')


def test_chat_page_streams_the_greedy_answer_and_branches(server, browser, workdir, served, tmp_path):
  browser.get(server.base + '/chat?run=.')
  wait(browser, lambda d: css(d, '#stage option'))
  send_in_page(browser, QUESTION, temperature=0, max_tokens=24, seed=0, new_seed=False)
  wait(browser, lambda d: answers(d))
  first = answers(browser)[0]
  expected = generate_cli(workdir, tmp_path, QUESTION, 24)
  assert first['answer'] == expected['response']['content']
  ref = sampler(served, QUESTION, 24)
  assert first['ids'] == first['done_ids'] == ref['ids']
  np.testing.assert_allclose(first['logprobs'], ref['logprobs'], atol=1e-5)  # the colours' probabilities

  at = 2
  token = css(browser, '.msg.assistant .tok')[at]
  token.click()
  wait(browser, lambda d: css(d, '#tip .alt.clickable'))
  assert 'entropy' in css(browser, '#tip .head')[0].text
  screenshot(browser, 'chat')
  alternative = css(browser, '#tip .alt.clickable')[0]
  alt_id = int(alternative.get_attribute('data-id'))
  alternative.click()
  wait(browser, lambda d: 'version 2/2' in d.page_source and answers(d) and answers(d)[0]['ids'] != first['ids'])
  branch = answers(browser)[0]
  assert branch['ids'][:at] == first['ids'][:at] and branch['ids'][at] == alt_id != first['ids'][at]
  screenshot(browser, 'chat_branch')


def test_two_tabs_chat_at_once(server, browser):
  expected = {}
  for tab, question in enumerate(('Name a town.', 'What does a baker make?')):
    expected[tab] = done_of(chat_events(server.base, ask(question=question, temperature=1.0, seed=11 + tab,
                                                         max_tokens=24)))['ids']
  first = browser.current_window_handle
  browser.switch_to.new_window('tab')
  second = browser.current_window_handle
  for handle in (first, second):
    browser.switch_to.window(handle)
    browser.get(server.base + '/chat?run=.')
    wait(browser, lambda d: css(d, '#stage option'))
  for tab, (handle, question) in enumerate(zip((first, second), ('Name a town.', 'What does a baker make?'))):
    browser.switch_to.window(handle)
    send_in_page(browser, question, temperature=1.0, top_p=1, max_tokens=24, seed=11 + tab, new_seed=False)
  for tab, handle in enumerate((first, second)):
    browser.switch_to.window(handle)
    wait(browser, lambda d: answers(d))
    assert answers(browser)[0]['ids'] == expected[tab]
  assert expected[0] != expected[1]
  browser.close()
  browser.switch_to.window(first)


def test_bad_input_is_shown_in_the_pages(server, browser, tmp_path):
  browser.get(server.base + '/chat?run=.')
  wait(browser, lambda d: css(d, '#stage option'))
  send_in_page(browser, ' ')
  wait(browser, lambda d: css(d, '#chat_error .error'))
  assert 'the message is empty' in css(browser, '#chat_error .error')[0].text
  assert not css(browser, '.msg.user')  # the refused message went back into the box
  send_in_page(browser, 'x' * 4100)
  # the error box is redrawn on each send: between the two it may briefly hold no error element
  wait(browser, lambda d: any('at most 4000' in e.text for e in css(d, '#chat_error .error')))
  browser.get(server.base + '/rank?run=.')
  wait(browser, lambda d: css(d, '#stage option'))
  css(browser, 'input[name=source][value=typed]')[0].click()
  css(browser, '#new')[0].click()
  wait(browser, lambda d: css(d, '#error .error'))
  assert 'the prompt is empty' in css(browser, '#error .error')[0].text
  browser.get(server.base + '/chat?run=nope')
  wait(browser, lambda d: css(d, '#notice .error'))
  assert 'unknown run' in css(browser, '#notice .error')[0].text


def test_trajectory_page_opens_traces_and_rollouts(server, browser):
  browser.get(server.base + '/trajectory?run=.&source=trace:sft')
  wait(browser, lambda d: css(d, '.rowlist .row'))
  rows = css(browser, '.rowlist .row')
  status, listing = get(server.base, '/api/traces?run=.&model=sft')
  scores = [r['score'] for r in json.loads(listing)['rows']]
  assert len(rows) == len(scores)
  rows[0].click()
  wait(browser, lambda d: css(d, '#view .tok'))
  assert f'gold score: {scores[0]:.3f}' in css(browser, '#stats')[0].text
  status, data = post(server.base, '/api/rescore', {'source': 'trace', 'name': 'sft', 'index': 0})
  shown = [float(t.get_attribute('data-logprob')) for t in css(browser, '#view .tok')]
  np.testing.assert_allclose(shown, [t['logprob'] for t in data['tokens']], atol=1e-6)
  css(browser, '#view .tok')[0].click()
  wait(browser, lambda d: css(d, '#tip .alt.clickable'))
  css(browser, '#tip .alt.clickable')[0].click()
  wait(browser, lambda d: css(d, '.branch .turn[data-ids]'))
  screenshot(browser, 'trajectory')

  browser.get(server.base + '/trajectory?run=.&source=rollouts')
  wait(browser, lambda d: css(d, '#no_rollouts'))
  assert 'saved no RLHF rollouts' in css(browser, '#no_rollouts')[0].text
  browser.get(server.base + '/trajectory?run=with_rollouts&source=rollouts')
  wait(browser, lambda d: css(d, '.rowlist .row'))
  css(browser, '.rowlist .row')[0].click()
  wait(browser, lambda d: css(d, '#view .tok'))
  assert 'proxy reward: 0.250' in css(browser, '#stats')[0].text and 'KL (summed)' in css(browser, '#stats')[0].text
  from selenium.webdriver.support.ui import Select
  Select(css(browser, '#mode')[0]).select_by_value('kl')
  screenshot(browser, 'rollout_kl')


def test_a_ranking_submitted_in_the_page_is_in_the_file(server, browser, workdir):
  browser.get(server.base + '/rank?run=.')
  wait(browser, lambda d: css(d, '#stage option'))
  css(browser, '#rater')[0].send_keys('page-rater')
  for key, value in (('k', 3), ('max_tokens', 8)):
    css(browser, f'#{key}')[0].clear()
    css(browser, f'#{key}')[0].send_keys(str(value))
  css(browser, '#new')[0].click()
  wait(browser, lambda d: len(css(d, '.resp')) == 3)
  css(browser, '.resp button.down')[0].click()       # the first shown goes second
  css(browser, 'input.tie')[1].click()               # the last two tie
  order = [int(c.get_attribute('data-response')) for c in css(browser, '.resp')]
  screenshot(browser, 'rank')
  css(browser, '#submit')[0].click()
  wait(browser, lambda d: css(d, '#agree_gold'))
  records = [r for r in human.read_rankings(workdir) if r['rater'] == 'page-rater']
  assert len(records) == 1
  r = records[0]
  assert r['ranking'] == order and r['ties'] == [order[1:]] and r['rater_rankings'] == [order]
  assert len(r['responses']) == 3 and r['gold_utilities'] is not None and sorted(r['panel_ranking']) == [0, 1, 2]
  assert r['kinds'] == ['sample:sft'] * 3 and r['family'] in ranking.tasks.TASKS
  agree, pairs = ranking.agreement(r['ranking'], r['gold_ranking'], r['ties'], r['gold_utilities'])
  shown = css(browser, '#agree_gold')[0].text
  assert (f'of {pairs} pairs' in shown) if pairs else shown == 'no pair to compare'
  assert human.read_rankings(workdir, with_gold=True)[-1] == r
  screenshot(browser, 'rank_result')
