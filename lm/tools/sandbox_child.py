"""The inside of the python sandbox: run as ``python -I -S sandbox_child.py CONFIG_JSON`` with the code on stdin.

Standard library only (it runs before and outside the project's environment). Three processes:

  A  (started by ``python_sandbox``) enters new mount, network, pid, ipc and uts namespaces (and a
     user namespace when not root), forks B, waits for it.
  B  pid 1 of the new pid namespace: builds the new root (a small tmpfs holding read-only binds of
     the interpreter, the standard library without site-packages, the system library directories
     without their Python packages, four device files and a tmpfs at ``/sandbox`` limited in size
     and inodes), ``pivot_root``s into it, detaches the old root, makes ``/`` read-only, forks C,
     waits for it and writes C's fate (``{"exit": n}`` / ``{"signal": n}``) to the status pipe.
     When B exits, the kernel kills every process left in the namespace.
  C  joins the run's cgroup (writes ``0`` to the ``cgroup.procs`` descriptors the launcher passed),
     sets the rlimits, drops to an unprivileged identity (a uid of its own when started as root; no
     capabilities, bounding set emptied and ``SECBIT_NOROOT`` in a user namespace), sets
     ``no_new_privs``, applies Landlock and the seccomp filter when asked, writes the code to
     ``/sandbox/main.py`` and execs ``python -I -S -X utf8 main.py`` with stdin from ``/dev/null``.

Any failure before the exec is reported on the status pipe as ``{"setup_error": "..."}``.
"""

import ctypes
import json
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import landlock  # noqa: E402  (sibling files; -I leaves the script's folder off sys.path)
import seccomp  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {'x86_64': 155, 'aarch64': 41}
PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 24, 28, 38
SECURE_NOROOT_AND_LOCKS = 0x2f  # NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP, its lock, KEEP_CAPS_LOCKED
WORKDIR = '/sandbox'

libc = ctypes.CDLL(None, use_errno=True)


def check(ret, what):
  if ret != 0:
    err = ctypes.get_errno()
    raise OSError(err, f'{what}: {os.strerror(err)}')


def prctl(option, arg=0):
  return libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def mount(source, target, fstype, flags, data=None):
  enc = lambda s: s.encode() if s is not None else None  # noqa: E731
  check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f'mount {source or ""} on {target}')


def bind(root, path, flags):
  """Binds host ``path`` at the same path under ``root`` with mount ``flags`` (read-only etc.)."""
  target = root + path
  if os.path.isdir(path):
    os.makedirs(target, exist_ok=True)
  else:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    open(target, 'a').close()
  mount(path, target, None, MS_BIND)
  mount(None, target, None, MS_BIND | MS_REMOUNT | flags)


def bind_except(root, path, hidden, flags):
  """Binds ``path`` like ``bind``, leaving out the ``hidden`` paths beneath it: a directory holding one is
  made anew, its other entries bound one by one (symlinks copied), so that the hidden ones do not exist."""
  inside = [h for h in hidden if h.startswith(path + '/')]
  if not inside:
    return bind(root, path, flags)
  os.makedirs(root + path, exist_ok=True)
  for name in sorted(os.listdir(path)):
    entry = os.path.join(path, name)
    if entry in inside:
      continue
    if os.path.islink(entry):
      os.symlink(os.readlink(entry), root + entry)
    else:
      bind_except(root, entry, inside, flags)


def build_root(cfg):
  """Makes ``cfg['root']`` the new ``/`` and leaves the old one."""
  root = cfg['root']
  mount(None, '/', None, MS_REC | MS_PRIVATE)
  mount('tmpfs', root, 'tmpfs', MS_NOSUID | MS_NODEV, 'size=4m,mode=755')
  for path in cfg['binds']:
    bind_except(root, path, cfg['hidden'], MS_RDONLY | MS_NOSUID | MS_NODEV)
  for path, target in cfg['links'].items():
    os.makedirs(os.path.dirname(root + path), exist_ok=True)
    os.symlink(target, root + path)
  for path in cfg['devices']:
    bind(root, path, MS_NOSUID | MS_NOEXEC)
  os.makedirs(root + WORKDIR)
  owner = f',uid={cfg["uid"]},gid={cfg["uid"]}' if cfg['uid'] is not None else ''
  lim = cfg['limits']
  mount('tmpfs', root + WORKDIR, 'tmpfs', MS_NOSUID | MS_NODEV,
        f'size={lim["disk_bytes"]},nr_inodes={lim["files"]},mode=700{owner}')
  os.chdir(root)
  check(libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT[os.uname().machine]), b'.', b'.'), 'pivot_root')
  check(libc.umount2(b'.', MNT_DETACH), 'detach the old root')  # the old root sits on top of the new one
  os.chdir('/')
  mount(None, '/', None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
  libc.sethostname(b'sandbox', 7)


def drop_privileges(uid):
  """To ``uid`` (started as root), or to a capability-less root of the user namespace."""
  if uid is not None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # a non-root uid keeps no capabilities
    return
  check(prctl(PR_SET_SECUREBITS, SECURE_NOROOT_AND_LOCKS), 'securebits')
  cap = 0
  while prctl(PR_CAPBSET_DROP, cap) == 0:
    cap += 1
  header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
  check(libc.capset(header, (ctypes.c_uint32 * 6)()), 'capset')


def join_cgroup(fds):
  """Moves this process into the run's cgroup (``0``: the writer itself), then closes the descriptors."""
  for fd in fds:
    try:
      os.write(fd, b'0')
    finally:
      os.close(fd)


def run_program(cfg, code):
  """C: cgroup, limits, identity, fences, then exec the interpreter on the code."""
  join_cgroup(cfg['cgroup_fds'])
  lim = cfg['limits']
  rlimits = [(resource.RLIMIT_AS, lim['address_space_bytes']), (resource.RLIMIT_STACK, lim['stack_bytes']),
             (resource.RLIMIT_FSIZE, lim['disk_bytes']), (resource.RLIMIT_NOFILE, lim['nofile']),
             (resource.RLIMIT_CORE, 0)]
  if lim['nproc'] is not None:  # only without the cgroup's task bound, which counts the same tasks
    rlimits.append((resource.RLIMIT_NPROC, lim['nproc']))
  for rlimit, value in rlimits:
    resource.setrlimit(rlimit, (value, value))
  resource.setrlimit(resource.RLIMIT_CPU, (lim['cpu_s'], lim['cpu_s'] + 1))  # SIGXCPU, then SIGKILL
  drop_privileges(cfg['uid'])
  check(prctl(PR_SET_NO_NEW_PRIVS, 1), 'no_new_privs')
  if cfg['landlock']:
    landlock.restrict(read_only=cfg['binds'], read_write=[WORKDIR] + cfg['devices'])
  os.chdir(WORKDIR)
  with open('main.py', 'wb') as f:
    f.write(code)
  null = os.open('/dev/null', os.O_RDONLY)
  os.dup2(null, 0)
  # one malloc arena: a thread would otherwise reserve 64 MB of address space for its own
  env = {'HOME': WORKDIR, 'TMPDIR': WORKDIR, 'PATH': '/usr/bin:/bin', 'LANG': 'C.UTF-8', 'MALLOC_ARENA_MAX': '1'}
  if cfg['seccomp']:
    seccomp.install()  # last: from here on no mount, namespace, ptrace, ... for this process and its children
  os.execve(cfg['python'], [cfg['python'], '-I', '-S', '-X', 'utf8', 'main.py'], env)


def report(fd, **status):
  os.write(fd, json.dumps(status).encode() + b'\n')


def wait_for(pid) -> dict:
  _, status = os.waitpid(pid, 0)
  return {'signal': os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {'exit': os.WEXITSTATUS(status)}


def main():
  cfg = json.loads(sys.argv[1])
  fd = cfg['status_fd']
  for own in [fd] + cfg['cgroup_fds']:  # the program must not see the status pipe or the cgroup
    os.set_inheritable(own, False)
  code = sys.stdin.buffer.read()
  try:
    uid, gid = os.geteuid(), os.getegid()
    as_root = uid == 0
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    check(libc.unshare(flags if as_root else flags | CLONE_NEWUSER), 'unshare (needs root or user namespaces)')
    if not as_root:
      for name, text in (('setgroups', 'deny'), ('uid_map', f'0 {uid} 1'), ('gid_map', f'0 {gid} 1')):
        with open(f'/proc/self/{name}', 'w') as f:
          f.write(text)
    # a uid of its own, shared with nothing (RLIMIT_NPROC, used without the cgroup, counts per uid; not for root)
    cfg['uid'] = cfg['uid'] + os.getpid() if as_root else None
  except Exception as e:
    report(fd, setup_error=str(e))
    return 0
  b = os.fork()
  if b:
    return 0 if wait_for(b) == {'exit': 0} else 1
  try:  # B
    build_root(cfg)
    c = os.fork()
    if c == 0:
      try:
        run_program(cfg, code)
      except BaseException as e:
        report(fd, setup_error=f'{type(e).__name__}: {e}')
      os._exit(127)
    report(fd, **wait_for(c))
  except BaseException as e:
    report(fd, setup_error=f'{type(e).__name__}: {e}')
  os._exit(0)


if __name__ == '__main__':
  sys.exit(main())
