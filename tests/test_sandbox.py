"""The python sandbox: isolation, limits over all of a program's processes, the seccomp filter, the host untouched."""

import logging
import os
import re
import sys
import threading
import time

import pytest

from lm.tools import ToolResult, cgroup, python_sandbox, seccomp
from lm.tools.python_sandbox import PythonSandbox, enforcement

if sys.platform != 'linux':
  pytest.skip(f'the python sandbox needs Linux; this is {sys.platform}', allow_module_level=True)
_probe = PythonSandbox(timeout_s=30)({'code': 'print(6 * 7)'})
if _probe != ToolResult('42', True):
  pytest.skip(f'the python sandbox cannot start on this machine (user namespaces or root needed): {_probe.text}',
              allow_module_level=True)
if enforcement()['missing']:
  pytest.skip('this kernel lacks what the sandbox tests check: ' + '; '.join(enforcement()['missing']),
              allow_module_level=True)

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_FOUND = 'exited with status 1: FileNotFoundError: [Errno 2] No such file or directory'
MB = 1 << 20


@pytest.fixture(scope='module')
def sandbox():
  return PythonSandbox(timeout_s=20, cpu_s=5, memory_mb=128, max_processes=16, max_chars=4000)


def _first_line(result):
  return result.text.split('\n')[0]


def _leftover_sandbox_processes():
  found = []
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/environ', 'rb') as f:
        if b'HOME=/sandbox\0' in f.read():
          found.append(pid)
    except OSError:
      pass
  return found


def _leftover_cgroups():
  return [path for path in cgroup.leftovers() if os.path.basename(path).startswith(f'{cgroup.PREFIX}{os.getpid()}-')]


def _assert_host_clean():
  assert _leftover_sandbox_processes() == []
  assert _leftover_cgroups() == []


def _outside_runs_pss():
  """Proportional resident bytes (pages shared after a fork split between the sharers) of this worker and its
  descendants outside any run group: what a run could leak past its limit. A cgroup's total would also count
  the other test worker's memory, which shares the group under xdist."""
  total, todo = 0, [os.getpid()]
  while todo:
    pid = todo.pop()
    try:
      for tid in os.listdir(f'/proc/{pid}/task'):
        with open(f'/proc/{pid}/task/{tid}/children') as f:
          todo.extend(int(child) for child in f.read().split())
      with open(f'/proc/{pid}/cgroup') as f:
        if cgroup.PREFIX in f.read():
          continue
      with open(f'/proc/{pid}/smaps_rollup') as f:
        total += next(int(line.split()[1]) for line in f if line.startswith('Pss:')) * 1024
    except (OSError, StopIteration):
      pass  # the process ended while we read it
  return total


class HostWatch:
  """Samples, while a run goes on, the host's shared memory (memfds, tmpfs) and in-core inodes and the resident
  memory of this test's processes outside the run's group (the launcher's side); ``grown`` is the largest rise
  over the value before."""

  def __enter__(self):
    self.before = self.sample()
    self.worst = dict(self.before)
    self.done = threading.Event()
    self.thread = threading.Thread(target=self._loop)
    self.thread.start()
    return self

  def _loop(self):
    while not self.done.wait(0.005):
      now = self.sample()
      self.worst = {key: max(self.worst[key], now[key]) for key in now}

  def __exit__(self, *exc):
    self.done.set()
    self.thread.join()
    self.after = self.sample()

  @staticmethod
  def sample():
    with open('/proc/meminfo') as f:
      shmem = next(int(line.split()[1]) * 1024 for line in f if line.startswith('Shmem:'))
    with open('/proc/sys/fs/inode-nr') as f:
      inodes = int(f.read().split()[0])
    return dict(shmem=shmem, inodes=inodes, ours=_outside_runs_pss())

  def grown(self, key):
    return self.worst[key] - self.before[key]


# -- isolation --------------------------------------------------------------------------------------------

def test_sandbox_runs_a_normal_program(sandbox):
  assert sandbox({'code': 'print(sum(range(10)))'}) == ToolResult('45', True)
  code = 'import os\nopen("a.txt", "w").write("hi")\nprint(os.getcwd(), open("a.txt").read())'
  assert sandbox({'code': code}) == ToolResult('/sandbox hi', True)
  assert sandbox({'code': 'print("strawberry".count("r"))'}) == ToolResult('3', True)  # as in the lab's tasks
  # threads, fork and subprocess work under the seccomp filter (clone3 refused: libc falls back to clone)
  code = ('import os, subprocess, sys, threading\nt = threading.Thread(target=print, args=("thread",))\nt.start()\n'
          't.join()\npid = os.fork()\nif pid == 0:\n  os._exit(7)\nprint(os.waitpid(pid, 0)[1] >> 8)\n'
          'print(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout)')
  assert sandbox({'code': code}) == ToolResult('thread\n7\n42', True)


def _network_message(kind):
  if kind == 'tcp' and enforcement()['landlock_abi'] >= 4:
    return 'exited with status 1: PermissionError: [Errno 13] Permission denied'
  return 'exited with status 1: OSError: [Errno 101] Network is unreachable'


@pytest.mark.parametrize('code, kind', [
    ('import socket; socket.create_connection(("127.0.0.1", 80), timeout=3)', 'tcp'),
    ('import socket; socket.create_connection(("8.8.8.8", 53), timeout=3)', 'tcp'),
    ('import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("1.1.1.1", 53))', 'udp'),
])
def test_sandbox_blocks_network(sandbox, code, kind):
  result = sandbox({'code': code})
  assert not result.ok and _first_line(result) == _network_message(kind)


def test_sandbox_blocks_reads_outside(sandbox, tmp_path):
  secret = tmp_path / 'secret.txt'
  secret.write_text('s3cret')
  readme = os.path.join(PROJECT, 'README.md')
  for path in ('/etc/passwd', readme, str(secret)):
    assert os.path.exists(path)
    result = sandbox({'code': f'print(open({path!r}).read())'})
    assert _first_line(result) == f'{NOT_FOUND}: {path!r}'
  result = sandbox({'code': f'print(sorted(__import__("os").listdir({PROJECT!r})))'})
  assert _first_line(result) == f'{NOT_FOUND}: {PROJECT!r}'
  # the home directory holds at most the path to a Python install that lives there; Landlock denies listing it
  home = os.path.expanduser('~')
  result = sandbox({'code': f'print(sorted(__import__("os").listdir({home!r})))'})
  on_the_way = sorted({b[len(home) + 1:].split('/')[0] for b in sandbox.layout['binds'] if b.startswith(home + '/')})
  if enforcement()['landlock_abi'] >= 1 and on_the_way:
    assert _first_line(result) == f"exited with status 1: PermissionError: [Errno 13] Permission denied: {home!r}"
  elif on_the_way:
    assert result == ToolResult(str(on_the_way), True)
  else:
    assert _first_line(result) == f'{NOT_FOUND}: {home!r}'
  assert len(os.listdir(home)) > len(on_the_way)  # there was more to see


def test_sandbox_blocks_writes_outside(sandbox, tmp_path):
  for path, error in [('/x.txt', "OSError: [Errno 30] Read-only file system: '/x.txt'"),
                      (os.path.join(sys.base_prefix, 'x.txt'), 'OSError: [Errno 30] Read-only file system: {p!r}'),
                      (os.path.join(PROJECT, 'x.txt'), 'FileNotFoundError: [Errno 2] No such file or directory: {p!r}'),
                      (str(tmp_path / 'x.txt'), 'FileNotFoundError: [Errno 2] No such file or directory: {p!r}')]:
    result = sandbox({'code': f'open({path!r}, "w").write("x")'})
    assert _first_line(result) == 'exited with status 1: ' + error.format(p=path)
    assert not os.path.exists(path)


def test_only_the_standard_library_is_visible(sandbox):
  layout = sandbox.layout
  site = os.path.join(sys.base_prefix, 'lib', f'python{sys.version_info[0]}.{sys.version_info[1]}', 'site-packages')
  outside = [name for name in ('attr', 'yaml', 'pip') if os.path.isdir(os.path.join(site, name))]
  assert outside and site in layout['hidden']  # packages the base interpreter has, which the program must not get
  assert all(os.path.exists(path) for path in layout['hidden'])
  assert not any(b == sys.base_prefix for b in layout['binds'])
  code = (f'import os, sys\nprint([p for p in {layout["hidden"]!r} if os.path.exists(p)])\n'
          'print([p for p in sys.path if "-packages" in p])\n'
          f'sys.path += {layout["hidden"]!r}  # as an attacker would\n'
          f'for name in {outside!r}:\n  try:\n    __import__(name)\n    print(name, "imported")\n'
          '  except ModuleNotFoundError as e:\n    print(e)\n'
          'import ctypes, decimal, hashlib, json, lzma, bz2, sqlite3, ssl, zlib\n'
          'print(sqlite3.connect(":memory:").execute("select 6 * 7").fetchone()[0],\n'
          '      hashlib.sha256(b"").hexdigest()[:8])')
  want = ['[]', '[]'] + [f"No module named '{name}'" for name in outside] + ['42 e3b0c442']
  assert sandbox({'code': code}) == ToolResult('\n'.join(want), True)


# -- limits -------------------------------------------------------------------------------------------

def test_sandbox_limits(sandbox):
  result = sandbox({'code': 'import os\nwhile True:\n  os.fork()'})
  assert _first_line(result) == 'process limit: the program tried to run more than 16 processes or threads'
  assert 'BlockingIOError: [Errno 11] Resource temporarily unavailable' in result.text
  for code in ('x = bytearray(10 ** 9)', 'a = []\nwhile True:\n  a.append(bytearray(10 ** 6))'):
    assert _first_line(sandbox({'code': code})) == 'memory limit: the program needed more than 128 MB'
  busy = PythonSandbox(timeout_s=20, cpu_s=1)
  assert busy({'code': 'while True:\n  pass'}) == ToolResult('time limit: stopped after 1 s of CPU time', False)
  quick = PythonSandbox(timeout_s=1)
  result = quick({'code': 'import time\ntime.sleep(60)'})
  assert result == ToolResult('time limit: stopped after 1 s (wall clock)', False)
  small = PythonSandbox(max_output_bytes=1000, max_chars=200)
  result = small({'code': 'while True:\n  print("x" * 100)'})
  assert not result.ok and _first_line(result) == 'output limit: the program wrote more than 1000 bytes'
  _assert_host_clean()


def test_file_flood_ends_at_the_inode_limit():
  tool = PythonSandbox(timeout_s=20, max_files=256)
  code = 'import os\nn = 0\ntry:\n  while True:\n    open(f"f{n}", "w").close()\n    n += 1\nfinally:\n  print(n)'
  with HostWatch() as host:
    result = tool({'code': code})
  assert _first_line(result) == 'disk limit: the program wrote more than 16 MB or 256 files'
  assert "OSError: [Errno 28] No space left on device: 'f254'" in result.text  # the root and main.py take two
  assert result.text.split('\n')[1] == '254'
  assert host.grown('inodes') < 50_000  # without nr_inodes: a million in seconds
  # bytes past disk_mb: the tmpfs is full (ENOSPC), or a file, here a memfd, grows past RLIMIT_FSIZE (EFBIG)
  for code, error in [('for i in range(5):\n  open(f"f{i}", "wb").write(b"x" * (4 << 20))',
                       'OSError: [Errno 28] No space left on device'),
                      ('import os\nfd = os.memfd_create("m")\nfor _ in range(17):\n  os.write(fd, b"x" * (1 << 20))',
                       'OSError: [Errno 27] File too large')]:
    result = tool({'code': code})
    assert _first_line(result) == 'disk limit: the program wrote more than 16 MB or 256 files'
    assert result.text.endswith(error)
  _assert_host_clean()


def test_memfds_count_against_the_memory_limit():
  tool = PythonSandbox(timeout_s=20, memory_mb=256)
  # 40 memfds of 15 MB (each under RLIMIT_FSIZE), 600 MB in all: not address space, so RLIMIT_AS never sees them
  code = ('import os, time\nfds = [os.memfd_create(f"m{i}") for i in range(40)]\nfor fd in fds:\n'
          '  for _ in range(15):\n    os.write(fd, b"x" * (1 << 20))\nprint("held 600 MB", flush=True)\ntime.sleep(5)')
  with HostWatch() as host:
    outcome = tool.execute(code)
  assert python_sandbox._diagnose(outcome, tool.limits) == 'memory limit: the program needed more than 256 MB'
  assert outcome['oom_kills'] == 1 and outcome['signal'] == 9 and outcome['stdout'] == ''
  assert 200 * MB < outcome['memory_peak_bytes'] <= 256 * MB  # the memfd pages were charged to the run
  assert host.grown('shmem') <= 256 * MB + 32 * MB and host.after['shmem'] - host.before['shmem'] < 16 * MB
  assert host.grown('ours') < 64 * MB  # no process outside the run's group grew with it
  assert tool({'code': code}) == ToolResult('memory limit: the program needed more than 256 MB', False)
  _assert_host_clean()


def test_process_limit_is_read_through_interleaved_tracebacks():
  """A fork bomb's copies write their tracebacks into one stderr; the last line can be any copy's."""
  limits = PythonSandbox(max_processes=16).limits
  interleaved = ('Traceback (most recent call last):\nTraceback (most recent call last):\n'
                 '  File "/sandbox/main.py", line 3, in <module>\n'
                 'BlockingIOError: [Errno 11] Resource temporarily unavailable\n'
                 '  File "/sandbox/main.py", line 3, in <module>\n')
  outcome = dict(exit=1, timed_out=False, overflow=False, stderr=interleaved)
  assert python_sandbox._diagnose(outcome, limits) == ('process limit: the program tried to run more than 16 '
                                                       'processes or threads')
  other = dict(outcome, stderr='Traceback (most recent call last):\n  File "x", line 1\nValueError: no\n')
  assert python_sandbox._diagnose(other, limits) == 'exited with status 1: ValueError: no'


def test_forked_children_share_one_memory_limit():
  tool = PythonSandbox(timeout_s=20, memory_mb=256)
  # six children of 200 MB each at once: each is under the per-process bound, together 1.2 GB
  code = ('import os, time\nkids = []\nfor _ in range(6):\n  pid = os.fork()\n  if pid == 0:\n'
          '    b = bytearray(200 << 20)\n    time.sleep(3)\n    os._exit(0)\n  kids.append(pid)\n'
          'print(sorted(os.waitpid(k, 0)[1] for k in kids))')
  start = time.monotonic()
  with HostWatch() as host:
    outcome = tool.execute(code)
  took = time.monotonic() - start
  assert python_sandbox._diagnose(outcome, tool.limits) == 'memory limit: the program needed more than 256 MB'
  assert outcome['oom_kills'] >= 4 and outcome['memory_peak_bytes'] <= 256 * MB
  assert outcome['stdout'] == '' and took < 3, took  # stopped a second after the OOM kill, before the children end
  assert host.grown('ours') < 64 * MB  # no child escaped the group: the old per-process bound let 1.2 GB through
  result = tool({'code': code})
  assert _first_line(result) == 'memory limit: the program needed more than 256 MB'
  _assert_host_clean()


THREAD_BOMB = 'import threading, time\nwhile True:\n  threading.Thread(target=time.sleep, args=(60,)).start()'


def test_thread_bomb_ends_at_the_process_limit(sandbox):
  code = THREAD_BOMB
  start = time.monotonic()
  outcome = sandbox.execute(code)
  took = time.monotonic() - start
  assert outcome['refusals'] >= 1 and took < 5, (outcome, took)  # not the 20 s wall clock
  result = sandbox({'code': code})
  assert _first_line(result) == 'process limit: the program tried to run more than 16 processes or threads'
  assert "RuntimeError: can't start new thread" in result.text
  code = ('import threading\nmeet = threading.Barrier(16)\n'
          'threads = [threading.Thread(target=meet.wait) for _ in range(15)]\n'
          '[t.start() for t in threads]\nmeet.wait()\nprint("16 at once")')
  assert sandbox({'code': code}) == ToolResult('16 at once', True)  # the main thread and 15 more: 16 tasks
  _assert_host_clean()


def test_sandbox_kills_what_the_program_leaves_behind(sandbox):
  code = ('import os, time\nif os.fork() == 0:\n  os.setsid()\n  if os.fork() == 0:\n    time.sleep(600)\n'
          '  os._exit(0)\nprint("parent done")')
  assert sandbox({'code': code}) == ToolResult('parent done', True)
  _assert_host_clean()


def test_sandbox_failures_are_results(sandbox):
  result = sandbox({'code': 'import sys\nprint("partial")\nsys.exit(3)'})
  assert result == ToolResult('exited with status 3\npartial', False)
  result = sandbox({'code': 'import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)'})
  assert result == ToolResult('killed by signal SIGSEGV', False)
  result = sandbox({'code': '1 +'})
  assert _first_line(result) == 'exited with status 1: SyntaxError: invalid syntax'
  broken = PythonSandbox()  # without the interpreter bound inside, it cannot start
  python = broken.layout['python']
  broken.layout = dict(broken.layout, binds=[b for b in broken.layout['binds'] if b != python
                                             and not python.startswith(b + '/')])
  result = broken({'code': 'print(1)'})
  assert not result.ok and result.text.startswith('python sandbox unavailable: FileNotFoundError: [Errno 2]')
  _assert_host_clean()


# -- the seccomp filter -------------------------------------------------------------------------------

SYSCALL_PROGRAM = '''import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def show(name, ret):
  print(name, errno.errorcode[ctypes.get_errno()] if ret == -1 else "allowed")
show("unshare user", libc.unshare(0x10000000))
show("unshare net", libc.unshare(0x40000000))
show("setns", libc.setns(0, 0x10000000))
show("clone user", libc.syscall(NR["clone"], 0x10000000 | 17, 0, 0, 0, 0))
show("clone3", libc.syscall(NR["clone3"], 0, 0))
show("mount", libc.mount(b"none", b"/sandbox", b"tmpfs", 0, None))
show("umount2", libc.umount2(b"/sandbox", 2))
show("chroot", libc.chroot(b"/sandbox"))
show("ptrace traceme", libc.ptrace(0, 0, 0, 0))
show("keyctl", libc.syscall(NR["keyctl"], 0, -3, 0))
show("add_key", libc.syscall(NR["add_key"], b"user", b"k", b"v", 1, -3))
attr = (ctypes.c_uint32 * 32)(1, 128, 0)  # a software clock for this process: allowed unprivileged
show("perf_event_open", libc.syscall(NR["perf_event_open"], attr, 0, -1, -1, 0))
show("bpf", libc.syscall(NR["bpf"], 0, None, 0))
show("userfaultfd", libc.syscall(NR["userfaultfd"], 1))
show("io_uring_setup", libc.syscall(NR["io_uring_setup"], 1, (ctypes.c_uint32 * 30)()))
'''
SYSCALL_WANT = ['unshare user EPERM', 'unshare net EPERM', 'setns EPERM', 'clone user EPERM', 'clone3 ENOSYS',
                'mount EPERM', 'umount2 EPERM', 'chroot EPERM', 'ptrace traceme EPERM', 'keyctl EPERM',
                'add_key EPERM', 'perf_event_open EPERM', 'bpf EPERM', 'userfaultfd EPERM', 'io_uring_setup EPERM']


def test_seccomp_denies_namespaces_and_kernel_interfaces(sandbox):
  numbers = dict(seccomp._numbers()[1])
  result = sandbox({'code': f'NR = {numbers!r}\n' + SYSCALL_PROGRAM})
  assert result == ToolResult('\n'.join(SYSCALL_WANT), True)
  if os.uname().machine == 'x86_64':  # another ABI (int 0x80: i386 getpid) kills; x32 numbers are refused
    code = ('import ctypes, mmap\nm = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n'
            'm.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))\n'
            'f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\nprint(f())')
    assert sandbox({'code': code}) == ToolResult('killed by signal SIGSYS', False)
    code = ('import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n'
            'print(libc.syscall(0x40000000 | 39), os.strerror(ctypes.get_errno()), libc.syscall(39) == os.getpid())')
    assert sandbox({'code': code}) == ToolResult('-1 Operation not permitted True', True)


def _header_numbers(path):
  with open(path) as f:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'#define __NR_(\w+)\s+(\d+)\b', f.read())}


def test_seccomp_numbers_match_the_kernel_headers():
  headers = {'x86_64': '/usr/include/x86_64-linux-gnu/asm/unistd_64.h', 'generic': '/usr/include/asm-generic/unistd.h'}
  checked = 0
  for column, numbering in enumerate(('x86_64', 'generic')):
    if not os.path.exists(headers[numbering]):
      continue
    known = _header_numbers(headers[numbering])
    for name, numbers in seccomp.SYSCALLS.items():
      assert known.get(name) == numbers[column], (numbering, name)
      checked += 1
  if checked == 0:
    pytest.skip('no kernel headers to check the syscall numbers against')


# -- cgroups ------------------------------------------------------------------------------------------

def test_cgroup_files_are_parsed():
  mountinfo = ('31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n'
               '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n'
               '36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n'
               '39 31 0:36 /ctr /sys/fs/cgroup/my\\040pids rw,relatime - cgroup cgroup rw,pids\n'
               '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n')
  mounts = cgroup.parse_mountinfo(mountinfo)
  assert [(m['point'], m['root'], m['type']) for m in mounts] == [
      ('/sys/fs/cgroup/memory', '/', 'cgroup'), ('/sys/fs/cgroup/cpu,cpuacct', '/', 'cgroup'),
      ('/sys/fs/cgroup/my pids', '/ctr', 'cgroup'), ('/sys/fs/cgroup/unified', '/', 'cgroup2')]
  own = cgroup.parse_proc_cgroup('8:pids:/ctr/job\n4:memory:/api/x\n2:cpu,cpuacct:/\n0::/user.slice/a.scope\n')
  assert own == {'pids': '/ctr/job', 'memory': '/api/x', 'cpu': '/', 'cpuacct': '/', '': '/user.slice/a.scope'}
  assert cgroup._locate(mounts[0], own['memory']) == '/sys/fs/cgroup/memory/api/x'
  assert cgroup._locate(mounts[2], own['pids']) == '/sys/fs/cgroup/my pids/job'  # a mount of a subtree
  assert cgroup._locate(mounts[3], '/') == '/sys/fs/cgroup/unified'


def test_cgroups_are_removed_also_when_the_launcher_was_killed():
  where = cgroup.hierarchy()
  dead = os.fork()
  if dead == 0:
    os._exit(0)
  os.waitpid(dead, 0)
  stale = [os.path.join(parent, f'{cgroup.PREFIX}{dead}-0') for parent in cgroup._parents(where)]
  for path in stale:
    os.mkdir(path)
  group = cgroup.RunCgroup.create(64 * MB, 4)
  assert not any(os.path.exists(path) for path in stale)
  assert len(_leftover_cgroups()) == len(cgroup._parents(where))  # v1: one in each hierarchy
  group.remove()
  assert _leftover_cgroups() == []


# -- without cgroups or seccomp -----------------------------------------------------------------------

def test_missing_pieces_are_said_once_and_limits_hold_per_process(monkeypatch, caplog):
  real = enforcement()
  missing = ['no cgroup memory and pids controllers (test): memory_mb holds per process', 'no seccomp filter (test)']
  monkeypatch.setattr(python_sandbox, 'enforcement', lambda: dict(real, cgroup=None, seccomp=False, missing=missing))
  monkeypatch.setattr(python_sandbox, '_said', set())
  tool = PythonSandbox(timeout_s=20, memory_mb=128, max_processes=16)
  with caplog.at_level(logging.WARNING, logger='lm.tools.python_sandbox'):
    result = tool({'code': 'import os\nwhile True:\n  os.fork()'})  # RLIMIT_NPROC, counted for the sandbox's uid
    assert _first_line(result) == 'process limit: the program tried to run more than 16 processes or threads'
    assert _first_line(tool({'code': 'x = bytearray(10 ** 9)'})) == 'memory limit: the program needed more than 128 MB'
    start = time.monotonic()  # threads that cannot start (RLIMIT_AS or RLIMIT_NPROC) end the run a second later
    result = tool({'code': THREAD_BOMB})
    assert _first_line(result) == 'process limit: the program tried to run more than 16 processes or threads'
    assert time.monotonic() - start < 5
  assert [r.getMessage() for r in caplog.records] == ['python sandbox: ' + '; '.join(missing)]
  tool.layout = dict(tool.layout, binds=[b for b in tool.layout['binds'] if b != tool.layout['python']])
  first, second = tool({'code': 'print(1)'}), tool({'code': 'print(1)'})
  assert first.text.split('\n')[1:3] == [f'(also: {m})' for m in missing]
  assert first.text.startswith('python sandbox unavailable: ') and '(also:' not in second.text
  _assert_host_clean()
