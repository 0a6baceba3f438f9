"""A handle on an open plaintext file: what ``open`` returns, as an fd is to open(2).

All handles of one file share its ``OpenFile``.  Reads share the file's lock (several
decrypt at once), writes and truncates take it alone, so a partial-block
read-modify-write never interleaves with another handle's.  Metadata calls on a handle go
to the backing fd itself (fchmod, fchown, futimens): no path, so nothing can be swapped
in under the name, and they work on a file that is already unlinked.
"""

from __future__ import annotations

import errno
import os

from vaultfs.entries import Attr
from vaultfs.openfiles import OpenFile, OpenFileTable


class FileHandle:
    def __init__(self, table: OpenFileTable, opened: OpenFile, flags: int, label: str) -> None:
        self._table = table
        self._file = opened
        self.flags = flags
        self.label = label
        self.writable = flags & os.O_ACCMODE != os.O_RDONLY
        self.append = bool(flags & os.O_APPEND)
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "handle is closed")

    @property
    def key(self) -> tuple[int, int]:
        return self._file.key

    def read(self, offset: int, size: int) -> bytes:
        # Reads are allowed on write-only handles: the kernel's page cache reads through them.
        self._check_open()
        with self._file.lock.shared():
            return self._file.content.read(offset, size)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        self._check_open()
        if not self.writable:
            raise OSError(errno.EBADF, "handle is not open for writing")
        with self._file.lock.exclusive():
            content = self._file.content
            return content.write(content.size if self.append else offset, data)

    def truncate(self, size: int) -> None:
        self._check_open()
        with self._file.lock.exclusive():
            self._file.content.truncate(size)

    @property
    def size(self) -> int:
        return self._file.content.size

    def fsync(self, datasync: bool = False) -> None:
        self._check_open()
        (os.fdatasync if datasync else os.fsync)(self._file.fd)

    def flush(self) -> None:
        """Nothing is buffered above the backing file: writes reach it synchronously."""
        self._check_open()

    def stat(self) -> os.stat_result:
        self._check_open()
        return os.fstat(self._file.fd)

    def getattr(self) -> Attr:
        self._check_open()
        with self._file.lock.shared():
            return Attr.from_stat(os.fstat(self._file.fd), self._file.content.size)

    def chmod(self, mode: int) -> None:
        self._check_open()
        os.chmod(self._file.fd, mode & 0o7777)

    def chown(self, uid: int, gid: int) -> None:
        self._check_open()
        os.chown(self._file.fd, uid, gid)

    def utime(self, atime_ns: int, mtime_ns: int) -> None:
        self._check_open()
        os.utime(self._file.fd, ns=(atime_ns, mtime_ns))

    @property
    def fd(self) -> int:
        """The backing fd (xattrs go through it); valid while the handle is open."""
        self._check_open()
        return self._file.fd

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._table.release(self._file)
