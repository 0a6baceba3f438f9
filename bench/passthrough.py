"""A plain passthrough filesystem on pyfuse3 (libfuse3 low-level API): the Python FUSE ceiling.

The benchmark's reference for what a Python FUSE daemon on the same binding and the
same kernel caching as vaultfs (1 s entry/attribute/negative timeouts, writeback cache,
readdirplus) reaches when each request is one syscall: no crypto, no name mapping, no
dir-fd bookkeeping.  Runs in the foreground; unmount with ``fusermount3 -u MOUNTPOINT``.

    python -m bench.passthrough BACKING MOUNTPOINT
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

TIMEOUT = 1.0


def errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any) -> Any:
        try:
            return await func(*args)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    return wrapper


class Passthrough(pyfuse3.Operations):
    enable_writeback_cache = True

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = os.path.realpath(root)
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: self.root}
        self.lookups: dict[int, int] = {}
        self.files: dict[int, int] = {}
        self.dirs: dict[int, list[tuple[bytes, os.stat_result]]] = {}
        self.next_fh = 1

    def _path(self, inode: int, name: bytes | None = None) -> str:
        base = self.paths[inode]
        return base if name is None else os.path.join(base, os.fsdecode(name))

    def _entry(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize", "st_blocks",
                    "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(entry, key, getattr(st, key))
        entry.st_ino = st.st_ino
        entry.entry_timeout = entry.attr_timeout = TIMEOUT
        return entry

    def _remember(self, path: str, st: os.stat_result) -> pyfuse3.EntryAttributes:
        self.paths[st.st_ino] = path
        self.lookups[st.st_ino] = self.lookups.get(st.st_ino, 0) + 1
        return self._entry(st)

    @errors
    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        path = self._path(parent, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = 0
            entry.entry_timeout = TIMEOUT
            return entry
        return self._remember(path, st)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            left = self.lookups.get(inode, 0) - count
            if left <= 0 and inode != pyfuse3.ROOT_INODE:
                self.lookups.pop(inode, None)
                self.paths.pop(inode, None)
            else:
                self.lookups[inode] = left

    @errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._entry(os.lstat(self._path(inode)))

    @errors
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        if fields.update_size:
            os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, attr.st_mode & 0o7777)
        if fields.update_uid or fields.update_gid:
            os.chown(path, attr.st_uid if fields.update_uid else -1, attr.st_gid if fields.update_gid else -1,
                     follow_symlinks=False)
        if fields.update_atime or fields.update_mtime:
            st = os.lstat(path)
            os.utime(path, ns=(attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                               attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns), follow_symlinks=False)
        return self._entry(os.lstat(path))

    @errors
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return os.fsencode(os.readlink(self._path(inode)))

    @errors
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        return inode

    @errors
    async def readdir(self, inode: int, start: int, token: Any) -> None:
        if start == 0:
            path = self._path(inode)
            self.dirs[inode] = [(os.fsencode(e.name), e.stat(follow_symlinks=False)) for e in os.scandir(path)]
        listing = self.dirs.get(inode, [])
        for index in range(start, len(listing)):
            name, st = listing[index]
            if not pyfuse3.readdir_reply(token, name, self._entry(st), index + 1):
                return
            self._remember(os.path.join(self._path(inode), os.fsdecode(name)), st)

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @errors
    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        path = self._path(parent, name)
        os.mkdir(path, mode)
        return self._remember(path, os.lstat(path))

    @errors
    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        path = self._path(parent, name)
        os.symlink(target, path)
        return self._remember(path, os.lstat(path))

    @errors
    async def link(self, inode: int, parent: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        path = self._path(parent, name)
        os.link(self._path(inode), path, follow_symlinks=False)
        return self._remember(path, os.lstat(path))

    @errors
    async def unlink(self, parent: int, name: bytes, ctx: Any = None) -> None:
        os.unlink(self._path(parent, name))

    @errors
    async def rmdir(self, parent: int, name: bytes, ctx: Any = None) -> None:
        os.rmdir(self._path(parent, name))

    @errors
    async def rename(self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int,
                     ctx: Any = None) -> None:
        source, target = self._path(old_parent, old), self._path(new_parent, new)
        st = os.lstat(source)
        os.rename(source, target)
        if st.st_ino in self.paths:
            self.paths[st.st_ino] = target
            prefix = source + os.sep
            for inode, path in list(self.paths.items()):  # everything below a renamed directory
                if path.startswith(prefix):
                    self.paths[inode] = target + path[len(source):]

    def _add(self, fd: int) -> pyfuse3.FileInfo:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.files[fh] = fd
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @staticmethod
    def _flags(flags: int) -> int:  # writeback: the kernel reads write-only files and appends itself
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return flags & ~os.O_APPEND

    @errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        return self._add(os.open(self._path(inode), self._flags(flags)))

    @errors
    async def create(self, parent: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._path(parent, name)
        fd = os.open(path, self._flags(flags) | os.O_CREAT, mode)
        return self._add(fd), self._remember(path, os.fstat(fd))

    @errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(self.files[fh], size, off)

    @errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(self.files[fh], buf, off)

    @errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(self.files[fh])

    async def flush(self, fh: int) -> None:
        return None

    @errors
    async def release(self, fh: int) -> None:
        os.close(self.files.pop(fh))

    @errors
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.root)
        out = pyfuse3.StatvfsData()
        for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail",
                    "f_namemax"):
            setattr(out, key, getattr(st, key))
        return out


def main() -> int:
    backing, mountpoint = sys.argv[1:3]
    pyfuse3.init(Passthrough(backing), mountpoint, {"fsname=passthrough", "subtype=passthrough"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
