"""Namespace changes on the backing tree: mkdir, rmdir, unlink, rename, link, symlink, mknod.

Each takes plaintext (directory, name) pairs, works through directory fds (nothing is
followed), holds the tree's lock so that every check-then-act step is atomic with
respect to the vault's other operations, and returns the backing lstat of what it made,
which is what a FUSE reply needs.  Errnos are those of rename(2), mkdir(2) and friends.
New entries get the caller's owner when the daemon runs as root (``Owner``), and a
setgid directory passes its group on, as the kernel does for a local filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from vaultfs import backing
from vaultfs.entries import Dir, Entry
from vaultfs.format.dirids import DIRID_NAME
from vaultfs.tree import BackingTree, lstat_at


@dataclass(frozen=True)
class Owner:
    """Who asked for a new entry (the FUSE request's uid/gid)."""

    uid: int
    gid: int


def _err(code: int, what: str) -> OSError:
    return OSError(code, os.strerror(code), what)


def give_to(dir_fd: int, name: str, owner: Owner | None) -> None:
    """chown a new entry to its creator (only a root daemon can, and only then is it needed).

    In a setgid directory the backing filesystem already gave the entry the directory's
    group, which is what POSIX wants, so only the uid changes there.
    """
    if owner is None or os.geteuid() != 0:
        return
    gid = -1 if os.fstat(dir_fd).st_mode & stat.S_ISGID else owner.gid
    os.chown(name, owner.uid, gid, dir_fd=dir_fd, follow_symlinks=False)


class Namespace:
    def __init__(self, tree: BackingTree, read_only: bool) -> None:
        self.tree = tree
        self.read_only = read_only

    def writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "the vault is mounted read-only")

    def _new_entry(self, fd: int, directory: Dir, name: str) -> Entry:
        entry, st = self.tree.locate(directory, name, fd)
        if st is not None:
            raise _err(errno.EEXIST, name)
        self.tree.write_sidecar(fd, entry.backing_name)
        return entry

    def _made(self, fd: int, entry: Entry) -> tuple[Entry, os.stat_result]:
        st = lstat_at(fd, entry.backing_name.entry)
        if st is None:
            raise _err(errno.ENOENT, entry.name)  # removed by someone else in between
        return entry, st

    def mkdir(self, directory: Dir, name: str, mode: int, owner: Owner | None = None) -> tuple[Entry, os.stat_result]:
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry = self._new_entry(fd, directory, name)
            target = entry.backing_name.entry
            os.mkdir(target, 0o700, dir_fd=fd)  # private until its ID is in place
            try:
                self.tree.dirids.create(os.path.join(directory.backing, target))
                give_to(fd, target, owner)
                sgid = os.fstat(fd).st_mode & stat.S_ISGID  # a setgid directory's subdirectories stay setgid
                backing.chmod_at(fd, target, (mode & 0o7777) | sgid)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(target, DIRID_NAME), dir_fd=fd)
                with contextlib.suppress(OSError):
                    os.rmdir(target, dir_fd=fd)
                raise
            return self._made(fd, entry)

    def _existing(self, fd: int, directory: Dir, name: str) -> tuple[Entry, os.stat_result]:
        entry, st = self.tree.locate(directory, name, fd)
        if st is None:
            raise _err(errno.ENOENT, name)
        return entry, st

    @staticmethod
    def _check_empty_dir(dir_fd: int, target: str, what: str) -> None:
        fd = backing.open_file_at(dir_fd, target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as entries:
                if any(item.name != DIRID_NAME for item in entries):
                    raise _err(errno.ENOTEMPTY, what)
        finally:
            os.close(fd)

    def _remove_dir(self, dir_fd: int, target: str, what: str) -> None:
        self._check_empty_dir(dir_fd, target, what)
        fd = backing.open_file_at(dir_fd, target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(DIRID_NAME, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(target, dir_fd=dir_fd)

    def rmdir(self, directory: Dir, name: str) -> None:
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry, st = self._existing(fd, directory, name)
            if not stat.S_ISDIR(st.st_mode):
                raise _err(errno.ENOTDIR, name)
            self._remove_dir(fd, entry.backing_name.entry, name)
            self.tree.remove_sidecar(fd, entry.backing_name)
            self.tree.removed((st.st_dev, st.st_ino))

    def unlink(self, directory: Dir, name: str) -> os.stat_result:
        """Remove a name at once (an open file lives on through its fd); return what it was."""
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry, st = self._existing(fd, directory, name)
            if stat.S_ISDIR(st.st_mode):
                raise _err(errno.EISDIR, name)
            os.unlink(entry.backing_name.entry, dir_fd=fd)
            self.tree.remove_sidecar(fd, entry.backing_name)
            return st

    def rename(self, old_dir: Dir, old: str, new_dir: Dir, new: str, flags: int = 0) -> os.stat_result | None:
        """rename(2) semantics, plus RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2).

        Returns the lstat of the entry that was replaced (None if none): the caller may
        still hold it open.
        """
        self.writable()
        if flags & ~(backing.RENAME_NOREPLACE | backing.RENAME_EXCHANGE) or flags == 3:
            raise OSError(errno.EINVAL, "invalid rename flags")
        with self.tree.lock, self.tree.dir_fd(old_dir) as src_fd, self.tree.dir_fd(new_dir) as dst_fd:
            src, src_st = self._existing(src_fd, old_dir, old)
            dst, dst_st = self.tree.locate(new_dir, new, dst_fd)
            if old_dir is new_dir and src.backing_name.entry == dst.backing_name.entry:
                return None
            src_name, dst_name = src.backing_name.entry, dst.backing_name.entry
            if flags & backing.RENAME_EXCHANGE:
                if dst_st is None:
                    raise _err(errno.ENOENT, new)
                # The entries change places; both names (and their sidecars) stay where they are.
                backing.rename_at(src_fd, src_name, dst_fd, dst_name, backing.RENAME_EXCHANGE)
                self._moved_dirs(src_st, new_dir, dst, dst_st, old_dir, src)
                return None
            if dst_st is not None:
                if flags & backing.RENAME_NOREPLACE:
                    raise _err(errno.EEXIST, new)
                src_is_dir, dst_is_dir = stat.S_ISDIR(src_st.st_mode), stat.S_ISDIR(dst_st.st_mode)
                if src_is_dir and not dst_is_dir:
                    raise _err(errno.ENOTDIR, new)
                if dst_is_dir and not src_is_dir:
                    raise _err(errno.EISDIR, new)
                if dst_is_dir:
                    if self._inside(new_dir, src_st):
                        raise OSError(errno.EINVAL, "cannot move a directory into itself", new)
                    self._remove_dir(dst_fd, dst_name, new)
                    self.tree.removed((dst_st.st_dev, dst_st.st_ino))
            elif stat.S_ISDIR(src_st.st_mode) and self._inside(new_dir, src_st):
                raise OSError(errno.EINVAL, "cannot move a directory into itself", new)
            self.tree.write_sidecar(dst_fd, dst.backing_name)
            backing.rename_at(src_fd, src_name, dst_fd, dst_name)
            self.tree.remove_sidecar(src_fd, src.backing_name)
            self._moved_dirs(src_st, new_dir, dst, None, None, None)
            return dst_st

    def _inside(self, directory: Dir, moved: os.stat_result) -> bool:
        """Is ``directory`` the moved directory or below it?"""
        node: Dir | None = directory
        while node is not None:
            if node.key == (moved.st_dev, moved.st_ino):
                return True
            node = node.parent
        return False

    def _moved_dirs(self, src_st: os.stat_result, new_dir: Dir, dst: Entry, dst_st: os.stat_result | None,
                    old_dir: Dir | None, src: Entry | None) -> None:
        """Keep the Dir objects of renamed (or exchanged) directories at their new places."""
        pairs = [(src_st, new_dir, dst)]
        if dst_st is not None and old_dir is not None and src is not None:
            pairs.append((dst_st, old_dir, src))
        for st, parent, entry in pairs:
            if stat.S_ISDIR(st.st_mode):
                known = self.tree.known_dir((st.st_dev, st.st_ino))
                if known is not None:
                    self.tree.moved(known, parent, entry.backing_name.entry, entry.name)
        self.tree.forget()

    def link(self, src_dir: Dir, src_name: str, new_dir: Dir, new: str) -> tuple[Entry, os.stat_result]:
        self.writable()
        with self.tree.lock, self.tree.dir_fd(src_dir) as src_fd, self.tree.dir_fd(new_dir) as dst_fd:
            src, st = self._existing(src_fd, src_dir, src_name)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EPERM, "hard links to directories are not allowed", src_name)
            entry = self._new_entry(dst_fd, new_dir, new)
            os.link(src.backing_name.entry, entry.backing_name.entry, src_dir_fd=src_fd, dst_dir_fd=dst_fd,
                    follow_symlinks=False)
            return self._made(dst_fd, entry)

    def symlink(self, directory: Dir, name: str, target: str,
                owner: Owner | None = None) -> tuple[Entry, os.stat_result]:
        self.writable()
        encoded = self.tree.names.encrypt_symlink(target)
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry = self._new_entry(fd, directory, name)
            os.symlink(encoded, entry.backing_name.entry, dir_fd=fd)
            give_to(fd, entry.backing_name.entry, owner)
            return self._made(fd, entry)

    def mknod(self, directory: Dir, name: str, mode: int, rdev: int = 0,
              owner: Owner | None = None) -> tuple[Entry, os.stat_result]:
        """FIFOs, sockets and (for root) device nodes; regular files are the Vault's create."""
        self.writable()
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise OSError(errno.EINVAL, "mknod of an unknown file type", name)
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry = self._new_entry(fd, directory, name)
            os.mknod(entry.backing_name.entry, kind | (mode & 0o7777), rdev, dir_fd=fd)
            give_to(fd, entry.backing_name.entry, owner)
            backing.chmod_at(fd, entry.backing_name.entry, mode)
            return self._made(fd, entry)
