"""Process hardening for the mount daemon, which holds the vault's keys for as long as it runs.

Three measures, each best-effort and each logged when the system refuses it:

- ``prctl(PR_SET_DUMPABLE, 0)``: no core dump, and other processes of the same user
  can no longer ptrace the daemon or read ``/proc/PID/mem`` (only a process with
  CAP_SYS_PTRACE, i.e. root, still can).
- ``RLIMIT_CORE`` 0: no core file even if something makes the process dumpable again.
- ``mlock`` of the memory pages that hold the master key and the keys derived from it,
  so that they are not written to swap, as far as ``RLIMIT_MEMLOCK`` allows.

What mlock cannot cover in Python (say so, never claim more; README "Keys in memory"):
per-file keys (derived on demand and cached), the key schedules that OpenSSL keeps
inside cipher contexts, the password and argon2id's working memory during unlock,
plaintext buffers, and any copy Python makes of a bytes object.  Those pages can reach
swap; encrypted swap, or none, is the real answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import resource
from collections.abc import Iterable

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def make_undumpable() -> bool:
    """No core dumps, no ptrace or /proc/PID/mem by same-user processes. True if it took effect."""
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("could not make the daemon non-dumpable: errno %d", ctypes.get_errno())
        return False
    return _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


def disable_core_files() -> None:
    """RLIMIT_CORE 0, soft and hard: a crash never writes the keys to a core file."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        log.warning("could not set RLIMIT_CORE to 0: %s", exc)


def _buffer_address(secret: bytes) -> int:
    """Where CPython keeps a bytes object's contents (c_char_p points into it: no copy)."""
    address = ctypes.cast(ctypes.c_char_p(secret), ctypes.c_void_p).value
    assert address is not None
    return address


def lock_in_memory(secrets: Iterable[bytes]) -> int:
    """mlock the pages holding each secret; return how many bytes of pages are locked.

    A page that RLIMIT_MEMLOCK does not allow stays swappable (logged once, at info:
    an unprivileged user's limit is often 64 KiB or 8 MiB, which a few keys fit).
    Locks are never undone: the keys live as long as the daemon.
    """
    page = mmap.PAGESIZE
    locked = 0
    refused = 0
    for secret in secrets:
        if not secret:
            continue
        start = _buffer_address(secret)
        first = start - start % page
        length = start + len(secret) - first
        length += -length % page
        if _libc.mlock(first, length) == 0:
            locked += length
        else:
            refused += 1
    if refused:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        log.info("%d key buffer(s) not locked in memory (RLIMIT_MEMLOCK %s): they may reach swap",
                 refused, "unlimited" if soft == resource.RLIM_INFINITY else f"{soft} bytes")
    return locked


def harden_daemon(keys: object) -> None:
    """All three measures, for a process about to serve an unlocked vault (``keys``: VaultKeys)."""
    make_undumpable()
    disable_core_files()
    names = ("master_key", "content_key", "name_key", "dir_id_key", "config_mac_key")
    lock_in_memory(getattr(keys, name) for name in names if isinstance(getattr(keys, name, None), bytes))
