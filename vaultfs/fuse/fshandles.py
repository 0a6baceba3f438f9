"""The FUSE layer's bookkeeping: open handles and libfuse's hidden names.

Shared by libfuse's worker threads, so every table takes its own lock.  No mfusepy
import here: fs.py must load it first (it picks the libfuse library at import).
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaultfs.vault import FileHandle

# libfuse's name for unlinked files that are still open (fs.init_with_config: no hard_remove).
HIDDEN_PREFIX = ".fuse_hidden"


def is_hidden(path: str) -> bool:
    return path.rpartition("/")[2].startswith(HIDDEN_PREFIX)


class HiddenLinks:
    """libfuse's .fuse_hidden names for unlinked files that are still open.

    libfuse renames such a file to ``DIR/.fuse_hiddenNNN`` and unlinks that at the last
    close.  Left in DIR it would make ``rmdir DIR`` fail with ENOTEMPTY, so fs.py parks
    it in the vault root under a unique name and maps libfuse's path to it.  Per inode
    we count these names, which st_nlink must not include (POSIX: unlink drops the
    count at once).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[int, int] = {}
        self._where: dict[str, tuple[str, int]] = {}  # libfuse path -> (parked path, ino)
        self._serial = itertools.count(1)

    def park(self) -> str:
        """A fresh root path to park a hidden file at; call add() once it is there."""
        return f"/{HIDDEN_PREFIX}.vaultfs-{os.getpid()}-{next(self._serial)}"

    def add(self, fuse_path: str, parked: str, ino: int) -> None:
        with self._lock:
            self._where[fuse_path] = (parked, ino)
            self._count[ino] = self._count.get(ino, 0) + 1

    def resolve(self, path: str) -> str:
        with self._lock:
            found = self._where.get(path)
        return found[0] if found else path

    def forget_parked(self, parked: str) -> None:
        """The parked file was unlinked (libfuse's last-close cleanup)."""
        with self._lock:
            for fuse_path, (where, ino) in list(self._where.items()):
                if where != parked:
                    continue
                del self._where[fuse_path]
                left = self._count.get(ino, 0) - 1
                if left > 0:
                    self._count[ino] = left
                else:
                    self._count.pop(ino, None)

    def count(self, ino: int) -> int:
        with self._lock:
            return self._count.get(ino, 0)


class HandleTable:
    """Open files and directories by the integer handle the kernel echoes back.

    Shared by FUSE's threads, hence the lock.  Directory handles keep the path given
    at opendir, because with nullpath_ok readdir gets none.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count(1)
        self._handles: dict[int, FileHandle] = {}
        self._dirs: dict[int, str] = {}

    def add_dir(self, path: str) -> int:
        with self._lock:
            fh = next(self._next)
            self._dirs[fh] = path
            return fh

    def dir_path(self, fh: int) -> str:
        with self._lock:
            path = self._dirs.get(fh)
        if path is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return path

    def pop_dir(self, fh: int) -> None:
        with self._lock:
            self._dirs.pop(fh, None)

    def add(self, handle: FileHandle) -> int:
        with self._lock:
            fh = next(self._next)
            self._handles[fh] = handle
            return fh

    def get(self, fh: int) -> FileHandle:
        with self._lock:
            handle = self._handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return handle

    def pop(self, fh: int) -> FileHandle | None:
        with self._lock:
            return self._handles.pop(fh, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._handles)
