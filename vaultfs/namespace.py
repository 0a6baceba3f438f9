"""Namespace changes of a Vault: mkdir, rmdir, unlink, rename, link, symlink.

A mixin of ``vault.Vault``, kept apart so that each file stays about one thing: these
methods use the vault's path resolution (``_entry``, ``_lstat``), its long-name
sidecars and its namespace lock, which makes every check-then-act step atomic with
respect to other operations of the same vault.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import TYPE_CHECKING

from vaultfs import backing
from vaultfs.format.dirids import DIRID_NAME

if TYPE_CHECKING:
    from vaultfs.vault import Vault


class NamespaceOps:
    """mkdir, rmdir, unlink, rename, link, symlink of ``vault.Vault`` (errnos as rename(2) and friends)."""

    def mkdir(self: Vault, path: str, mode: int) -> None:
        self._writable()
        with self._ns_lock:
            entry = self._entry(path)
            if self._exists(entry):
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            self._write_sidecar(entry)
            os.mkdir(entry.path, 0o700)
            try:
                self.dirids.create(entry.path)
            except BaseException:
                os.rmdir(entry.path)
                raise
            os.chmod(entry.path, mode & 0o7777)

    def _check_empty_dir(self: Vault, backing_dir: str, path: str) -> None:
        with os.scandir(backing_dir) as entries:
            if any(item.name != DIRID_NAME for item in entries):
                raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), path)

    def _remove_dir(self: Vault, backing_dir: str, path: str) -> None:
        self._check_empty_dir(backing_dir, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(backing_dir, DIRID_NAME))
        os.rmdir(backing_dir)

    def rmdir(self: Vault, path: str) -> None:
        self._writable()
        with self._ns_lock:
            entry = self._entry(path)
            if not stat.S_ISDIR(self._lstat(entry).st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            self._remove_dir(entry.path, path)
            self._remove_sidecar(entry)
            self._forget_dirs()

    def unlink(self: Vault, path: str) -> None:
        self._writable()
        with self._ns_lock:
            entry = self._entry(path)
            if stat.S_ISDIR(self._lstat(entry).st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            os.unlink(entry.path)
            self._remove_sidecar(entry)

    def rename(self: Vault, old: str, new: str, flags: int = 0) -> None:
        """rename(2) semantics, plus RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2)."""
        self._writable()
        if flags & ~(backing.RENAME_NOREPLACE | backing.RENAME_EXCHANGE) or flags == 3:
            raise OSError(errno.EINVAL, "invalid rename flags")
        with self._ns_lock:
            src, dst = self._entry(old), self._entry(new)
            src_st = self._lstat(src)
            if src.path == dst.path:
                return
            dst_st = os.lstat(dst.path) if self._exists(dst) else None
            if flags & backing.RENAME_EXCHANGE:
                if dst_st is None:
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), new)
                self._write_sidecar(src)
                self._write_sidecar(dst)
                backing.rename2(src.path, dst.path, backing.RENAME_EXCHANGE)
                self._forget_dirs()
                return
            if dst_st is not None:
                if flags & backing.RENAME_NOREPLACE:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)
                src_dir, dst_dir = stat.S_ISDIR(src_st.st_mode), stat.S_ISDIR(dst_st.st_mode)
                if src_dir and not dst_dir:
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), new)
                if dst_dir and not src_dir:
                    raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), new)
                if dst_dir:
                    if (dst.path + "/").startswith(src.path + "/"):
                        raise OSError(errno.EINVAL, "cannot move a directory into itself", new)
                    self._remove_dir(dst.path, new)
            self._write_sidecar(dst)
            os.rename(src.path, dst.path)
            self._remove_sidecar(src)
            if stat.S_ISDIR(src_st.st_mode) or dst_st is not None:
                self._forget_dirs()

    def link(self: Vault, existing: str, new: str) -> None:
        self._writable()
        with self._ns_lock:
            src, dst = self._entry(existing), self._entry(new)
            if stat.S_ISDIR(self._lstat(src).st_mode):
                raise OSError(errno.EPERM, "hard links to directories are not allowed", existing)
            if self._exists(dst):
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)
            self._write_sidecar(dst)
            os.link(src.path, dst.path, follow_symlinks=False)

    def symlink(self: Vault, target: str, path: str) -> None:
        self._writable()
        encoded = self.names.encrypt_symlink(target)
        with self._ns_lock:
            entry = self._entry(path)
            if self._exists(entry):
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            self._write_sidecar(entry)
            os.symlink(encoded, entry.path)
