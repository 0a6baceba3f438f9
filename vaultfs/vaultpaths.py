"""The Vault by absolute plaintext path: the front end of export, import, fsck, ls/cat and the tests.

Each method resolves a path to (directory, name) (``BackingTree.resolve``, cached) and
calls the Vault's (directory, name) API, which is what the FUSE layer uses directly; only
``locate`` (where an entry lives, for fsck and tests) asks the tree itself.
"""

from __future__ import annotations

import errno
import os
import time

from vaultfs.entries import Attr, Dir, Entry, split_path
from vaultfs.filehandle import FileHandle
from vaultfs.staging import Staged


class PathAPI:
    """Mixed into Vault: path-based wrappers over its (directory, name) methods."""

    def locate(self, path: str) -> Entry:
        """Where the entry at ``path`` lives (or would live) in the backing dir."""
        directory, name = self._split(path)
        with self.tree.dir_fd(directory) as fd:
            return self.tree.locate(directory, name, fd)[0]

    def _split(self, path: str) -> tuple[Dir, str]:
        parts = split_path(path)
        if not parts:
            raise OSError(errno.EBUSY, "operation not allowed on the vault root")
        return self.tree.resolve("/" + "/".join(parts[:-1])), parts[-1]

    def getattr(self, path: str) -> Attr:
        if not split_path(path):
            return self.dir_attr(self.root)
        return self.lookup(*self._split(path)).attr

    def listdir(self, path: str) -> list[tuple[str, Attr]]:
        return [(found.entry.name, found.attr) for found in self.listdir_at(self.tree.resolve(path))]

    def readlink(self, path: str) -> str:
        return self.readlink_at(*self._split(path))

    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> FileHandle:
        return self.create_at(*self._split(path), mode, flags)[0]

    def open(self, path: str, flags: int) -> FileHandle:
        if flags & os.O_CREAT:
            return self.create(path, 0o666, flags)
        return self.open_at(*self._split(path), flags)

    def truncate(self, path: str, size: int) -> None:
        handle = self.open(path, os.O_WRONLY)
        try:
            handle.truncate(size)
        finally:
            handle.close()

    def mknod(self, path: str, mode: int, dev: int = 0) -> None:
        self.mknod_at(*self._split(path), mode, dev)

    def mkdir(self, path: str, mode: int) -> None:
        self.mkdir_at(*self._split(path), mode)

    def rmdir(self, path: str) -> None:
        self.rmdir_at(*self._split(path))

    def unlink(self, path: str) -> None:
        self.unlink_at(*self._split(path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        old_dir, old_name = self._split(old)
        new_dir, new_name = self._split(new)
        self.rename_at(old_dir, old_name, new_dir, new_name, flags)

    def link(self, existing: str, new: str) -> None:
        self.link_at(*self._split(existing), *self._split(new))

    def symlink(self, target: str, path: str) -> None:
        self.symlink_at(*self._split(path), target)

    def _setattr(self, path: str, **changes: int | None) -> None:
        if split_path(path):
            self.setattr_at(*self._split(path), **changes)  # type: ignore[arg-type]
        else:
            self.setattr_at(None, ".", **changes)  # type: ignore[arg-type]

    def chmod(self, path: str, mode: int) -> None:
        self._setattr(path, mode=mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._setattr(path, uid=uid, gid=gid)

    def utime(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        if atime_ns is None or mtime_ns is None:
            now = time.time_ns()
            atime_ns = now if atime_ns is None else atime_ns
            mtime_ns = now if mtime_ns is None else mtime_ns
        self._setattr(path, atime_ns=atime_ns, mtime_ns=mtime_ns)

    def access(self, path: str, mode: int) -> None:
        """access(2) for the user the vault runs as (see ``access_at``)."""
        place = self._split(path) if split_path(path) else (None, ".")
        if not self.access_at(*place, mode):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)

    def fsyncdir(self, path: str) -> None:
        self.fsyncdir_at(self.tree.resolve(path))

    def _xattr_target(self, path: str) -> tuple[Dir | None, str]:
        return self._split(path) if split_path(path) else (None, ".")

    def listxattr(self, path: str) -> list[bytes]:
        return self.listxattr_at(*self._xattr_target(path))

    def getxattr(self, path: str, name: bytes) -> bytes:
        return self.getxattr_at(*self._xattr_target(path), name)

    def setxattr(self, path: str, name: bytes, value: bytes) -> None:
        self.setxattr_at(*self._xattr_target(path), name, value)

    def create_staged(self, path: str, mode: int) -> tuple[FileHandle, Staged]:
        directory, name = self._split(path)
        return self.staging.create(directory, path, mode)

    def publish_staged(self, staged: Staged, path: str, mode: int, atime_ns: int, mtime_ns: int) -> None:
        directory, name = self._split(path)
        if directory is not staged.directory:
            raise OSError(errno.EXDEV, "staged file is in another directory", path)
        self.staging.publish(staged, name, mode, atime_ns, mtime_ns)

    def remove_staged(self, dir_path: str) -> int:
        return self.staging.remove_leftovers(self.tree.resolve(dir_path))

