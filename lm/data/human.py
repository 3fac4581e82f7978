"""Human rankings of model samples: ``<workdir>/human/rankings.jsonl``, one JSON record a line.

A record has the fields of ``PreferenceRankings`` records (``lm.lab.raters.preference_records``),
so those with gold feed the same dataset and reward model as the simulated panel's:

  prompt          messages                     responses       K message lists, presentation order
  ranking         the person's, indices best first (a permutation of 0..K-1)
  rater_rankings  [ranking] (one rater)        gold_ranking    by gold utility ([] without gold)
  gold_scores     K floats, or None            gold_utilities  K floats, or None (a typed prompt)
  kinds           what made each response      features        ``raters.features`` of each response
  family, variant the lab task ('typed', '' for a typed prompt)    meta   what the gold scorer needs

and, beside them: ``rater`` (an id), ``time`` (seconds since the epoch), ``ties`` (groups of
response indices the person could not tell apart), ``panel_ranking`` (the run's simulated panel
on the same responses, [] without gold), ``stage`` and ``sampling`` (who wrote the responses, how).

``append`` makes a record durable before it returns (one ``write`` of the whole line under an
exclusive lock, in append mode, then flush and fsync), so a ranking acknowledged to the person is
on disk whatever happens next. A writer killed mid-line leaves at most a torn last line without
its newline: ``read_rankings`` ignores it, and the next ``append`` cuts it off first.
"""

import fcntl
import json
import os
from pathlib import Path

FIELDS = ('prompt', 'responses', 'ranking', 'rater_rankings', 'gold_ranking', 'gold_scores', 'gold_utilities',
          'kinds', 'features', 'family', 'variant', 'meta', 'rater', 'time', 'ties', 'panel_ranking')


def path(workdir) -> Path:
  return Path(workdir) / 'human' / 'rankings.jsonl'


def check(record: dict, where: str = 'ranking') -> None:
  """A one-line ValueError naming the first problem of ``record``."""
  if not isinstance(record, dict):
    raise ValueError(f'{where}: expected a JSON object, got {type(record).__name__}')
  missing = [f for f in FIELDS if f not in record]
  if missing:
    raise ValueError(f'{where}: missing field {missing[0]!r}')
  k = len(record['responses'])
  if sorted(record['ranking']) != list(range(k)):
    raise ValueError(f'{where}: ranking {record["ranking"]} is not a permutation of 0..{k - 1}')


def append(workdir, record: dict) -> None:
  """Appends ``record`` to ``path(workdir)``, durably (see the module doc)."""
  check(record)
  line = (json.dumps(record, ensure_ascii=False) + '\n').encode('utf-8')
  file = path(workdir)
  created = not file.exists()
  file.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    _cut_torn_tail(fd)
    written = os.write(fd, line)
    if written != len(line):
      raise OSError(f'{file}: wrote {written} of {len(line)} bytes')
    os.fsync(fd)
  finally:
    os.close(fd)  # closing releases the lock
  if created:
    _fsync_dir(file.parent)


def _cut_torn_tail(fd: int) -> None:
  """Truncates a last line that has no newline (a writer killed mid-write: never acknowledged)."""
  size = os.fstat(fd).st_size
  if size == 0 or os.pread(fd, 1, size - 1) == b'\n':
    return
  start = max(0, size - (1 << 16))
  while True:
    chunk = os.pread(fd, size - start, start)
    cut = chunk.rfind(b'\n')
    if cut >= 0 or start == 0:
      os.ftruncate(fd, start + cut + 1)
      return
    start = max(0, start - (1 << 16))


def _fsync_dir(directory: Path) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def read_rankings(workdir, with_gold: bool = False) -> list[dict]:
  """Every ranking in ``<workdir>/human/rankings.jsonl``, in order ([] when there is none yet).

  A torn last line (no newline, from a writer killed mid-write) is skipped; any other bad line is a
  one-line ValueError naming the file and line. ``with_gold`` keeps only records with gold (lab
  prompts): those are complete ``PreferenceRankings`` records, ready for ``builders.build``.
  """
  file = path(workdir)
  if not file.exists():
    return []
  data = file.read_bytes()
  lines = data.split(b'\n')
  if lines[-1]:  # no newline at the end: a torn write
    lines = lines[:-1]
  records = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f'{file} line {n}: not JSON ({e})') from None
    check(record, f'{file} line {n}')
    if not with_gold or record['gold_utilities'] is not None:
      records.append(record)
  return records
