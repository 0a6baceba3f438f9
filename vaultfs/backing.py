"""OS-level helpers on the backing directory: atomic writes, bounded reads, renameat2.

Everything here takes backing paths that vaultfs built itself from encrypted names
(base32 plus a suffix, never ``/`` or ``..``), so no path can escape the backing root;
reads are bounded so that a hostile file cannot make vaultfs allocate without limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_AT_FDCWD = -100

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


class NotRegularFile(OSError):
    """A FIFO, socket, device or directory where vaultfs expects one of its small files.

    Reading a FIFO would block forever; the backing dir is untrusted, so the type is
    checked on the open descriptor.  EIO for callers that only look at the errno.
    """

    def __init__(self, path: str, mode: int) -> None:
        self.kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        super().__init__(errno.EIO, f"{self.kind}, not a regular file", path)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symlink"}


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def read_bounded(path: str, limit: int) -> bytes:
    """Read a small regular file; EIO if it is larger than ``limit``, NotRegularFile if not a file.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever;
    O_NOFOLLOW: a symlink is refused (ELOOP); a socket cannot be opened (ENXIO).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        mode = _lstat_mode(path) if exc.errno in (errno.ELOOP, errno.ENXIO) else None
        if mode is not None:
            raise NotRegularFile(path, mode) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EIO, f"{path}: larger than {limit} bytes")
    return data


def write_new_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` exclusively with ``data`` (O_EXCL: never overwrite anything).

    On failure (a full disk) the half-created file is removed again.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        pwrite_all(fd, data, 0)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` so that a crash leaves either the old or the new file, never a mix.

    Temp file with O_EXCL, fsync, rename over, fsync the directory (the gocryptfs
    configfile recipe).  No copy of the old file is kept (for the config it would keep
    the old password working), and the temp file is removed if the write fails, so it
    never outlives a call that returned; after a kill the next call removes it first.
    """
    directory = os.path.dirname(path) or "."
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crash: never the live file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            pwrite_all(fd, data, 0)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def rename2(old: str, new: str, flags: int) -> None:
    """rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE, which os.rename cannot express."""
    if flags == 0:
        os.rename(old, new)
        return
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = _renameat2(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags))
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old)


_FALLOC_FL_KEEP_SIZE = 1
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate disk space for [offset, offset + length) without changing the file size.

    Done before an extending write, so that a full disk fails the write with ENOSPC
    before any block is touched, instead of half-way through it. Filesystems that
    cannot preallocate are written to without a reservation.
    """
    if length <= 0 or _fallocate is None:
        return
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return
        raise OSError(err, os.strerror(err))


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """pwrite until everything is written: a short write must never be taken for success."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        offset += written
