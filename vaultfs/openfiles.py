"""The open-file table: one ``OpenFile`` (fd, lock, plaintext size) per backing inode.

Every handle on the same file, through any hard link, shares one ``EncryptedFile`` and
one lock, so two writers never interleave a partial-block read-modify-write, and every
handle sees the same size at every moment.  The fd lives until the last handle closes,
which is what keeps an unlinked-but-open file usable.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from vaultfs.format.content import EncryptedFile

FileKey = tuple[int, int]  # (st_dev, st_ino)


def _open_noatime(path: str, mode: int) -> int:
    """Open a backing file so that vaultfs's own header and block reads leave its atime alone.

    The backing atime is the plaintext atime; O_NOATIME is refused (EPERM) on files the
    daemon does not own, where the plain open is the best that can be done.
    """
    flags = mode | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


class OpenFile:
    def __init__(self, key: FileKey, fd: int, writable: bool, content: EncryptedFile) -> None:
        self.key = key
        self.fd = fd
        self.writable = writable
        self.content = content
        self.lock = threading.Lock()
        self.refs = 0


class OpenFileTable:
    def __init__(self, key_for: Callable[[bytes], bytes], block_size: int) -> None:
        self._files: dict[FileKey, OpenFile] = {}
        self._lock = threading.Lock()
        self._key_for = key_for
        self._block_size = block_size

    def _open_fd(self, backing_path: str, want_write: bool) -> tuple[int, bool]:
        """Open read-write when possible (partial writes must read); read-only as a fallback."""
        try:
            return _open_noatime(backing_path, os.O_RDWR), True
        except PermissionError:
            if want_write:
                raise
        except OSError as exc:
            if exc.errno != errno.EROFS or want_write:
                raise
        return _open_noatime(backing_path, os.O_RDONLY), False

    def acquire(self, backing_path: str, label: str, want_write: bool, new_file: bool = False,
                fd: int | None = None) -> OpenFile:
        """Return the shared OpenFile of ``backing_path`` with one more reference.

        ``fd``, when given, is a read-write fd the caller just created the file with.
        """
        if fd is None:
            fd, writable = self._open_fd(backing_path, want_write)
        else:
            writable = True
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            with self._lock:
                existing = self._files.get(key)
                if existing is not None and (existing.writable or not writable):
                    existing.refs += 1
                    os.close(fd)
                    return existing
                if existing is not None:
                    # Upgrade a read-only fd to the read-write one just opened, under the file lock.
                    with existing.lock:
                        os.close(existing.fd)
                        existing.fd = existing.content.fd = fd
                        existing.writable = True
                    existing.refs += 1
                    return existing
                if new_file:
                    content = EncryptedFile.initialize(fd, self._key_for, label, self._block_size)
                else:
                    content = EncryptedFile(fd, self._key_for, label, self._block_size)
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

    def get(self, key: FileKey) -> OpenFile | None:
        with self._lock:
            return self._files.get(key)

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._files.values())
            self._files.clear()
        for entry in entries:
            with entry.lock:
                os.close(entry.fd)
