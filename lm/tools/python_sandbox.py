"""The ``python`` tool: runs code in a separate, sandboxed process. Arguments ``{"code": str}``.

The result is the program's stdout (trailing newlines dropped). Every failure is an ``ok=False``
result whose first line says what happened, followed by stdout and the tail of stderr:
``time limit: ...``, ``memory limit: ...``, ``process limit: ...``, ``output limit: ...``,
``killed by signal ...``, ``exited with status N: <last stderr line>`` (a Python exception, such as
the ``PermissionError`` or ``FileNotFoundError`` of a blocked access), ``python sandbox
unavailable: ...`` when the kernel refuses the isolation. The program never runs unsandboxed.

What is enforced, and how (``sandbox_child.py`` does the work; Linux only):

  process     a child of its own: ``python -I -S -X utf8 main.py`` (isolated mode: no site-packages,
              no user site, no PYTHON* variables, no script folder on ``sys.path``; standard library
              only), stdin from ``/dev/null``, a minimal environment.
  namespaces  new mount, network, pid, ipc and uts namespaces (``unshare``); as a non-root user also a
              user namespace. Started as root, the program runs as a uid of its own (``UID_BASE`` + the
              launcher's pid) with no capabilities; in a user namespace as its root (the calling user
              outside) with every capability dropped, the bounding set emptied and ``SECBIT_NOROOT``.
              ``no_new_privs`` always. Root that may not unshare (a container without CAP_SYS_ADMIN)
              gets "python sandbox unavailable": a user namespace would leave RLIMIT_NPROC unenforced.
  network     the new network namespace has only a loopback interface, and it is down: every
              connection, to 127.0.0.1 or elsewhere, fails with "Network is unreachable". Landlock
              (ABI >= 4) additionally denies TCP bind and connect ("Permission denied" then comes first)
              and (ABI >= 6) signals and abstract unix sockets beyond the sandbox.
  files       ``/`` is a fresh read-only tmpfs holding only read-only binds of the Python install
              (``sys.base_prefix``), the system library directories (``/usr/lib``, ``/lib``, ... as
              on the host, symlinks kept), ``/dev/null``, ``zero``, ``random``, ``urandom``, and the
              working directory ``/sandbox``: a new tmpfs of ``disk_mb``, the only writable place,
              gone when the program ends. The old root is detached after ``pivot_root``: the project,
              ``/etc``, ``/tmp``, ``/proc`` and home directories (but for the path leading to a Python
              install that lives there) do not exist inside. Landlock (ABI >= 1), where the kernel has
              it, fences file access to the same paths a second time (listing ``/`` is then denied).
  limits      RLIMIT_AS ``memory_mb`` (allocation fails with MemoryError), RLIMIT_CPU ``cpu_s``
              (SIGXCPU, SIGKILL a second later), RLIMIT_NPROC ``max_processes`` (counted for the
              sandbox's own uid), RLIMIT_FSIZE ``disk_mb``, RLIMIT_NOFILE 64, no core files; a
              wall-clock ``timeout_s`` and ``max_output_bytes`` of stdout + stderr, past which the
              whole process group is killed. When the program's main process ends, the pid
              namespace's init exits and the kernel kills everything left (daemons, fork bombs).

``enforcement()`` says which of these this machine provides.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

from lm.tools import landlock
from lm.tools.base import Tool, ToolResult

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sandbox_child.py')
UID_BASE = 1_500_000_000
LIB_DIRS = ('/lib', '/lib32', '/lib64', '/libx32', '/usr/lib', '/usr/lib32', '/usr/lib64', '/usr/libx32')
DEVICES = ('/dev/null', '/dev/zero', '/dev/random', '/dev/urandom')
STDERR_LINES = 20


def host_layout() -> dict:
  """The interpreter to run and what to bind read-only: the Python install and the library dirs."""
  python = os.path.realpath(getattr(sys, '_base_executable', None) or sys.executable)
  wanted = sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)})
  if not any(python.startswith(p + os.sep) for p in wanted):
    wanted.append(os.path.dirname(python))
  links = {}
  for d in LIB_DIRS:
    if os.path.islink(d):
      links[d] = os.readlink(d)
      wanted.append(os.path.realpath(d))
    elif os.path.isdir(d):
      wanted.append(d)
  binds = []
  for path in sorted(set(wanted), key=len):  # a path inside one already bound needs no bind of its own
    if not any(path == b or path.startswith(b.rstrip('/') + '/') for b in binds):
      binds.append(path)
  return dict(python=python, binds=binds, links=links, devices=[d for d in DEVICES if os.path.exists(d)])


def enforcement() -> dict:
  """Whether the sandbox starts as root (else it needs a user namespace) and the kernel's Landlock ABI (0: none)."""
  return dict(root=os.geteuid() == 0, landlock_abi=landlock.abi())


def _diagnose(outcome: dict, limits: dict) -> str | None:
  """The first line of an error result, or None when the program succeeded."""
  if outcome.get('setup_error'):
    return f'python sandbox unavailable: {outcome["setup_error"]}'
  if outcome['timed_out']:
    return f'time limit: stopped after {limits["timeout_s"]:g} s (wall clock)'
  if outcome['overflow']:
    return f'output limit: the program wrote more than {limits["max_output_bytes"]} bytes'
  sig = outcome.get('signal')
  if sig == signal.SIGXCPU:
    return f'time limit: stopped after {limits["cpu_s"]} s of CPU time'
  if sig == signal.SIGKILL:
    return f'killed by signal SIGKILL (the CPU time limit of {limits["cpu_s"]} s, or the system ran out of memory)'
  if sig:
    return f'killed by signal {signal.Signals(sig).name}'
  code = outcome.get('exit')
  if code is None:
    return 'python sandbox: the program ended without a status'
  if code == 0:
    return None
  last = next((line for line in reversed(outcome['stderr'].splitlines()) if line.strip()), '')
  if last.startswith('MemoryError'):
    return f'memory limit: the program needed more than {limits["memory_mb"]} MB'
  if last.startswith('BlockingIOError') and 'Resource temporarily unavailable' in last or \
      "can't start new thread" in last:
    return f'process limit: the program tried to run more than {limits["max_processes"]} processes or threads'
  return f'exited with status {code}: {last}' if last else f'exited with status {code}'


class PythonSandbox(Tool):
  name = 'python'
  description = 'Runs a Python program (standard library only) in a sandbox and returns what it prints.'
  parameters = {'code': (str, True)}

  def __init__(self, timeout_s: float = 10.0, cpu_s: int | None = None, memory_mb: int = 256,
               max_processes: int = 16, max_output_bytes: int = 65536, disk_mb: int = 16, **kwargs):
    super().__init__(**kwargs)
    if sys.platform != 'linux':
      raise ValueError(f'the python sandbox needs Linux namespaces; this is {sys.platform}')
    cpu_s = cpu_s or max(1, int(timeout_s + 0.999))
    self.limits = dict(timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, max_processes=max_processes,
                       max_output_bytes=max_output_bytes, disk_mb=disk_mb)
    self.layout = host_layout()

  def execute(self, code: str) -> dict:
    """Runs ``code``; returns stdout, stderr, exit / signal / setup_error, timed_out, overflow."""
    lim = self.limits
    status_r, status_w = os.pipe()
    root = tempfile.mkdtemp(prefix='lm-sandbox-')
    cfg = dict(self.layout, root=root, status_fd=status_w, uid=UID_BASE, landlock=landlock.abi() > 0,
               limits=dict(memory_bytes=lim['memory_mb'] << 20, cpu_s=lim['cpu_s'], nproc=lim['max_processes'],
                           disk_bytes=lim['disk_mb'] << 20, nofile=64))
    try:
      proc = subprocess.Popen([self.layout['python'], '-I', '-S', CHILD, json.dumps(cfg)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(status_w,),
                              start_new_session=True, cwd='/', env={'LANG': 'C.UTF-8'})
      os.close(status_w)
      status_w = None
      try:
        proc.stdin.write(code.encode('utf-8', 'surrogatepass'))
        proc.stdin.close()
      except BrokenPipeError:  # the launcher died first; its status or stderr says why
        pass
      out = self._collect(proc, status_r)
    finally:
      for fd in (status_r, status_w):
        if fd is not None:
          os.close(fd)
      os.rmdir(root)
    lines = [json.loads(line) for line in out.pop('status').splitlines() if line.strip()]
    errors = [s for s in lines if 'setup_error' in s]
    out.update(errors[0] if errors else (lines[-1] if lines else {}))
    return out

  def _collect(self, proc, status_r) -> dict:
    """Reads stdout, stderr and the status pipe until all close, the deadline or the output cap."""
    names = {proc.stdout.fileno(): 'stdout', proc.stderr.fileno(): 'stderr', status_r: 'status'}
    bufs = {name: bytearray() for name in names.values()}
    timed_out = overflow = False
    deadline = time.monotonic() + self.limits['timeout_s']
    with selectors.DefaultSelector() as sel:
      for fd in names:
        sel.register(fd, selectors.EVENT_READ)
      while sel.get_map() and not (timed_out or overflow):
        left = deadline - time.monotonic()
        timed_out = left <= 0
        for key, _ in ([] if timed_out else sel.select(left)):
          data = os.read(key.fd, 1 << 16)
          if not data:
            sel.unregister(key.fd)
          bufs[names[key.fd]] += data
        overflow = len(bufs['stdout']) + len(bufs['stderr']) > self.limits['max_output_bytes']
    if timed_out or overflow:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    text = {k: v.decode('utf-8', 'replace') for k, v in bufs.items()}
    return dict(text, timed_out=timed_out, overflow=overflow)

  def run(self, arguments: dict) -> ToolResult:
    outcome = self.execute(arguments['code'])
    reason = _diagnose(outcome, self.limits)
    stdout = outcome['stdout'].rstrip('\n')
    if reason is None:
      return ToolResult(stdout, True)
    stderr = '\n'.join(outcome['stderr'].rstrip('\n').splitlines()[-STDERR_LINES:])
    return ToolResult('\n'.join(part for part in (reason, stdout, stderr) if part), False)
