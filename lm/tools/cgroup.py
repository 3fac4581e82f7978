"""A cgroup per sandbox run: one bound on the memory and one on the tasks of all the program's processes together.

    group = RunCgroup.create(memory_bytes=256 << 20, max_tasks=16)  # OSError where the kernel offers none
    fds = group.open_procs()  # the sandboxed child writes b'0' to each (joins), then closes them
    ... group.oom_kills(), group.refusals(), group.peak_bytes()
    group.remove()            # kills what is left in it, removes it

Memory counts everything the kernel charges to the group: anonymous memory, shared memory and memfds,
tmpfs pages, page cache and kernel objects (inodes, dentries, page tables). Past the bound the kernel's
OOM killer kills a process of the group (counted by ``oom_kills``). Tasks count threads too; a fork or
``pthread_create`` past the bound fails with EAGAIN (counted by ``refusals``). Swap is bounded to zero.

Where: cgroup v2 when the process's own cgroup can give the ``memory`` and ``pids`` controllers to its
children (a delegated hierarchy; since a v2 cgroup that holds processes cannot enable controllers for
children, this process first moves itself into a leaf ``lm-host`` of its own cgroup, and gives up v2 if
other processes share its cgroup), else the v1 ``memory`` and ``pids`` hierarchies (a child of this
process's own cgroup in each). ``hierarchy()`` says which, or why neither. Groups are named
``lm-sandbox-<pid>-<n>``; ``create`` first removes those whose creating process is gone.
"""

import errno
import functools
import itertools
import os
import re
import signal
import time

PREFIX = 'lm-sandbox-'
HOST_LEAF = 'lm-host'
CONTROLLERS = ('memory', 'pids')
_counter = itertools.count()


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _write(path: str, text: str):
  with open(path, 'w') as f:
    f.write(text)


def _unescape(field: str) -> str:
  return re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[dict]:
  """The cgroup mounts of a ``/proc/<pid>/mountinfo``: point, root (the cgroup mounted there), type, options."""
  mounts = []
  for line in text.splitlines():
    left, _, right = line.partition(' - ')
    fields, tail = left.split(), right.split()
    if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ('cgroup', 'cgroup2'):
      mounts.append(dict(point=_unescape(fields[4]), root=_unescape(fields[3]), type=tail[0],
                         options=set(tail[2].split(','))))
  return mounts


def parse_proc_cgroup(text: str) -> dict:
  """``/proc/<pid>/cgroup`` as {controller: path}; the v2 (unified) path under the key ''."""
  paths = {}
  for line in text.splitlines():
    parts = line.split(':', 2)
    if len(parts) == 3:
      for name in (parts[1].split(',') if parts[1] else ['']):
        paths[name] = parts[2]
  return paths


def _locate(mount: dict, path: str) -> str:
  """The directory of cgroup ``path`` (as /proc/self/cgroup names it) under ``mount``."""
  root = mount['root'].rstrip('/')
  if root and (path == root or path.startswith(root + '/')):
    path = path[len(root):]
  return mount['point'].rstrip('/') + path.rstrip('/') if path.strip('/') else mount['point']


def _v2(mounts: list[dict], own: dict) -> dict:
  """The v2 parent directory for run groups, or the reason there is none."""
  mount = next((m for m in mounts if m['type'] == 'cgroup2'), None)
  if mount is None or '' not in own:
    return dict(reason='no cgroup2 mount')
  home = _locate(mount, own[''])
  try:
    offered = set(_read(os.path.join(home, 'cgroup.controllers')).split())
  except OSError as e:
    return dict(reason=f'cgroup2 {home}: {e.strerror}')
  if not set(CONTROLLERS) <= offered:
    return dict(reason=f'cgroup2 {home} offers no {"/".join(c for c in CONTROLLERS if c not in offered)} controller')
  subtree = os.path.join(home, 'cgroup.subtree_control')
  if set(CONTROLLERS) <= set(_read(subtree).split()):
    return dict(version='v2', parent=home)
  enable = ' '.join('+' + c for c in CONTROLLERS)
  try:
    _write(subtree, enable)
    return dict(version='v2', parent=home)
  except OSError as e:
    if e.errno != errno.EBUSY:
      return dict(reason=f'cgroup2 {home}: enabling {enable}: {e.strerror}')
  leaf = os.path.join(home, HOST_LEAF)  # no internal processes: move into a leaf, then enable
  try:
    os.makedirs(leaf, exist_ok=True)
    _write(os.path.join(leaf, 'cgroup.procs'), str(os.getpid()))
  except OSError as e:
    return dict(reason=f'cgroup2 {home}: moving into {HOST_LEAF}: {e.strerror}')
  try:
    _write(subtree, enable)
    return dict(version='v2', parent=home)
  except OSError as e:
    _write(os.path.join(home, 'cgroup.procs'), str(os.getpid()))
    return dict(reason=f'cgroup2 {home}: enabling {enable} (other processes share the cgroup?): {e.strerror}')


def _v1(mounts: list[dict], own: dict) -> dict:
  """The v1 parent directories (one per controller) for run groups, or the reason there are none."""
  dirs = {}
  for name in CONTROLLERS:
    mount = next((m for m in mounts if m['type'] == 'cgroup' and name in m['options']), None)
    if mount is None or name not in own:
      return dict(reason=f'no cgroup v1 {name} hierarchy')
    dirs[name] = _locate(mount, own[name])
    if not os.access(dirs[name], os.W_OK):
      return dict(reason=f'cgroup v1 {dirs[name]} is not writable')
  return dict(version='v1', **dirs)


@functools.cache
def hierarchy() -> dict:
  """Where run groups go: {'version': 'v2', 'parent'} or {'version': 'v1', 'memory', 'pids'} or {'reason'}."""
  try:
    mounts = parse_mountinfo(_read('/proc/self/mountinfo'))
    own = parse_proc_cgroup(_read('/proc/self/cgroup'))
  except OSError as e:
    return dict(version=None, reason=f'cannot read /proc/self: {e.strerror}')
  found = []
  for look in (_v2, _v1):
    try:
      found.append(look(mounts, own))
    except OSError as e:
      found.append(dict(reason=f'{look.__name__[1:]}: {e}'))
    if found[-1].get('version'):
      return found[-1]
  return dict(version=None, reason='; '.join(f['reason'] for f in found))


def _parents(where: dict) -> list[str]:
  return [where['parent']] if where['version'] == 'v2' else [where[c] for c in CONTROLLERS]


def _counter_value(path: str, key: str) -> int:
  for line in _read(path).splitlines():
    name, _, value = line.partition(' ')
    if name == key:
      return int(value)
  return 0


class RunCgroup:
  """One run's cgroup (v2: one directory; v1: one in the memory and one in the pids hierarchy)."""

  def __init__(self, version: str, memory: str, pids: str):
    self.version, self.memory, self.pids = version, memory, pids
    self.dirs = [memory] if memory == pids else [memory, pids]

  @classmethod
  def create(cls, memory_bytes: int, max_tasks: int) -> 'RunCgroup':
    where = hierarchy()
    if not where['version']:
      raise OSError(errno.ENOTSUP, f'no cgroup memory and pids controllers: {where["reason"]}')
    _remove_stale(where)
    name = f'{PREFIX}{os.getpid()}-{next(_counter)}'
    paths = [os.path.join(parent, name) for parent in _parents(where)]
    group = cls(where['version'], paths[0], paths[-1])
    try:
      for path in group.dirs:
        os.mkdir(path)
      if group.version == 'v2':
        _write(os.path.join(group.memory, 'memory.max'), str(memory_bytes))
        if os.path.exists(os.path.join(group.memory, 'memory.swap.max')):
          _write(os.path.join(group.memory, 'memory.swap.max'), '0')
      else:
        _write(os.path.join(group.memory, 'memory.limit_in_bytes'), str(memory_bytes))
        if os.path.exists(os.path.join(group.memory, 'memory.memsw.limit_in_bytes')):
          _write(os.path.join(group.memory, 'memory.memsw.limit_in_bytes'), str(memory_bytes))
      _write(os.path.join(group.pids, 'pids.max'), str(max_tasks))
    except BaseException:
      group.remove()
      raise
    return group

  def open_procs(self) -> list[int]:
    """Write-only descriptors of the group's ``cgroup.procs`` files: writing b'0' to each moves the writer in."""
    return [os.open(os.path.join(path, 'cgroup.procs'), os.O_WRONLY | os.O_CLOEXEC) for path in self.dirs]

  def oom_kills(self) -> int:
    """How many processes the kernel's OOM killer killed for the group's memory bound."""
    name = 'memory.events' if self.version == 'v2' else 'memory.oom_control'
    return _counter_value(os.path.join(self.memory, name), 'oom_kill')

  def refusals(self) -> int:
    """How many forks (or new threads) the task bound refused."""
    return _counter_value(os.path.join(self.pids, 'pids.events'), 'max')

  def peak_bytes(self) -> int | None:
    """The most memory the group held at once (None where the kernel does not say)."""
    name = 'memory.peak' if self.version == 'v2' else 'memory.max_usage_in_bytes'
    try:
      return int(_read(os.path.join(self.memory, name)))
    except (OSError, ValueError):
      return None

  def tasks(self) -> list[int]:
    """The processes in the group (host pids)."""
    found = set()
    for path in self.dirs:
      try:
        found.update(int(p) for p in _read(os.path.join(path, 'cgroup.procs')).split())
      except FileNotFoundError:
        pass
    return sorted(found)

  def _kill(self, pid: int):
    """SIGKILLs ``pid`` if it is still in the group (a pidfd: a reused pid is never hit)."""
    try:
      fd = os.pidfd_open(pid)
    except ProcessLookupError:
      return
    try:
      name = os.path.basename(self.memory)
      if any(line.rsplit('/', 1)[-1] == name for line in _read(f'/proc/{pid}/cgroup').splitlines()):
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except (ProcessLookupError, FileNotFoundError):
      pass
    finally:
      os.close(fd)

  def remove(self, wait_s: float = 10.0):
    """Kills what is left in the group and removes it; OSError if it cannot be removed within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    left = [path for path in self.dirs if os.path.isdir(path)]
    while left:
      for pid in self.tasks():
        self._kill(pid)
      for path in list(left):
        try:
          os.rmdir(path)
          left.remove(path)
        except FileNotFoundError:
          left.remove(path)
        except OSError as e:
          if e.errno != errno.EBUSY or time.monotonic() > deadline:
            raise OSError(e.errno, f'cannot remove cgroup {path}: {e.strerror}') from None
      if left:
        time.sleep(0.01)


def _remove_stale(where: dict):
  """Removes the run groups of processes that are gone (a launcher killed before it could clean up)."""
  stale = {}
  for parent in _parents(where):
    for name in os.listdir(parent):
      m = re.fullmatch(re.escape(PREFIX) + r'(\d+)-\d+', name)
      if m and not os.path.exists(f'/proc/{m.group(1)}'):
        stale.setdefault(name, []).append(os.path.join(parent, name))
  for paths in stale.values():
    RunCgroup(where['version'], paths[0], paths[-1]).remove()


def leftovers() -> list[str]:
  """Run groups that exist now (of any launcher)."""
  where = hierarchy()
  if not where['version']:
    return []
  return sorted(os.path.join(parent, name) for parent in _parents(where) for name in os.listdir(parent)
                if name.startswith(PREFIX))
