"""Extended attributes of vault entries, kept encrypted on the backing entries themselves.

Works on an fd of the backing entry (a directory fd, or a file opened without following
links), so an attribute always lands on the entry itself.  Linux allows ``user.*``
attributes on regular files and directories only; so does vaultfs (a symlink or a FIFO
is a ``.vfx`` file in the backing dir, but not in the plaintext view).  Encryption is in
format/xattrs.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from vaultfs import backing, crypto
from vaultfs.entries import Dir
from vaultfs.errors import IntegrityError
from vaultfs.format.xattrs import XattrCipher
from vaultfs.tree import BackingTree


class XattrStore:
    def __init__(self, tree: BackingTree, cipher: XattrCipher) -> None:
        self._tree = tree
        self._cipher = cipher

    @contextlib.contextmanager
    def entry_fd(self, directory: Dir | None, name: str) -> Iterator[int]:
        """An fd of the backing entry (the root when ``directory`` is None), never following a link.

        EPERM for entries that cannot carry user attributes (symlinks, FIFOs, devices).
        """
        with self._tree.dir_fd(directory or self._tree.root) as fd:
            if directory is None:
                yield fd
                return
            entry, st = self._tree.locate(directory, name, fd)
            if st is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            if entry.special or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise OSError(errno.EPERM, "extended attributes only on files and directories", name)
            flags = os.O_RDONLY | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0)
            try:
                own = backing.open_file_at(fd, entry.backing_name.entry, flags | os.O_NOATIME)
            except PermissionError:
                own = backing.open_file_at(fd, entry.backing_name.entry, flags)
            try:
                yield own
            finally:
                os.close(own)

    def check(self, name: bytes, setting: bool) -> None:
        """Before touching the entry: EOPNOTSUPP to set another namespace, ENODATA to read one.

        (cp -a sets system.posix_acl_* and treats EOPNOTSUPP as "no ACLs here"; the kernel
        asks for security.capability on every write.)
        """
        try:
            self._cipher.check_name(name)
        except OSError:
            if setting:
                raise
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA)) from None

    def get(self, fd: int, name: bytes) -> bytes:
        stored_name = self._cipher.backing_name(name)
        sealed = os.getxattr(fd, stored_name)
        try:
            return self._cipher.open(stored_name, sealed)
        except crypto.AuthenticationFailed:
            raise IntegrityError(f"extended attribute {name!r}") from None

    def set(self, fd: int, name: bytes, value: bytes) -> None:
        stored_name = self._cipher.backing_name(name)
        os.setxattr(fd, stored_name, self._cipher.seal(stored_name, value))

    def list(self, fd: int) -> list[bytes]:
        names = []
        for stored_name in os.listxattr(fd):
            name = self._cipher.plain_name(stored_name)
            if name is not None:
                names.append(name)
        return names

    def remove(self, fd: int, name: bytes) -> None:
        os.removexattr(fd, self._cipher.backing_name(name))
