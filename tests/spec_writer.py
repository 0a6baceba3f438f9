"""A spec-following *encryptor* for vaultfs formats v1 and v2, written from docs/format.md.

Built on the ``cryptography`` package (not pycryptodome, which the independent decrypter uses, and
not vaultfs), so that the writer, the decrypter and vaultfs share no implementation. It writes whole
vaults from a plaintext tree of ``independent_decrypter.Entry`` values: version 1 (section 13, what
``vaultfs upgrade`` reads; FIFOs, sockets, device nodes, hard links, sync-conflict copies and damage
included) and version 2 (bytes names, directory IDs bound to their place, ``.vfx`` specials, sparse
files with holes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF as CryptographyHKDF

from tests import independent_decrypter as idec

CHEAP = (1024, 1, 1)
B = 4096
STORED = B + 28
KIND_BYTES = {"file": 1, "symlink": 2, "fifo": 3, "socket": 4, "chardev": 5, "blockdev": 6}


def w_hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return CryptographyHKDF(algorithm=hashes.SHA256(), length=length, salt=salt if salt else b"\x00" * 32,
                            info=info).derive(ikm)


@dataclass
class WKeys:
    mk: bytes

    def __post_init__(self) -> None:
        d = self.mk
        self.vault_id = w_hkdf(d, None, b"vaultfs/v1/vault-id", 16)
        self.root_id = w_hkdf(d, None, b"vaultfs/v1/root-dir-id", 16)
        self.kc = w_hkdf(d, None, b"vaultfs/v1/content-key", 32)
        self.kn = w_hkdf(d, None, b"vaultfs/v1/name-key", 64)
        self.kd = w_hkdf(d, None, b"vaultfs/v1/dir-id-key", 32)
        self.km = w_hkdf(d, None, b"vaultfs/v1/config-mac-key", 32)


def w_seal(key: bytes, plain: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plain, aad)


def w_pad16(x: bytes) -> bytes:
    k = 16 - len(x) % 16
    return x + bytes([k]) * k


def w_b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def w_name(kn: bytes, dir_id: bytes, name: str, version: int = 1, special: bool = False) -> tuple[str, str | None]:
    """Backing entry name and, for a long name, the sidecar text (§6; v1 normalises to NFC, §13)."""
    if version == 1:
        name = unicodedata.normalize("NFC", name)
    n = name.encode("utf-8", "surrogateescape")
    e = w_b32(AESSIV(kn).encrypt(w_pad16(n), [dir_id]))
    short, long = (".vfx", ".vxl") if special else (".vfs", ".vfl")
    if len(e) + 4 <= 220:
        return e + short, None
    return w_b32(hashlib.sha256(e.encode("ascii")).digest()) + long, e


def w_symlink(kn: bytes, target: str) -> str:
    """v1 (§13): a backing symlink's encrypted target."""
    return w_b32(AESSIV(kn).encrypt(w_pad16(target.encode("utf-8", "surrogateescape")), [b"vaultfs/v1/symlink"]))


def w_file(kc: bytes, data: bytes, torn: bool = False) -> bytes:
    """v1 (§13): header ‖ blocks; ``torn`` leaves the final block marked not-last, as a crash mid-append would."""
    file_id = os.urandom(32)
    header = b"VFS1\x01\x0c\x00\x00" + file_id
    kf = w_hkdf(kc, file_id, b"vaultfs/v1/file-key", 32)
    n = max(1, -(-len(data) // B))
    out = bytearray(header)
    for i in range(n):
        last = i == n - 1 and not torn
        out += w_seal(kf, data[i * B:(i + 1) * B], header + i.to_bytes(8, "big") + (b"\x01" if last else b"\x00"))
    return bytes(out)


def w_file_v2(kc: bytes, data: bytes, kind: str = "file", sparse: bool = False, torn: bool = False) -> bytes:
    """§7: a VFS2 content file. ``sparse``: flag bit 0, and every whole block of zeros but the last is a hole."""
    file_id = os.urandom(32)
    header = b"VFS2\x01\x0c" + bytes([KIND_BYTES[kind], 1 if sparse else 0]) + file_id
    header_aad = header[:7] + b"\x00" + header[8:]
    kf = w_hkdf(kc, file_id, b"vaultfs/v1/file-key", 32)
    n = max(1, -(-len(data) // B))
    out = bytearray(header)
    run: int | None = None
    for i in range(n):
        chunk = data[i * B:(i + 1) * B]
        last = i == n - 1
        if sparse and not last and chunk == bytes(B):
            out += bytes(STORED)
            run = i if run is None else run
            continue
        start = i if run is None else run
        aad = header_aad + i.to_bytes(8, "big") + bytes([last and not torn]) + start.to_bytes(8, "big")
        out += w_seal(kf, chunk, aad)
        run = None
    return bytes(out)


def w_dirid_v2(kd: bytes, dir_id: bytes, parent_id: bytes, name: bytes) -> bytes:
    """§5: one record bound to (parent ID, name)."""
    return w_seal(kd, dir_id, b"vaultfs/v2/dir-id" + parent_id + name)


def w_canon(v: object) -> bytes:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def w_slot(keys: WKeys, slot_id: int, password: str, kdf: tuple[int, int, int]) -> dict[str, object]:
    from argon2.low_level import Type, hash_secret_raw

    m, t, p = kdf
    salt = os.urandom(32)
    kdf_obj = {"algorithm": "argon2id", "memory_kib": m, "time_cost": t, "parallelism": p, "salt": salt.hex()}
    kek = hash_secret_raw(unicodedata.normalize("NFC", password).encode("utf-8"), salt, time_cost=t,
                          memory_cost=m, parallelism=p, hash_len=32, type=Type.ID, version=19)
    wrapped = w_seal(kek, keys.mk, keys.vault_id + slot_id.to_bytes(4, "big") + w_canon(kdf_obj))
    return {"id": slot_id, "type": "password", "kdf": kdf_obj, "wrapped_key": wrapped.hex()}


def w_mac(keys: WKeys, conf: dict[str, object]) -> dict[str, object]:
    """Return ``conf`` with a fresh MAC (used after deliberate edits, to get past the MAC check)."""
    body = {k: v for k, v in conf.items() if k != "mac"}
    return {**body, "mac": hmac.new(keys.km, w_canon(body), hashlib.sha256).hexdigest()}


def w_config(keys: WKeys, password: str, kdf: tuple[int, int, int] = CHEAP, version: int = 1) -> dict[str, object]:
    conf = {"format": "vaultfs", "version": version, "vault_id": keys.vault_id.hex(),
            "cipher_suite": "AES-256-GCM+AES-SIV-512+HKDF-SHA256", "block_size": 4096,
            "name_encoding": "AES-SIV+base32", "slots": [w_slot(keys, 1, password, kdf)]}
    return w_mac(keys, conf)


def w_recovery_key(mk: bytes) -> str:
    """§3, written independently of the decoder: 272 bits + 3 zero bits → 55 Crockford symbols."""
    bits = int.from_bytes(mk + hashlib.sha256(b"vaultfs/v1/recovery-key" + mk).digest()[:2], "big") << 3
    symbols = "".join(idec.CROCKFORD[(bits >> (5 * (54 - i))) & 31] for i in range(55))
    return "-".join(symbols[i:i + 5] for i in range(0, 55, 5))


def write_config(backing: Path, conf: dict[str, object]) -> None:
    (backing / "vaultfs.conf").write_text(json.dumps(conf, indent=2), encoding="utf-8")


@dataclass
class Extras:
    """What a tree of entries cannot say: hard links, conflict copies, more directory IDs, damage."""

    torn: frozenset[str] = frozenset()  # files whose last block is left marked not-last
    links: dict[str, str] = field(default_factory=dict)  # new path -> existing path (a hard link)
    copies: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (original path, client suffix)
    extra_ids: dict[str, str] = field(default_factory=dict)  # dir path -> name of a second ID file in it
    under_second: frozenset[str] = frozenset()  # entries whose names are encrypted under their parent's second ID
    sparse: frozenset[str] = frozenset()  # v2 files written with holes


def write_vault(backing: Path, tree: dict[str, idec.Entry], password: str, kdf: tuple[int, int, int] = CHEAP,
                torn: frozenset[str] = frozenset(), version: int = 1, extras: Extras | None = None) -> WKeys:
    """Write a whole vault per the spec from a plaintext tree (parents must precede children).

    ``extras.copies`` maps a path to (original, suffix): the entry is written under the original's
    backing name with a client's suffix before the extension (for v1 or v2), as a sync client leaves
    a conflict copy; its plaintext name in ``tree`` is only a handle for the test.
    """
    extras = extras or Extras(torn=torn)
    keys = WKeys(os.urandom(32))
    backing.mkdir(parents=True)
    write_config(backing, w_config(keys, password, kdf, version))
    dirs: dict[str, tuple[Path, bytes]] = {"": (backing, keys.root_id)}
    second_ids: dict[str, bytes] = {}
    located: dict[str, Path] = {}  # backing paths written so far, for hard links
    _write_dirid(keys, backing, keys.root_id, bytes(16), b"", version)
    for path in sorted(tree, key=lambda p: p.count("/")):
        entry = tree[path]
        parent, _, name = path.rpartition("/")
        where, dir_id = dirs[parent]
        if path in extras.under_second:
            dir_id = second_ids[parent]
        place_name = name
        suffix = ""
        if path in extras.copies:
            original, suffix = extras.copies[path]
            place_name = original.rpartition("/")[2]
        special = version == 2 and entry.kind not in ("file", "dir")
        bname, sidecar = w_name(keys.kn, dir_id, place_name, version, special)
        if suffix:
            bname = bname[:-4] + suffix + bname[-4:]
        if sidecar is not None:
            (where / (bname[:-4] + ".vfn")).write_text(sidecar, encoding="ascii")
        target = where / bname
        if path in extras.links:
            os.link(located[extras.links[path]], target)
            located[path] = target
            continue
        if entry.kind == "dir":
            target.mkdir()
            new_id = os.urandom(16)
            _write_dirid(keys, target, new_id, dir_id, place_name.encode("utf-8", "surrogateescape"), version)
            if path in extras.extra_ids:  # a second device made the same directory: its ID as a conflict copy
                second = os.urandom(16)
                record = w_seal(keys.kd, second, b"vaultfs/v1/dir-id") if version == 1 else \
                    w_dirid_v2(keys.kd, second, dir_id, place_name.encode("utf-8", "surrogateescape"))
                (target / extras.extra_ids[path]).write_bytes(record)
                second_ids[path] = second
            dirs[path] = (target, new_id)
        elif entry.kind == "file":
            assert entry.content is not None
            data = w_file(keys.kc, entry.content, torn=path in extras.torn) if version == 1 else \
                w_file_v2(keys.kc, entry.content, sparse=path in extras.sparse, torn=path in extras.torn)
            target.write_bytes(data)
        elif version == 2:
            payload = (entry.target or "").encode("utf-8", "surrogateescape") if entry.kind == "symlink" else \
                entry.rdev.to_bytes(8, "big") if entry.kind in ("chardev", "blockdev") else b""
            target.write_bytes(w_file_v2(keys.kc, payload, kind=entry.kind))
        elif entry.kind == "symlink":
            assert entry.target is not None
            os.symlink(w_symlink(keys.kn, entry.target), target)
        elif entry.kind == "fifo":
            os.mkfifo(target)
        elif entry.kind == "socket":
            os.mknod(target, stat.S_IFSOCK | 0o644)
        elif entry.kind in ("chardev", "blockdev"):
            os.mknod(target, (stat.S_IFCHR if entry.kind == "chardev" else stat.S_IFBLK) | 0o600, entry.rdev)
        else:
            raise AssertionError(entry.kind)
        if entry.kind != "dir" and entry.mode and not (version == 1 and entry.kind == "symlink"):
            os.chmod(target, entry.mode)
        located[path] = target
    return keys


def _write_dirid(keys: WKeys, where: Path, dir_id: bytes, parent_id: bytes, name: bytes, version: int) -> None:
    record = w_seal(keys.kd, dir_id, b"vaultfs/v1/dir-id") if version == 1 else \
        w_dirid_v2(keys.kd, dir_id, parent_id, name)
    (where / "vaultfs.dirid").write_bytes(record)


def copy_vault(src: Path, dst: Path) -> Path:
    """``cp -a``: symlinks, FIFOs, sockets, device nodes, hard links, modes and times as they are."""
    subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)
    return dst


def summary(tree: dict[str, idec.Entry]) -> dict[str, tuple[str, bytes | None, str | None]]:
    """What a comparison should look at: kind, content, target (modes are the backing's, unencrypted)."""
    return {p: (e.kind, e.content, e.target) for p, e in tree.items()}


def backing_path(backing: Path, keys: WKeys | idec.Keys, path: str, version: int = 1) -> Path:
    """Locate a plaintext path's backing entry (v1, or v2 where a place binds each directory's ID)."""
    kn = keys.kn if isinstance(keys, WKeys) else keys.name
    kd = keys.kd if isinstance(keys, WKeys) else keys.dir_id
    where, parent_id, place = backing, bytes(16), b""
    parts = path.strip("/").split("/")
    for n, name in enumerate(parts):
        record = (where / "vaultfs.dirid").read_bytes()[:44]
        if version == 1:
            dir_id = idec.gcm_open(kd, record, b"vaultfs/v1/dir-id", "dirid")
        else:
            dir_id = idec.gcm_open(kd, record, b"vaultfs/v2/dir-id" + parent_id + place, "dirid")
        short = where / w_name(kn, dir_id, name, version)[0]
        if version == 2 and n == len(parts) - 1 and not short.exists():
            short = where / w_name(kn, dir_id, name, version, special=True)[0]
        where, parent_id, place = short, dir_id, name.encode("utf-8", "surrogateescape")
    return where
