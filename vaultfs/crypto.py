"""Every cryptographic primitive vaultfs uses, and the only module that imports a crypto library.

AES-256-GCM (contents, key slots, dir IDs), AES-SIV (names, symlink targets),
HKDF-SHA256 (key derivation), HMAC-SHA256 (config MAC) come from ``cryptography``
(OpenSSL); argon2id from ``argon2-cffi``.  Callers see bytes in, bytes out, and a
single exception type for a failed authentication: ``AuthenticationFailed``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
_OVERHEAD = GCM_NONCE_SIZE + GCM_TAG_SIZE
SIV_TAG_SIZE = 16
KEY_SIZE = 32


class AuthenticationFailed(Exception):
    """An AEAD tag or MAC did not verify: the data is not what was written."""


def random_bytes(n: int) -> bytes:
    """Return n bytes from the OS CSPRNG."""
    return os.urandom(n)


def hkdf(ikm: bytes, info: str, length: int, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 with a readable ``info`` label (one label per purpose, see docs/format.md)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info.encode()).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def argon2id(password: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
    """Derive a 32-byte key-encryption key from a password (RFC 9106 argon2id)."""
    return hash_secret_raw(
        secret=password,
        salt=salt,
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=KEY_SIZE,
        type=Type.ID,
    )


class Gcm:
    """AES-256-GCM with a 12-byte random nonce stored in front: nonce ‖ ciphertext ‖ tag.

    One object per key: constructing the OpenSSL context is most of the cost of a
    4 KiB block, so content code keeps one per open file.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(GCM_NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
            raise AuthenticationFailed("sealed data too short")
        try:
            return self._aead.decrypt(sealed[:GCM_NONCE_SIZE], sealed[GCM_NONCE_SIZE:], aad)
        except InvalidTag:
            raise AuthenticationFailed("GCM tag mismatch") from None

    def open_blocks(self, sealed: memoryview, stored_size: int, lengths: list[int], aads: list[bytes],
                    out: memoryview, out_stride: int) -> None:
        """Decrypt consecutive stored blocks (``stored_size`` apart) into ``out`` (``out_stride`` apart).

        The read path's loop, kept here so that it calls the library directly: per 4 KiB
        block the Python around one AEAD call costs as much as the AES itself.  Raises
        ``AuthenticationFailed`` with the failing position in ``args[1]``.
        """
        decrypt_into = self._aead.decrypt_into
        pos = dst = 0
        for n, length in enumerate(lengths):
            try:
                body = pos + GCM_NONCE_SIZE
                decrypt_into(sealed[pos:body], sealed[body : body + length + GCM_TAG_SIZE], aads[n],
                             out[dst : dst + length])
            except InvalidTag:
                raise AuthenticationFailed("GCM tag mismatch", n) from None
            pos += stored_size
            dst += out_stride

    def seal_blocks(self, nonces: bytes, plain: memoryview, lengths: list[int], aads: list[bytes],
                    out: memoryview) -> None:
        """Encrypt consecutive plaintext blocks into nonce ‖ ciphertext ‖ tag records, back to back."""
        encrypt_into = self._aead.encrypt_into
        src = dst = 0
        for n, length in enumerate(lengths):
            nonce = nonces[n * GCM_NONCE_SIZE : n * GCM_NONCE_SIZE + GCM_NONCE_SIZE]
            out[dst : dst + GCM_NONCE_SIZE] = nonce
            body = dst + GCM_NONCE_SIZE
            encrypt_into(nonce, plain[src : src + length], aads[n], out[body : body + length + GCM_TAG_SIZE])
            src += length
            dst += length + _OVERHEAD


class Siv:
    """AES-SIV (RFC 5297, 512-bit key): deterministic authenticated encryption of names.

    Output is the 16-byte synthetic IV followed by the ciphertext, as RFC 5297 writes it.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESSIV(key)

    def seal(self, plaintext: bytes, associated_data: list[bytes]) -> bytes:
        return self._aead.encrypt(plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: list[bytes]) -> bytes:
        if len(sealed) < SIV_TAG_SIZE:
            raise AuthenticationFailed("SIV data too short")
        try:
            return self._aead.decrypt(sealed, associated_data)
        except InvalidTag:
            raise AuthenticationFailed("SIV tag mismatch") from None
