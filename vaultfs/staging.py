"""Staged writes: a file written under a hidden name, then renamed into place in one step.

``import`` uses it so that an interrupted run leaves no half-written file visible and
a second run resumes cleanly.  Staging names are reserved (``vaultfs.tmp-*``), so
listings never show them, and ``fsck --repair`` removes leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from vaultfs import backing
from vaultfs.backing import TEMP_PREFIX
from vaultfs.entries import Dir
from vaultfs.filehandle import FileHandle
from vaultfs.namespace import Namespace
from vaultfs.openfiles import OpenFileTable
from vaultfs.tree import lstat_at

STAGING_PREFIX = TEMP_PREFIX  # reserved, so hidden: a file being imported is never visible half-written


@dataclass(frozen=True)
class Staged:
    """A hidden new file in ``directory`` that ``publish`` gives its name."""

    directory: Dir
    backing_name: str

    @property
    def path(self) -> str:
        return os.path.join(self.directory.backing, self.backing_name)


class Staging:
    def __init__(self, namespace: Namespace, files: OpenFileTable) -> None:
        self._ns = namespace
        self._tree = namespace.tree
        self._files = files

    def create(self, directory: Dir, label: str, mode: int) -> tuple[FileHandle, Staged]:
        """Open a hidden new file in ``directory``; until ``publish`` it is a reserved entry."""
        self._ns.writable()
        staged = Staged(directory, STAGING_PREFIX + os.urandom(8).hex())
        with self._tree.dir_fd(directory) as fd:
            new = backing.open_file_at(fd, staged.backing_name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o7777)
            try:
                opened = self._files.acquire(new, True, label, new_file=True)
            except BaseException:
                os.unlink(staged.backing_name, dir_fd=fd)
                raise
        return FileHandle(self._files, opened, os.O_RDWR, label), staged

    def publish(self, staged: Staged, name: str, mode: int, atime_ns: int, mtime_ns: int) -> None:
        """Set the staged file's mode and times, then rename it over ``name`` in one step."""
        self._ns.writable()
        tree = self._tree
        with tree.lock, tree.dir_fd(staged.directory) as fd:
            entry, st = tree.locate(staged.directory, name, fd)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), name)
            directory = staged.directory
            target = tree.names.encrypt(name, directory.dir_id)  # a file's form, under the primary ID
            backing.chmod_at(fd, staged.backing_name, mode)
            os.utime(staged.backing_name, ns=(atime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
            tree.write_sidecar(fd, target)
            os.rename(staged.backing_name, target.entry, src_dir_fd=fd, dst_dir_fd=fd)
            if st is not None and entry.backing_name.entry != target.entry:  # it replaced a symlink (or so)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.backing_name.entry, dir_fd=fd)
                tree.remove_sidecar(fd, entry.backing_name)

    def remove_leftovers(self, directory: Dir) -> int:
        """Delete staging files an interrupted writer left in a directory; return how many."""
        self._ns.writable()
        removed = 0
        with self._tree.dir_fd(directory) as fd:
            with os.scandir(fd) as entries:
                leftovers = [item.name for item in entries if item.name.startswith(STAGING_PREFIX)]
            for name in leftovers:
                if lstat_at(fd, name) is not None:
                    os.unlink(name, dir_fd=fd)
                    removed += 1
        return removed
