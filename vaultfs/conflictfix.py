"""What the vault does with a sync client's conflict copy (Cryptomator-style).

On first sight in a writable vault: a copy whose original is gone takes its place; a
copy identical to its original (same plaintext) is removed; any other copy is renamed
to the encryption of ``<stem> (conflict N)<ext>`` so that it shows up next to the
original, readable, and can be opened, renamed or deleted like any file.  A read-only
vault (export) shows the copy under that name without touching the backing directory.
Every action is logged.  Built on the backing tree alone: it never calls into the Vault.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable

from vaultfs import backing
from vaultfs.entries import Dir, Entry
from vaultfs.errors import IntegrityError
from vaultfs.format.conflicts import conflict_name, split_conflict
from vaultfs.format.content import EncryptedFile
from vaultfs.format.names import LONG_SUFFIX, SIDECAR_SUFFIX
from vaultfs.tree import BackingTree, lstat_at

log = logging.getLogger("vaultfs")
_COMPARE_CHUNK = 1 << 20


class ConflictResolver:
    def __init__(self, tree: BackingTree, key_for: Callable[[bytes], bytes], block_size: int,
                 read_only: bool) -> None:
        self._tree = tree
        self._key_for = key_for
        self._block_size = block_size
        self._read_only = read_only
        self._virtual_of: dict[str, str] = {}  # copy backing path -> its read-only conflict name
        # Told (directory, plaintext name) when a resolution makes a name appear, so a FUSE
        # layer can drop the kernel's cached "no such entry" for it.
        self.on_change: Callable[[Dir, str], None] | None = None

    @staticmethod
    def is_copy(backing_name: str) -> bool:
        return split_conflict(backing_name) is not None

    def original_name(self, directory: Dir, copy: str) -> tuple[str, str, str] | None:
        """(plaintext name, original backing name, conflict suffix) of a copy, or None."""
        with self._tree.dir_fd(directory) as fd:
            return self._original_name(directory, copy, fd)

    def _original_name(self, directory: Dir, copy: str, fd: int) -> tuple[str, str, str] | None:
        split = split_conflict(copy)
        if split is None:
            return None
        canonical, suffix = split
        tree = self._tree
        name = tree.decode_name(directory, canonical, fd)
        if name is None and canonical.endswith(LONG_SUFFIX):
            # the client may have conflict-copied the sidecar as well: "<digest> (1).vfn"
            digest = canonical[: -len(LONG_SUFFIX)]
            encoded = tree.read_sidecar(fd, digest, digest + suffix)
            for dir_id in directory.dir_ids if encoded else ():
                name = tree.names.decrypt_encoded(encoded, dir_id)
                if name is not None:
                    break
        return None if name is None else (name, canonical, suffix)

    def resolve(self, directory: Dir, copy: str) -> tuple[str, str, os.stat_result] | None:
        """Resolve one conflict copy; return (plaintext name, backing entry, lstat) if it stays visible."""
        with self._tree.dir_fd(directory) as fd:
            return self._resolve(directory, copy, fd)

    def _resolve(self, directory: Dir, copy: str, fd: int) -> tuple[str, str, os.stat_result] | None:
        tree = self._tree
        copy_path = os.path.join(directory.backing, copy)
        found = self._original_name(directory, copy, fd)
        if found is None:
            tree.report_once(copy_path, "conflict copy whose name does not decrypt here")
            return None
        name, canonical, suffix = found
        if self._read_only:
            return self._virtual(directory, name, copy, fd)
        try:
            with tree.lock:
                if lstat_at(fd, canonical) is None:
                    original = Entry(directory, name, tree.names.encrypt(name, directory.dir_id))
                    tree.write_sidecar(fd, original.backing_name)
                    os.rename(copy, canonical, src_dir_fd=fd, dst_dir_fd=fd)
                    shown: str | None = name
                    where = canonical
                    log.warning("sync conflict: %s restored as %r (its original was gone)", copy_path, name)
                elif self.identical(fd, copy, canonical):
                    os.unlink(copy, dir_fd=fd)
                    shown = None
                    log.warning("sync conflict: removed %s, an identical copy of %r", copy_path, name)
                else:
                    number = 1
                    while True:
                        shown = conflict_name(name, number)
                        entry = Entry(directory, shown, tree.names.encrypt(shown, directory.dir_id))
                        if lstat_at(fd, entry.backing_name.entry) is None:
                            break
                        number += 1
                    tree.write_sidecar(fd, entry.backing_name)
                    where = entry.backing_name.entry
                    os.rename(copy, where, src_dir_fd=fd, dst_dir_fd=fd)
                    log.warning("sync conflict: %s shown as %r next to %r", copy_path, shown, name)
                if canonical.endswith(LONG_SUFFIX):
                    stale = canonical[: -len(LONG_SUFFIX)] + suffix + SIDECAR_SUFFIX
                    if lstat_at(fd, stale) is not None:
                        os.unlink(stale, dir_fd=fd)
                tree.forget()
                if shown is None:
                    return None
                if self.on_change is not None:
                    self.on_change(directory, shown)
                st = lstat_at(fd, where)
                return None if st is None else (shown, where, st)
        except OSError as exc:
            log.warning("sync conflict: cannot resolve %s (%s); showing it read-only", copy_path, exc.strerror)
            return self._virtual(directory, name, copy, fd)

    def _virtual(self, directory: Dir, name: str, copy: str, fd: int) -> tuple[str, str, os.stat_result] | None:
        st = lstat_at(fd, copy)
        if st is None:
            return None
        copy_path = os.path.join(directory.backing, copy)
        known = self._virtual_of.get(copy_path)
        if known is not None:
            return known, copy, st
        tree = self._tree
        number = 1
        while True:
            candidate = conflict_name(name, number)
            taken = lstat_at(fd, tree.names.encrypt(candidate, directory.dir_id).entry) is not None
            if not taken and not tree.has_virtual(directory, candidate):
                break
            number += 1
        tree.set_virtual(directory, candidate, copy)
        self._virtual_of[copy_path] = candidate
        return candidate, copy, st

    def identical(self, fd: int, first: str, second: str) -> bool:
        """Same kind and same plaintext (ciphertexts always differ: random nonces)."""
        a, b = lstat_at(fd, first), lstat_at(fd, second)
        if a is None or b is None or stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            return False
        if stat.S_ISLNK(a.st_mode):
            names = self._tree.names
            target = names.decrypt_symlink(os.readlink(first, dir_fd=fd))
            return target is not None and target == names.decrypt_symlink(os.readlink(second, dir_fd=fd))
        if not stat.S_ISREG(a.st_mode) or a.st_size != b.st_size:
            return False
        fds = [backing.open_file_at(fd, name, os.O_RDONLY) for name in (first, second)]
        try:
            files = [EncryptedFile(each, self._key_for, name, self._block_size)
                     for each, name in zip(fds, (first, second), strict=True)]
            offset = 0
            while offset < files[0].size:
                if files[0].read(offset, _COMPARE_CHUNK) != files[1].read(offset, _COMPARE_CHUNK):
                    return False
                offset += _COMPARE_CHUNK
            return True
        except IntegrityError:
            return False
        finally:
            for each in fds:
                os.close(each)
