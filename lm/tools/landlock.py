"""Landlock (Linux >= 5.13) through ctypes: an unprivileged process fences itself (and what it execs).

Standard library only: the sandbox child imports it by path before it leaves the host filesystem.

    restrict(read_only=['/usr/lib', ...], read_write=['/sandbox'])

After ``restrict`` the process can open files only beneath the given paths (read and execute
beneath ``read_only``; everything beneath ``read_write``), and, where the kernel's ABI allows,
cannot bind or connect TCP sockets (ABI >= 4) and cannot send signals or reach abstract unix
sockets outside its domain (ABI >= 6). ``abi()`` is the kernel's Landlock ABI version, 0 if none.
"""

import ctypes
import os

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same number on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BITS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # ABI 2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)  # rights that apply to a file
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
  _fields_ = [('handled_access_fs', ctypes.c_uint64), ('handled_access_net', ctypes.c_uint64),
              ('scoped', ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
  _pack_ = 1
  _fields_ = [('allowed_access', ctypes.c_uint64), ('parent_fd', ctypes.c_int32)]


def abi() -> int:
  """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
  version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
  return max(0, int(version))


def _fail(what):
  err = ctypes.get_errno()
  raise OSError(err, f'landlock {what}: {os.strerror(err)}')


def restrict(read_only: list[str], read_write: list[str]) -> int:
  """Fences this process to the given paths; returns the ABI used. Raises OSError when unavailable."""
  version = abi()
  if version < 1:
    raise OSError('Landlock is not available in this kernel')
  handled_fs = (1 << _FS_BITS_BY_ABI.get(version, 16)) - 1
  attr = _RulesetAttr(handled_fs, _NET_BIND_TCP | _NET_CONNECT_TCP if version >= 4 else 0,
                      _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if version >= 6 else 0)
  size = ctypes.sizeof(_RulesetAttr) if version >= 6 else 16 if version >= 4 else 8
  ruleset = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
  if ruleset < 0:
    _fail('create_ruleset')
  try:
    for paths, access in ((read_only, EXECUTE | READ_FILE | READ_DIR), (read_write, handled_fs)):
      for path in paths:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
          allowed = access & handled_fs & (handled_fs if os.path.isdir(path) else _FILE_ONLY)
          rule = _PathBeneathAttr(allowed, fd)
          if _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                           ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            _fail(f'add_rule {path}')
        finally:
          os.close(fd)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                   ctypes.c_ulong(0)) != 0:
      _fail('no_new_privs')
    if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
      _fail('restrict_self')
  finally:
    os.close(ruleset)
  return version
