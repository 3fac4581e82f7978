"""The web app over one workdir (FastAPI): pages from ``static/``, and a JSON API.

  GET  /  /chat  /trajectory  /rank           the pages (runs, chat, token trajectories, ranking)
  GET  /api/runs                              every run: stages, models, traces, rollouts, report
  GET  /api/metrics?run=                      metrics.jsonl rows
  GET  /report.html?run=                      the run's report card (lm.report)
  POST /api/chat                              the next assistant turn, as server-sent events
  GET  /api/traces?run=&model=                an eval trace file's rows
  GET  /api/rollouts?run=                     saved RLHF rollouts (or why there are none)
  POST /api/rescore                           a trace's or rollout's tokens with the model's probabilities
  GET  /api/families                          the lab's task families
  POST /api/rank/new, /api/rank/submit        a ranking task; a person's ranking of it
  GET  /api/rank/summary?run=&rater=          their agreement with gold and the panel so far

Bad input is a 4xx whose JSON body is ``{"error": one line}``: 400 for a bad value, 404 for
something that does not exist (run, stage, trace, task, file), 409 for what the run lacks (no
trained model, no world), 422 for a malformed body. Nothing else of the machine is served.
"""

import asyncio
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from lm.data import chat, human
from lm.inference import sample, serving
from lm.lab import tasks
from lm.serve import ranking, turns
from lm.serve.engine import Engine, Job, one_line
from lm.serve.runs import REFERENCE_STAGE, TRACE_STAGES, Missing, Unavailable, Workdir

STATIC = Path(__file__).parent / 'static'
PAGES = {'/': 'index.html', '/chat': 'chat.html', '/trajectory': 'trajectory.html', '/rank': 'rank.html'}
MAX_MESSAGE_CHARS = 4000   # one message
MAX_MESSAGES = 64          # one conversation
MAX_PROMPT_TOKENS = 1024
MAX_NEW_TOKENS = 512
MAX_TASKS = 1000           # ranking tasks kept in memory
RATER = re.compile(r'[A-Za-z0-9_.@-]{1,64}')
log = logging.getLogger('lm.serve')


def finite(x):
  """``x`` with every NaN or infinite float as None (JSON has neither)."""
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if isinstance(x, dict):
    return {k: finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [finite(v) for v in x]
  return x


class Json(JSONResponse):
  def render(self, content) -> bytes:
    return json.dumps(finite(content), ensure_ascii=False, separators=(',', ':')).encode('utf-8')


def sse(event: dict) -> str:
  return f'data: {json.dumps(finite(event), ensure_ascii=False)}\n\n'


class ChatBody(BaseModel):
  run: str = '.'
  stage: str
  messages: list[dict]                 # the conversation so far, ending with the user's message
  system: str = ''
  temperature: float = Field(0.7, ge=0.0, le=5.0)
  top_p: float = Field(0.95, gt=0.0, le=1.0)
  max_tokens: int = Field(128, ge=1, le=MAX_NEW_TOKENS)
  tools: bool = False
  seed: int = Field(0, ge=0, lt=2 ** 31)
  forced: list[int] | None = None      # regenerate: these ids first (a trajectory's prefix and the chosen token)
  top_k: int = Field(5, ge=1, le=20)


class RescoreBody(BaseModel):
  run: str = '.'
  source: str                          # 'trace' or 'rollout'
  name: str                            # the trace's model name, or the rollouts' stage
  index: int = Field(ge=0)
  top_k: int = Field(5, ge=1, le=20)


class NewTaskBody(BaseModel):
  run: str = '.'
  stage: str
  k: int = Field(4, ge=2, le=8)
  temperature: float = Field(1.0, ge=0.0, le=5.0)
  top_p: float = Field(1.0, gt=0.0, le=1.0)
  max_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS)
  source: str = 'lab'                  # 'lab' or 'typed'
  family: str = ''                     # lab: '' draws from the run's preference mix
  text: str = ''                       # typed
  seed: int | None = Field(None, ge=0, lt=2 ** 31)


class SubmitBody(BaseModel):
  task: str
  rater: str
  ranking: list[int]
  ties: list[list[int]] = []


def create_app(workdir, max_rows: int = 8) -> FastAPI:
  """The app over ``workdir`` (its own engine thread, which runs every model)."""
  wd = Workdir(workdir)
  engine = Engine(max_rows=max_rows)
  task_store: OrderedDict[str, ranking.Task] = OrderedDict()
  store_lock = threading.Lock()
  app = FastAPI(title='lm.serve', docs_url=None, redoc_url=None, openapi_url=None, default_response_class=Json)
  app.state.workdir, app.state.engine = wd, engine
  app.mount('/static', StaticFiles(directory=STATIC), name='static')

  def error(status: int, message: str) -> JSONResponse:
    return Json({'error': ' '.join(str(message).split())}, status_code=status)

  @app.exception_handler(Missing)
  async def _missing(request, e):
    return error(404, e.args[0] if e.args else 'not found')

  @app.exception_handler(Unavailable)
  async def _unavailable(request, e):
    return error(409, e.args[0])

  @app.exception_handler(ValueError)
  async def _bad(request, e):
    return error(400, e.args[0] if e.args else 'bad request')

  @app.exception_handler(RequestValidationError)
  async def _malformed(request, e):
    first = e.errors()[0] if e.errors() else {}
    where = '.'.join(str(x) for x in first.get('loc', ()) if x != 'body') or 'body'
    return error(422, f'{where}: {first.get("msg", "malformed request")}')

  @app.exception_handler(HTTPException)
  async def _http(request, e):
    return error(e.status_code, 'not found: ' + request.url.path if e.status_code == 404 else e.detail)

  @app.exception_handler(Exception)
  async def _internal(request, e):
    log.exception('%s %s failed', request.method, request.url.path)
    return error(500, f'internal error: {one_line(e)}')

  for route, page in PAGES.items():
    app.add_api_route(route, lambda page=page: FileResponse(STATIC / page), methods=['GET'], include_in_schema=False)

  # ---------------------------------------------------------------------------- runs

  @app.get('/api/runs')
  def runs():
    return {'workdir': str(wd.root), 'runs': [run.summary() for run in wd.runs().values()]}

  @app.get('/api/metrics')
  def metrics(run: str = '.'):
    return {'rows': wd.run(run).metrics()}

  @app.get('/report.html')
  def report(run: str = '.'):
    path = wd.run(run).report()
    if path is None:
      raise Missing(f'run {run!r} has no report card yet (python -m lm.report --workdir=...)')
    return FileResponse(path, media_type='text/html')

  @app.get('/api/families')
  def families():
    return {'families': {name: list(f.variants) for name, f in tasks.TASKS.items()}}

  # ---------------------------------------------------------------------------- jobs

  def job_queue(run, stage, prompts, seeds, cfg, **kwargs):
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    job = Job(run, stage, prompts, seeds, cfg, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev), **kwargs)
    engine.submit(job)
    return job, queue

  async def results(job, queue) -> list[dict]:
    """Every row's ``done`` event (the tokens collected in it as ``tokens``), in row order."""
    rows = [{'tokens': []} for _ in job.prompts]
    try:
      while (ev := await queue.get())['type'] != 'end':
        if ev['type'] == 'error':
          raise RuntimeError(ev['message'])
        if ev['type'] == 'token':
          rows[ev['row']]['tokens'].append(ev)
        elif ev['type'] == 'done':
          rows[ev['row']].update(ev)
    finally:
      job.cancel.set()
    return rows

  # ---------------------------------------------------------------------------- chat

  def conversation(body: ChatBody) -> list[dict]:
    messages = list(body.messages)
    if not messages:
      raise ValueError('the conversation is empty: type a message')
    if len(messages) > MAX_MESSAGES:
      raise ValueError(f'the conversation has {len(messages)} messages; at most {MAX_MESSAGES}')
    for i, m in enumerate(messages + [{'content': body.system}]):
      text = m.get('content') if isinstance(m, dict) else None
      if isinstance(text, str) and len(text) > MAX_MESSAGE_CHARS:
        what = 'the system prompt' if i == len(messages) else f'message {i}'
        raise ValueError(f'{what} has {len(text)} characters; at most {MAX_MESSAGE_CHARS}')
    last = messages[-1]
    if not isinstance(last, dict) or last.get('role') != 'user':
      raise ValueError('the conversation must end with a user message')
    if not isinstance(last.get('content'), str) or not last['content'].strip():
      raise ValueError('the message is empty: type something')
    if body.system.strip():
      messages = [{'role': 'system', 'content': body.system}, *messages]
    return serving.offer_tools(messages) if body.tools else messages

  def prompt_ids(tok, messages):
    ids = chat.render_prompt(tok, messages)
    if len(ids) > MAX_PROMPT_TOKENS:
      raise ValueError(f'the conversation is {len(ids)} tokens; at most {MAX_PROMPT_TOKENS}: start a new one')
    return ids

  @app.post('/api/chat')
  async def chat_turn(body: ChatBody):
    run = wd.run(body.run)
    tok = run.tokenizer(body.stage)
    prompt = prompt_ids(tok, conversation(body))
    forced = body.forced
    if forced is not None:
      if not forced or len(forced) > MAX_PROMPT_TOKENS or not all(0 <= i < tok.vocab_size for i in forced):
        raise ValueError(f'forced must be 1..{MAX_PROMPT_TOKENS} token ids in 0..{tok.vocab_size - 1}')
    cfg = sample.SamplingConfig(temperature=body.temperature, top_p=body.top_p, max_new_tokens=body.max_tokens)
    job, queue = job_queue(run, body.stage, [prompt], [body.seed], cfg, tools=body.tools, top_k=body.top_k,
                           forced=[body.forced] if body.forced else None)

    async def events():
      try:
        yield sse({'type': 'start', 'prompt_tokens': len(prompt)})
        while True:
          ev = await queue.get()
          yield sse(ev)
          if ev['type'] in ('end', 'error'):
            return
      finally:
        job.cancel.set()  # the page went away: the row stops at the next step
    return StreamingResponse(events(), media_type='text/event-stream', headers={'Cache-Control': 'no-store'})

  # ----------------------------------------------------------------------- trajectories

  @app.get('/api/traces')
  def traces(run: str = '.', model: str = ''):
    rows = wd.run(run).trace_rows(model)
    return {'model': model, 'stage': TRACE_STAGES.get(model, model), 'rows': [
        {'index': i, 'family': r.get('family'), 'variant': r.get('variant'), 'score': r.get('score'),
         'finished': r.get('finished'), 'question': _question(r.get('prompt'))} for i, r in enumerate(rows)]}

  @app.get('/api/rollouts')
  def rollouts(run: str = '.'):
    the_run = wd.run(run)
    saved = the_run.rollouts()
    if not saved:
      return {'saved': False, 'message': f'run {run!r} saved no RLHF rollouts (lm.serve looks for '
                                         '<run>/<stage>/rollouts.jsonl, which the rlhf stage writes at each eval)',
              'rows': []}
    rows = [{'stage': stage, 'index': i, 'iteration': r.get('iteration'), 'question': _question(r.get('prompt')),
             'proxy_reward': r.get('proxy_reward'), 'gold_reward': r.get('gold_reward', r.get('score'))}
            for stage in saved for i, r in enumerate(the_run.rollout_rows(stage))]
    return {'saved': True, 'message': '', 'rows': rows}

  async def rescore(run, stage, prompt, turn_ids, top_k):
    cfg = sample.SamplingConfig(temperature=0.0, max_new_tokens=max(1, len(turn_ids)))
    job, queue = job_queue(run, stage, [prompt], [0], cfg, forced=[turn_ids], score_only=True, top_k=top_k)
    return (await results(job, queue))[0]

  @app.post('/api/rescore')
  async def rescore_route(body: RescoreBody):
    run = wd.run(body.run)
    if body.source == 'trace':
      rows, stage = run.trace_rows(body.name), TRACE_STAGES.get(body.name, body.name)
    elif body.source == 'rollout':
      rows, stage = run.rollout_rows(body.name), body.name
    else:
      raise ValueError(f'source {body.source!r} must be trace or rollout')
    if body.index >= len(rows):
      raise Missing(f'{body.source} {body.name!r} has {len(rows)} rows; no row {body.index}')
    row = rows[body.index]
    if stage not in run.models():
      raise Unavailable(f're-scoring {body.source} {body.name!r} needs the model of stage {stage!r}, '
                        f'which run {run.name!r} does not have (models: {", ".join(run.models()) or "none"})')
    tok = run.tokenizer(stage)
    prompt = chat.render_prompt(tok, row['prompt'])
    turn = row['ids'] if body.source == 'rollout' and 'ids' in row else turn_ids(tok, row)
    if not turn:
      raise ValueError(f'{body.source} {body.name!r} row {body.index} has no response tokens to score')
    scored = await rescore(run, stage, prompt, turn, body.top_k)
    out = {'stage': stage, 'prompt': row['prompt'], 'family': row.get('family'), 'variant': row.get('variant'),
           'tokens': scored['tokens'], 'parts': scored['parts'], 'gold': row.get('score', row.get('gold_reward')),
           'finished': row.get('finished'), 'kl': None, 'proxy_reward': row.get('proxy_reward'), 'reference': None,
           'tools': tasks.offers_tools(row['prompt'])}
    if body.source == 'rollout':
      out['gold'] = row.get('gold_reward', row.get('score'))
      if isinstance(row.get('kl'), list) and len(row['kl']) == len(turn):
        out['kl'], out['kl_from'] = row['kl'], 'saved with the rollout'
      elif REFERENCE_STAGE in run.models():
        ref = await rescore(run, REFERENCE_STAGE, prompt, turn, 1)
        out['kl'] = [a['logprob'] - b['logprob'] for a, b in zip(scored['tokens'], ref['tokens'])]
        out['reference'], out['kl_from'] = REFERENCE_STAGE, f'log p({stage}) - log p({REFERENCE_STAGE}), temperature 1'
    return out

  # ---------------------------------------------------------------------------- ranking

  @app.post('/api/rank/new')
  async def rank_new(body: NewTaskBody):
    run = wd.run(body.run)
    tok = run.tokenizer(body.stage)
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    example = None
    if body.source == 'lab':
      config = run.config() or {}
      mix = config.get('data', {}).get('preferences', {}).get('mix') or [(f, 'direct', 1.0) for f in tasks.TASKS]
      example = ranking.lab_example(run.world(), mix, body.family, seed)
      prompt = example.prompt
    elif body.source == 'typed':
      if not body.text.strip():
        raise ValueError('the prompt is empty: type one')
      if len(body.text) > MAX_MESSAGE_CHARS:
        raise ValueError(f'the prompt has {len(body.text)} characters; at most {MAX_MESSAGE_CHARS}')
      prompt = [{'role': 'user', 'content': body.text}]
    else:
      raise ValueError(f'source {body.source!r} must be lab or typed')
    ids = prompt_ids(tok, prompt)
    cfg = sample.SamplingConfig(temperature=body.temperature, top_p=body.top_p, max_new_tokens=body.max_tokens)
    seeds = [(seed + j) % 2 ** 31 for j in range(body.k)]
    job, queue = job_queue(run, body.stage, [ids] * body.k, seeds, cfg, tools=tasks.offers_tools(prompt))
    sampled = [row['messages'] for row in await results(job, queue)]
    sampling = {'temperature': body.temperature, 'top_p': body.top_p, 'max_tokens': body.max_tokens, 'seed': seed}
    task = ranking.new_task(run.name, body.stage, prompt, sampled, example, run.panel(), sampling, seed)
    with store_lock:
      task_store[task.id] = task
      while len(task_store) > MAX_TASKS:
        task_store.popitem(last=False)
    return {'task': task.id, 'prompt': prompt, 'family': example.family if example else 'typed',
            'variant': example.variant if example else '', 'gold': example is not None,
            'responses': [{'messages': r, 'parts': turns.parts(r)} for r in task.responses]}

  @app.post('/api/rank/submit')
  def rank_submit(body: SubmitBody):
    if not RATER.fullmatch(body.rater):
      raise ValueError('rater id must be 1-64 letters, digits or _ . @ -')
    with store_lock:
      task = task_store.get(body.task)
      if task is None:
        raise Missing(f'unknown ranking task {body.task!r} (the server restarted?): load a new prompt')
      ranking.check_ranking(body.ranking, body.ties, len(task.responses))
      if body.rater in task.raters_done:
        raise ValueError(f'rater {body.rater!r} already ranked this task')
      task.raters_done.add(body.rater)
    record = ranking.record(task, body.ranking, body.ties, body.rater, time.time())
    run = wd.run(task.run)
    try:
      human.append(run.dir, record)
    except BaseException:
      task.raters_done.discard(body.rater)
      raise
    return {'saved': True, 'gold_ranking': record['gold_ranking'], 'panel_ranking': record['panel_ranking'],
            'gold_scores': record['gold_scores'], 'gold_utilities': record['gold_utilities'],
            'agreement': {k: _rate(v) for k, v in ranking.agreements(record).items()},
            'summary': ranking.summary(human.read_rankings(run.dir), body.rater)}

  @app.get('/api/rank/summary')
  def rank_summary(run: str = '.', rater: str = ''):
    records = human.read_rankings(wd.run(run).dir)
    return {'rater': ranking.summary(records, rater) if rater else None, 'everyone': ranking.summary(records),
            'raters': sorted({r['rater'] for r in records})}

  return app


def turn_ids(tok, row) -> list[int]:
  """A trace's turn as token ids: the prompt and turn rendered together, less the prompt's; the
  closing ``<|end|>`` dropped when the turn did not finish."""
  prompt = chat.render_prompt(tok, row['prompt'])
  full, _ = chat.render(tok, list(row['prompt']) + list(row.get('turn') or [row['response']]))
  ids = [int(i) for i in full[len(prompt):]]
  if not row.get('finished') and ids and ids[-1] in sample.SamplingConfig.stop_ids:
    ids = ids[:-1]
  return ids


def _question(messages) -> str:
  users = [m.get('content') or '' for m in messages or [] if isinstance(m, dict) and m.get('role') == 'user']
  return users[-1] if users else ''


def _rate(counts):
  agree, total = counts
  return {'agree': agree, 'pairs': total, 'rate': agree / total if total else None}
