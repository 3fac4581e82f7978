"""The ``python`` tool: runs code in a separate, sandboxed process. Arguments ``{"code": str}``.

The result is the program's stdout (trailing newlines dropped). Every failure is an ``ok=False``
result whose first line says what happened, followed by stdout and the tail of stderr:
``time limit: ...``, ``memory limit: ...``, ``process limit: ...``, ``disk limit: ...``,
``output limit: ...``, ``killed by signal ...``, ``exited with status N: <last stderr line>`` (a
Python exception, such as the ``PermissionError`` or ``FileNotFoundError`` of a blocked access),
``python sandbox unavailable: ...`` when the kernel refuses the isolation. The program never runs
unsandboxed.

What is enforced, and how (``sandbox_child.py`` does the work; Linux only):

  process     a child of its own: ``python -I -S -X utf8 main.py`` (isolated mode: no user site, no
              PYTHON* variables, no script folder on ``sys.path``), stdin from ``/dev/null``, a
              minimal environment (``MALLOC_ARENA_MAX=1``: threads share one malloc arena).
  namespaces  new mount, network, pid, ipc and uts namespaces (``unshare``); as a non-root user also a
              user namespace. Started as root, the program runs as a uid of its own (``UID_BASE`` + the
              launcher's pid) with no capabilities; in a user namespace as its root (the calling user
              outside) with every capability dropped, the bounding set emptied and ``SECBIT_NOROOT``.
              ``no_new_privs`` always. Root that may not unshare (a container without CAP_SYS_ADMIN)
              gets "python sandbox unavailable".
  network     the new network namespace has only a loopback interface, and it is down: every
              connection, to 127.0.0.1 or elsewhere, fails with "Network is unreachable". Landlock
              (ABI >= 4) additionally denies TCP bind and connect ("Permission denied" then comes first)
              and (ABI >= 6) signals and abstract unix sockets beyond the sandbox.
  files       ``/`` is a fresh read-only tmpfs holding only read-only binds of the interpreter (and its
              libpython), the standard library with lib-dynload (``sysconfig``'s stdlib of
              ``sys.base_prefix``; not the rest of the install), the system library directories
              (``/usr/lib``, ``/lib``, ... as on the host, symlinks kept), ``/dev/null``, ``zero``,
              ``random``, ``urandom``, and the working directory ``/sandbox``: a new tmpfs of
              ``disk_mb`` and ``max_files`` inodes (``nr_inodes``), the only writable place, gone when
              the program ends. Standard library only: ``site-packages`` and ``dist-packages`` in the
              standard library, the install's purelib/platlib and other Pythons' directories in the
              library directories (``/usr/lib/python3``, ...) do not exist inside (a directory holding
              one is rebuilt from binds of its other entries). The old root is detached after
              ``pivot_root``: the project, ``/etc``, ``/tmp``, ``/proc`` and home directories (but for the
              path leading to a Python install that lives there) do not exist inside. Landlock (ABI >= 1),
              where the kernel has it, fences file access to the same paths a second time (listing ``/``
              is then denied).
  cgroup      a cgroup per run (``cgroup.py``: v2 where this process's cgroup can delegate the memory
              and pids controllers, else the v1 hierarchies), created before the program starts and
              joined by it before anything else, removed afterwards (also after a kill or a timeout;
              what is left in it is killed first). ``memory_mb`` bounds the memory of all the program's
              processes together (anonymous, shared memory, memfds, tmpfs pages, kernel objects; no
              swap): past it the kernel's OOM killer kills one, and the result says ``memory limit``.
              ``max_processes`` bounds its tasks, threads included: a fork or thread past it fails
              with EAGAIN, and a failed program says ``process limit``. After an OOM kill or a
              refused task (or a thread the interpreter could not start), the program has 1 s to end
              before all of it is killed (a thread bomb would otherwise wait for its threads).
  seccomp     a BPF filter (``seccomp.py``; the list is there) checks the architecture (another ABI
              kills the process) and refuses with EPERM what a code interpreter never needs:
              namespaces (unshare, setns, clone with CLONE_NEW* flags; clone3 gets ENOSYS so that libc
              falls back to clone), mounts, ptrace and other processes' memory, keyrings, bpf,
              perf_event_open, userfaultfd, io_uring, kernel modules, kexec, reboot, swap, ...
  limits      RLIMIT_AS ``memory_mb`` plus 8 MB of stack per task (one large allocation fails with a
              MemoryError, whose traceback the result keeps), RLIMIT_STACK 8 MB, RLIMIT_CPU ``cpu_s``
              (SIGXCPU, SIGKILL a second later), RLIMIT_FSIZE ``disk_mb`` (a file, memfds included,
              grows no further: ``disk limit``), RLIMIT_NOFILE 64, no core files; a wall-clock
              ``timeout_s`` and ``max_output_bytes`` of stdout + stderr, past which the whole process
              group is killed. When the program's main process ends, the pid namespace's init exits and
              the kernel kills everything left (daemons, fork bombs).

Without cgroup controllers (or where this process may not create cgroups) the memory and task bounds
hold per process only: RLIMIT_AS ``memory_mb`` (shared memory and memfds uncounted) and RLIMIT_NPROC
``max_processes`` (counted for the sandbox's uid); without seccomp the calls above are refused only
for want of privilege. ``enforcement()`` says which of these this machine provides and, in
``missing``, what is absent; the first run logs that once, and the first ``python sandbox
unavailable`` result repeats it.
"""

import functools
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

import lm.tools.cgroup as cgroup
import lm.tools.landlock as landlock
import lm.tools.seccomp as seccomp
from lm.tools.base import Tool, ToolResult

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sandbox_child.py')
UID_BASE = 1_500_000_000
LIB_DIRS = ('/lib', '/lib32', '/lib64', '/libx32', '/usr/lib', '/usr/lib32', '/usr/lib64', '/usr/libx32')
DEVICES = ('/dev/null', '/dev/zero', '/dev/random', '/dev/urandom')
PACKAGE_DIRS = ('site-packages', 'dist-packages')
STACK_BYTES = 8 << 20
GRACE_S = 1.0  # after an OOM kill, a refused task or a thread that could not start: the time left to end
POLL_S = 0.05
STDERR_LINES = 20
log = logging.getLogger(__name__)
_said = set()  # what this process has said once already: 'log', 'result'


def _outermost(paths) -> list[str]:
  """The paths that are not inside another of them."""
  kept = []
  for path in sorted(set(paths), key=len):
    if not any(path == k or path.startswith(k.rstrip('/') + '/') for k in kept):
      kept.append(path)
  return kept


def host_layout() -> dict:
  """The interpreter to run, what to bind read-only (the interpreter, its libpython, the standard library with
  lib-dynload, the system library directories) and what to leave out beneath those binds (site-packages,
  dist-packages, other Pythons' directories in the library directories)."""
  python = os.path.realpath(getattr(sys, '_base_executable', None) or sys.executable)
  base = dict(base=sys.base_prefix, platbase=sys.base_exec_prefix, installed_base=sys.base_prefix,
              installed_platbase=sys.base_exec_prefix)
  paths = sysconfig.get_paths(vars=base)
  stdlib = sorted({os.path.realpath(paths['stdlib']), os.path.realpath(paths['platstdlib'])})
  wanted = [python] + stdlib
  dynload = sysconfig.get_config_var('DESTSHARED')
  if dynload and os.path.isdir(dynload):
    wanted.append(os.path.realpath(dynload))
  libpython = os.path.join(sysconfig.get_config_var('LIBDIR') or '', sysconfig.get_config_var('INSTSONAME') or '')
  if sysconfig.get_config_var('Py_ENABLE_SHARED') and os.path.isfile(libpython):
    wanted.append(os.path.realpath(libpython))
  links, libs = {}, []
  for d in LIB_DIRS:
    if os.path.islink(d):
      links[d] = os.readlink(d)
      libs.append(os.path.realpath(d))
    elif os.path.isdir(d):
      libs.append(d)
  hidden = {os.path.join(d, name) for d in stdlib for name in PACKAGE_DIRS}
  hidden |= {os.path.realpath(paths[key]) for key in ('purelib', 'platlib')}
  for d in set(libs):
    for name in os.listdir(d):
      entry = os.path.join(d, name)
      if name.startswith('python') and not any(s == entry or s.startswith(entry + '/') for s in stdlib):
        hidden.add(entry)
  binds = _outermost(wanted + libs)
  hidden = sorted(h for h in hidden if os.path.lexists(h) and any(h.startswith(b + '/') for b in binds))
  return dict(python=python, binds=binds, hidden=hidden, links=links,
              devices=[d for d in DEVICES if os.path.exists(d)])


@functools.cache
def enforcement() -> dict:
  """What this machine provides: root (else a user namespace is needed), the Landlock ABI (0: none), the cgroup
  version bounding memory and tasks over all the program's processes (None: none), seccomp, and ``missing``:
  one sentence per missing piece, saying what then holds per process only."""
  where = cgroup.hierarchy()
  has_seccomp = seccomp.available()
  missing = []
  if not where['version']:
    missing.append(f'no cgroup memory and pids controllers ({where["reason"]}): memory_mb holds per process '
                   '(RLIMIT_AS; shared memory and memfds uncounted) and max_processes per uid (RLIMIT_NPROC)')
  if not has_seccomp:
    missing.append(f'no seccomp filter on {os.uname().machine}: namespace, mount, ptrace, keyring, bpf and module '
                   'calls are refused only for want of privilege (an unprivileged identity, no_new_privs)')
  return dict(root=os.geteuid() == 0, landlock_abi=landlock.abi(), cgroup=where['version'], seccomp=has_seccomp,
              missing=missing)


def _diagnose(outcome: dict, limits: dict) -> str | None:
  """The first line of an error result, or None when the program succeeded."""
  if outcome.get('setup_error'):
    return f'python sandbox unavailable: {outcome["setup_error"]}'
  memory = f'memory limit: the program needed more than {limits["memory_mb"]} MB'
  processes = f'process limit: the program tried to run more than {limits["max_processes"]} processes or threads'
  disk = f'disk limit: the program wrote more than {limits["disk_mb"]} MB or {limits["max_files"]} files'
  code = outcome.get('exit')
  if outcome.get('oom_kills'):
    return memory
  if outcome.get('refusals') and code != 0 or outcome.get('stopped'):
    return processes
  if outcome['timed_out']:
    return f'time limit: stopped after {limits["timeout_s"]:g} s (wall clock)'
  if outcome['overflow']:
    return f'output limit: the program wrote more than {limits["max_output_bytes"]} bytes'
  sig = outcome.get('signal')
  if sig == signal.SIGXCPU:
    return f'time limit: stopped after {limits["cpu_s"]} s of CPU time'
  if sig == signal.SIGXFSZ:
    return disk
  if sig == signal.SIGKILL:
    return f'killed by signal SIGKILL (the CPU time limit of {limits["cpu_s"]} s, or the system ran out of memory)'
  if sig:
    return f'killed by signal {signal.Signals(sig).name}'
  if code is None:
    return 'python sandbox: the program ended without a status'
  if code == 0:
    return None
  lines = [line for line in outcome['stderr'].splitlines() if line.strip()]
  last = lines[-1] if lines else ''
  if last.startswith('MemoryError'):
    return memory
  # any line: the forked copies of a program print their tracebacks into the same stderr, interleaved
  if any(line.startswith('BlockingIOError') and 'Resource temporarily unavailable' in line or
         "can't start new thread" in line for line in lines):
    return processes
  if last.startswith(('OSError: [Errno 28]', 'OSError: [Errno 27]')):  # ENOSPC: the tmpfs is full; EFBIG: RLIMIT_FSIZE
    return disk
  return f'exited with status {code}: {last}' if last else f'exited with status {code}'


class PythonSandbox(Tool):
  name = 'python'
  description = 'Runs a Python program (standard library only) in a sandbox and returns what it prints.'
  parameters = {'code': (str, True)}

  def __init__(self, timeout_s: float = 10.0, cpu_s: int | None = None, memory_mb: int = 256,
               max_processes: int = 16, max_output_bytes: int = 65536, disk_mb: int = 16, max_files: int = 1024,
               **kwargs):
    super().__init__(**kwargs)
    if sys.platform != 'linux':
      raise ValueError(f'the python sandbox needs Linux namespaces; this is {sys.platform}')
    cpu_s = cpu_s or max(1, int(timeout_s + 0.999))
    self.limits = dict(timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, max_processes=max_processes,
                       max_output_bytes=max_output_bytes, disk_mb=disk_mb, max_files=max_files)
    self.layout = host_layout()

  def execute(self, code: str) -> dict:
    """Runs ``code``; returns stdout, stderr, exit / signal / setup_error, timed_out, overflow, stopped (killed
    ``GRACE_S`` after a limit was hit) and, with a cgroup, its oom_kills, refusals (tasks refused) and
    memory_peak_bytes."""
    lim, kernel = self.limits, enforcement()
    if kernel['missing'] and 'log' not in _said:
      _said.add('log')
      log.warning('python sandbox: %s', '; '.join(kernel['missing']))
    status_r, status_w = os.pipe()
    root = tempfile.mkdtemp(prefix='lm-sandbox-')
    group, group_fds, out = None, [], None
    try:
      if kernel['cgroup']:
        try:
          group = cgroup.RunCgroup.create(lim['memory_mb'] << 20, lim['max_processes'])
          group_fds = group.open_procs()
        except OSError as e:
          return dict(stdout='', stderr='', timed_out=False, overflow=False, setup_error=f'cgroup: {e}')
      # with the cgroup bounding memory, the address space has room past it for a stack per task
      address_space = (lim['memory_mb'] << 20) + (lim['max_processes'] * STACK_BYTES if group else 0)
      cfg = dict(self.layout, root=root, status_fd=status_w, uid=UID_BASE, landlock=kernel['landlock_abi'] > 0,
                 seccomp=kernel['seccomp'], cgroup_fds=group_fds,
                 limits=dict(address_space_bytes=address_space, stack_bytes=STACK_BYTES,
                             cpu_s=lim['cpu_s'], nproc=None if group else lim['max_processes'],
                             disk_bytes=lim['disk_mb'] << 20, files=lim['max_files'], nofile=64))
      proc = subprocess.Popen([self.layout['python'], '-I', '-S', CHILD, json.dumps(cfg)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(status_w, *group_fds),
                              start_new_session=True, cwd='/', env={'LANG': 'C.UTF-8'})
      for fd in (status_w, *group_fds):
        os.close(fd)
      status_w, group_fds = None, []
      try:
        proc.stdin.write(code.encode('utf-8', 'surrogatepass'))
        proc.stdin.close()
      except BrokenPipeError:  # the launcher died first; its status or stderr says why
        pass
      out = self._collect(proc, status_r, group)
      if group:
        out.update(oom_kills=group.oom_kills(), refusals=group.refusals(), memory_peak_bytes=group.peak_bytes())
    finally:
      for fd in (status_r, status_w, *group_fds):
        if fd is not None:
          os.close(fd)
      os.rmdir(root)
      if group:
        group.remove()
    lines = [json.loads(line) for line in out.pop('status').splitlines() if line.strip()]
    errors = [s for s in lines if 'setup_error' in s]
    out.update(errors[0] if errors else (lines[-1] if lines else {}))
    return out

  def _collect(self, proc, status_r, group) -> dict:
    """Reads stdout, stderr and the status pipe until all close, the deadline or the output cap. An OOM kill or
    a refused fork in the cgroup, or a thread the interpreter could not start, moves the deadline to ``GRACE_S``
    from then (a program whose threads cannot start would otherwise wait for the ones that did)."""
    names = {proc.stdout.fileno(): 'stdout', proc.stderr.fileno(): 'stderr', status_r: 'status'}
    bufs = {name: bytearray() for name in names.values()}
    timed_out = overflow = stopped = limit_hit = False
    deadline = time.monotonic() + self.limits['timeout_s']
    with selectors.DefaultSelector() as sel:
      for fd in names:
        sel.register(fd, selectors.EVENT_READ)
      while sel.get_map() and not (timed_out or overflow or stopped):
        if not limit_hit and (b"can't start new thread" in bufs['stderr'] or
                              group and (group.oom_kills() or group.refusals())):
          limit_hit, deadline = True, min(deadline, time.monotonic() + GRACE_S)
        left = deadline - time.monotonic()
        if left <= 0:
          stopped, timed_out = limit_hit, not limit_hit
          break
        for key, _ in sel.select(min(left, POLL_S) if group else left):
          data = os.read(key.fd, 1 << 16)
          if not data:
            sel.unregister(key.fd)
          bufs[names[key.fd]] += data
        overflow = len(bufs['stdout']) + len(bufs['stderr']) > self.limits['max_output_bytes']
    if timed_out or overflow or stopped:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    text = {k: v.decode('utf-8', 'replace') for k, v in bufs.items()}
    return dict(text, timed_out=timed_out, overflow=overflow, stopped=stopped)

  def run(self, arguments: dict) -> ToolResult:
    outcome = self.execute(arguments['code'])
    reason = _diagnose(outcome, self.limits)
    stdout = outcome['stdout'].rstrip('\n')
    if reason is None:
      return ToolResult(stdout, True)
    missing = enforcement()['missing']
    if outcome.get('setup_error') and missing and 'result' not in _said:  # said once, with the first of these
      _said.add('result')
      reason += '\n' + '\n'.join(f'(also: {m})' for m in missing)
    stderr = '\n'.join(outcome['stderr'].rstrip('\n').splitlines()[-STDERR_LINES:])
    return ToolResult('\n'.join(part for part in (reason, stdout, stderr) if part), False)
