"""Directory IDs: 16 random bytes per directory, sealed in its ``vaultfs.dirid`` file.

The ID is the associated data of every name in the directory. Sealing it with AES-GCM
under a key derived from the master key means nobody without the key can plant a
chosen ID (the gocryptfs audit's diriv finding).
"""

from __future__ import annotations

import os

from vaultfs import backing, crypto
from vaultfs.errors import IntegrityError
from vaultfs.format.conflicts import is_dirid_copy
from vaultfs.format.keys import DIR_ID_SIZE, VaultKeys

DIRID_NAME = "vaultfs.dirid"
DIRID_AAD = b"vaultfs/v1/dir-id"
SEALED_SIZE = 12 + DIR_ID_SIZE + 16


class DirIds:
    def __init__(self, keys: VaultKeys) -> None:
        self._gcm = crypto.Gcm(keys.dir_id_key)

    def seal(self, dir_id: bytes) -> bytes:
        return self._gcm.seal(dir_id, DIRID_AAD)

    def read_all(self, backing_dir: str, label: str) -> tuple[bytes, ...]:
        """The directory's ID, then those of authentic conflict copies of ``vaultfs.dirid``.

        Two machines that created the same directory before syncing leave two sealed IDs
        and names under both; every authentic one is kept so that all names decrypt.
        """
        ids: list[bytes] = []
        first_error: IntegrityError | None = None
        candidates = [DIRID_NAME] + sorted(
            name for name in os.listdir(backing_dir) if is_dirid_copy(name, DIRID_NAME))
        for name in candidates:
            try:
                dir_id = self.read(backing_dir, label, name)
            except IntegrityError as exc:
                first_error = first_error or exc
                continue
            if dir_id not in ids:
                ids.append(dir_id)
        if not ids:
            assert first_error is not None
            raise first_error
        return tuple(ids)

    def read(self, backing_dir: str, label: str, name: str = DIRID_NAME) -> bytes:
        """Unseal the directory's ID; IntegrityError if it is missing, oversized or forged."""
        path = os.path.join(backing_dir, name)
        try:
            sealed = backing.read_bounded(path, SEALED_SIZE)
        except FileNotFoundError:
            raise IntegrityError(f"{label}: directory has no {DIRID_NAME}") from None
        except OSError as exc:
            raise IntegrityError(f"{label}: {DIRID_NAME}: {exc.strerror}") from None
        try:
            dir_id = self._gcm.open(sealed, DIRID_AAD)
        except crypto.AuthenticationFailed:
            raise IntegrityError(f"{label}: {name} failed authentication") from None
        if len(dir_id) != DIR_ID_SIZE:
            raise IntegrityError(f"{label}: {name} has a wrong length")
        return dir_id

    def create(self, backing_dir: str, dir_id: bytes | None = None) -> bytes:
        """Write a new sealed ID (random unless given, as for the root) into ``backing_dir``."""
        dir_id = dir_id if dir_id is not None else crypto.random_bytes(DIR_ID_SIZE)
        backing.write_new_file(os.path.join(backing_dir, DIRID_NAME), self.seal(dir_id), 0o644)
        return dir_id
