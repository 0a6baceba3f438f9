"""An independent decrypter for the vaultfs on-disk format v1, written from docs/format.md alone.

Why it exists: it proves that the specification is sufficient to read a vault and that vaultfs
writes what the specification says. It therefore uses nothing from the ``vaultfs`` package, only
pycryptodome (``Crypto.*``), ``argon2-cffi`` for Argon2id (pycryptodome has none) and the Python
standard library. Section numbers (``§n``) refer to docs/format.md.

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
    """The last block authenticates only with is_last = 0 (§8): a crash mid-append, not tampering."""


# ---- constants and primitives (§1) --------------------------------------------------------

FORMAT_VERSION = 1
BLOCK_SIZE = 4096
HEADER_LEN = 40
GCM_NONCE = 12
GCM_TAG = 16
GCM_OVERHEAD = GCM_NONCE + GCM_TAG
SUITE_AES_GCM_HKDF = 0x01
MAGIC = b"VFS1"
CIPHER_SUITE = "AES-256-GCM+AES-SIV-512+HKDF-SHA256"
NAME_ENCODING = "AES-SIV+base32"
MAX_SHORT_BACKING_NAME = 220
MAX_SIDECAR = 1024
RESERVED_PREFIX = "vaultfs."
SYMLINK_AD = b"vaultfs/v1/symlink"
DIRID_AAD = b"vaultfs/v1/dir-id"
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
    if obj["version"] != FORMAT_VERSION:
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
    return Config(obj, vault_id, obj["block_size"], tuple(slots), mac)


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


# ---- file contents (§8) -------------------------------------------------------------------


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
    """Decrypt one regular file's backing bytes, verifying header, size, every block, index and is_last."""
    size = plaintext_size(len(data), block_size)
    header = data[:HEADER_LEN]
    if header[:4] != MAGIC:
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


# ---- names (§6) and symlinks (§7) ----------------------------------------------------------


def decode_name(backing_name: str, encrypted: str, dir_id: bytes, keys: Keys, long_form: bool) -> str:
    """Decrypt one entry name in the directory with ID ``dir_id``; return it as a str whose undecodable
    bytes are surrogate-escaped. Also requires the canonical short/long placement (see module report)."""
    what = f"name {backing_name!r}"
    if long_form != (len(encrypted) + 4 > MAX_SHORT_BACKING_NAME):
        raise IntegrityError(f"{what}: stored in the {'long' if long_form else 'short'} form but the spec "
                             f"places an encrypted name of {len(encrypted)} characters otherwise")
    sealed = b32decode_strict(encrypted, what)
    n = unpad16(siv_open(keys.name, sealed, dir_id, what), what)
    if not 1 <= len(n) <= 255 or n in (b".", b"..") or b"/" in n or b"\x00" in n:
        raise IntegrityError(f"{what}: decrypted name {n!r} is not a valid name")
    name = n.decode("utf-8", "surrogateescape")
    if unicodedata.normalize("NFC", name) != name:
        raise IntegrityError(f"{what}: decrypted name {name!r} is not in NFC")
    return name


def decode_symlink(target: str, keys: Keys, what: str) -> str:
    sealed = b32decode_strict(target, f"{what}: symlink target")
    plain = unpad16(siv_open(keys.name, sealed, SYMLINK_AD, f"{what}: symlink target"), f"{what}: symlink target")
    return plain.decode("utf-8", "surrogateescape")


# ---- the vault --------------------------------------------------------------------------------


@dataclass
class Entry:
    """One plaintext entry: ``kind`` is file, dir, symlink, fifo or socket."""

    kind: str
    content: bytes | None = None
    target: str | None = None
    mode: int = 0


@dataclass
class IndependentVault:
    """An unlocked vault: keys plus the backing path. ``problems`` collects what a lenient walk hid."""

    backing: Path
    keys: Keys
    block_size: int = BLOCK_SIZE
    config: Config | None = None
    problems: list[str] = field(default_factory=list)

    def read_dir_id(self, backing_dir: Path) -> bytes:
        """Unseal ``vaultfs.dirid`` (44 bytes): its absence or failure is an integrity error (§5)."""
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

    def walk(self, strict: bool = True) -> dict[str, Entry]:
        """Every plaintext path ("/dir/name") below the root, with file contents decrypted.

        strict (the default) raises on the first problem of any kind; lenient hides entries whose name
        or directory fails (as §6 asks of a filesystem) and records them in ``problems``. File contents
        that fail authentication raise in both modes: wrong data is never returned."""
        root_id = self.read_dir_id(self.backing)
        if not hmac.compare_digest(root_id, self.keys.root_dir_id):
            raise IntegrityError("root vaultfs.dirid does not hold the derived root directory ID")
        out: dict[str, Entry] = {}
        self._walk_dir(self.backing, "", root_id, out, strict)
        return out

    def _problem(self, message: str, strict: bool) -> None:
        if strict:
            raise IntegrityError(message)
        self.problems.append(message)

    def _walk_dir(self, backing_dir: Path, prefix: str, dir_id: bytes, out: dict[str, Entry], strict: bool) -> None:
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
                self._walk_dir(bpath, path, child_id, out, strict)
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
    def _read_sidecar(backing_dir: Path, digest: str) -> str:
        """Read ``h.vfn`` and check SHA-256(e) against h; bounded to 1024 bytes before reading."""
        what = f"long name {digest}.vfl"
        if len(b32decode_strict(digest, what)) != 32:
            raise IntegrityError(f"{what}: digest is not 32 bytes")
        path = backing_dir / (digest + ".vfn")
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


def open_vault(backing: str | os.PathLike[str], password: str | None = None,
               recovery_key: str | None = None) -> IndependentVault:
    """Unlock with a password or a recovery key. With a recovery key a missing config is tolerated
    (§2: MK alone suffices); with one present, the vault ID and MAC are checked either way."""
    if (password is None) == (recovery_key is None):
        raise ValueError("give exactly one of password and recovery_key")
    root = Path(backing)
    mk = decode_recovery_key(recovery_key) if recovery_key is not None else None
    data = _read_config_file(root)
    if data is None:
        if mk is None:
            raise ConfigError(f"{root}: no vaultfs.conf")
        return IndependentVault(root, Keys.derive(mk))
    config = parse_config(data)
    if mk is None:
        assert password is not None
        mk = unwrap_password(config, password)
    keys = Keys.derive(mk)
    check_config(config, keys)
    return IndependentVault(root, keys, config.block_size, config)


# ---- CLI ----------------------------------------------------------------------------------------


def _read_password_file(path: str) -> str:
    """The file holds the password; one trailing newline (LF or CRLF) is an editor's, not the password's."""
    text = Path(path).read_text(encoding="utf-8")
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Independent vaultfs v1 decrypter: print the plaintext tree.")
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
        else:
            print(f"{entry.kind:<7} {shown}")
    for problem in vault.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 2 if vault.problems else 0


if __name__ == "__main__":
    sys.exit(main())
