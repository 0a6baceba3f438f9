"""Extended attributes, encrypted (docs/format.md "Extended attributes").

A plaintext ``user.*`` attribute is stored as a backing extended attribute of the same
entry: its name as ``user.vaultfs.`` + base32(AES-SIV(name key, pad16(name))), its value
as AES-GCM(value key, value) with the encrypted name in the associated data, so a value
cannot be moved to another name.  Keys derive from the master key with their own labels.
Names are deterministic (a lookup is one encryption), values get random nonces.  Sync
clients do not carry extended attributes: they survive remounts, export and import,
not a round trip through a cloud.
"""

from __future__ import annotations

import errno

from vaultfs import crypto
from vaultfs.format.names import b32decode, b32encode, pad16, unpad16

LABEL_NAME_KEY = "vaultfs/v2/xattr-name-key"
LABEL_VALUE_KEY = "vaultfs/v2/xattr-value-key"
NAME_AD = b"vaultfs/v2/xattr-name"
VALUE_AD = b"vaultfs/v2/xattr-value"
PLAIN_NAMESPACE = b"user."
BACKING_PREFIX = "user.vaultfs."
MAX_BACKING_NAME = 255  # XATTR_NAME_MAX
MAX_VALUE = 65536 - crypto.GCM_NONCE_SIZE - crypto.GCM_TAG_SIZE  # XATTR_SIZE_MAX minus the GCM overhead


class XattrCipher:
    def __init__(self, master_key: bytes) -> None:
        self._siv = crypto.Siv(crypto.hkdf(master_key, LABEL_NAME_KEY, 64))
        self._gcm = crypto.Gcm(crypto.hkdf(master_key, LABEL_VALUE_KEY, 32))

    @staticmethod
    def check_name(name: bytes) -> None:
        """Only the ``user.`` namespace is stored (others are the kernel's or root's business)."""
        if not name.startswith(PLAIN_NAMESPACE) or len(name) == len(PLAIN_NAMESPACE):
            raise OSError(errno.EOPNOTSUPP, "only user.* extended attributes are supported")

    def backing_name(self, name: bytes) -> str:
        self.check_name(name)
        encoded = BACKING_PREFIX + b32encode(self._siv.seal(pad16(name), [NAME_AD]))
        if len(encoded) > MAX_BACKING_NAME:
            raise OSError(errno.ERANGE, "extended attribute name too long")
        return encoded

    def plain_name(self, backing_name: str) -> bytes | None:
        """The plaintext name of a backing attribute, or None if it is not one of ours."""
        if not backing_name.startswith(BACKING_PREFIX):
            return None
        sealed = b32decode(backing_name[len(BACKING_PREFIX):])
        if sealed is None or len(sealed) < 32:
            return None
        try:
            name = unpad16(self._siv.open(sealed, [NAME_AD]))
        except crypto.AuthenticationFailed:
            return None
        return name if name is not None and name.startswith(PLAIN_NAMESPACE) else None

    def seal(self, backing_name: str, value: bytes) -> bytes:
        if len(value) > MAX_VALUE:
            raise OSError(errno.E2BIG, "extended attribute value too large")
        return self._gcm.seal(value, VALUE_AD + backing_name.encode("ascii"))

    def open(self, backing_name: str, sealed: bytes) -> bytes:
        """The plaintext value; AuthenticationFailed if it was changed or moved from another name."""
        return self._gcm.open(sealed, VALUE_AD + backing_name.encode("ascii"))
