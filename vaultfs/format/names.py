"""Plaintext name <-> backing name within one directory (docs/format.md sections 6 and 7).

AES-SIV with the parent's directory ID as associated data: deterministic inside a
directory (a lookup is one encryption), unlinkable across directories, authenticated.
base32 survives case-folding sync targets; the ``.vfs`` suffix keeps sync clients'
conflict suffixes recognisable.  Names whose encoding would pass 220 characters are
stored as ``<hash>.vfl`` with the full encoding in a ``<hash>.vfn`` sidecar.
"""

from __future__ import annotations

import base64
import errno
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

from vaultfs import crypto

SHORT_SUFFIX = ".vfs"
LONG_SUFFIX = ".vfl"
SIDECAR_SUFFIX = ".vfn"
RESERVED_PREFIX = "vaultfs."
MAX_BACKING_NAME = 220
MAX_NAME_BYTES = 255
MAX_SIDECAR_BYTES = 1024
SYMLINK_AD = b"vaultfs/v1/symlink"
_CACHE_SIZE = 16384


def b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes | None:
    """Decode canonical lowercase unpadded base32, or None for anything else."""
    if not text or text != text.lower():
        return None
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, base64.binascii.Error):
        return None
    return data if b32encode(data) == text else None


def pad16(data: bytes) -> bytes:
    k = 16 - len(data) % 16
    return data + bytes([k]) * k


def unpad16(data: bytes) -> bytes | None:
    if not data or len(data) % 16:
        return None
    k = data[-1]
    if not 1 <= k <= 16 or data[-k:] != bytes([k]) * k:
        return None
    return data[:-k]


def name_bytes(name: str) -> bytes:
    """Validate a plaintext name and return its NFC UTF-8 bytes (ENAMETOOLONG past 255 bytes)."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise OSError(errno.EINVAL, f"invalid file name {name!r}")
    raw = unicodedata.normalize("NFC", name).encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME_BYTES:
        raise OSError(errno.ENAMETOOLONG, "file name longer than 255 bytes")
    return raw


def _valid_decoded(raw: bytes) -> str | None:
    name = raw.decode("utf-8", "surrogateescape")
    try:
        if name_bytes(name) != raw:
            return None
    except OSError:
        return None
    return name


@dataclass(frozen=True)
class BackingName:
    """Where an entry lives in its backing directory."""

    entry: str  # the backing entry's name: <e>.vfs or <h>.vfl
    sidecar: str | None = None  # for long names: <h>.vfn
    encoded: str = ""  # the full base32 encoding, the sidecar's content for long names


_BASE32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def is_reserved(backing_entry: str) -> bool:
    """``vaultfs.*`` and sync-client copies of it (``vaultfs (1).dirid``): never an encrypted name."""
    stem = RESERVED_PREFIX[:-1]
    return backing_entry.startswith(stem) and (
        len(backing_entry) == len(stem) or backing_entry[len(stem)] not in _BASE32_CHARS)


class NameCipher:
    """Encrypts and decrypts names with one vault's name key; caches both directions."""

    def __init__(self, name_key: bytes) -> None:
        self._siv = crypto.Siv(name_key)
        self._encrypt_cache: OrderedDict[tuple[bytes, str], BackingName] = OrderedDict()
        self._decrypt_cache: OrderedDict[tuple[bytes, str], str] = OrderedDict()

    @staticmethod
    def _remember(cache: OrderedDict, key: tuple, value: object) -> None:
        cache[key] = value
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    def encrypt(self, name: str, dir_id: bytes) -> BackingName:
        cached = self._encrypt_cache.get((dir_id, name))
        if cached is not None:
            return cached
        encoded = b32encode(self._siv.seal(pad16(name_bytes(name)), [dir_id]))
        if len(encoded) + len(SHORT_SUFFIX) <= MAX_BACKING_NAME:
            result = BackingName(encoded + SHORT_SUFFIX, None, encoded)
        else:
            digest = b32encode(crypto.sha256(encoded.encode("ascii")))
            result = BackingName(digest + LONG_SUFFIX, digest + SIDECAR_SUFFIX, encoded)
        self._remember(self._encrypt_cache, (dir_id, name), result)
        return result

    def decrypt_encoded(self, encoded: str, dir_id: bytes) -> str | None:
        """Plaintext name of a base32 encoding in directory ``dir_id``, or None if it is not one."""
        cached = self._decrypt_cache.get((dir_id, encoded))
        if cached is not None:
            return cached
        sealed = b32decode(encoded)
        if sealed is None or len(sealed) < 32:
            return None
        try:
            padded = self._siv.open(sealed, [dir_id])
        except crypto.AuthenticationFailed:
            return None
        raw = unpad16(padded)
        name = None if raw is None else _valid_decoded(raw)
        if name is not None:
            self._remember(self._decrypt_cache, (dir_id, encoded), name)
        return name

    @staticmethod
    def sidecar_matches(digest: str, encoded: str) -> bool:
        return b32encode(crypto.sha256(encoded.encode("ascii"))) == digest

    def encrypt_symlink(self, target: str) -> str:
        raw = target.encode("utf-8", "surrogateescape")
        if not raw or b"\0" in raw:
            raise OSError(errno.EINVAL, "invalid symlink target")
        encoded = b32encode(self._siv.seal(pad16(raw), [SYMLINK_AD]))
        if len(encoded) >= 4096:
            raise OSError(errno.ENAMETOOLONG, "symlink target too long")
        return encoded

    def decrypt_symlink(self, encoded: str) -> str | None:
        sealed = b32decode(encoded)
        if sealed is None or len(sealed) < 32:
            return None
        try:
            raw = unpad16(self._siv.open(sealed, [SYMLINK_AD]))
        except crypto.AuthenticationFailed:
            return None
        return None if raw is None else raw.decode("utf-8", "surrogateescape")
