"""What the vault does with a sync client's conflict copy (Cryptomator-style).

On first sight in a writable vault: a copy whose original is gone takes its place; a
copy identical to its original (same plaintext) is removed; any other copy is renamed
to the encryption of ``<stem> (conflict N)<ext>`` so that it shows up next to the
original, readable, and can be opened, renamed or deleted like any file.  A read-only
vault (export) shows the copy under that name without touching the backing directory.
Every action is logged.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import TYPE_CHECKING

from vaultfs.entries import Dir, Entry
from vaultfs.errors import IntegrityError
from vaultfs.format.conflicts import conflict_name, split_conflict
from vaultfs.format.content import EncryptedFile
from vaultfs.format.names import LONG_SUFFIX, SIDECAR_SUFFIX

if TYPE_CHECKING:
    from vaultfs.vault import Vault

log = logging.getLogger("vaultfs")
_COMPARE_CHUNK = 1 << 20


class ConflictResolver:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._virtual_of: dict[str, str] = {}  # copy backing path -> its read-only conflict name

    @staticmethod
    def is_copy(backing_name: str) -> bool:
        return split_conflict(backing_name) is not None

    def original_name(self, directory: Dir, copy: str) -> tuple[str, str, str] | None:
        """(plaintext name, original backing name, conflict suffix) of a copy, or None."""
        split = split_conflict(copy)
        if split is None:
            return None
        canonical, suffix = split
        name = self._vault.decode_name(directory, canonical)
        if name is None and canonical.endswith(LONG_SUFFIX):
            # the client may have conflict-copied the sidecar as well: "<digest> (1).vfn"
            digest = canonical[: -len(LONG_SUFFIX)]
            encoded = self._vault.read_sidecar(directory, digest, digest + suffix)
            for dir_id in directory.dir_ids if encoded else ():
                name = self._vault.names.decrypt_encoded(encoded, dir_id)
                if name is not None:
                    break
        return None if name is None else (name, canonical, suffix)

    def resolve(self, directory: Dir, copy: str) -> tuple[str, str] | None:
        """Resolve one conflict copy; return its (plaintext name, backing path) if it stays visible."""
        vault = self._vault
        copy_path = os.path.join(directory.backing, copy)
        found = self.original_name(directory, copy)
        if found is None:
            vault._report_once(copy_path, "conflict copy whose name does not decrypt here")
            return None
        name, canonical, suffix = found
        if vault.read_only:
            return self._virtual(directory, name, copy_path)
        canonical_path = os.path.join(directory.backing, canonical)
        try:
            with vault._ns_lock:
                if not os.path.lexists(canonical_path):
                    original = vault._child(directory, name)
                    vault._write_sidecar(original)
                    os.rename(copy_path, canonical_path)
                    result: tuple[str, str] | None = (name, canonical_path)
                    log.warning("sync conflict: %s restored as %r (its original was gone)", copy_path, name)
                elif self.identical(copy_path, canonical_path):
                    os.unlink(copy_path)
                    result = None
                    log.warning("sync conflict: removed %s, an identical copy of %r", copy_path, name)
                else:
                    number = 1
                    while True:
                        new_name = conflict_name(name, number)
                        entry = Entry(directory, new_name, vault.names.encrypt(new_name, directory.dir_id))
                        if not os.path.lexists(entry.path):
                            break
                        number += 1
                    vault._write_sidecar(entry)
                    os.rename(copy_path, entry.path)
                    result = (new_name, entry.path)
                    log.warning("sync conflict: %s shown as %r next to %r", copy_path, new_name, name)
                if canonical.endswith(LONG_SUFFIX):
                    stale = os.path.join(directory.backing, canonical[: -len(LONG_SUFFIX)] + suffix + SIDECAR_SUFFIX)
                    if os.path.lexists(stale):
                        os.unlink(stale)
                vault._forget_dirs()
                return result
        except OSError as exc:
            log.warning("sync conflict: cannot resolve %s (%s); showing it read-only", copy_path, exc.strerror)
            return self._virtual(directory, name, copy_path)

    def _virtual(self, directory: Dir, name: str, copy_path: str) -> tuple[str, str]:
        known = self._virtual_of.get(copy_path)
        if known is not None:
            return known, copy_path
        vault = self._vault
        number = 1
        while True:
            candidate = conflict_name(name, number)
            taken = os.path.lexists(os.path.join(directory.backing,
                                                 vault.names.encrypt(candidate, directory.dir_id).entry))
            if not taken and (directory.backing, candidate) not in vault._virtual:
                break
            number += 1
        vault._virtual[(directory.backing, candidate)] = os.path.basename(copy_path)
        self._virtual_of[copy_path] = candidate
        return candidate, copy_path

    def identical(self, first: str, second: str) -> bool:
        """Same kind and same plaintext (ciphertexts always differ: random nonces)."""
        a, b = os.lstat(first), os.lstat(second)
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            return False
        if stat.S_ISLNK(a.st_mode):
            names = self._vault.names
            target = names.decrypt_symlink(os.readlink(first))
            return target is not None and target == names.decrypt_symlink(os.readlink(second))
        if not stat.S_ISREG(a.st_mode) or a.st_size != b.st_size:
            return False
        fds = [os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC) for path in (first, second)]
        try:
            files = [EncryptedFile(fd, self._vault._file_key, path, self._vault.block_size)
                     for fd, path in zip(fds, (first, second), strict=True)]
            offset = 0
            while offset < files[0].size:
                if files[0].read(offset, _COMPARE_CHUNK) != files[1].read(offset, _COMPARE_CHUNK):
                    return False
                offset += _COMPARE_CHUNK
            return True
        except IntegrityError:
            return False
        finally:
            for fd in fds:
                os.close(fd)

