"""A plain passthrough FUSE filesystem on mfusepy + libfuse3: the Python FUSE ceiling.

The benchmark's reference for what any Python FUSE daemon can reach when it only
forwards each request to one syscall (no crypto, no name mapping).  Runs in the
foreground; unmount with ``fusermount3 -u MOUNTPOINT``.

    python -m bench.passthrough BACKING MOUNTPOINT
"""

from __future__ import annotations

import ctypes.util
import os
import stat
import sys

if not os.environ.get("FUSE_LIBRARY_PATH"):  # mfusepy prefers libfuse2: point it at libfuse3
    _lib = ctypes.util.find_library("fuse3")
    if _lib:
        os.environ["FUSE_LIBRARY_PATH"] = _lib

from mfusepy import FUSE, Operations  # noqa: E402

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blksize", "st_blocks", "st_rdev")


def _stat(st: os.stat_result) -> dict[str, int]:
    out = {key: getattr(st, key) for key in _KEYS}
    out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
    return out


class Passthrough(Operations):
    use_ns = True

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def _p(self, path: str) -> str:
        return self.root + path if path != "/" else self.root

    def getattr(self, path, fh=None):
        return _stat(os.fstat(fh) if fh is not None else os.lstat(self._p(path)))

    def readdir(self, path, fh):
        entries = [(".", stat.S_IFDIR, 0), ("..", stat.S_IFDIR, 0)]
        with os.scandir(self._p(path)) as it:
            for item in it:
                kind = stat.S_IFDIR if item.is_dir(follow_symlinks=False) else stat.S_IFREG
                entries.append((item.name, kind, 0))
        return entries

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        os.rmdir(self._p(path))

    def unlink(self, path):
        os.unlink(self._p(path))

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._p(path), uid, gid, follow_symlinks=False)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._p(path), length)

    def utimens(self, path, times=None):
        target = self._p(path)
        if times is None:
            os.utime(target, follow_symlinks=False)
            return
        atime, mtime = (int(t) for t in times)
        if UTIME_NOW in (atime, mtime) or UTIME_OMIT in (atime, mtime):
            st = os.lstat(target)
            now = __import__("time").time_ns()
            atime = now if atime == UTIME_NOW else st.st_atime_ns if atime == UTIME_OMIT else atime
            mtime = now if mtime == UTIME_NOW else st.st_mtime_ns if mtime == UTIME_OMIT else mtime
        os.utime(target, ns=(atime, mtime), follow_symlinks=False)

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail")
        return {key: getattr(sv, key) for key in keys}

    def readlink(self, path):
        return os.readlink(self._p(path))

    def symlink(self, path, target):
        os.symlink(target, self._p(path))

    def create(self, path, mode, flags):
        return os.open(self._p(path), (flags & ~os.O_APPEND) | os.O_CREAT, mode)

    def open(self, path, flags):
        return os.open(self._p(path), flags & ~os.O_APPEND)  # the kernel sends EOF offsets itself

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        os.close(os.dup(fh))

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        (os.fdatasync if datasync else os.fsync)(fh)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m bench.passthrough BACKING MOUNTPOINT")
    # libfuse3 negotiates max_write 1 MiB by itself on kernels with FUSE_MAX_PAGES.
    FUSE(Passthrough(args[0]), args[1], foreground=True, nothreads=False, fsname="pyfuse-passthrough",
         subtype="pyfuse-passthrough")


if __name__ == "__main__":
    main()
