"""An independent decrypter for the vaultfs on-disk format (version 2, and version 1 as section 13 of
the spec describes it for upgrade readers), written from docs/format.md alone.

Why it exists: it proves that the specification is sufficient to read a vault and that vaultfs
writes what the specification says. It therefore uses nothing from the ``vaultfs`` package, only
pycryptodome (``Crypto.*``), ``argon2-cffi`` for Argon2id (pycryptodome has none) and the Python
standard library. Section numbers (``§n``) refer to docs/format.md (version 2); "v1" marks what only
a version-1 vault has (§13).

It is deliberately strict: every authentication failure, malformed structure or non-canonical
encoding raises a :class:`DecryptError` subclass; it never returns data it could not verify.

Usage::

    python tests/independent_decrypter.py BACKING --password-file F [--recovery-key KEY]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import math
import os
import re
import stat
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

# ---- errors -------------------------------------------------------------------------------


class DecryptError(Exception):
    """Base of everything this decrypter refuses; callers catch this to mean 'not readable'."""


class UnsupportedFormat(DecryptError):
    """The config names a format version we do not know (§4: distinct from damage)."""


class ConfigError(DecryptError):
    """vaultfs.conf is malformed: unknown/missing members, wrong types, non-canonical hex, caps."""


class WrongPassword(DecryptError):
    """No password slot opened (§4: also what a planted KDF downgrade looks like)."""


class MistypedRecoveryKey(DecryptError):
    """The recovery key failed its syntax or checksum checks, before any decryption (§3)."""


class WrongKey(DecryptError):
    """A well-formed master key that belongs to another vault (vault ID mismatch)."""


class IntegrityError(DecryptError):
    """Authentication or structure failure in the vault's data: never return such data."""


class TornAppend(IntegrityError):
    """The last block authenticates only with is_last = 0 (§7.3): a crash mid-append, not tampering."""


class InterruptedFill(IntegrityError):
    """A data block after holes authenticates only with an earlier run start (§7.3): a crash mid-fill."""


# ---- constants and primitives (§1) --------------------------------------------------------

FORMAT_VERSIONS = (1, 2)
BLOCK_SIZE = 4096
HEADER_LEN = 40
GCM_NONCE = 12
GCM_TAG = 16
GCM_OVERHEAD = GCM_NONCE + GCM_TAG
SUITE_AES_GCM_HKDF = 0x01
MAGIC_V1 = b"VFS1"
MAGIC_V2 = b"VFS2"
KINDS = {1: "file", 2: "symlink", 3: "fifo", 4: "socket", 5: "chardev", 6: "blockdev"}
CIPHER_SUITE = "AES-256-GCM+AES-SIV-512+HKDF-SHA256"
NAME_ENCODING = "AES-SIV+base32"
MAX_SHORT_BACKING_NAME = 220
MAX_SIDECAR = 1024
RESERVED_PREFIX = "vaultfs."
SYMLINK_AD = b"vaultfs/v1/symlink"
DIRID_AAD = b"vaultfs/v1/dir-id"
DIRID_V2_LABEL = b"vaultfs/v2/dir-id"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECOVERY_SYMBOLS = 55


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256; the spec's absent salt is 32 zero bytes (passed explicitly, not left to a default)."""
    return HKDF(ikm, length, b"\x00" * 32 if salt is None else salt, SHA256, context=info)


def gcm_open(key: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    """GCM-Open: N (12) ‖ C ‖ T (16); raise IntegrityError naming ``what`` if the tag fails."""
    if len(sealed) < GCM_OVERHEAD:
        raise IntegrityError(f"{what}: sealed data too short ({len(sealed)} bytes)")
    nonce, body, tag = sealed[:GCM_NONCE], sealed[GCM_NONCE:-GCM_TAG], sealed[-GCM_TAG:]
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG)
    cipher.update(aad)
    try:
        return cipher.decrypt_and_verify(body, tag)
    except ValueError as exc:
        raise IntegrityError(f"{what}: authentication failed") from exc


def siv_open(key64: bytes, sealed: bytes, ad: bytes, what: str) -> bytes:
    """SIV with one AD string. The spec stores the synthetic IV *first* (RFC 5297 order), while
    pycryptodome's decrypt_and_verify takes the tag separately, hence the split here."""
    if len(sealed) < 16:
        raise IntegrityError(f"{what}: SIV data too short")
    cipher = AES.new(key64, AES.MODE_SIV)
    cipher.update(ad)
    try:
        return cipher.decrypt_and_verify(sealed[16:], sealed[:16])
    except ValueError as exc:
        raise IntegrityError(f"{what}: SIV authentication failed") from exc


def unpad16(data: bytes, what: str) -> bytes:
    """Remove pad16 (PKCS#7 to 16, 1 ≤ k ≤ 16), rejecting anything a correct writer cannot produce."""
    if not data or len(data) % 16:
        raise IntegrityError(f"{what}: padded length {len(data)} is not a positive multiple of 16")
    k = data[-1]
    if not 1 <= k <= 16 or data[-k:] != bytes([k]) * k:
        raise IntegrityError(f"{what}: invalid padding")
    return data[:-k]


_B32_RE = re.compile(r"[a-z2-7]*")
_B32_PAD = {0: 0, 2: 6, 4: 4, 5: 3, 7: 1}


def b32encode(raw: bytes) -> str:
    """RFC 4648 base32, lower case, no '=' padding (the notation of the spec)."""
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def b32decode_strict(text: str, what: str) -> bytes:
    """Decode spec-base32 and require that it re-encodes to itself (§6): rejects upper case,
    padding, impossible lengths and non-zero trailing bits, so each byte string has one name."""
    if not _B32_RE.fullmatch(text) or len(text) % 8 not in _B32_PAD:
        raise IntegrityError(f"{what}: not canonical base32: {text!r}")
    raw = base64.b32decode(text.upper() + "=" * _B32_PAD[len(text) % 8])
    if b32encode(raw) != text:
        raise IntegrityError(f"{what}: base32 does not re-encode to itself: {text!r}")
    return raw


def canon(value: Any) -> bytes:
    """canon(v) of §4: sorted keys, no whitespace, ASCII only with \\u escapes, decimal integers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


# ---- keys (§2) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Every key of §2 derived from MK. The per-file key is derived on demand from KC."""

    master: bytes
    vault_id: bytes
    root_dir_id: bytes
    content: bytes
    name: bytes
    dir_id: bytes
    config_mac: bytes

    @classmethod
    def derive(cls, mk: bytes) -> Keys:
        if len(mk) != 32:
            raise ValueError("master key must be 32 bytes")
        return cls(
            master=mk,
            vault_id=hkdf(mk, None, b"vaultfs/v1/vault-id", 16),
            root_dir_id=hkdf(mk, None, b"vaultfs/v1/root-dir-id", 16),
            content=hkdf(mk, None, b"vaultfs/v1/content-key", 32),
            name=hkdf(mk, None, b"vaultfs/v1/name-key", 64),
            dir_id=hkdf(mk, None, b"vaultfs/v1/dir-id-key", 32),
            config_mac=hkdf(mk, None, b"vaultfs/v1/config-mac-key", 32),
        )

    def file_key(self, file_id: bytes) -> bytes:
        """KF = HKDF(KC, file ID as salt, "vaultfs/v1/file-key", 32)."""
        return hkdf(self.content, file_id, b"vaultfs/v1/file-key", 32)


# ---- recovery key (§3) --------------------------------------------------------------------

_CROCKFORD_ALIASES = {"O": "0", "I": "1", "L": "1"}


def recovery_checksum(mk: bytes) -> bytes:
    return hashlib.sha256(b"vaultfs/v1/recovery-key" + mk).digest()[:2]


def decode_recovery_key(text: str) -> bytes:
    """Recovery key → MK, with every rejection of §3 reported as MistypedRecoveryKey."""
    values: list[int] = []
    for ch in text:
        if ch == "-" or ch.isspace():
            continue
        up = _CROCKFORD_ALIASES.get(ch.upper(), ch.upper())
        if len(up) != 1 or up not in CROCKFORD:
            raise MistypedRecoveryKey(f"recovery key: symbol {ch!r} is not in the alphabet")
        values.append(CROCKFORD.index(up))
    if len(values) != RECOVERY_SYMBOLS:
        raise MistypedRecoveryKey(f"recovery key: {len(values)} symbols, expected {RECOVERY_SYMBOLS}")
    bits = 0
    for v in values:
        bits = (bits << 5) | v
    if bits & 0b111:
        raise MistypedRecoveryKey("recovery key: non-zero padding bits")
    payload = (bits >> 3).to_bytes(34, "big")
    mk, check = payload[:32], payload[32:]
    if not hmac.compare_digest(recovery_checksum(mk), check):
        raise MistypedRecoveryKey("recovery key: checksum mismatch")
    return mk


# ---- vaultfs.conf (§4) ----------------------------------------------------------------------

_TOP_MEMBERS = {"format", "version", "vault_id", "cipher_suite", "block_size", "name_encoding", "slots", "mac"}
_SLOT_MEMBERS = {"id", "type", "kdf", "wrapped_key"}
_KDF_MEMBERS = {"algorithm", "memory_kib", "time_cost", "parallelism", "salt"}


@dataclass(frozen=True)
class Slot:
    id: int
    kdf: dict[str, Any]
    salt: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class Config:
    raw: dict[str, Any]
    version: int
    vault_id: bytes
    block_size: int
    slots: tuple[Slot, ...]
    mac: bytes


def _is_int(v: Any) -> bool:
    """JSON integers only: bool is an int subclass in Python but a different JSON type."""
    return isinstance(v, int) and not isinstance(v, bool)


def _hex(obj: dict[str, Any], member: str, nbytes: int, where: str) -> bytes:
    v = obj[member]
    if not isinstance(v, str) or not re.fullmatch(f"[0-9a-f]{{{2 * nbytes}}}", v):
        raise ConfigError(f"{where}.{member}: not canonical lowercase hex of {nbytes} bytes")
    return bytes.fromhex(v)


def _members(obj: Any, expected: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: not a JSON object")
    if set(obj) != expected:
        missing, unknown = sorted(expected - set(obj)), sorted(set(obj) - expected)
        raise ConfigError(f"{where}: missing members {missing}, unknown members {unknown}")
    return obj


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate JSON keys would let two readers see different configs; refuse them."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(f"duplicate JSON member {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ConfigError(f"non-JSON constant {name}")


def parse_config(data: bytes) -> Config:
    """Strictly parse vaultfs.conf. The version is checked before the member set, so that a future
    format with other members is reported as unsupported, not as damage."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"vaultfs.conf is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ConfigError("vaultfs.conf: not a JSON object")
    if obj.get("format") != "vaultfs":
        raise ConfigError("vaultfs.conf: format is not 'vaultfs'")
    if not _is_int(obj.get("version")):
        raise ConfigError("vaultfs.conf: version is missing or not an integer")
    if obj["version"] not in FORMAT_VERSIONS:
        raise UnsupportedFormat(f"vaultfs.conf: unsupported format version {obj['version']}")
    _members(obj, _TOP_MEMBERS, "vaultfs.conf")
    if obj["cipher_suite"] != CIPHER_SUITE:
        raise ConfigError(f"vaultfs.conf: unknown cipher_suite {obj['cipher_suite']!r}")
    if obj["name_encoding"] != NAME_ENCODING:
        raise ConfigError(f"vaultfs.conf: unknown name_encoding {obj['name_encoding']!r}")
    if not _is_int(obj["block_size"]) or obj["block_size"] != BLOCK_SIZE:
        raise ConfigError(f"vaultfs.conf: block_size must be {BLOCK_SIZE}")
    vault_id = _hex(obj, "vault_id", 16, "vaultfs.conf")
    mac = _hex(obj, "mac", 32, "vaultfs.conf")
    if not isinstance(obj["slots"], list) or not obj["slots"]:
        raise ConfigError("vaultfs.conf: slots must be a non-empty list")
    slots: list[Slot] = []
    for n, raw_slot in enumerate(obj["slots"]):
        where = f"slots[{n}]"
        slot = _members(raw_slot, _SLOT_MEMBERS, where)
        if not _is_int(slot["id"]) or not 1 <= slot["id"] <= 65535:
            raise ConfigError(f"{where}.id: not an integer in 1..65535")
        if any(s.id == slot["id"] for s in slots):
            raise ConfigError(f"{where}.id: duplicate slot id {slot['id']}")
        if slot["type"] != "password":
            raise ConfigError(f"{where}.type: unknown slot type {slot['type']!r}")
        kdf = _members(slot["kdf"], _KDF_MEMBERS, f"{where}.kdf")
        if kdf["algorithm"] != "argon2id":
            raise ConfigError(f"{where}.kdf.algorithm: not argon2id")
        for member in ("memory_kib", "time_cost", "parallelism"):
            if not _is_int(kdf[member]):
                raise ConfigError(f"{where}.kdf.{member}: not an integer")
        m, t, p = kdf["memory_kib"], kdf["time_cost"], kdf["parallelism"]
        # §4 caps, checked before any KDF runs so a hostile file cannot make us allocate 1 TiB.
        if not (1 <= p <= 64 and 1 <= t <= 64 and 8 * p <= m <= 4194304):
            raise ConfigError(f"{where}.kdf: parameters m={m} t={t} p={p} outside the caps")
        salt = _hex(kdf, "salt", 32, f"{where}.kdf")
        wrapped = _hex(slot, "wrapped_key", 60, where)
        slots.append(Slot(slot["id"], kdf, salt, wrapped))
    return Config(obj, obj["version"], vault_id, obj["block_size"], tuple(slots), mac)


def slot_aad(vault_id: bytes, slot: Slot) -> bytes:
    """A = vault ID ‖ u32be(slot id) ‖ canon(kdf object): binds the KDF parameters (no downgrade)."""
    return vault_id + slot.id.to_bytes(4, "big") + canon(slot.kdf)


def password_kek(password: str, slot: Slot) -> bytes:
    return hash_secret_raw(
        unicodedata.normalize("NFC", password).encode("utf-8"), slot.salt,
        time_cost=slot.kdf["time_cost"], memory_cost=slot.kdf["memory_kib"],
        parallelism=slot.kdf["parallelism"], hash_len=32, type=Type.ID, version=19)


def unwrap_password(config: Config, password: str) -> bytes:
    """Try each slot; a GCM failure on all of them is a wrong password."""
    for slot in config.slots:
        kek = password_kek(password, slot)
        try:
            return gcm_open(kek, slot.wrapped_key, slot_aad(config.vault_id, slot), f"slot {slot.id}")
        except IntegrityError:
            continue
    raise WrongPassword("wrong password (no slot could be unwrapped)")


def check_config(config: Config, keys: Keys) -> None:
    """After unwrapping: the vault ID must match, then the MAC over canon(config − mac)."""
    if not hmac.compare_digest(keys.vault_id, config.vault_id):
        raise WrongKey("the master key does not belong to this vault (vault ID mismatch)")
    body = {k: v for k, v in config.raw.items() if k != "mac"}
    expected = hmac.new(keys.config_mac, canon(body), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, config.mac):
        raise IntegrityError("vaultfs.conf: MAC mismatch (config damaged or edited)")


# ---- file contents (§7; v1: §13) ------------------------------------------------------------


def plaintext_size(backing_size: int, block_size: int = BLOCK_SIZE) -> int:
    """Invert ``40 + P + 28·max(1, ⌈P/B⌉)``; raise IntegrityError for a size no writer can produce."""
    rest = backing_size - HEADER_LEN
    if rest < GCM_OVERHEAD:
        raise IntegrityError(f"backing size {backing_size} is too small for a header and one block")
    stored = block_size + GCM_OVERHEAD
    full, partial = divmod(rest, stored)
    if partial == 0:
        size = full * block_size
    elif partial < GCM_OVERHEAD or (partial == GCM_OVERHEAD and full > 0):
        # A stored block shorter than its overhead, or an empty block after full ones: impossible.
        raise IntegrityError(f"backing size {backing_size} cannot be produced by the format")
    else:
        size = full * block_size + partial - GCM_OVERHEAD
    assert HEADER_LEN + size + GCM_OVERHEAD * max(1, math.ceil(size / block_size)) == backing_size
    return size


def decrypt_file(data: bytes, keys: Keys, block_size: int = BLOCK_SIZE, what: str = "file") -> bytes:
    """v1 (§13): decrypt one regular file's backing bytes, verifying header, size, every block, index and is_last."""
    size = plaintext_size(len(data), block_size)
    header = data[:HEADER_LEN]
    if header[:4] != MAGIC_V1:
        raise IntegrityError(f"{what}: bad magic {header[:4]!r}")
    if header[4] != SUITE_AES_GCM_HKDF:
        raise IntegrityError(f"{what}: unknown suite 0x{header[4]:02x}")
    if 1 << header[5] != block_size:
        raise IntegrityError(f"{what}: header block size 2^{header[5]} differs from the config's {block_size}")
    if header[6:8] != b"\x00\x00":
        raise IntegrityError(f"{what}: reserved header bytes are not zero")
    kf = keys.file_key(header[8:40])
    nblocks = max(1, math.ceil(size / block_size))
    out = bytearray()
    for i in range(nblocks):
        offset = HEADER_LEN + i * (block_size + GCM_OVERHEAD)
        length = min(block_size, size - i * block_size) + GCM_OVERHEAD
        sealed = data[offset:offset + length]
        last = i == nblocks - 1
        aad = header + i.to_bytes(8, "big") + (b"\x01" if last else b"\x00")
        try:
            out += gcm_open(kf, sealed, aad, f"{what}: block {i}")
        except IntegrityError:
            if last:
                try:
                    gcm_open(kf, sealed, header + i.to_bytes(8, "big") + b"\x00", f"{what}: block {i}")
                except IntegrityError:
                    pass
                else:
                    raise TornAppend(f"{what}: last block {i} is not marked last (torn append)") from None
            raise
    return bytes(out)


def decrypt_content_v2(data: bytes, keys: Keys, block_size: int = BLOCK_SIZE, what: str = "file") -> tuple[str, bytes]:
    """§7: one content file's kind and plaintext: header, size, every block with its run start, holes.

    A stored block of all zeros (not the last) in a file with flag bit 0 set is a hole candidate; a run
    of them is accepted only when the next data block opens with run_start = the run's first index."""
    size = plaintext_size(len(data), block_size)
    header = data[:HEADER_LEN]
    if header[:4] != MAGIC_V2:
        raise IntegrityError(f"{what}: bad magic {header[:4]!r} (a version-2 vault holds only VFS2 files)")
    if header[4] != SUITE_AES_GCM_HKDF:
        raise IntegrityError(f"{what}: unknown suite 0x{header[4]:02x}")
    if 1 << header[5] != block_size:
        raise IntegrityError(f"{what}: header block size 2^{header[5]} differs from the config's {block_size}")
    if header[6] not in KINDS:
        raise IntegrityError(f"{what}: unknown kind 0x{header[6]:02x}")
    flags = header[7]
    if flags & 0xFE:
        raise IntegrityError(f"{what}: reserved flag bits set (0x{flags:02x})")
    header_aad = header[:7] + b"\x00" + header[8:]
    kf = keys.file_key(header[8:40])
    nblocks = max(1, math.ceil(size / block_size))
    stored_size = block_size + GCM_OVERHEAD
    zero = bytes(stored_size)
    out = bytearray()
    run: int | None = None  # first index of the pending run of hole candidates
    for i in range(nblocks):
        offset = HEADER_LEN + i * stored_size
        length = min(block_size, size - i * block_size) + GCM_OVERHEAD
        sealed = data[offset:offset + length]
        last = i == nblocks - 1
        if flags & 1 and not last and sealed == zero:
            run = i if run is None else run
            continue
        start = i if run is None else run

        def aad(is_last: bool, run_start: int, index: int = i) -> bytes:
            return header_aad + index.to_bytes(8, "big") + bytes([is_last]) + run_start.to_bytes(8, "big")

        try:
            plain = gcm_open(kf, sealed, aad(last, start), f"{what}: block {i}")
        except IntegrityError:
            if last and _opens(kf, sealed, aad(False, start)):
                raise TornAppend(f"{what}: last block {i} is not marked last (torn append)") from None
            if any(_opens(kf, sealed, aad(last, r)) for r in range(max(0, start - 64), start)):
                raise InterruptedFill(f"{what}: block {i} opens only with an earlier run start "
                                      "(an interrupted write into a hole)") from None
            raise
        out += bytes(block_size * (i - start)) + plain  # the holes it vouches for, then its own bytes
        run = None
    return KINDS[header[6]], bytes(out)


def _opens(key: bytes, sealed: bytes, aad: bytes) -> bool:
    try:
        gcm_open(key, sealed, aad, "probe")
    except IntegrityError:
        return False
    return True


def decode_special(kind: str, payload: bytes, what: str) -> tuple[bytes | None, int]:
    """§8: (symlink target, device number) of a special's payload, checked against its kind."""
    if kind == "symlink":
        if not 1 <= len(payload) <= 4095 or b"\x00" in payload:
            raise IntegrityError(f"{what}: symlink target of {len(payload)} bytes")
        return payload, 0
    if kind in ("chardev", "blockdev"):
        if len(payload) != 8:
            raise IntegrityError(f"{what}: device payload of {len(payload)} bytes")
        return None, int.from_bytes(payload, "big")
    if kind in ("fifo", "socket"):
        if payload:
            raise IntegrityError(f"{what}: a {kind} with a payload")
        return None, 0
    raise IntegrityError(f"{what}: a regular file's header on a special entry")


# ---- sync-conflict copies (§9) ---------------------------------------------------------------------

_BEFORE_MARKERS = [  # (regular expression, shown words); "%s" is the group that is kept
    (re.compile(r" \((\d+)\)"), " (conflict %s)"),
    (re.compile(r" \((?:[^()/]*'s )?conflicted copy(?: [^()/]*)?\)"), None),
    (re.compile(r" \((?:Case|Selective Sync) Conflict(?: \d+)?\)"), None),
    (re.compile(r"_conflict-\d{8}-\d{6}"), None),
    (re.compile(r" \(SFConflict [^()/]+\)"), None),
    (re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Z2-7]{7}"), None),
    (re.compile(r"\.\.?(path[12]|conflict\d+)"), " (conflict %s)"),
    (re.compile(r" (\d+)"), " (conflict %s)"),
    (re.compile(r"-([A-Za-z0-9][A-Za-z0-9_-]*)"), " (conflict %s)"),
]
_AFTER_MARKERS = [
    (re.compile(r"\.\.?(path[12]|conflict\d+)(?![A-Za-z0-9_-])"), " (conflict %s)"),
    (re.compile(r"\.([A-Za-z0-9_-]*(?:conflict|path)\d*)"), " (conflict %s)"),
]


def _shown(match: re.Match[str], template: str | None) -> str:
    if template is None:
        return match.group(0)
    kept = match.group(1)
    if kept.startswith("conflict") and kept[8:].isdigit() and template == " (conflict %s)":
        kept = kept[8:]  # rclone's .conflictN reads " (conflict N)"
    return template % kept


def _markers(text: str, table: list) -> list[str] | None:
    words, pos = [], 0
    while pos < len(text):
        for pattern, template in table:
            match = pattern.match(text, pos)
            if match and match.end() > pos:
                words.append(_shown(match, template))
                pos = match.end()
                break
        else:
            return None
    return words


def parse_conflict(backing_name: str, suffixes: tuple[str, ...]) -> tuple[str, str, str, str] | None:
    """(original backing name, before, after, shown words) of a conflict copy (§9), else None."""
    for suffix in suffixes:
        index = backing_name.find(suffix)
        while index > 0:
            head, after = backing_name[:index], backing_name[index + len(suffix):]
            stem = re.match(r"vaultfs" if suffix == ".dirid" else r"[a-z2-7]+", head)
            if stem is not None:
                before = head[stem.end():]
                words_before = _markers(before, _BEFORE_MARKERS) if before else []
                words_after = _markers(after, _AFTER_MARKERS) if after else []
                if (before or after) and words_before is not None and words_after is not None:
                    return head[:stem.end()] + suffix, before, after, "".join(words_before + words_after)
            index = backing_name.find(suffix, index + 1)
    return None


def shown_conflict_name(name: str, words: str, taken: set[str]) -> str:
    """§9: the words before the extension of ``name``; " 2", " 3" ... when taken (names here are short)."""
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    number = 1
    while True:
        candidate = stem + words + (f" {number}" if number > 1 else "") + ext
        if candidate not in taken:
            return candidate
        number += 1


# ---- names (§6) and v1 symlinks (§13) -------------------------------------------------------


def decode_name(backing_name: str, encrypted: str, dir_id: bytes, keys: Keys, long_form: bool,
                nfc: bool = True) -> str:
    """Decrypt one entry name in the directory with ID ``dir_id``; return it as a str whose undecodable
    bytes are surrogate-escaped. Also requires the canonical short/long placement. ``nfc`` (v1 only):
    the name must be in NFC; version 2 names are any bytes."""
    what = f"name {backing_name!r}"
    if long_form != (len(encrypted) + 4 > MAX_SHORT_BACKING_NAME):
        raise IntegrityError(f"{what}: stored in the {'long' if long_form else 'short'} form but the spec "
                             f"places an encrypted name of {len(encrypted)} characters otherwise")
    sealed = b32decode_strict(encrypted, what)
    n = unpad16(siv_open(keys.name, sealed, dir_id, what), what)
    if not 1 <= len(n) <= 255 or n in (b".", b"..") or b"/" in n or b"\x00" in n:
        raise IntegrityError(f"{what}: decrypted name {n!r} is not a valid name")
    name = n.decode("utf-8", "surrogateescape")
    if nfc and unicodedata.normalize("NFC", name) != name:
        raise IntegrityError(f"{what}: decrypted name {name!r} is not in NFC")
    return name


def decode_symlink(target: str, keys: Keys, what: str) -> str:
    """v1 (§13): a backing symlink's SIV-encrypted target."""
    sealed = b32decode_strict(target, f"{what}: symlink target")
    plain = unpad16(siv_open(keys.name, sealed, SYMLINK_AD, f"{what}: symlink target"), f"{what}: symlink target")
    return plain.decode("utf-8", "surrogateescape")


# ---- the vault --------------------------------------------------------------------------------


@dataclass
class Entry:
    """One plaintext entry: ``kind`` is file, dir, symlink, fifo, socket, chardev or blockdev."""

    kind: str
    content: bytes | None = None
    target: str | None = None
    mode: int = 0
    rdev: int = 0


_ENTRY_SUFFIXES = (".vfs", ".vfl", ".vfx", ".vxl")


@dataclass
class IndependentVault:
    """An unlocked vault: keys plus the backing path. ``problems`` collects what a lenient walk hid."""

    backing: Path
    keys: Keys
    block_size: int = BLOCK_SIZE
    config: Config | None = None
    problems: list[str] = field(default_factory=list)
    version: int = 2

    def read_dir_id(self, backing_dir: Path) -> bytes:
        """v1 (§13): unseal ``vaultfs.dirid`` (44 bytes): its absence or failure is an integrity error."""
        path = backing_dir / "vaultfs.dirid"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise IntegrityError(f"{path}: missing vaultfs.dirid") from None
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{path}: vaultfs.dirid is not a regular file")
        sealed = path.read_bytes()
        if len(sealed) != 44:
            raise IntegrityError(f"{path}: vaultfs.dirid is {len(sealed)} bytes, expected 44")
        return gcm_open(self.keys.dir_id, sealed, DIRID_AAD, str(path))

    def read_dir_ids_v2(self, backing_dir: Path, parent_id: bytes, name: bytes, strict: bool) -> list[bytes]:
        """§5: the IDs of every record, in vaultfs.dirid and its conflict copies, valid at this place."""
        files = sorted(n for n in os.listdir(backing_dir)
                       if n != "vaultfs.dirid" and (c := parse_conflict(n, (".dirid",))) and c[0] == "vaultfs.dirid")
        if (backing_dir / "vaultfs.dirid").exists():
            files.insert(0, "vaultfs.dirid")
        aad = DIRID_V2_LABEL + parent_id + name
        root = parent_id == bytes(16) and name == b""
        ids: list[bytes] = []
        for fname in files:
            path = backing_dir / fname
            if not stat.S_ISREG(os.lstat(path).st_mode) or os.lstat(path).st_size > 16 * 44:
                self._problem(f"{path}: not a directory ID file", strict)
                continue
            data = path.read_bytes()
            if not data or len(data) % 44:
                self._problem(f"{path}: {len(data)} bytes is not a whole number of 44-byte records", strict)
                continue
            for n in range(0, len(data), 44):
                try:
                    dir_id = gcm_open(self.keys.dir_id, data[n:n + 44], aad, f"{path} record {n // 44}")
                except IntegrityError as exc:
                    self.problems.append(f"{exc} (not valid at this place; ignored)")
                    continue
                if root and dir_id != self.keys.root_dir_id:
                    self._problem(f"{path}: a record at the root's place holds another ID", strict)
                elif dir_id not in ids:
                    ids.append(dir_id)
        if not ids:
            raise IntegrityError(f"{backing_dir}: no directory ID valid at this place")
        return ids

    def walk(self, strict: bool = True) -> dict[str, Entry]:
        """Every plaintext path ("/dir/name") below the root, with file contents decrypted.

        strict (the default) raises on the first problem of any kind; lenient hides entries whose name
        or directory fails (as §6 asks of a filesystem) and records them in ``problems``. File contents
        that fail authentication raise in both modes: wrong data is never returned. Records that are not
        valid at their place are ignored, as §5 says, and listed in ``problems`` in both modes."""
        out: dict[str, Entry] = {}
        if self.version == 1:
            root_id = self.read_dir_id(self.backing)
            if not hmac.compare_digest(root_id, self.keys.root_dir_id):
                raise IntegrityError("root vaultfs.dirid does not hold the derived root directory ID")
            self._walk_dir_v1(self.backing, "", root_id, out, strict)
        else:
            ids = self.read_dir_ids_v2(self.backing, bytes(16), b"", strict)
            self._walk_dir_v2(self.backing, "", ids, out, strict)
        return out

    def _problem(self, message: str, strict: bool) -> None:
        if strict:
            raise IntegrityError(message)
        self.problems.append(message)

    def _walk_dir_v2(self, backing_dir: Path, prefix: str, dir_ids: list[bytes], out: dict[str, Entry],
                     strict: bool) -> None:
        names = sorted(os.listdir(backing_dir))
        present = set(names)
        here: dict[str, str] = {}  # plaintext name -> backing name, for duplicates and conflict names
        copies: list[tuple[str, str, str, bytes]] = []
        for bname in names:
            bpath = backing_dir / bname
            if bname.startswith(RESERVED_PREFIX):
                continue
            conflict = parse_conflict(bname, (*_ENTRY_SUFFIXES, ".vfn", ".dirid"))
            if bname.endswith(".vfn") or (conflict and conflict[0].endswith((".vfn", ".dirid"))):
                base = bname[:-4] if bname.endswith(".vfn") else None
                if base is not None and not ({base + ".vfl", base + ".vxl"} & present):
                    self._problem(f"{bpath}: long-name sidecar without its entry", strict)
                continue
            form = conflict[0] if conflict else (bname if bname[-4:] in _ENTRY_SUFFIXES else None)
            if form is None:
                self._problem(f"{bpath}: not a vaultfs entry name", strict)
                continue
            try:
                name, dir_id = self._decode_v2(backing_dir, form, dir_ids, conflict)
            except IntegrityError as exc:
                self._problem(f"{bpath}: {exc}", strict)
                continue
            if conflict is not None:
                copies.append((bname, name, conflict[3], dir_id))
                continue
            if name in here:
                self._problem(f"{prefix}/{name}: duplicate name ({here[name]} and {bname})", strict)
                continue
            here[name] = bname
            self._entry_v2(backing_dir, bname, prefix, name, dir_id, out, strict)
        for bname, name, words, dir_id in copies:  # §9: shown next to the original, bound to its place
            shown = shown_conflict_name(name, words, set(here))
            here[shown] = bname
            self._entry_v2(backing_dir, bname, prefix, shown, dir_id, out, strict, place_name=name)

    def _decode_v2(self, backing_dir: Path, form: str, dir_ids: list[bytes],
                   conflict: tuple[str, str, str, str] | None) -> tuple[str, bytes]:
        long_form = form.endswith((".vfl", ".vxl"))
        if long_form:
            sidecar = None
            if conflict is not None:  # the client copied the sidecar as well
                candidate = form[:-4] + conflict[1] + ".vfn" + conflict[2]
                sidecar = candidate if (backing_dir / candidate).exists() else None
            encrypted = self._read_sidecar(backing_dir, form[:-4], sidecar)
        else:
            encrypted = form[:-4]
        last_error: IntegrityError | None = None
        for dir_id in dir_ids:
            try:
                return decode_name(form, encrypted, dir_id, self.keys, long_form, nfc=False), dir_id
            except IntegrityError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _entry_v2(self, backing_dir: Path, bname: str, prefix: str, name: str, parent_id: bytes,
                  out: dict[str, Entry], strict: bool, place_name: str | None = None) -> None:
        bpath = backing_dir / bname
        path = f"{prefix}/{name}"
        st = os.lstat(bpath)
        mode = stat.S_IMODE(st.st_mode)
        special = (parse_conflict(bname, _ENTRY_SUFFIXES) or (bname,))[0].endswith((".vfx", ".vxl"))
        if stat.S_ISDIR(st.st_mode) and not special:
            place = (place_name if place_name is not None else name).encode("utf-8", "surrogateescape")
            try:
                child_ids = self.read_dir_ids_v2(bpath, parent_id, place, strict)
            except IntegrityError as exc:
                self._problem(f"{path}: {exc}", strict)
                return
            out[path] = Entry("dir", mode=mode)
            self._walk_dir_v2(bpath, path, child_ids, out, strict)
        elif stat.S_ISREG(st.st_mode):
            kind, plain = decrypt_content_v2(bpath.read_bytes(), self.keys, self.block_size, path)
            if (kind == "file") == special:
                raise IntegrityError(f"{path}: a {kind} under a {'special' if special else 'file'} name")
            if kind == "file":
                out[path] = Entry("file", content=plain, mode=mode)
            else:
                target, rdev = decode_special(kind, plain, path)
                shown = target.decode("utf-8", "surrogateescape") if target is not None else None
                out[path] = Entry(kind, target=shown, mode=0o777 if kind == "symlink" else mode, rdev=rdev)
        else:
            self._problem(f"{path}: a backing entry of type 0o{stat.S_IFMT(st.st_mode):o} in a version-2 vault "
                          "(only regular files and directories)", strict)

    def _walk_dir_v1(self, backing_dir: Path, prefix: str, dir_id: bytes, out: dict[str, Entry],
                     strict: bool) -> None:
        names = sorted(os.listdir(backing_dir))
        present = set(names)
        for bname in names:
            if bname.startswith(RESERVED_PREFIX):
                continue
            bpath = backing_dir / bname
            if bname.endswith(".vfn"):
                if bname[:-4] + ".vfl" not in present:
                    self._problem(f"{bpath}: long-name sidecar without its .vfl entry", strict)
                continue
            try:
                if bname.endswith(".vfs"):
                    name = decode_name(bname, bname[:-4], dir_id, self.keys, long_form=False)
                elif bname.endswith(".vfl"):
                    name = decode_name(bname, self._read_sidecar(backing_dir, bname[:-4]), dir_id, self.keys,
                                       long_form=True)
                else:
                    raise IntegrityError(f"{bpath}: not a vaultfs entry name")
            except IntegrityError as exc:
                self._problem(f"{bpath}: {exc}", strict)
                continue
            path = f"{prefix}/{name}"
            st = os.lstat(bpath)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                try:
                    child_id = self.read_dir_id(bpath)
                except IntegrityError as exc:
                    self._problem(f"{path}: {exc}", strict)
                    continue
                out[path] = Entry("dir", mode=mode)
                self._walk_dir_v1(bpath, path, child_id, out, strict)
            elif stat.S_ISREG(st.st_mode):
                out[path] = Entry("file", content=decrypt_file(bpath.read_bytes(), self.keys, self.block_size, path),
                                  mode=mode)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = decode_symlink(os.readlink(bpath), self.keys, path)
                except IntegrityError as exc:
                    self._problem(str(exc), strict)
                    continue
                out[path] = Entry("symlink", target=target, mode=mode)
            elif stat.S_ISFIFO(st.st_mode):
                out[path] = Entry("fifo", mode=mode)
            elif stat.S_ISSOCK(st.st_mode):
                out[path] = Entry("socket", mode=mode)
            else:
                self._problem(f"{path}: unsupported backing file type {stat.S_IFMT(st.st_mode):o}", strict)

    @staticmethod
    def _read_sidecar(backing_dir: Path, digest: str, sidecar: str | None = None) -> str:
        """Read ``h.vfn`` and check SHA-256(e) against h; bounded to 1024 bytes before reading."""
        what = f"long name {digest}"
        if len(b32decode_strict(digest, what)) != 32:
            raise IntegrityError(f"{what}: digest is not 32 bytes")
        path = backing_dir / (sidecar or digest + ".vfn")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise IntegrityError(f"{what}: missing sidecar") from None
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{what}: sidecar is not a regular file")
        if st.st_size > MAX_SIDECAR:
            raise IntegrityError(f"{what}: sidecar larger than {MAX_SIDECAR} bytes")
        with open(path, "rb") as f:
            raw = f.read(MAX_SIDECAR + 1)
        if len(raw) > MAX_SIDECAR:
            raise IntegrityError(f"{what}: sidecar larger than {MAX_SIDECAR} bytes")
        if b32encode(hashlib.sha256(raw).digest()) != digest:
            raise IntegrityError(f"{what}: sidecar SHA-256 does not match its name")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError(f"{what}: sidecar is not ASCII") from None


def _read_config_file(backing: Path) -> bytes | None:
    """vaultfs.conf, else vaultfs.conf.bak (§4: MAY use the backup), else None."""
    for name in ("vaultfs.conf", "vaultfs.conf.bak"):
        try:
            return (backing / name).read_bytes()
        except FileNotFoundError:
            continue
    return None


def _version_from_root(root: Path, keys: Keys) -> int:
    """Without a config: a root record valid at the root's place (§5) means 2, a v1 record (§13) means 1."""
    data = (root / "vaultfs.dirid").read_bytes()
    for n in range(0, len(data) - 43, 44):
        if _opens(keys.dir_id, data[n:n + 44], DIRID_V2_LABEL + bytes(16)):
            return 2
    return 1


def open_vault(backing: str | os.PathLike[str], password: str | None = None,
               recovery_key: str | None = None) -> IndependentVault:
    """Unlock with a password or a recovery key. With a recovery key a missing config is tolerated
    (§2: MK alone suffices); with one present, the vault ID and MAC are checked either way."""
    if (password is None) == (recovery_key is None):
        raise ValueError("give exactly one of password and recovery_key")
    root = Path(backing)
    if os.path.lexists(root / "vaultfs.rekey"):  # §15: a rekey in progress; neither key names the whole tree
        raise DecryptError(f"{root}: a rekey is in progress (vaultfs.rekey); finish it before reading")
    mk = decode_recovery_key(recovery_key) if recovery_key is not None else None
    data = _read_config_file(root)
    if data is None:
        if mk is None:
            raise ConfigError(f"{root}: no vaultfs.conf")
        keys = Keys.derive(mk)
        return IndependentVault(root, keys, version=_version_from_root(root, keys))
    config = parse_config(data)
    if mk is None:
        assert password is not None
        mk = unwrap_password(config, password)
    keys = Keys.derive(mk)
    check_config(config, keys)
    return IndependentVault(root, keys, config.block_size, config, version=config.version)


# ---- CLI ----------------------------------------------------------------------------------------


def _read_password_file(path: str) -> str:
    """The file holds the password; one trailing newline (LF or CRLF) is an editor's, not the password's."""
    text = Path(path).read_text(encoding="utf-8")
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Independent vaultfs decrypter: print the plaintext tree.")
    parser.add_argument("backing")
    parser.add_argument("--password-file")
    parser.add_argument("--recovery-key")
    parser.add_argument("--lenient", action="store_true", help="hide and report bad entries instead of failing")
    args = parser.parse_args(argv)
    if (args.password_file is None) == (args.recovery_key is None):
        parser.error("give exactly one of --password-file and --recovery-key")
    try:
        password = _read_password_file(args.password_file) if args.password_file else None
        vault = open_vault(args.backing, password=password, recovery_key=args.recovery_key)
        tree = vault.walk(strict=not args.lenient)
    except DecryptError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for path in sorted(tree):
        entry = tree[path]
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if entry.kind == "file":
            assert entry.content is not None
            print(f"file    {shown}  size={len(entry.content)} sha256={hashlib.sha256(entry.content).hexdigest()}")
        elif entry.kind == "symlink":
            print(f"symlink {shown} -> {entry.target}")
        elif entry.kind in ("chardev", "blockdev"):
            print(f"{entry.kind:<7} {shown}  rdev={entry.rdev}")
        else:
            print(f"{entry.kind:<7} {shown}")
    for problem in vault.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 2 if vault.problems else 0


if __name__ == "__main__":
    sys.exit(main())
