"""Plaintext attributes from a backing entry's lstat, without decrypting (docs/format.md 7.2, 8).

A regular file's size comes from its backing size; a directory's are its own.  A special
entry (a ``.vfx`` file: symlink, FIFO, socket, device) says its kind in its 40-byte
header, read with ``O_NOATIME`` so that a stat never moves the plaintext atime; a
symlink's size is its target's length (from the backing size), and only a device's
number needs its payload decrypted.  What a header said is cached per backing inode and
change time, so a listing of many symlinks reads each header once.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from vaultfs.entries import Attr, Entry, join_path
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks, specials
from vaultfs.format.header import Kind
from vaultfs.openfiles import open_noatime
from vaultfs.tree import BackingTree

KIND_CACHE_SIZE = 4096  # special entries whose header (and device number) a stat has read
_DEVICES = (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE)


class AttrReader:
    def __init__(self, tree: BackingTree, key_for: Callable[[bytes], bytes], block_size: int) -> None:
        self._tree = tree
        self._key_for = key_for
        self.block_size = block_size
        self._kinds: OrderedDict[tuple[int, int, int, int], tuple[Kind, int]] = OrderedDict()
        self._lock = threading.Lock()  # Vault calls may run in worker threads (a slow backing dir)

    def of(self, st: os.stat_result, fd: int, entry: Entry) -> Attr:
        """The plaintext attributes of ``entry`` (in the directory ``fd``) whose backing lstat is ``st``."""
        if entry.special:
            kind, rdev = self.special_kind(fd, entry, st)
            permissions = 0o777 if kind == Kind.SYMLINK else stat.S_IMODE(st.st_mode)
            return Attr.from_stat(st, specials.stat_size(kind, st.st_size, self.block_size),
                                  specials.file_type(kind) | permissions, rdev)
        if stat.S_ISREG(st.st_mode):
            size = blocks.plain_size(st.st_size, self.block_size)
            if size is None:
                self._tree.report_once(entry.path, "size fits no plaintext size (truncated file)")
                size = 0
            return Attr.from_stat(st, size)
        return Attr.from_stat(st, st.st_size)

    @contextlib.contextmanager
    def special_fd(self, fd: int, entry: Entry) -> Iterator[int]:
        """A special entry's backing file, opened read-only without moving its atime (the plaintext atime)."""
        special_fd = open_noatime(fd, entry.backing_name.entry, os.O_RDONLY)
        try:
            if not stat.S_ISREG(os.fstat(special_fd).st_mode):
                raise IntegrityError(f"{entry.path}: not a regular file")
            yield special_fd
        finally:
            os.close(special_fd)

    def special_kind(self, fd: int, entry: Entry, st: os.stat_result) -> tuple[Kind, int]:
        """What a special entry is, from its 40-byte header alone; only a device's number is decrypted.

        Cached per backing inode and change time: a listing of symlinks reads each header once.
        """
        key = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size)
        with self._lock:
            known = self._kinds.get(key)
        if known is not None:
            return known
        label = join_path(entry.parent.label, entry.name)
        with self.special_fd(fd, entry) as special_fd:
            kind = specials.peek_kind(special_fd, label, self.block_size)
            rdev = specials.read(special_fd, self._key_for, label, self.block_size).rdev if kind in _DEVICES else 0
        with self._lock:
            self._kinds[key] = (kind, rdev)
            if len(self._kinds) > KIND_CACHE_SIZE:
                self._kinds.popitem(last=False)
        return kind, rdev
