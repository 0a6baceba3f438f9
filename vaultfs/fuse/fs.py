"""The FUSE operations: a protocol adapter over an unlocked :class:`vaultfs.vault.Vault`.

Paths and stat dicts in, errnos out; this is the one place where exceptions become
errnos.  No crypto and no offset math live here (that is vault.py and below), so the
same Vault serves the CLI tools without FUSE.

mfusepy traps handled here (see docs and STYLE.md):

* any exception other than ``OSError`` escaping a callback becomes EINVAL plus a
  traceback in mfusepy's wrapper, so every callback goes through :func:`_op`, which
  turns ``OSError`` into its errno and anything else into a logged EIO;
* callbacks run on several threads, so the file-handle table takes a lock;
* its ``LoggingMixIn``/``log_callback`` log read/write buffers (plaintext): never used.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

# mfusepy looks for libfuse2 first; vaultfs is built for libfuse3 (fuse_config, rename
# flags), so point it there before the import unless the user chose a library.
if not os.environ.get("FUSE_LIBRARY_PATH"):
    _lib = ctypes.util.find_library("fuse3")
    if _lib:
        os.environ["FUSE_LIBRARY_PATH"] = _lib

import mfusepy  # noqa: E402 - needs FUSE_LIBRARY_PATH set first
from mfusepy import FUSE, FuseOSError, Operations  # noqa: E402

from vaultfs.fuse.fshandles import HIDDEN_PREFIX, HandleTable, HiddenLinks, is_hidden  # noqa: E402

if TYPE_CHECKING:
    from vaultfs.vault import Attr, Vault

log = logging.getLogger(__name__)

# utimensat(2) special values, passed through by libfuse3 in tv_nsec.
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

# fuse_conn_info.want bits (libfuse3 fuse_common.h).
FUSE_CAP_ATOMIC_O_TRUNC = 1 << 3
FUSE_CAP_WRITEBACK_CACHE = 1 << 16

# Big requests: one FUSE round trip per MiB instead of per 128 KiB (the kernel caps
# max_write at its own limit, 1 MiB with FUSE_MAX_PAGES).
MAX_IO = 1 << 20

F = TypeVar("F", bound=Callable[..., Any])


def _op(func: F) -> F:
    """Run one callback: record the access (for --idle) and map every failure to an errno."""

    @functools.wraps(func)
    def wrapper(self: VaultOperations, path: str | None, *args: Any) -> Any:
        self.last_access = time.monotonic()
        if path is not None and HIDDEN_PREFIX in path:
            path = self.hidden.resolve(path)
        try:
            return func(self, path, *args)
        except FuseOSError:
            raise
        except OSError as e:
            code = e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO
            if code == errno.EIO:
                log.error("%s %s: %s", func.__name__, path, e)
            raise FuseOSError(code) from None
        except Exception:  # noqa: BLE001 - a bug must cost one EIO, not an EINVAL or the daemon
            log.exception("%s %s: unexpected error", func.__name__, path)
            raise FuseOSError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def stat_dict(attr: Attr) -> dict[str, int]:
    """The mfusepy stat dict for an Attr (times in ns: ``use_ns`` is on)."""
    return {
        "st_mode": attr.st_mode,
        "st_ino": attr.st_ino,
        "st_nlink": attr.st_nlink,
        "st_uid": attr.st_uid,
        "st_gid": attr.st_gid,
        "st_size": attr.st_size,
        "st_atime": attr.st_atime_ns,
        "st_mtime": attr.st_mtime_ns,
        "st_ctime": attr.st_ctime_ns,
        "st_blocks": attr.st_blocks,
        "st_blksize": attr.st_blksize,
    }


class VaultOperations(Operations):
    """mfusepy callbacks, each a thin translation onto one Vault call."""

    use_ns = True

    def __init__(
        self,
        vault: Vault,
        *,
        writeback_cache: bool = False,
        attr_timeout: float = 0.0,
        entry_timeout: float = 1.0,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.vault = vault
        self.handles = HandleTable()
        self.hidden = HiddenLinks()
        self.writeback_cache = writeback_cache
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.on_ready = on_ready
        self.last_access = time.monotonic()
        self._closed = False
        self._close_lock = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        """Configure libfuse3 once the kernel connects; then tell the mounter we answer."""
        if config is not None:
            config.use_ino = 1  # our st_ino (stable, hard links share it), not libfuse's counter
            config.readdir_ino = 1
            # No hard_remove: the kernel's fstat of an unlinked-but-open file carries
            # no handle, so libfuse must keep a path for it: it renames the file to
            # .fuse_hiddenNNN until the last close (readdir hides those names).
            config.hard_remove = 0
            config.nullpath_ok = 1
            # libfuse's path API gives each hard link its own kernel inode, so cached
            # attributes of one link would miss writes and link counts changed through
            # another: attributes are never cached (st_size and st_nlink stay exact).
            config.entry_timeout = self.entry_timeout
            config.attr_timeout = self.attr_timeout
            config.negative_timeout = 0.0
            # Page cache survives open/close unless mtime or size changed meanwhile
            # (a sync client may replace backing files under a mount).
            config.auto_cache = 1
            config.kernel_cache = 0
            config.direct_io = 0
            config.set_mode = 0
            config.umask = 0
        if conn is not None:
            conn.max_write = MAX_IO
            conn.max_read = MAX_IO  # must equal the max_read mount option (mount.fuse_options)
            conn.max_readahead = MAX_IO
            conn.want |= conn.capable & FUSE_CAP_ATOMIC_O_TRUNC
            if self.writeback_cache:
                conn.want |= conn.capable & FUSE_CAP_WRITEBACK_CACHE
            else:
                conn.want &= ~FUSE_CAP_WRITEBACK_CACHE
        self._remove_stale_parked()
        if self.on_ready is not None:
            self.on_ready()

    def _remove_stale_parked(self) -> None:
        """Files parked by a daemon that died (kill -9) are unreachable: delete them."""
        try:
            for name, _ in self.vault.listdir("/"):
                if name.startswith(HIDDEN_PREFIX):
                    self.vault.unlink("/" + name)
                    log.info("removed %s left by an earlier mount", name)
        except OSError as e:  # read-only mount or damaged root: leave them, they stay hidden
            log.info("could not remove stale hidden files: %s", e)

    def destroy(self, path: str) -> None:
        """Unmounted: flush and close every file, then the vault itself (once)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.vault.close()
        except Exception:  # noqa: BLE001 - destroy must not raise into libfuse; the log says what was lost
            log.exception("closing the vault on unmount failed")

    # ---- metadata -----------------------------------------------------------

    @_op
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        if fh is not None:
            attr = self.handles.get(fh).getattr()
        elif path is None:
            raise FuseOSError(errno.ENOENT)
        else:
            attr = self.vault.getattr(path)
        st = stat_dict(attr)
        st["st_nlink"] = max(0, attr.st_nlink - self.hidden.count(attr.st_ino))
        return st

    @_op
    def access(self, path: str, amode: int) -> None:
        # With --allow-other the mount has default_permissions and the kernel checks modes
        # itself; otherwise the only caller is the user the daemon runs as.
        self.vault.access(path, amode)

    @_op
    def opendir(self, path: str) -> int:
        # nullpath_ok withholds the path from readdir/fsyncdir: remember it here.
        if not stat.S_ISDIR(self.vault.getattr(path).st_mode):
            raise FuseOSError(errno.ENOTDIR)
        return self.handles.add_dir(path)

    @_op
    def releasedir(self, path: str | None, fh: int) -> None:
        self.handles.pop_dir(fh)

    @_op
    def readdir(self, path: str | None, fh: int) -> Iterator[tuple[str, dict[str, int], int]]:
        path = self.handles.dir_path(fh)
        entries = self.vault.listdir(path)  # decrypt all before the first entry
        parent = path.rsplit("/", 1)[0] or "/"
        # "." and ".." need their inode numbers: readers skip entries with d_ino 0.
        result = [
            (".", {"st_mode": stat.S_IFDIR, "st_ino": self.vault.getattr(path).st_ino}, 0),
            ("..", {"st_mode": stat.S_IFDIR, "st_ino": self.vault.getattr(parent).st_ino}, 0),
        ]
        result += [
            (name, {"st_mode": a.st_mode, "st_ino": a.st_ino}, 0)
            for name, a in entries
            if not name.startswith(HIDDEN_PREFIX)
        ]
        return iter(result)

    @_op
    def readlink(self, path: str) -> str:
        return self.vault.readlink(path)

    @_op
    def mkdir(self, path: str, mode: int) -> None:
        self.vault.mkdir(path, mode)

    @_op
    def rmdir(self, path: str) -> None:
        self.vault.rmdir(path)

    @_op
    def mknod(self, path: str, mode: int, dev: int) -> None:
        self.vault.mknod(path, mode, dev)

    @_op
    def unlink(self, path: str) -> None:
        self.vault.unlink(path)
        if is_hidden(path):  # libfuse's last-close cleanup of a parked file
            self.hidden.forget_parked(path)

    @_op
    def symlink(self, path: str, target: str) -> None:
        self.vault.symlink(target, path)

    @_op
    def link(self, path: str, existing: str) -> None:
        self.vault.link(existing, path)

    @_op
    def rename(self, old: str, new: str, flags: int = 0) -> None:
        if not is_hidden(new) or is_hidden(old):
            self.vault.rename(old, new, flags)
            return
        # libfuse hiding an unlinked-but-open file: to the caller that name is gone,
        # and its directory must stay removable, so the file is parked in the root.
        ino = self.vault.getattr(old).st_ino
        parked = self.hidden.park()
        self.vault.rename(old, parked, flags)
        self.hidden.add(new, parked, ino)

    @_op
    def chmod(self, path: str | None, mode: int) -> None:
        if path is None:  # fchmod of an unlinked file: no path left to change
            raise FuseOSError(errno.ENOENT)
        self.vault.chmod(path, mode)

    @_op
    def chown(self, path: str | None, uid: int, gid: int) -> None:
        if path is None:
            raise FuseOSError(errno.ENOENT)
        self.vault.chown(path, uid, gid)

    @_op
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> None:
        if path is None:
            raise FuseOSError(errno.ENOENT)
        if times is None:
            self.vault.utime(path, None, None)
            return
        atime, mtime = (int(t) for t in times)
        if UTIME_OMIT in (atime, mtime):
            current = self.vault.getattr(path)
            atime = current.st_atime_ns if atime == UTIME_OMIT else atime
            mtime = current.st_mtime_ns if mtime == UTIME_OMIT else mtime
        self.vault.utime(path, None if atime == UTIME_NOW else atime, None if mtime == UTIME_NOW else mtime)

    @_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if fh is not None:
            self.handles.get(fh).truncate(length)
        elif path is None:
            raise FuseOSError(errno.ENOENT)
        else:
            self.vault.truncate(path, length)

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        return self.vault.statfs()

    @_op
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> None:
        self.vault.fsyncdir(self.handles.dir_path(fh))

    # ---- file I/O -----------------------------------------------------------

    def _kernel_flags(self, flags: int) -> int:
        """Open flags as the Vault must see them under our caching mode.

        With the writeback cache the kernel reads pages of write-only files and does
        O_APPEND itself (it sends the EOF offset), as libfuse's passthrough_hp notes.
        """
        if not self.writeback_cache:
            return flags
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return flags & ~os.O_APPEND

    @_op
    def create(self, path: str, mode: int, flags: int) -> int:
        return self.handles.add(self.vault.create(path, mode, self._kernel_flags(flags)))

    @_op
    def open(self, path: str, flags: int) -> int:
        return self.handles.add(self.vault.open(path, self._kernel_flags(flags)))

    @_op
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.handles.get(fh).read(offset, size)

    @_op
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.handles.get(fh).write(offset, data)

    @_op
    def flush(self, path: str | None, fh: int) -> None:
        self.handles.get(fh).flush()

    @_op
    def fsync(self, path: str | None, datasync: int, fh: int) -> None:
        self.handles.get(fh).fsync(bool(datasync))

    @_op
    def release(self, path: str | None, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle is not None:
            handle.close()

    def open_handles(self) -> int:
        """How many files the kernel holds open (idle lock waits for zero)."""
        return len(self.handles)


class VaultFUSE(FUSE):
    """mfusepy's FUSE with the libfuse3 arguments it drops passed on.

    mfusepy 3.1 calls ``rename(old, new)`` without the RENAME_NOREPLACE/EXCHANGE
    flags (silently replacing where the caller forbade it) and ``truncate`` without
    the file handle (so ftruncate of an unlinked file would fail).
    """

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.truncate(decoded, length, fh)


def fuse_version() -> tuple[int, int]:
    """The libfuse version mfusepy loaded (vaultfs needs 3.x)."""
    return mfusepy.fuse_version_major, mfusepy.fuse_version_minor
