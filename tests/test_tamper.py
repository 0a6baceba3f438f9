"""Tampering with any stored byte is detected: EIO or a config error, never wrong plaintext."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.errors import ConfigDamaged, IntegrityError, UnsupportedFormat, WrongPassword
from vaultfs.vault import Vault

STORED = 4096 + 28


def only_file(vault_dir: VaultDir, suffix: str = ".vfs") -> Path:
    (path,) = [p for p in vault_dir.path.iterdir() if p.suffix == suffix and p.is_file()]
    return path


def test_flipping_any_byte_of_a_file_is_detected(vault: Vault, vault_dir: VaultDir) -> None:
    """Every bit of every byte but one: header byte 7 bit 0, the "may contain holes" hint, is left out of
    authentication on purpose (docs/format.md 7.1); flipping it changes nothing a reader returns."""
    data = os.urandom(4096 + 100)  # two blocks, the last partial
    write_file(vault, "/f", data)
    backing = only_file(vault_dir)
    original = backing.read_bytes()
    for position, bit in ((p, b) for p in range(len(original)) for b in (0x01, 0x80)):
        if (position, bit) == (7, 0x01):
            tampered = bytearray(original)
            tampered[7] ^= 0x01
            backing.write_bytes(bytes(tampered))
            assert read_file(vault, "/f") == data, "the hint bit alone changes nothing"
            continue
        tampered = bytearray(original)
        tampered[position] ^= bit
        backing.write_bytes(bytes(tampered))
        with pytest.raises(IntegrityError):
            read_file(vault, "/f")
    backing.write_bytes(original)
    assert read_file(vault, "/f") == data


@pytest.mark.parametrize("size", [1, 4096, 4097, 3 * 4096 + 7])
def test_truncation_anywhere_in_the_last_two_blocks_is_detected(vault: Vault, vault_dir: VaultDir,
                                                                size: int) -> None:
    write_file(vault, "/f", os.urandom(size))
    backing = only_file(vault_dir)
    original = backing.read_bytes()
    last_two_start = max(0, len(original) - 2 * STORED - 40)
    cuts = set(range(last_two_start, len(original))) | {0, 40, 40 + STORED, 68}
    for cut in sorted(c for c in cuts if c < len(original)):
        backing.write_bytes(original[:cut])
        with pytest.raises(IntegrityError):
            read_file(vault, "/f")


def test_truncation_at_a_block_boundary_is_detected(vault: Vault, vault_dir: VaultDir) -> None:
    write_file(vault, "/f", os.urandom(3 * 4096))
    backing = only_file(vault_dir)
    original = backing.read_bytes()
    # dropping whole trailing blocks leaves a valid-looking size, but the new last block is not marked last
    backing.write_bytes(original[: 40 + 2 * STORED])
    with pytest.raises(IntegrityError):
        read_file(vault, "/f")


def test_swapping_two_blocks_is_detected(vault: Vault, vault_dir: VaultDir) -> None:
    write_file(vault, "/f", os.urandom(3 * 4096))
    backing = only_file(vault_dir)
    raw = bytearray(backing.read_bytes())
    first, second = raw[40 : 40 + STORED], raw[40 + STORED : 40 + 2 * STORED]
    raw[40 : 40 + STORED], raw[40 + STORED : 40 + 2 * STORED] = second, first
    backing.write_bytes(bytes(raw))
    handle = vault.open("/f", os.O_RDONLY)
    with pytest.raises(IntegrityError):
        handle.read(0, 4096)
    with pytest.raises(IntegrityError):
        handle.read(4096, 4096)
    handle.close()


def test_moving_a_block_or_a_header_between_files_is_detected(vault: Vault, vault_dir: VaultDir) -> None:
    write_file(vault, "/a", os.urandom(2 * 4096))
    write_file(vault, "/b", os.urandom(2 * 4096))
    paths = {p.stat().st_ino: p for p in vault_dir.path.iterdir() if p.suffix == ".vfs"}
    a = vault_dir.path / vault.names.encrypt("a", vault.keys.root_dir_id).entry
    b = vault_dir.path / vault.names.encrypt("b", vault.keys.root_dir_id).entry
    assert {a, b} == set(paths.values())
    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    # block 0 of b into a
    a.write_bytes(raw_a[:40] + raw_b[40 : 40 + STORED] + raw_a[40 + STORED :])
    with pytest.raises(IntegrityError):
        read_file(vault, "/a")
    # b's header onto a's blocks
    a.write_bytes(raw_b[:40] + raw_a[40:])
    with pytest.raises(IntegrityError):
        read_file(vault, "/a")


def test_flipping_a_byte_of_a_backing_name_hides_the_entry(vault: Vault, vault_dir: VaultDir,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    write_file(vault, "/name.txt", b"x")
    backing = only_file(vault_dir)
    stem = backing.name[:-4]
    for position in range(len(stem)):
        replacement = "a" if stem[position] != "a" else "b"
        tampered = stem[:position] + replacement + stem[position + 1 :] + ".vfs"
        backing = backing.rename(backing.with_name(tampered))
        assert vault.listdir("/") == []
        with pytest.raises(FileNotFoundError):
            vault.getattr("/name.txt")
    assert "hidden invalid entry" in caplog.text


def test_a_tampered_directory_id_is_an_io_error(vault: Vault, vault_dir: VaultDir) -> None:
    vault.mkdir("/d", 0o755)
    write_file(vault, "/d/f", b"inside")
    vault.close()
    (directory,) = [p for p in vault_dir.path.iterdir() if p.is_dir()]
    dirid = directory / "vaultfs.dirid"
    original = dirid.read_bytes()
    for position in range(len(original)):
        tampered = bytearray(original)
        tampered[position] ^= 0x80
        dirid.write_bytes(bytes(tampered))
        fresh = vault_dir.unlock()
        with pytest.raises(IntegrityError):
            fresh.listdir("/d")
        fresh.close()
    dirid.unlink()
    fresh = vault_dir.unlock()
    with pytest.raises(IntegrityError):
        fresh.getattr("/d/f")
    fresh.close()


def test_an_authentic_directory_id_copied_from_elsewhere_is_not_valid_there(vault: Vault,
                                                                            vault_dir: VaultDir) -> None:
    """Format v2: the root's sealed ID is bound to the root's place; copied into /d it is refused (EIO)."""
    vault.mkdir("/d", 0o755)
    write_file(vault, "/d/f", b"inside")
    d_path = vault_dir.path / vault.names.encrypt("d", vault.keys.root_dir_id).entry
    (d_path / "vaultfs.dirid").write_bytes((vault_dir.path / "vaultfs.dirid").read_bytes())
    for read_only in (True, False):
        fresh = vault_dir.unlock(read_only=read_only)
        with pytest.raises(IntegrityError, match="no directory ID valid here"):
            fresh.listdir("/d")
        with pytest.raises(IntegrityError):
            fresh.getattr("/d/f")
        fresh.close()
    assert (d_path / "vaultfs.dirid").exists() and list(d_path.glob("*.vfs")), "nothing was moved or dropped"


def test_a_missing_root_directory_id_refuses_to_unlock(vault_dir: VaultDir) -> None:
    (vault_dir.path / "vaultfs.dirid").unlink()
    with pytest.raises(IntegrityError):
        vault_dir.unlock()


def test_flipping_any_byte_of_the_config_is_detected(vault_dir: VaultDir) -> None:
    config = vault_dir.path / "vaultfs.conf"
    original = config.read_bytes()
    for position in range(len(original)):
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        config.write_bytes(bytes(tampered))
        with pytest.raises((ConfigDamaged, WrongPassword, UnsupportedFormat)):
            vault_dir.unlock().close()
    config.write_bytes(original)
    vault_dir.unlock().close()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("block_size", 8192, UnsupportedFormat),
        ("version", 3, UnsupportedFormat),
        ("cipher_suite", "AES-128-CTR", UnsupportedFormat),
        ("extra", 1, ConfigDamaged),
        ("vault_id", "00" * 16, WrongPassword),
    ],
)
def test_edited_config_fields_are_refused(vault_dir: VaultDir, field: str, value: object, error: type) -> None:
    config = vault_dir.path / "vaultfs.conf"
    document = json.loads(config.read_text())
    document[field] = value
    config.write_text(json.dumps(document))
    with pytest.raises(error):
        vault_dir.unlock()


def test_lowered_kdf_parameters_do_not_unlock(vault_dir: VaultDir) -> None:
    config = vault_dir.path / "vaultfs.conf"
    document = json.loads(config.read_text())
    document["slots"][0]["kdf"]["memory_kib"] = 512
    config.write_text(json.dumps(document))
    with pytest.raises(WrongPassword):
        vault_dir.unlock()


def test_a_second_slot_added_without_the_key_breaks_the_mac(vault_dir: VaultDir) -> None:
    config = vault_dir.path / "vaultfs.conf"
    document = json.loads(config.read_text())
    extra = json.loads(json.dumps(document["slots"][0]))
    extra["id"] = 2
    document["slots"].append(extra)
    config.write_text(json.dumps(document))
    with pytest.raises(ConfigDamaged):
        vault_dir.unlock()
