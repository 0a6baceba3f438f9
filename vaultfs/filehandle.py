"""A handle on an open plaintext file: what ``open`` returns, as an fd is to open(2).

All handles of one file share its ``OpenFile``.  Reads share the file's lock (several
decrypt at once), writes and truncates take it alone, so a partial-block
read-modify-write never interleaves with another handle's.  Metadata calls on a handle go
to the backing fd itself (fchmod, fchown, futimens): no path, so nothing can be swapped
in under the name, and they work on a file that is already unlinked.
"""

from __future__ import annotations

import contextlib
import errno
import os

from vaultfs import backing
from vaultfs.entries import Attr
from vaultfs.format import blocks
from vaultfs.openfiles import OpenFile, OpenFileTable

MAX_OFFSET = 2**63 - 1  # off_t: no backing file can reach past this


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

    def read_view(self, offset: int, size: int) -> memoryview:
        """``read`` without the final copy (the FUSE layer hands the view to the kernel as is)."""
        self._check_open()
        with self._file.lock.shared():
            return self._file.content.read_view(offset, size)

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

    def allocate(self, offset: int, length: int, keep_size: bool) -> None:
        """fallocate(2) on the plaintext range [offset, offset + length): mode 0 or KEEP_SIZE.

        A write into the range may need the backing space from where the data ends now up
        to the ciphertext end of a file that reaches offset + length.  That space is
        reserved first, so that a full disk fails here, with nothing changed, and never a
        later write into the range.  Mode 0 then grows a shorter file to offset + length,
        as ftruncate does (format v2: the reserved blocks in between are holes, which read
        as zeros; a growth that fails half-way is cut back to the old size); KEEP_SIZE
        leaves the size alone and the space stays allocated past the backing file's end
        (as on any filesystem, shrinking the file later gives it back).
        """
        self._check_open()
        if offset < 0 or length <= 0:
            raise OSError(errno.EINVAL, "fallocate: negative offset or empty range")
        if not self.writable:
            raise OSError(errno.EBADF, "handle is not open for writing")
        with self._file.lock.exclusive():
            content = self._file.content
            size, end, bs = content.size, offset + length, content.block_size
            start = min(blocks.block_offset(offset // bs, bs), blocks.cipher_size(size, bs))
            stop = blocks.cipher_size(max(size, end), bs)
            if stop > MAX_OFFSET:
                raise OSError(errno.EFBIG, "fallocate: the ciphertext would pass the largest file offset")
            # KEEP_SIZE past the data promises space that nothing else allocates: a backing filesystem
            # that cannot preallocate must say so. Mode 0 writes the blocks, which allocates them anyway.
            beyond = stop > blocks.cipher_size(size, bs)
            backing.reserve(self._file.fd, start, stop - start, required=keep_size and beyond)
            if keep_size or end <= size:
                return
            try:
                content.truncate(end)
            except BaseException:
                if content.size != size:
                    with contextlib.suppress(OSError):  # the original failure is the one to report
                        content.truncate(size)
                raise

    def punch_hole(self, offset: int, length: int) -> None:
        """fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros, the size stays (format v2 holes)."""
        self._check_open()
        if offset < 0 or length <= 0:
            raise OSError(errno.EINVAL, "fallocate: negative offset or empty range")
        if not self.writable:
            raise OSError(errno.EBADF, "handle is not open for writing")
        with self._file.lock.exclusive():
            self._file.content.punch_hole(offset, length)

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
