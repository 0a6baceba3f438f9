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
from collections.abc import Iterator

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
TEMP_PREFIX = "vaultfs.tmp-"  # reserved (vaultfs.*) names for files being written: never listed

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


def _lstat_mode(path: str, dir_fd: int | None = None) -> int | None:
    try:
        return os.lstat(path, dir_fd=dir_fd).st_mode
    except OSError:
        return None


def read_bounded(path: str, limit: int, dir_fd: int | None = None) -> bytes:
    """Read a small regular file; EIO if it is larger than ``limit``, NotRegularFile if not a file.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever;
    O_NOFOLLOW: a symlink is refused (ELOOP); a socket cannot be opened (ENXIO).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        mode = _lstat_mode(path, dir_fd) if exc.errno in (errno.ELOOP, errno.ENXIO) else None
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


def reserve(fd: int, offset: int, length: int, required: bool = False) -> None:
    """Allocate disk space for [offset, offset + length) without changing the file size.

    Done before an extending write, so that a full disk fails the write with ENOSPC
    before any block is touched, instead of half-way through it. Filesystems that
    cannot preallocate are written to without a reservation, unless the reservation is
    ``required`` (fallocate with KEEP_SIZE promises the space): then EOPNOTSUPP.
    """
    if length <= 0:
        return
    if _fallocate is None:
        if required:
            raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
        return
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL) and not required:
            return
        code = errno.EOPNOTSUPP if err == errno.ENOSYS else err
        raise OSError(code, os.strerror(code))


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """pwrite until everything is written: a short write must never be taken for success."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        offset += written


# ---------------------------------------------------------------- access by directory fd
#
# Every change to the backing dir goes through a directory fd opened without following a
# symlink anywhere on the way (openat2 RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH), and acts on
# the last component with *at calls that do not follow it either. A symlink planted in the
# backing dir by a sync client or an attacker is then never followed: not by chmod, chown
# or utimens of a root daemon, not by a directory walk.

_SYS_OPENAT2 = 437  # the same number on every architecture (unified syscall table, Linux 5.6+)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_have_openat2 = True


def _openat2(dir_fd: int, path: bytes, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(path), ctypes.byref(how),
                  ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    return fd


def open_dir_beneath(root_fd: int, relpath: str) -> int:
    """Open the directory ``relpath`` below ``root_fd`` without following any symlink.

    A symlink anywhere on the way is ELOOP (or EXDEV/ENOTDIR), never followed. Falls back to
    a component-by-component walk with O_NOFOLLOW where openat2 is missing (kernels < 5.6).
    """
    global _have_openat2
    if not relpath:
        return os.open(".", _DIR_FLAGS, dir_fd=root_fd)
    if _have_openat2:
        try:
            return _openat2(root_fd, os.fsencode(relpath), _DIR_FLAGS)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _have_openat2 = False
    fd = os.open(".", _DIR_FLAGS, dir_fd=root_fd)
    try:
        for part in relpath.split("/"):
            if part in ("", ".", ".."):
                raise OSError(errno.EINVAL, f"not a plain relative path: {relpath!r}")
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file_at(dir_fd: int, name: str, flags: int, mode: int = 0o600) -> int:
    """open(2) of ``name`` in a directory fd: never follows a final symlink, never blocks on a FIFO."""
    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)


def rename_at(old_dir_fd: int, old: str, new_dir_fd: int, new: str, flags: int = 0) -> None:
    """renameat2(2) between two directory fds (RENAME_NOREPLACE / RENAME_EXCHANGE as flags)."""
    if flags == 0:
        os.rename(old, new, src_dir_fd=old_dir_fd, dst_dir_fd=new_dir_fd)
        return
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = _renameat2(old_dir_fd, os.fsencode(old), new_dir_fd, os.fsencode(new), ctypes.c_uint(flags))
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old)


def write_new_file_at(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """``write_new_file`` in a directory fd: O_EXCL, removed again if the write fails."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        pwrite_all(fd, data, 0)
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)


def replace_file_at(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Replace a small file in a directory fd in one step: a new file under a temporary name, renamed over."""
    tmp = TEMP_PREFIX + os.urandom(8).hex()  # reserved: hidden, and removed by fsck --repair if left behind
    write_new_file_at(dir_fd, tmp, data, mode)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


@contextlib.contextmanager
def rewritten_at(dir_fd: int, name: str, st: os.stat_result, mode: int) -> Iterator[int]:
    """A fresh file ``name`` in ``dir_fd`` (one left by an earlier run is removed) for the
    caller to fill: the rewrite of one file by the tools that convert a vault file by file
    (upgrade, rekey).  When the block ends, the file takes ``st``'s owner (where the process
    may give it), then ``mode`` (after chown, which clears set-user-ID and set-group-ID),
    is fsynced, then takes ``st``'s times; if the block fails, the file is removed.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    ok = False
    try:
        yield fd
        with contextlib.suppress(PermissionError):  # not root: the files are the user's own anyway
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        ok = True
    finally:
        os.close(fd)
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)


_AT_SYMLINK_NOFOLLOW = 0x100
_fchmodat = _libc.fchmodat
_fchmodat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int]


def chmod_at(dir_fd: int, name: str, mode: int) -> None:
    """fchmodat(AT_SYMLINK_NOFOLLOW): a symlink is refused (EOPNOTSUPP), never followed.

    Python 3.11's os.chmod cannot combine dir_fd with follow_symlinks=False on Linux.
    """
    if _fchmodat(dir_fd, os.fsencode(name), mode & 0o7777, _AT_SYMLINK_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
