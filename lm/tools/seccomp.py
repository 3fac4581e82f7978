"""A seccomp filter (classic BPF, installed through ctypes) denying what a code interpreter never needs.

Standard library only: the sandbox child imports it by path before it leaves the host filesystem.

    install()   # this process and everything it execs or forks, for good; needs no_new_privs (or root)

The filter first checks the architecture: a system call made through another ABI (i386 from x86_64,
say) kills the process; on x86_64 every x32 call (number bit 30) is denied. Then, with EPERM:

  namespaces  unshare, setns, and clone with any CLONE_NEW* flag (user, pid, net, mount, ipc, uts,
              cgroup); clone3 gets ENOSYS, since a filter cannot read its flags from memory, and
              libc then falls back to clone, whose flags it can check
  mounts      mount, umount2, pivot_root, chroot, the new mount API (open_tree, move_mount, fsopen,
              fsconfig, fsmount, fspick, mount_setattr)
  processes   ptrace, process_vm_readv/writev, kcmp, pidfd_getfd, process_madvise
  keys        keyctl, add_key, request_key
  kernel      bpf, perf_event_open, userfaultfd, io_uring_setup/enter/register, kexec_load,
              kexec_file_load, init_module, finit_module, delete_module, reboot, swapon, swapoff,
              acct, quotactl, quotactl_fd, syslog, vhangup, lookup_dcookie, open_by_handle_at,
              name_to_handle_at; on x86_64 also iopl, ioperm, modify_ldt, uselib

Everything else is allowed. ``available()`` says whether this kernel and architecture can have it.
"""

import ctypes
import os

ARCHES = {  # machine: (AUDIT_ARCH_*, numbering)
    'x86_64': (0xC000003E, 'x86_64'),
    'aarch64': (0xC00000B7, 'generic'),
}
# name: (x86_64, generic numbering as on aarch64); None where the architecture has no such call
SYSCALLS = {
    'unshare': (272, 97), 'setns': (308, 268), 'clone': (56, 220), 'clone3': (435, 435),
    'mount': (165, 40), 'umount2': (166, 39), 'pivot_root': (155, 41), 'chroot': (161, 51),
    'open_tree': (428, 428), 'move_mount': (429, 429), 'fsopen': (430, 430), 'fsconfig': (431, 431),
    'fsmount': (432, 432), 'fspick': (433, 433), 'mount_setattr': (442, 442),
    'ptrace': (101, 117), 'process_vm_readv': (310, 270), 'process_vm_writev': (311, 271), 'kcmp': (312, 272),
    'pidfd_getfd': (438, 438), 'process_madvise': (440, 440),
    'keyctl': (250, 219), 'add_key': (248, 217), 'request_key': (249, 218),
    'bpf': (321, 280), 'perf_event_open': (298, 241), 'userfaultfd': (323, 282),
    'io_uring_setup': (425, 425), 'io_uring_enter': (426, 426), 'io_uring_register': (427, 427),
    'kexec_load': (246, 104), 'kexec_file_load': (320, 294), 'init_module': (175, 105),
    'finit_module': (313, 273), 'delete_module': (176, 106), 'reboot': (169, 142),
    'swapon': (167, 224), 'swapoff': (168, 225), 'acct': (163, 89), 'quotactl': (179, 60),
    'quotactl_fd': (443, 443), 'syslog': (103, 116), 'vhangup': (153, 58), 'lookup_dcookie': (212, 18),
    'open_by_handle_at': (304, 265), 'name_to_handle_at': (303, 264),
    'iopl': (172, None), 'ioperm': (173, None), 'modify_ldt': (154, None), 'uselib': (134, None),
    'seccomp': (317, 277),
}
ALLOWED_HERE = ('clone', 'clone3', 'seccomp')  # not denied outright: clone by its flags, clone3 ENOSYS
DENIED = tuple(name for name in SYSCALLS if name not in ALLOWED_HERE)
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
X32_SYSCALL_BIT = 0x40000000

_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_ABS_W, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # offsets in struct seccomp_data (little-endian: the low half of args[0])
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_SECCOMP_GET_ACTION_AVAIL = 2
_EPERM, _ENOSYS = 1, 38

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Instruction(ctypes.Structure):
  _fields_ = [('code', ctypes.c_uint16), ('jt', ctypes.c_uint8), ('jf', ctypes.c_uint8), ('k', ctypes.c_uint32)]


class _Program(ctypes.Structure):
  _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.POINTER(_Instruction))]


def _numbers() -> tuple[int, dict]:
  """This machine's AUDIT_ARCH value and {name: number}; KeyError on an architecture not listed."""
  arch, numbering = ARCHES[os.uname().machine]
  column = 0 if numbering == 'x86_64' else 1
  return arch, {name: nrs[column] for name, nrs in SYSCALLS.items() if nrs[column] is not None}


def program() -> list[tuple[int, int, int, int]]:
  """The filter as (code, jt, jf, k) instructions; jumps count instructions skipped."""
  arch, nr = _numbers()
  deny = (_RET_K, 0, 0, _RET_ERRNO | _EPERM)
  out = [(_LD_ABS_W, 0, 0, _ARCH), (_JEQ_K, 1, 0, arch), (_RET_K, 0, 0, _RET_KILL_PROCESS),
         (_LD_ABS_W, 0, 0, _NR)]
  if os.uname().machine == 'x86_64':
    out += [(_JGE_K, 0, 1, X32_SYSCALL_BIT), deny]
  for name in DENIED:
    if name in nr:
      out += [(_JEQ_K, 0, 1, nr[name]), deny]
  out += [(_JEQ_K, 0, 1, nr['clone3']), (_RET_K, 0, 0, _RET_ERRNO | _ENOSYS),
          (_JEQ_K, 0, 3, nr['clone']), (_LD_ABS_W, 0, 0, _ARG0_LOW), (_JSET_K, 0, 1, CLONE_NEW_FLAGS), deny,
          (_RET_K, 0, 0, _RET_ALLOW)]
  return out


def available() -> bool:
  """Whether this architecture is listed and the kernel has seccomp filters that can kill a process."""
  try:
    _, nr = _numbers()
  except KeyError:
    return False
  action = ctypes.c_uint32(_RET_KILL_PROCESS)
  return _libc.syscall(ctypes.c_long(nr['seccomp']), ctypes.c_uint(_SECCOMP_GET_ACTION_AVAIL), ctypes.c_uint(0),
                       ctypes.byref(action)) == 0


def install():
  """Installs the filter on this process (inherited across fork and exec); OSError if the kernel refuses."""
  code = program()
  instructions = (_Instruction * len(code))(*[_Instruction(*i) for i in code])
  prog = _Program(len(code), instructions)
  if _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog),
                 ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
    err = ctypes.get_errno()
    raise OSError(err, f'seccomp filter: {os.strerror(err)}')
