"""The one thread that runs the models: jobs wait in a queue, and each batch is decoded token by
token (``lm.inference.stream``), every row's events going to its own job.

The worker takes the oldest job and, behind it, every queued job of the same kind (run, stage,
sampling config, tools, prompt bucket, forced room) while their rows fit in ``max_rows``; those run
as one batch. Rows are sampled with their own seeds, so an answer does not depend on the jobs it
shared a batch with. Models (``serving.load``; the ``max_models`` used last are kept) and tools
(``serving.load_tools``: ``lm.tools``, the python tool in its sandbox) are loaded on first use.

A job's events are dicts: ``token`` (row, id, text, logprob, entropy, source, top), ``call``,
``done`` (row, ids, messages, parts, ...), then one ``end``; or one ``error`` (a one-line
``message``) in place of what was left. ``emit`` is called from the worker thread.
"""

import dataclasses
import logging
import threading
from collections import OrderedDict, deque
from typing import Callable

import numpy as np

from lm.inference import agent, sample, serving, stream
from lm.lab import tasks
from lm.serve import turns
from lm.serve.runs import Run

log = logging.getLogger('lm.serve')


@dataclasses.dataclass(eq=False)
class Job:
  run: Run
  stage: str
  prompts: list              # token ids of each row's prompt
  seeds: list[int]
  cfg: sample.SamplingConfig
  emit: Callable[[dict], None]
  forced: list | None = None  # ids forced into each row first
  tools: bool = False
  score_only: bool = False
  top_k: int = 5
  cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

  def key(self) -> tuple:
    """Jobs of one key can share a batch (same programs, same shapes)."""
    longest = max(len(p) for p in self.prompts)
    forced = max((len(f) for f in self.forced), default=0) if self.forced else 0
    return (self.run.name, self.stage, self.cfg, self.tools, self.score_only, self.top_k,
            sample.prompt_bucket(longest), stream.room_bucket(forced))


def one_line(e: BaseException) -> str:
  return ' '.join(f'{type(e).__name__}: {e}'.split())


class Engine:

  def __init__(self, max_rows: int = 8, agent_cfg: agent.AgentConfig = agent.AgentConfig(), max_models: int = 4):
    self.max_rows, self.agent_cfg, self.max_models = max_rows, agent_cfg, max_models
    self._queue: deque[Job] = deque()
    self._cv = threading.Condition()
    self._served: OrderedDict = OrderedDict()
    self._tools: dict = {}
    self.batches: deque[int] = deque(maxlen=10_000)  # jobs in each batch run (the latest; for tests)
    self._thread = threading.Thread(target=self._loop, name='lm.serve engine', daemon=True)
    self._thread.start()

  def submit(self, job: Job) -> None:
    if len(job.prompts) > self.max_rows:
      raise ValueError(f'{len(job.prompts)} rows in one request; at most {self.max_rows}')
    with self._cv:
      self._queue.append(job)
      self._cv.notify()

  def served(self, run: Run, stage: str) -> serving.Served:
    """``stage``'s model (loaded once); call from the worker only."""
    key = (run.name, stage)
    if key not in self._served:
      run.model(stage)  # a one-line error for an unknown stage
      while len(self._served) >= self.max_models:
        self._served.popitem(last=False)
      self._served[key] = serving.load(run.dir, stage)
    self._served.move_to_end(key)
    return self._served[key]

  def _run_tools(self, run: Run) -> dict:
    if run.name not in self._tools:
      self._tools[run.name] = serving.load_tools(run.dir, tasks.TOOL_NAMES)
    return self._tools[run.name]

  def _take(self) -> list[Job]:
    with self._cv:
      while not self._queue:
        self._cv.wait()
      first = self._queue.popleft()
      batch, rows = [first], len(first.prompts)
      for job in list(self._queue):
        if job.key() == first.key() and rows + len(job.prompts) <= self.max_rows:
          self._queue.remove(job)
          batch.append(job)
          rows += len(job.prompts)
      return batch

  def _loop(self):
    while True:
      batch = self._take()
      self.batches.append(len(batch))
      try:
        self._decode(batch)
      except Exception as e:  # a failed batch answers its jobs; the server goes on
        log.exception('batch of %d jobs failed', len(batch))
        for job in batch:
          job.emit({'type': 'error', 'message': one_line(e)})

  def _decode(self, batch: list[Job]):
    first = batch[0]
    served = self.served(first.run, first.stage)
    tools = self._run_tools(first.run) if first.tools else None
    owners = [(job, r) for job in batch for r in range(len(job.prompts))]
    prompts = [np.asarray(p, np.int32) for job in batch for p in job.prompts]
    seeds = [s for job in batch for s in job.seeds]
    forced = [f for job in batch for f in (job.forced or [[] for _ in job.prompts])]
    tok = served.tokenizer
    events = stream.stream(served.params, served.model, tok, prompts, first.cfg, seeds, forced=forced, tools=tools,
                           agent_cfg=self.agent_cfg, top_k=first.top_k, score_only=first.score_only,
                           mesh=served.mesh, rules=served.rules, cancelled=lambda b: owners[b][0].cancel.is_set())
    for event in events:
      job, row = owners[event.row]
      if isinstance(event, stream.Token):
        job.emit({'type': 'token', 'row': row, **turns.token_json(tok, event)})
      elif isinstance(event, stream.Call):
        job.emit({'type': 'call', 'row': row, 'call': event.call})
      else:
        job.emit({'type': 'done', 'row': row, **turns.done_json(tok, event)})
    for job in batch:
      job.emit({'type': 'end'})
