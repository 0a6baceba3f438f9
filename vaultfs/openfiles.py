"""The open-file table: one ``OpenFile`` (fd, lock, plaintext size) per backing inode.

Every handle on the same file, through any hard link, shares one ``EncryptedFile`` and
one lock, so two writers never interleave a partial-block read-modify-write, and every
handle sees the same size at every moment.  The fd lives until the last handle closes,
which is what keeps an unlinked-but-open file usable: its backing entry is gone at once
(nothing is parked in the synced folder), its data lives on through the fd.

Readers share the lock and writers take it alone: two large reads of one file (the
kernel's read-ahead sends several at once) decrypt on both cores at the same time.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vaultfs import backing
from vaultfs.entries import BackingKey, backing_key
from vaultfs.format.content import EncryptedFile


def open_noatime(dir_fd: int, name: str, flags: int) -> int:
    try:
        return backing.open_file_at(dir_fd, name, flags | os.O_NOATIME)
    except PermissionError:  # O_NOATIME is refused on files the daemon does not own
        return backing.open_file_at(dir_fd, name, flags)


def open_backing_file(dir_fd: int, name: str, want_write: bool) -> tuple[int, bool]:
    """Open a backing file for content I/O: (fd, writable).

    Read-write when possible (a partial write must read its edge blocks), read-only as a
    fallback for reading.  O_NOATIME keeps vaultfs's own header and block reads from
    moving the backing atime, which is the plaintext atime.  Anything but a regular file
    (a FIFO planted under an encrypted name) is refused without blocking: the open is
    non-blocking and the type is checked on the fd.
    """
    try:
        fd, writable = open_noatime(dir_fd, name, os.O_RDWR), True
    except OSError as exc:
        if want_write or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd, writable = open_noatime(dir_fd, name, os.O_RDONLY), False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENXIO, "not a regular file", name)
    except BaseException:
        os.close(fd)
        raise
    return fd, writable


class SharedLock:
    """Many readers or one writer (reads of one file decrypt in parallel, writes alone)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class OpenFile:
    def __init__(self, key: BackingKey, fd: int, writable: bool, content: EncryptedFile) -> None:
        self.key = key
        self.fd = fd
        self.writable = writable
        self.content = content
        self.lock = SharedLock()
        self.refs = 0


class OpenFileTable:
    def __init__(self, key_for: Callable[[bytes], bytes], block_size: int) -> None:
        self._files: dict[BackingKey, OpenFile] = {}
        self._lock = threading.Lock()
        self._key_for = key_for
        self._block_size = block_size

    def acquire(self, fd: int, writable: bool, label: str, new_file: bool = False) -> OpenFile:
        """Return the shared OpenFile of the file behind ``fd``, with one more reference.

        Takes ownership of ``fd``: it is kept (first opener), swapped in (a read-write fd
        upgrading a read-only one) or closed (the file was already open).  ``new_file``
        writes an empty file's header and last block first.
        """
        try:
            key = backing_key(os.fstat(fd))
            with self._lock:
                existing = self._files.get(key)
                if existing is not None and (existing.writable or not writable):
                    existing.refs += 1
                    os.close(fd)
                    return existing
                if existing is not None:
                    # Upgrade a read-only fd to the read-write one just opened, under the file lock.
                    with existing.lock.exclusive():
                        os.close(existing.fd)
                        existing.fd = existing.content.fd = fd
                        existing.writable = True
                    existing.refs += 1
                    return existing
                if new_file:
                    content = EncryptedFile.initialize(fd, self._key_for, label, self._block_size, layout=2)
                else:
                    content = EncryptedFile(fd, self._key_for, label, self._block_size, layout=2)
                entry = OpenFile(key, fd, writable, content)
                entry.refs = 1
                self._files[key] = entry
                return entry
        except BaseException:
            if not any(f.fd == fd for f in self._files.values()):
                os.close(fd)
            raise

    def release(self, entry: OpenFile) -> None:
        with self._lock:
            entry.refs -= 1
            if entry.refs > 0:
                return
            self._files.pop(entry.key, None)
        os.close(entry.fd)

    def get(self, key: BackingKey) -> OpenFile | None:
        with self._lock:
            return self._files.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._files.values())
            self._files.clear()
        for entry in entries:
            with entry.lock.exclusive():
                os.close(entry.fd)
