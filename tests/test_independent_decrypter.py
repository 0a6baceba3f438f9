"""The independent decrypter (tests/independent_decrypter.py) against three writers.

1. The committed vector vault, with the password and with the recovery key.
2. A fresh vault written by vaultfs through its Vault API (format version 2), including appends,
   truncation, sparse extension, renames, symlinks and a FIFO.
3. A tiny spec-following *encryptor* in this module, built on the ``cryptography`` package rather
   than pycryptodome, so the two sides share no primitive implementation: it checks the decrypter's
   pieces and, read back by vaultfs, checks vaultfs's reader against the spec from the writer side.

Negative tests check that every kind of damage raises, never returns wrong data.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from tests import format_walk
from tests import independent_decrypter as idec
from tests.spec_writer import (
    WKeys,
    backing_path,
    copy_vault,
    summary,
    w_b32,
    w_file,
    w_hkdf,
    w_mac,
    w_pad16,
    w_recovery_key,
    w_seal,
    write_config,
    write_vault,
)
from vaultfs.format import keyfile
from vaultfs.format.keyfile import KdfParams
from vaultfs.tools import upgrade
from vaultfs.vault import Vault, init_vault

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"
DECRYPTER = REPO / "tests" / "independent_decrypter.py"
B = 4096


# ---- synthetic vaults: the decrypter's pieces --------------------------------------------------

PASSWORD = "pässwörd \u212b"  # Å as the Angstrom sign: NFC-normalised to U+00C5 before Argon2id
NAME_111 = "n" * 111
NAME_112 = "n" * 112
NAME_255 = "é" * 127 + "x"
SYNTH_TREE: dict[str, idec.Entry] = {
    "/empty": idec.Entry("file", content=b""),
    "/one": idec.Entry("file", content=b"1"),
    "/4096": idec.Entry("file", content=os.urandom(4096)),
    "/4097": idec.Entry("file", content=os.urandom(4097)),
    "/8192": idec.Entry("file", content=os.urandom(8192)),
    "/Ünïcödé dïr": idec.Entry("dir"),
    "/Ünïcödé dïr/日本語.txt": idec.Entry("file", content="テキスト".encode()),
    "/Ünïcödé dïr/sub": idec.Entry("dir"),
    f"/Ünïcödé dïr/sub/{NAME_111}": idec.Entry("file", content=b"short form"),
    f"/Ünïcödé dïr/sub/{NAME_112}": idec.Entry("file", content=b"long form"),
    f"/Ünïcödé dïr/sub/{NAME_255}": idec.Entry("dir"),
    f"/Ünïcödé dïr/sub/{NAME_255}/x": idec.Entry("file", content=b"deep"),
    "/lnk": idec.Entry("symlink", target="Ünïcödé dïr/日本語.txt"),
    "/abs": idec.Entry("symlink", target="/etc/passwd"),
    "/pipe": idec.Entry("fifo"),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WKeys]:
    backing = tmp_path_factory.mktemp("synth") / "v"
    return backing, write_vault(backing, SYNTH_TREE, PASSWORD)


@pytest.fixture
def synth_copy(synth: tuple[Path, WKeys], tmp_path: Path) -> tuple[Path, WKeys]:
    target = tmp_path / "v"
    copy_vault(synth[0], target)
    return target, synth[1]


def test_synthetic_vault_decrypts_with_password_and_recovery_key(synth: tuple[Path, WKeys]) -> None:
    backing, keys = synth
    by_password = idec.open_vault(backing, password=unicodedata.normalize("NFD", PASSWORD))
    assert by_password.keys.master == keys.mk
    assert summary(by_password.walk()) == summary(SYNTH_TREE)
    by_key = idec.open_vault(backing, recovery_key=w_recovery_key(keys.mk))
    assert summary(by_key.walk()) == summary(SYNTH_TREE)


def test_name_threshold_places_111_bytes_short_and_112_long(synth: tuple[Path, WKeys]) -> None:
    backing, keys = synth
    assert backing_path(backing, keys, f"/Ünïcödé dïr/sub/{NAME_111}").suffix == ".vfs"
    assert backing_path(backing, keys, f"/Ünïcödé dïr/sub/{NAME_112}").suffix == ".vfl"


def test_keys_match_an_independent_hkdf(synth: tuple[Path, WKeys]) -> None:
    keys = idec.Keys.derive(synth[1].mk)
    w = synth[1]
    assert (keys.vault_id, keys.root_dir_id, keys.content, keys.name, keys.dir_id, keys.config_mac) == (
        w.vault_id, w.root_id, w.kc, w.kn, w.kd, w.km)
    file_id = bytes(range(32))
    assert keys.file_key(file_id) == w_hkdf(w.kc, file_id, b"vaultfs/v1/file-key", 32)


def test_vaultfs_upgrades_and_reads_a_vault_written_from_the_spec(synth_copy: tuple[Path, WKeys]) -> None:
    """Writer-side interop: vaultfs must upgrade and read what the spec (as this suite's encryptor reads it)
    says a version-1 vault is; the independent decrypter then agrees with vaultfs on the result."""
    backing, _ = synth_copy
    upgrade_in_process(backing, PASSWORD)
    keys = format_walk.unlock(backing, PASSWORD)
    assert summary(format_walk.walk_v2(backing, keys)) == summary(SYNTH_TREE)
    assert summary(idec.open_vault(backing, password=PASSWORD).walk()) == summary(SYNTH_TREE)


def upgrade_in_process(backing: Path, password: str) -> None:
    config = keyfile.load_config(str(backing), allow_v1=True)
    upgrade.upgrade(str(backing), keyfile.unwrap(config, password), config)


def test_recovery_key_decoding_accepts_what_the_spec_allows() -> None:
    mk = os.urandom(32)
    key = w_recovery_key(mk)
    assert len(key) == 65 and key.count("-") == 10
    assert idec.decode_recovery_key(key) == mk
    plain = key.replace("-", "").lower().replace("0", "o").replace("1", "l")
    sloppy = " ".join(plain[i:i + 3] for i in range(0, 55, 3))
    assert idec.decode_recovery_key(sloppy + "\n") == mk
    assert idec.decode_recovery_key(key.replace("1", "I").replace("0", "O")) == mk


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda k: k[:-1] + ("0" if k[-1] != "0" else "8"), id="one-symbol-changed"),
    pytest.param(lambda k: k[:3] + k[4] + k[3] + k[5:], id="transposition"),
    pytest.param(lambda k: k[:-1], id="one-symbol-short"),
    pytest.param(lambda k: k + "0", id="one-symbol-long"),
    pytest.param(lambda k: k[:-1] + "U", id="symbol-U-not-in-alphabet"),
    pytest.param(lambda k: k[:-1] + "*", id="symbol-star"),
])
def test_mistyped_recovery_key_is_rejected_before_decryption(mutate: Callable[[str], str]) -> None:
    mk = bytes(range(32))
    key = w_recovery_key(mk)
    bad = mutate(key)
    assert bad != key
    with pytest.raises(idec.MistypedRecoveryKey):
        idec.decode_recovery_key(bad)


def test_recovery_key_with_non_zero_padding_bits_is_rejected() -> None:
    key = w_recovery_key(bytes(32))
    last = idec.CROCKFORD.index(key[-1])
    assert last & 0b111 == 0
    with pytest.raises(idec.MistypedRecoveryKey, match="padding"):
        idec.decode_recovery_key(key[:-1] + idec.CROCKFORD[last | 1])


def test_plaintext_size_inverts_the_formula_and_rejects_impossible_sizes() -> None:
    possible = set()
    for p in [*range(0, 3 * B + 2), 1 << 20, (1 << 20) + 1]:
        size = 40 + p + 28 * max(1, -(-p // B))
        assert idec.plaintext_size(size) == p
        possible.add(size)
    for size in range(0, 40 + 3 * (B + 28) + 30):
        if size not in possible:
            with pytest.raises(idec.IntegrityError):
                idec.plaintext_size(size)


@pytest.mark.parametrize("text", ["MZXW6", "mzxw6===", "mzxw7", "mzx", "mzxw6!", "mzxw6 "])
def test_base32_must_reencode_to_itself(text: str) -> None:
    with pytest.raises(idec.IntegrityError):
        idec.b32decode_strict(text, "test")
    assert idec.b32decode_strict("mzxw6", "test") == b"foo"


def test_siv_tag_order_matches_rfc5297() -> None:
    key, ad = os.urandom(64), os.urandom(16)
    sealed = AESSIV(key).encrypt(w_pad16(b"name"), [ad])
    assert idec.unpad16(idec.siv_open(key, sealed, ad, "t"), "t") == b"name"
    with pytest.raises(idec.IntegrityError):
        idec.siv_open(key, sealed[16:] + sealed[:16], ad, "t")


@pytest.mark.parametrize("padded", [b"abc" + b"\x00" * 13, b"abc" + b"\x11" * 13, b"a" * 15 + b"\x02", b"", b"a" * 17])
def test_invalid_padding_is_rejected(padded: bytes) -> None:
    with pytest.raises(idec.IntegrityError):
        idec.unpad16(padded, "t")


def _edit(conf: dict, path: str, value: object) -> dict:
    """Set (or with value=DELETE remove) a member addressed as "a.b.0.c"."""
    conf = json.loads(json.dumps(conf))
    *parents, last = path.split(".")
    node = conf
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return conf


DELETE = object()
CONFIG_DAMAGE = [
    ("extra", 1, idec.ConfigError),
    ("mac", DELETE, idec.ConfigError),
    ("vault_id", "UPPER", idec.ConfigError),
    ("slots.0.kdf.salt", "ab" * 31, idec.ConfigError),
    ("slots.0.kdf.extra", 1, idec.ConfigError),
    ("slots.0.wrapped_key", "AB" * 60, idec.ConfigError),
    ("slots.0.id", True, idec.ConfigError),
    ("slots.0.id", 0, idec.ConfigError),
    ("slots.0.id", 65536, idec.ConfigError),
    ("slots.0.type", "keyfile", idec.ConfigError),
    ("slots.0.kdf.algorithm", "argon2i", idec.ConfigError),
    ("slots.0.kdf.memory_kib", 4194305, idec.ConfigError),
    ("slots.0.kdf.memory_kib", 7, idec.ConfigError),
    ("slots.0.kdf.time_cost", 65, idec.ConfigError),
    ("slots.0.kdf.time_cost", 0, idec.ConfigError),
    ("slots.0.kdf.parallelism", 65, idec.ConfigError),
    ("slots.0.kdf.parallelism", 0, idec.ConfigError),
    ("slots.0.kdf.memory_kib", 1024.0, idec.ConfigError),
    ("slots", [], idec.ConfigError),
    ("block_size", 8192, idec.ConfigError),
    ("cipher_suite", "AES-128", idec.ConfigError),
    ("version", 3, idec.UnsupportedFormat),
    ("version", "1", idec.ConfigError),
    ("format", "other", idec.ConfigError),
]


@pytest.mark.parametrize(("member", "value", "error"), CONFIG_DAMAGE, ids=[f"{m}={v!r}" for m, v, _ in CONFIG_DAMAGE])
def test_malformed_config_is_rejected_before_any_kdf(synth_copy: tuple[Path, WKeys], member: str, value: object,
                                                     error: type[Exception]) -> None:
    backing, _ = synth_copy
    conf = json.loads((backing / "vaultfs.conf").read_text())
    write_config(backing, _edit(conf, member, value))
    with pytest.raises(error):
        idec.open_vault(backing, password=PASSWORD)


def test_duplicate_json_members_are_rejected(synth_copy: tuple[Path, WKeys]) -> None:
    backing, _ = synth_copy
    text = (backing / "vaultfs.conf").read_text()
    (backing / "vaultfs.conf").write_text(text.replace('"version": 1', '"version": 1, "version": 1'))
    with pytest.raises(idec.ConfigError, match="duplicate"):
        idec.open_vault(backing, password=PASSWORD)


def test_config_edit_fails_the_mac(synth_copy: tuple[Path, WKeys]) -> None:
    """A second slot copied from the first parses and the first still unwraps, but the MAC catches it."""
    backing, _ = synth_copy
    conf = json.loads((backing / "vaultfs.conf").read_text())
    conf["slots"].append({**conf["slots"][0], "id": 2})
    write_config(backing, conf)
    with pytest.raises(idec.IntegrityError, match="MAC"):
        idec.open_vault(backing, password=PASSWORD)


def test_kdf_downgrade_looks_like_a_wrong_password(tmp_path: Path) -> None:
    backing = tmp_path / "v"
    keys = write_vault(backing, {"/f": idec.Entry("file", content=b"x")}, PASSWORD, kdf=(2048, 2, 1))
    assert idec.open_vault(backing, password=PASSWORD).walk()["/f"].content == b"x"
    conf = json.loads((backing / "vaultfs.conf").read_text())
    conf["slots"][0]["kdf"].update(memory_kib=1024, time_cost=1)
    write_config(backing, w_mac(keys, conf))  # even with a valid MAC (an attacker has no KM, but still)
    with pytest.raises(idec.WrongPassword):
        idec.open_vault(backing, password=PASSWORD)


def test_slot_id_is_bound_into_the_wrapping(synth_copy: tuple[Path, WKeys]) -> None:
    backing, keys = synth_copy
    conf = json.loads((backing / "vaultfs.conf").read_text())
    conf["slots"][0]["id"] = 7
    write_config(backing, w_mac(keys, conf))
    with pytest.raises(idec.WrongPassword):
        idec.open_vault(backing, password=PASSWORD)


def test_recovery_key_of_another_vault_is_a_wrong_key(synth: tuple[Path, WKeys]) -> None:
    with pytest.raises(idec.WrongKey):
        idec.open_vault(synth[0], recovery_key=w_recovery_key(os.urandom(32)))


def test_lost_config_opens_with_recovery_key_and_backup_with_password(synth_copy: tuple[Path, WKeys]) -> None:
    backing, keys = synth_copy
    os.rename(backing / "vaultfs.conf", backing / "vaultfs.conf.bak")
    assert summary(idec.open_vault(backing, password=PASSWORD).walk()) == summary(SYNTH_TREE)
    os.unlink(backing / "vaultfs.conf.bak")
    assert summary(idec.open_vault(backing, recovery_key=w_recovery_key(keys.mk)).walk()) == summary(SYNTH_TREE)
    with pytest.raises(idec.ConfigError):
        idec.open_vault(backing, password=PASSWORD)


def test_torn_append_is_reported_as_such(tmp_path: Path) -> None:
    backing = tmp_path / "v"
    write_vault(backing, {"/f": idec.Entry("file", content=b"a" * 5000)}, PASSWORD, torn=frozenset({"/f"}))
    with pytest.raises(idec.TornAppend):
        idec.open_vault(backing, password=PASSWORD).walk()


def test_non_nfc_name_is_rejected(tmp_path: Path) -> None:
    """The encryptor NFC-normalises; plant an NFD name by hand to see the decrypter refuse it."""
    backing = tmp_path / "v"
    keys = write_vault(backing, {}, PASSWORD)
    nfd = unicodedata.normalize("NFD", "café").encode()
    e = w_b32(AESSIV(keys.kn).encrypt(w_pad16(nfd), [keys.root_id]))
    (backing / (e + ".vfs")).write_bytes(w_file(keys.kc, b""))
    with pytest.raises(idec.IntegrityError, match="NFC"):
        idec.open_vault(backing, password=PASSWORD).walk()


@pytest.mark.parametrize("bad", [b".", b"..", b"a/b", b"a\x00b", b"x" * 256])
def test_invalid_decrypted_names_are_rejected(tmp_path: Path, bad: bytes) -> None:
    backing = tmp_path / "v"
    keys = write_vault(backing, {}, PASSWORD)
    e = w_b32(AESSIV(keys.kn).encrypt(w_pad16(bad), [keys.root_id]))
    if len(e) + 4 <= 220:
        (backing / (e + ".vfs")).write_bytes(w_file(keys.kc, b""))
    else:
        h = w_b32(hashlib.sha256(e.encode()).digest())
        (backing / (h + ".vfn")).write_text(e)
        (backing / (h + ".vfl")).write_bytes(w_file(keys.kc, b""))
    with pytest.raises(idec.IntegrityError):
        idec.open_vault(backing, password=PASSWORD).walk()


def test_long_name_in_short_form_is_rejected(tmp_path: Path) -> None:
    """Canonical placement (see report): a 112-byte name under its full .vfs name is not what §6 writes."""
    backing = tmp_path / "v"
    keys = write_vault(backing, {}, PASSWORD)
    e = w_b32(AESSIV(keys.kn).encrypt(w_pad16(b"n" * 112), [keys.root_id]))
    (backing / (e + ".vfs")).write_bytes(w_file(keys.kc, b""))
    with pytest.raises(idec.IntegrityError, match="form"):
        idec.open_vault(backing, password=PASSWORD).walk()


def test_lenient_walk_hides_and_reports_foreign_entries(synth_copy: tuple[Path, WKeys]) -> None:
    backing, _ = synth_copy
    (backing / "desktop.ini").write_text("x")
    (backing / "vaultfs.other").write_text("reserved: silently ignored")
    vault = idec.open_vault(backing, password=PASSWORD)
    with pytest.raises(idec.IntegrityError, match="desktop.ini"):
        vault.walk()
    assert summary(vault.walk(strict=False)) == summary(SYNTH_TREE)
    assert len(vault.problems) == 1 and "desktop.ini" in vault.problems[0]


# ---- (a) the committed vector vault ------------------------------------------------------------

VECTOR = json.loads((VECTORS / "v1.json").read_text(encoding="utf-8"))


def as_vector_tree(tree: dict[str, idec.Entry]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for path, e in tree.items():
        if e.kind == "file":
            assert e.content is not None
            out[path] = {"type": "file", "size": len(e.content), "sha256": hashlib.sha256(e.content).hexdigest()}
        elif e.kind == "symlink":
            out[path] = {"type": "symlink", "target": e.target}
        else:
            out[path] = {"type": e.kind}
    return out


@pytest.fixture
def vector_copy(tmp_path: Path) -> Path:
    target = tmp_path / "v1"
    copy_vault(VECTORS / "v1", target)
    return target


def test_vector_vault_decrypts_with_password() -> None:
    vault = idec.open_vault(VECTORS / "v1", password=VECTOR["password"])
    assert as_vector_tree(vault.walk()) == VECTOR["tree"]


def test_vector_vault_decrypts_with_recovery_key() -> None:
    by_key = idec.open_vault(VECTORS / "v1", recovery_key=VECTOR["recovery_key"])
    assert as_vector_tree(by_key.walk()) == VECTOR["tree"]
    assert by_key.keys.master == idec.open_vault(VECTORS / "v1", password=VECTOR["password"]).keys.master


def test_vector_kdf_is_the_recorded_one() -> None:
    conf = idec.parse_config((VECTORS / "v1" / "vaultfs.conf").read_bytes())
    recorded = VECTOR["kdf"]
    assert [(s.kdf["memory_kib"], s.kdf["time_cost"], s.kdf["parallelism"]) for s in conf.slots] == [
        (recorded["memory_kib"], recorded["time_cost"], recorded["parallelism"])]


def test_cli_prints_the_vector_tree(tmp_path: Path) -> None:
    passfile = tmp_path / "pw"
    passfile.write_text(VECTOR["password"] + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(DECRYPTER), str(VECTORS / "v1"), "--password-file", str(passfile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "symlink /link -> chats/msgstore.db" in done.stdout
    assert VECTOR["tree"]["/chats/msgstore.db"]["sha256"] in done.stdout
    passfile.write_text("wrong\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(DECRYPTER), str(VECTORS / "v1"), "--password-file", str(passfile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "WrongPassword" in done.stderr


def _vector_vault(backing: Path) -> idec.IndependentVault:
    return idec.open_vault(backing, password=VECTOR["password"])


@pytest.mark.parametrize("offset", [0, 5, 8, 39, 40, 51, 52, 4000, 4163, 4164, 4164 + 52, 10000 + 3 * 28 + 39])
def test_vector_flipped_byte_fails(vector_copy: Path, offset: int) -> None:
    target = backing_path(vector_copy, _vector_vault(vector_copy).keys, "/chats/msgstore.db")
    data = bytearray(target.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(idec.IntegrityError):
        _vector_vault(vector_copy).walk()


@pytest.mark.parametrize("cut", [1, 28, 29, 10000 + 3 * 28 - 2 * 4124, 10000 + 3 * 28 - 4124, 10000 + 3 * 28,
                                 10000 + 3 * 28 + 40])
def test_vector_truncated_file_fails(vector_copy: Path, cut: int) -> None:
    target = backing_path(vector_copy, _vector_vault(vector_copy).keys, "/chats/msgstore.db")
    data = target.read_bytes()
    assert len(data) == 40 + 10000 + 3 * 28
    target.write_bytes(data[:len(data) - cut])
    with pytest.raises(idec.IntegrityError):
        _vector_vault(vector_copy).walk()


def test_vector_block_reorder_and_header_swap_fail(vector_copy: Path) -> None:
    keys = _vector_vault(vector_copy).keys
    big = backing_path(vector_copy, keys, "/chats/msgstore.db")
    data = big.read_bytes()
    blk = 4096 + 28
    big.write_bytes(data[:40] + data[40 + blk:40 + 2 * blk] + data[40:40 + blk] + data[40 + 2 * blk:])
    with pytest.raises(idec.IntegrityError):
        _vector_vault(vector_copy).walk()
    big.write_bytes(data)
    photo = backing_path(vector_copy, keys, "/chats/media/photo.jpg")
    photo.write_bytes(data[:40] + photo.read_bytes()[40:])
    with pytest.raises(idec.IntegrityError):
        _vector_vault(vector_copy).walk()


def test_vector_torn_last_block_is_detected(vector_copy: Path) -> None:
    """Re-seal msgstore.db's last block with is_last = 0 — exactly what a block-boundary truncation of
    a longer file also looks like (see the report)."""
    keys = _vector_vault(vector_copy).keys
    target = backing_path(vector_copy, keys, "/chats/msgstore.db")
    data = target.read_bytes()
    header = data[:40]
    kf = keys.file_key(header[8:])
    last_off = 40 + 2 * (4096 + 28)
    plain = idec.gcm_open(kf, data[last_off:], header + (2).to_bytes(8, "big") + b"\x01", "last")
    target.write_bytes(data[:last_off] + w_seal(kf, plain, header + (2).to_bytes(8, "big") + b"\x00"))
    with pytest.raises(idec.TornAppend):
        _vector_vault(vector_copy).walk()


def test_vector_block_boundary_truncation_is_indistinguishable_from_a_torn_append(vector_copy: Path) -> None:
    """Documents a spec limit (see report): cutting msgstore.db after its second block leaves exactly
    the bytes a crash mid-append leaves, so §8's "fsck tells a torn append apart from tampering" cannot
    hold for this case, and a re-marking repair would accept the truncation."""
    target = backing_path(vector_copy, _vector_vault(vector_copy).keys, "/chats/msgstore.db")
    target.write_bytes(target.read_bytes()[:40 + 2 * (4096 + 28)])
    with pytest.raises(idec.TornAppend):
        _vector_vault(vector_copy).walk()


def test_whole_file_swap_across_directories_is_not_detected(vector_copy: Path) -> None:
    """Documents a spec limit (see report): contents are bound to neither name nor directory, so two
    whole files swap undetected across directories too, not only "within one directory" as §10 says."""
    keys = _vector_vault(vector_copy).keys
    a = backing_path(vector_copy, keys, "/hello.txt")
    b = backing_path(vector_copy, keys, "/chats/media/photo.jpg")
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    tree = as_vector_tree(_vector_vault(vector_copy).walk())
    assert tree["/hello.txt"] == VECTOR["tree"]["/chats/media/photo.jpg"]
    assert tree["/chats/media/photo.jpg"] == VECTOR["tree"]["/hello.txt"]


def test_whole_directory_contents_swap_is_not_detected(tmp_path: Path) -> None:
    """Documents a spec limit (see report): a dir ID is not bound to the directory's name or place, so
    the backing contents of two directories anywhere in the tree can be exchanged undetected."""
    backing = tmp_path / "v"
    keys = write_vault(backing, {"/a": idec.Entry("dir"), "/a/x": idec.Entry("file", content=b"x"),
                                 "/b": idec.Entry("dir"), "/b/sub": idec.Entry("dir"),
                                 "/b/sub/y": idec.Entry("file", content=b"y")}, PASSWORD)
    a, sub = backing_path(backing, keys, "/a"), backing_path(backing, keys, "/b/sub")
    os.rename(a, tmp_path / "tmp")
    os.rename(sub, a)
    os.rename(tmp_path / "tmp", sub)
    assert summary(idec.open_vault(backing, password=PASSWORD).walk()) == summary({
        "/a": idec.Entry("dir"), "/a/y": idec.Entry("file", content=b"y"),
        "/b": idec.Entry("dir"), "/b/sub": idec.Entry("dir"), "/b/sub/x": idec.Entry("file", content=b"x")})


def test_vector_entry_moved_to_another_directory_fails(vector_copy: Path) -> None:
    keys = _vector_vault(vector_copy).keys
    hello = backing_path(vector_copy, keys, "/hello.txt")
    media = backing_path(vector_copy, keys, "/chats/media")
    os.rename(hello, media / hello.name)
    vault = _vector_vault(vector_copy)
    with pytest.raises(idec.IntegrityError, match="SIV"):
        vault.walk()
    lenient = vault.walk(strict=False)
    assert "/hello.txt" not in lenient and len(vault.problems) == 1
    assert {p for p in VECTOR["tree"] if p != "/hello.txt"} == set(lenient)


def test_vector_dirid_swap_and_damage_fail(vector_copy: Path) -> None:
    keys = _vector_vault(vector_copy).keys
    chats = backing_path(vector_copy, keys, "/chats")
    media = backing_path(vector_copy, keys, "/chats/media")
    root_id = (vector_copy / "vaultfs.dirid").read_bytes()
    (vector_copy / "vaultfs.dirid").write_bytes((chats / "vaultfs.dirid").read_bytes())
    with pytest.raises(idec.IntegrityError, match="root"):
        _vector_vault(vector_copy).walk()
    (vector_copy / "vaultfs.dirid").write_bytes(root_id)
    (media / "vaultfs.dirid").write_bytes((chats / "vaultfs.dirid").read_bytes())
    with pytest.raises(idec.IntegrityError):
        _vector_vault(vector_copy).walk()
    os.unlink(media / "vaultfs.dirid")
    with pytest.raises(idec.IntegrityError, match="missing"):
        _vector_vault(vector_copy).walk()


def test_vector_long_name_sidecar_checks(vector_copy: Path) -> None:
    [vfn] = list(vector_copy.rglob("*.vfn"))
    text = vfn.read_text()
    vfn.write_text(text[:-1] + ("a" if text[-1] != "a" else "b"))
    with pytest.raises(idec.IntegrityError, match="SHA-256"):
        _vector_vault(vector_copy).walk()
    vfn.write_text(text + "\n")
    with pytest.raises(idec.IntegrityError, match="SHA-256"):
        _vector_vault(vector_copy).walk()
    vfn.unlink()
    with pytest.raises(idec.IntegrityError, match="missing sidecar"):
        _vector_vault(vector_copy).walk()


def test_vector_symlink_target_tamper_fails(vector_copy: Path) -> None:
    link = backing_path(vector_copy, _vector_vault(vector_copy).keys, "/link")
    target = os.readlink(link)
    link.unlink()
    os.symlink(target[:5] + ("a" if target[5] != "a" else "b") + target[6:], link)
    with pytest.raises(idec.IntegrityError):
        _vector_vault(vector_copy).walk()


def test_vector_wrong_password_fails() -> None:
    with pytest.raises(idec.WrongPassword):
        idec.open_vault(VECTORS / "v1", password=VECTOR["password"] + " ")


def test_vector_mistyped_recovery_key_fails() -> None:
    key = VECTOR["recovery_key"]
    swapped = key[:1] + key[2] + key[1] + key[3:]
    assert swapped != key
    for bad in (swapped, key.replace("-", "")[:-1], key[:-1] + "U"):
        with pytest.raises(idec.MistypedRecoveryKey):
            idec.open_vault(VECTORS / "v1", recovery_key=bad)


def test_vector_config_mac_and_version(vector_copy: Path) -> None:
    conf_path = vector_copy / "vaultfs.conf"
    conf = json.loads(conf_path.read_text())
    conf_path.write_text(json.dumps({**conf, "mac": "00" * 32}))
    with pytest.raises(idec.IntegrityError, match="MAC"):
        _vector_vault(vector_copy)
    conf_path.write_text(json.dumps({**conf, "version": 3}))
    with pytest.raises(idec.UnsupportedFormat):
        _vector_vault(vector_copy)


# ---- (b) a fresh vault written by vaultfs --------------------------------------------------------
# Written by the Vault in format version 2 (directory IDs bound to their place, .vfx specials, a
# sparse extension) and read by the independent decrypter from docs/format.md alone.

FRESH_PASSWORD = "fresh pässwörd"
LONG_NAME = "ü" * 95 + "long-name"  # 199 bytes
LONG_NAME += "x" * (200 - len(LONG_NAME.encode()))
MIB1 = os.urandom((1 << 20) + 1)
APPENDED = os.urandom(100) + os.urandom(4000) + os.urandom(5000)
TRUNC_SRC = os.urandom(10000)


def fresh_expected() -> dict[str, idec.Entry]:
    files = {
        "/d/f": b"hello from vaultfs\n",
        "/empty": b"",
        "/4096.bin": MIB1[:4096],
        "/4097.bin": MIB1[:4097],
        "/1MiB+1.bin": MIB1,
        "/Ünïcödé dïr/日本語 ファイル.txt": "こんにちは".encode(),
        "/Ünïcödé dïr/nested/deeper/" + LONG_NAME: b"long name contents",
        "/Ünïcödé dïr/nested/" + "n" * 111: b"111",
        "/Ünïcödé dïr/nested/" + "n" * 112: b"112",
        "/café": b"an NFC name",
        "/appended": APPENDED,
        "/truncated": TRUNC_SRC[:5000],
        "/zeroed": b"",
        "/extended": b"ab" + b"\x00" * 9998,
        "/d/moved/inner.txt": b"moved with its directory",
        "/d/renamed-file": b"renamed across directories",
    }
    tree: dict[str, idec.Entry] = {p: idec.Entry("dir") for p in (
        "/d", "/Ünïcödé dïr", "/Ünïcödé dïr/nested", "/Ünïcödé dïr/nested/deeper", "/d/moved", "/other")}
    tree.update({p: idec.Entry("file", content=c) for p, c in files.items()})
    tree["/lnk"] = idec.Entry("symlink", target="target/path")
    tree["/Ünïcödé dïr/lnk ü"] = idec.Entry("symlink", target="../d/f ünïcödé")
    tree["/fifo"] = idec.Entry("fifo")
    tree["/" + unicodedata.normalize("NFD", "Résumé")] = idec.Entry("dir")
    tree["/" + unicodedata.normalize("NFD", "Résumé") + "/" + unicodedata.normalize("NFC", "café")] = idec.Entry(
        "file", content=b"an NFC name in an NFD directory")
    return tree


def _write(v: Vault, path: str, chunks: list[tuple[int, bytes]]) -> None:
    h = v.create(path, 0o644, os.O_RDWR)
    try:
        for offset, data in chunks:
            h.write(offset, data)
    finally:
        h.close()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    backing = tmp_path_factory.mktemp("fresh") / "v"
    recovery_key = init_vault(str(backing), FRESH_PASSWORD, kdf=KdfParams(memory_kib=1024, time_cost=1, parallelism=1))
    v = Vault.unlock(str(backing), FRESH_PASSWORD)
    try:
        for d in ("/d", "/Ünïcödé dïr", "/Ünïcödé dïr/nested", "/Ünïcödé dïr/nested/deeper", "/other",
                  "/other/sub"):
            v.mkdir(d, 0o755)
        _write(v, "/d/f", [(0, b"hello from vaultfs\n")])
        _write(v, "/empty", [])
        _write(v, "/4096.bin", [(0, MIB1[:4096])])
        _write(v, "/4097.bin", [(0, MIB1[:4097])])
        _write(v, "/1MiB+1.bin", [(0, MIB1)])
        _write(v, "/Ünïcödé dïr/日本語 ファイル.txt", [(0, "こんにちは".encode())])
        _write(v, "/Ünïcödé dïr/nested/deeper/" + LONG_NAME, [(0, b"long name contents")])
        _write(v, "/Ünïcödé dïr/nested/" + "n" * 111, [(0, b"111")])
        _write(v, "/Ünïcödé dïr/nested/" + "n" * 112, [(0, b"112")])
        _write(v, "/café", [(0, b"an NFC name")])
        _write(v, "/appended", [(0, APPENDED[:100]), (100, APPENDED[100:4100]), (4100, APPENDED[4100:])])
        _write(v, "/truncated", [(0, TRUNC_SRC)])
        v.truncate("/truncated", 5000)
        _write(v, "/zeroed", [(0, TRUNC_SRC)])
        v.truncate("/zeroed", 0)
        _write(v, "/extended", [(0, b"ab")])
        v.truncate("/extended", 10000)
        _write(v, "/other/sub/inner.txt", [(0, b"moved with its directory")])
        v.rename("/other/sub", "/d/moved")
        _write(v, "/other/file", [(0, b"renamed across directories")])
        v.rename("/other/file", "/d/renamed-file")
        v.symlink("target/path", "/lnk")
        v.symlink("../d/f ünïcödé", "/Ünïcödé dïr/lnk ü")
        v.mknod("/fifo", stat.S_IFIFO | 0o644)
        v.mkdir("/" + unicodedata.normalize("NFD", "Résumé"), 0o755)
        _write(v, "/" + unicodedata.normalize("NFD", "Résumé") + "/" + unicodedata.normalize("NFC", "café"),
               [(0, b"an NFC name in an NFD directory")])
    finally:
        v.close()
    return backing, recovery_key


def test_fresh_vaultfs_vault_is_read_by_both_readers(fresh: tuple[Path, str]) -> None:
    expected = summary(fresh_expected())
    assert summary(format_walk.walk_v2(fresh[0], format_walk.unlock(fresh[0], FRESH_PASSWORD))) == expected
    leftovers = [p for p in fresh[0].rglob("*") if not (p.is_file() or p.is_dir()) or p.is_symlink()]
    assert leftovers == [], "only regular files and directories"
    extended = backing_path(fresh[0], idec.open_vault(fresh[0], password=FRESH_PASSWORD).keys, "/extended", 2)
    assert extended.read_bytes()[7] == 1, "the extension made the file sparse (flag bit 0)"


def test_fresh_vaultfs_vault_decrypts_with_password(fresh: tuple[Path, str]) -> None:
    vault = idec.open_vault(fresh[0], password=FRESH_PASSWORD)
    assert summary(vault.walk()) == summary(fresh_expected())


def test_fresh_vaultfs_vault_decrypts_with_recovery_key(fresh: tuple[Path, str]) -> None:
    vault = idec.open_vault(fresh[0], recovery_key=fresh[1])
    assert summary(vault.walk()) == summary(fresh_expected())
    assert vault.keys.master == idec.open_vault(fresh[0], password=FRESH_PASSWORD).keys.master


def test_fresh_vaultfs_vault_layout_matches_the_spec(fresh: tuple[Path, str]) -> None:
    """Observable constraints: conf mode 0600 and KDF recorded, 44-byte dirids, name forms, empty file size."""
    backing = fresh[0]
    assert stat.S_IMODE(os.stat(backing / "vaultfs.conf").st_mode) == 0o600
    conf = idec.parse_config((backing / "vaultfs.conf").read_bytes())
    assert [(s.id, s.kdf["memory_kib"], s.kdf["time_cost"], s.kdf["parallelism"]) for s in conf.slots] == [
        (1, 1024, 1, 1)]
    assert all(p.stat().st_size == 44 for p in backing.rglob("vaultfs.dirid"))
    keys = idec.open_vault(backing, password=FRESH_PASSWORD).keys
    assert backing_path(backing, keys, "/Ünïcödé dïr/nested/deeper/" + LONG_NAME, 2).suffix == ".vfl"
    assert backing_path(backing, keys, "/Ünïcödé dïr/nested/" + "n" * 111, 2).suffix == ".vfs"
    assert backing_path(backing, keys, "/Ünïcödé dïr/nested/" + "n" * 112, 2).suffix == ".vfl"
    assert os.path.getsize(backing_path(backing, keys, "/empty", 2)) == 68
    assert backing_path(backing, keys, "/lnk", 2).suffix == ".vfx"
    assert backing_path(backing, keys, "/fifo", 2).read_bytes()[:8] == b"VFS2\x01\x0c\x03\x00"


@pytest.fixture
def fresh_copy(fresh: tuple[Path, str], tmp_path: Path) -> Path:
    target = tmp_path / "v"
    copy_vault(fresh[0], target)
    return target


@pytest.mark.parametrize("offset", [10, 40 + 100 * 4124 + 7, 40 + 256 * 4124 + 12])
def test_fresh_flipped_byte_fails(fresh_copy: Path, offset: int) -> None:
    target = backing_path(fresh_copy, idec.open_vault(fresh_copy, password=FRESH_PASSWORD).keys, "/1MiB+1.bin", 2)
    data = bytearray(target.read_bytes())
    data[offset] ^= 0x80
    target.write_bytes(bytes(data))
    with pytest.raises(idec.IntegrityError):
        idec.open_vault(fresh_copy, password=FRESH_PASSWORD).walk()


@pytest.mark.parametrize("cut", [1, 29, 29 + 4124, 4000])
def test_fresh_truncated_file_fails(fresh_copy: Path, cut: int) -> None:
    target = backing_path(fresh_copy, idec.open_vault(fresh_copy, password=FRESH_PASSWORD).keys, "/1MiB+1.bin", 2)
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) - cut)
    with pytest.raises(idec.IntegrityError):
        idec.open_vault(fresh_copy, password=FRESH_PASSWORD).walk()


def test_fresh_wrong_password_and_mistyped_recovery_key(fresh: tuple[Path, str]) -> None:
    with pytest.raises(idec.WrongPassword):
        idec.open_vault(fresh[0], password=FRESH_PASSWORD.upper())
    key = fresh[1]
    i = 30 if key[30] != "-" else 31
    bad = key[:i] + ("7" if key[i] != "7" else "8") + key[i + 1:]
    with pytest.raises(idec.MistypedRecoveryKey):
        idec.open_vault(fresh[0], recovery_key=bad)
