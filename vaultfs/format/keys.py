"""The key hierarchy of format v1: everything derives from the master key with HKDF labels.

Deriving rather than storing means a lost ``vaultfs.conf`` can be rebuilt from the
master key (the recovery key) alone; distinct labels mean no key serves two purposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vaultfs import crypto

MASTER_KEY_SIZE = 32
DIR_ID_SIZE = 16
FILE_ID_SIZE = 32

LABEL_VAULT_ID = "vaultfs/v1/vault-id"
LABEL_ROOT_DIR_ID = "vaultfs/v1/root-dir-id"
LABEL_CONTENT_KEY = "vaultfs/v1/content-key"
LABEL_NAME_KEY = "vaultfs/v1/name-key"
LABEL_DIR_ID_KEY = "vaultfs/v1/dir-id-key"
LABEL_CONFIG_MAC_KEY = "vaultfs/v1/config-mac-key"
LABEL_FILE_KEY = "vaultfs/v1/file-key"


@dataclass(frozen=True)
class VaultKeys:
    """All keys of an unlocked vault. The repr hides them, so they never reach a log."""

    master_key: bytes = field(repr=False)
    vault_id: bytes = field(repr=False)
    root_dir_id: bytes = field(repr=False)
    content_key: bytes = field(repr=False)
    name_key: bytes = field(repr=False)
    dir_id_key: bytes = field(repr=False)
    config_mac_key: bytes = field(repr=False)

    @classmethod
    def derive(cls, master_key: bytes) -> VaultKeys:
        if len(master_key) != MASTER_KEY_SIZE:
            raise ValueError("master key must be 32 bytes")
        return cls(
            master_key=master_key,
            vault_id=crypto.hkdf(master_key, LABEL_VAULT_ID, 16),
            root_dir_id=crypto.hkdf(master_key, LABEL_ROOT_DIR_ID, DIR_ID_SIZE),
            content_key=crypto.hkdf(master_key, LABEL_CONTENT_KEY, 32),
            name_key=crypto.hkdf(master_key, LABEL_NAME_KEY, 64),
            dir_id_key=crypto.hkdf(master_key, LABEL_DIR_ID_KEY, 32),
            config_mac_key=crypto.hkdf(master_key, LABEL_CONFIG_MAC_KEY, 32),
        )

    def file_key(self, file_id: bytes) -> bytes:
        """Per-file content key: the GCM random-nonce budget is then per file, not per vault."""
        return crypto.hkdf(self.content_key, LABEL_FILE_KEY, 32, salt=file_id)


def new_master_key() -> bytes:
    return crypto.random_bytes(MASTER_KEY_SIZE)
