"""The recovery key: the master key plus a 16-bit checksum, in Crockford base32 groups.

A person copies it from the screen at ``init`` and types it back years later, so the
checksum catches a typo before any decryption is tried, and the decoder forgives the
usual confusions (case, O/0, I/L/1, spaces and dashes).
"""

from __future__ import annotations

from vaultfs import crypto
from vaultfs.errors import MistypedRecoveryKey
from vaultfs.format.keys import MASTER_KEY_SIZE

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUES = {c: i for i, c in enumerate(ALPHABET)}
_VALUES.update({"O": 0, "I": 1, "L": 1})
CHECKSUM_LABEL = b"vaultfs/v1/recovery-key"
SYMBOLS = 55  # ceil((32 + 2) * 8 / 5)
GROUP = 5


def _checksum(master_key: bytes) -> bytes:
    return crypto.sha256(CHECKSUM_LABEL + master_key)[:2]


def encode(master_key: bytes) -> str:
    """Return the recovery key for a master key, as 11 dash-separated groups of 5 symbols."""
    if len(master_key) != MASTER_KEY_SIZE:
        raise ValueError("master key must be 32 bytes")
    payload = master_key + _checksum(master_key)
    value = int.from_bytes(payload, "big") << (SYMBOLS * 5 - len(payload) * 8)
    symbols = [ALPHABET[(value >> (5 * (SYMBOLS - 1 - i))) & 31] for i in range(SYMBOLS)]
    text = "".join(symbols)
    return "-".join(text[i : i + GROUP] for i in range(0, SYMBOLS, GROUP))


def decode(text: str) -> bytes:
    """Return the master key of a typed recovery key; raise MistypedRecoveryKey on any typo."""
    cleaned = "".join(ch for ch in text.upper() if ch not in "- \t\r\n")
    if len(cleaned) != SYMBOLS:
        raise MistypedRecoveryKey(f"expected {SYMBOLS} symbols, got {len(cleaned)}")
    value = 0
    for position, ch in enumerate(cleaned, 1):
        if ch not in _VALUES:
            raise MistypedRecoveryKey(f"symbol {position} ({ch!r}) is not a recovery-key character")
        value = (value << 5) | _VALUES[ch]
    pad_bits = SYMBOLS * 5 - (MASTER_KEY_SIZE + 2) * 8
    if value & ((1 << pad_bits) - 1):
        raise MistypedRecoveryKey("the last group is wrong")
    payload = (value >> pad_bits).to_bytes(MASTER_KEY_SIZE + 2, "big")
    master_key, checksum = payload[:MASTER_KEY_SIZE], payload[MASTER_KEY_SIZE:]
    if not crypto.constant_time_equal(checksum, _checksum(master_key)):
        raise MistypedRecoveryKey()
    return master_key
