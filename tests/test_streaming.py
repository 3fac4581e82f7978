"""Streamed pretraining (lm.data.streaming): rows as pipeline.pack packs them, a global shuffle that
visits every document once an epoch, hosts that split it, a generated array_record corpus larger
than the memory a stream may use (peak RSS of a subprocess), resumption after kill -9 that sees the
batches an uninterrupted stream sees, and the pretrain stage streaming and resuming bit-exactly."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from array_record.python import array_record_module

from lm import config as lm_config
from lm import metrics
from lm import tokenizer as lm_tokenizer
from lm.cli import launch
from lm.data import pipeline, streaming
from tests.test_train import REPO, SMOKE, losses_by_step, smoke_config

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

TOK = lm_tokenizer.CharTokenizer([chr(c) for c in range(32, 127)])
DOCS = [f'doc {k}: ' + 'abcdefghij'[k % 10] * (3 + (k * 7) % 40) for k in range(60)]


def write_corpus(path, docs):
  writer = array_record_module.ArrayRecordWriter(str(path), 'group_size:64')
  for d in docs:
    writer.write(d.encode('utf-8') if isinstance(d, str) else d)
  writer.close()
  return path


def texts_of(batches) -> list[str]:
  """The documents that rows of consecutive batches hold (rows share one token: drop it)."""
  ids = np.concatenate([b['inputs'].reshape(-1) for b in batches])
  return [TOK.decode(d) for d in np.split(ids, np.flatnonzero(ids == TOK.eos_id) + 1)][:-1]


def test_unshuffled_rows_are_pipeline_pack_rows(tmp_path):
  texts = streaming.ArrayRecordTexts([write_corpus(tmp_path / 'c.array_record', DOCS)])
  assert [texts[k] for k in range(len(DOCS))] == DOCS
  rows = pipeline.pack([TOK.encode(d) for d in DOCS], 16, TOK.eos_id)
  stream = streaming.PackedStream(texts, TOK.encode, 16, TOK.eos_id, batch_size=4, shuffle=False)
  for i in range(len(rows['inputs']) // 4):
    batch = stream.host_batch(i)
    for k, v in batch.items():
      np.testing.assert_array_equal(v, rows[k][4 * i:4 * i + 4], err_msg=f'{k} of batch {i}')


def test_an_epoch_visits_every_document_once_split_over_hosts(tmp_path):
  texts = streaming.ArrayRecordTexts([write_corpus(tmp_path / 'c.array_record', DOCS)])
  hosts = [streaming.PackedStream(texts, TOK.encode, 16, TOK.eos_id, batch_size=4, seed=3) for _ in range(2)]
  seen = []
  for h, stream in enumerate(hosts):
    batches = [stream.host_batch(i, slice(2 * h, 2 * h + 2)) for i in range(40)]
    assert all(len(b['inputs']) == 2 for b in batches)
    docs = texts_of(batches)
    first_epoch = docs[:len(DOCS) // 2]
    assert len(set(first_epoch)) == len(DOCS) // 2  # no repeats within the host's half
    seen += first_epoch
  assert sorted(seen) == sorted(DOCS)  # the two hosts' halves: every document once
  assert seen[:len(DOCS) // 2] != DOCS[0::2]  # shuffled
  one = streaming.PackedStream(texts, TOK.encode, 16, TOK.eos_id, batch_size=4, seed=3)
  again = streaming.PackedStream(texts, TOK.encode, 16, TOK.eos_id, batch_size=4, seed=3)
  for i in (0, 5, 2):
    for k, v in one.host_batch(i).items():
      np.testing.assert_array_equal(v, again.host_batch(i)[k])  # a pure function of (seed, i)


STREAM_SCRIPT = textwrap.dedent('''
    import hashlib, json, os, resource, signal, sys
    from lm import tokenizer
    from lm.data import streaming
    corpus, state, first, last, kill_at, out = sys.argv[1:]
    tok = tokenizer.CharTokenizer([chr(c) for c in range(32, 127)])
    texts = streaming.ArrayRecordTexts([corpus])
    stream = streaming.PackedStream(texts, tok.encode, 128, tok.eos_id, batch_size=8, seed=1,
                                    state_path=state or None)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(out, 'a') as f:
      for i in range(int(first), int(last)):
        batch = stream.host_batch(i)
        digest = hashlib.sha256(b''.join(batch[k].tobytes() for k in sorted(batch))).hexdigest()
        f.write(json.dumps({'i': i, 'digest': digest}) + '\\n')
        f.flush()
        if i == int(kill_at):
          os.kill(os.getpid(), signal.SIGKILL)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({'rss_growth_kib': peak - base, 'documents': len(texts)}))
''')


def _stream(*args):
  proc = subprocess.run([sys.executable, '-c', STREAM_SCRIPT, *map(str, args)], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  return proc


def test_a_corpus_larger_than_memory_streams_and_resumes_exactly_after_kill_9(tmp_path):
  rng = np.random.default_rng(0)
  letters = np.frombuffer(b'abcdefghijklmnopqrstuvwxyz      ', np.uint8)
  corpus = write_corpus(tmp_path / 'big.array_record',
                        (letters[rng.integers(0, 32, 64 << 10)].tobytes() for _ in range(3072)))  # 192 MiB
  size = 3072 * (64 << 10)  # the text; the file, compressed, is ~60% of it
  assert corpus.stat().st_size > 100 << 20

  straight = _stream(corpus, '', 0, 24, -1, tmp_path / 'straight.jsonl')
  assert straight.returncode == 0, straight.stderr
  report = json.loads(straight.stdout.splitlines()[-1])
  assert report['documents'] == 3072
  assert report['rss_growth_kib'] * 1024 < 32 << 20 < size  # streaming 24 batches grew memory by < 32 MiB

  killed = _stream(corpus, tmp_path / 'state.jsonl', 0, 24, 15, tmp_path / 'killed.jsonl')
  assert killed.returncode == -signal.SIGKILL
  resumed = _stream(corpus, tmp_path / 'state.jsonl', 9, 24, -1, tmp_path / 'resumed.jsonl')  # the checkpoint: 9
  assert resumed.returncode == 0, resumed.stderr
  expected = {r['i']: r['digest'] for r in map(json.loads, (tmp_path / 'straight.jsonl').read_text().splitlines())}
  for name in ('killed', 'resumed'):
    got = [json.loads(line) for line in (tmp_path / f'{name}.jsonl').read_text().splitlines()]
    assert got and all(expected[r['i']] == r['digest'] for r in got), name
  recorded = [json.loads(line)['i'] for line in (tmp_path / 'state.jsonl').read_text().splitlines()]
  assert recorded == list(range(1, 25))  # every position once: the resumed run sought, not replayed


def _start(workdir):
  cmd = [sys.executable, '-m', 'lm.launch', f'--config={SMOKE}', f'--workdir={workdir}',
         '--config.data.pretrain_stream=True', '--config.pretrain.steps=24', '--config.pretrain.log_every=1',
         '--config.pretrain.checkpoint_every=4', '--config.pretrain.eval_every=1000']
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_streamed_pretraining_resumes_bit_exactly_after_kill_9(tmp_path):
  config = smoke_config(steps=24, log_every=1, checkpoint_every=4, eval_every=1000)
  launch.launch(lm_config.with_overrides(config, {'data': {'pretrain_stream': True}}), tmp_path / 'straight')
  expected = losses_by_step(tmp_path / 'straight')
  in_memory = tmp_path / 'in_memory'
  launch.launch(config, in_memory)
  assert losses_by_step(in_memory)[1] != expected[1] or losses_by_step(in_memory)[2] != expected[2]  # another order
  assert list((tmp_path / 'straight' / 'pretrain' / 'stream').glob('*-host0.jsonl'))

  work = tmp_path / 'interrupted'
  proc = _start(work)
  deadline = time.time() + 300
  while not any(p.name.isdigit() and int(p.name) >= 8 for p in (work / 'pretrain' / 'checkpoints').glob('*')):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(losses_by_step(work)) < 24, 'the run finished before it was killed: the test proved nothing'
  proc = _start(work)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  got = losses_by_step(work)
  assert len([r for r in metrics.read(work, 'pretrain') if 'compile_s' in r]) == 2  # it resumed
  np.testing.assert_array_equal([got[s] for s in range(1, 25)], [expected[s] for s in range(1, 25)])
