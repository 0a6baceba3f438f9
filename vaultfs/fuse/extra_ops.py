"""FUSE operations that pyfuse3 lacks (fallocate), added by a small libfuse shim, which also
answers getxattr for names outside ``user.*`` without calling into Python.

pyfuse3 builds libfuse's operation table in its own C code, so an operation it does not
implement is ENOSYS for good.  ``_lowlevel_extra`` (built from lowlevel_extra.c, which
says how) interposes libfuse's ``fuse_session_new`` and fills the empty slots with
trampolines into the Python functions set here.

Order matters: this module must be imported before anything imports pyfuse3.  The shim
is loaded with RTLD_GLOBAL, so that pyfuse3's extension, which binds its libfuse symbols
when it is loaded (RTLD_NOW), finds the shim's ``fuse_session_new`` first; once pyfuse3
is loaded it is too late.  serve.py imports this module at its top for that reason (and
every mount goes through serve.py).

The added operations call the handlers synchronously, from C, inside pyfuse3's request
processing on its event loop: a handler here is an ``async`` pyfuse3-style method (so it
gets the same errno mapping and logging as every other handler) that must finish without
ever awaiting.  Nothing may escape into C: every outcome becomes 0 or an errno.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import sysconfig
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "_lowlevel_extra" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))

# int (*)(uint64_t ino, uint64_t fh, int mode, int64_t offset, int64_t length): 0 or an errno
_FALLOCATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int,
                              ctypes.c_int64, ctypes.c_int64)


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    if "pyfuse3" in sys.modules:
        return None, "pyfuse3 was imported before the shim, so its libfuse calls bypass it"
    try:
        return ctypes.CDLL(LIBRARY, mode=os.RTLD_NOW | os.RTLD_GLOBAL), None
    except OSError as exc:
        return None, f"cannot load {LIBRARY} ({exc}); reinstall vaultfs to build it"


_lib, _problem = _load()
_bound: list[Any] = []  # the ctypes callbacks C holds pointers to: alive as long as the process


def run_handler(name: str, handler: Callable[..., Awaitable[None]], *args: Any) -> int:
    """Run an async handler to completion, synchronously: 0, or the errno it failed with.

    It must not await (there is no event loop to resume it from here); one that does is a
    bug, closed and answered EIO.  Never raises: the caller is C.
    """
    try:
        coroutine = handler(*args)
        try:
            coroutine.send(None)
        except StopIteration:
            return 0
        coroutine.close()
        log.error("%s: the handler awaited; operations added by the shim must finish synchronously", name)
        return errno.EIO
    except BaseException as exc:  # noqa: BLE001 - an exception must never unwind into libfuse's C frames
        import pyfuse3  # loaded long before the first request (and never before this module)

        if isinstance(exc, pyfuse3.FUSEError) and exc.errno > 0:
            return exc.errno  # what the handler answers; it logged what matters
        log.error("%s: unexpected %r", name, exc, exc_info=exc)
        return errno.EIO


def bind(operations: Any) -> bool:
    """Route the shim's operations to ``operations`` (a VaultOperations); call before pyfuse3.init.

    Returns False, logged, where the shim is not in place: the mount then works as
    before, and fallocate(2) on it is EOPNOTSUPP.
    """
    if _lib is None:
        log.warning("fallocate is not available on this mount: %s", _problem)
        return False

    def fallocate(ino: int, fh: int, mode: int, offset: int, length: int) -> int:
        return run_handler("fallocate", operations.fallocate, fh, mode, offset, length)

    callback = _FALLOCATE(fallocate)
    _bound.append(callback)
    _lib.vaultfs_extra_set_fallocate(callback)
    # ops_xattrs.getxattr answers ENODATA for every name outside user.*: the shim does it in C
    _lib.vaultfs_extra_set_getxattr_filter(1)
    return True


def getxattr_answered() -> int:
    """getxattr requests the shim answered itself (names outside user.*), since the process began."""
    if _lib is None:
        return 0
    _lib.vaultfs_extra_getxattr_answered.restype = ctypes.c_ulonglong
    return int(_lib.vaultfs_extra_getxattr_answered())


def ops_added() -> int:
    """How many operations the shim added to the last FUSE session (-1: none created, or no shim)."""
    return -1 if _lib is None else int(_lib.vaultfs_extra_ops_added())
