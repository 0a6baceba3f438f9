"""Names: AES-SIV per directory, base32 + suffix, long-name sidecars, hidden invalid entries."""

from __future__ import annotations

import errno
import os
import unicodedata

import pytest

from tests.conftest import VaultDir, read_file, write_file
from tests.spec_writer import w_symlink
from vaultfs.format.names import MAX_BACKING_NAME, EntryName, NameCipher, b32decode, pad16, parse_entry, unpad16
from vaultfs.vault import Vault

KEY = bytes(range(64))


def test_names_are_deterministic_per_directory_and_differ_across_directories() -> None:
    names = NameCipher(KEY)
    a1, a2 = names.encrypt("msgstore.db", b"A" * 16), names.encrypt("msgstore.db", b"A" * 16)
    b = names.encrypt("msgstore.db", b"B" * 16)
    assert a1 == a2 and a1.entry != b.entry
    assert a1.entry.endswith(".vfs") and a1.entry == a1.entry.lower()
    assert names.decrypt_encoded(a1.encoded, b"A" * 16) == "msgstore.db"
    assert names.decrypt_encoded(a1.encoded, b"B" * 16) is None


@pytest.mark.parametrize("length", [1, 15, 16, 17, 111, 112, 200, 255])
def test_every_length_round_trips_and_long_ones_use_a_sidecar(length: int) -> None:
    names = NameCipher(KEY)
    name = "n" * length
    encoded = names.encrypt(name, bytes(16))
    assert len(encoded.entry) <= MAX_BACKING_NAME
    assert (encoded.sidecar is not None) == (length > 111)
    assert names.decrypt_encoded(encoded.encoded, bytes(16)) == name


def test_name_too_long_and_invalid_names() -> None:
    names = NameCipher(KEY)
    with pytest.raises(OSError) as info:
        names.encrypt("x" * 256, bytes(16))
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        names.encrypt("é" * 128, bytes(16))  # 256 bytes of UTF-8
    assert info.value.errno == errno.ENAMETOOLONG
    for bad in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(OSError):
            names.encrypt(bad, bytes(16))


def test_names_are_exact_bytes_without_normalisation() -> None:
    """Format v2: an NFD name (rsync from a Mac) is another name than its NFC form, and stays NFD."""
    names = NameCipher(KEY)
    nfd, nfc = unicodedata.normalize("NFD", "Résumé café.docx"), unicodedata.normalize("NFC", "Résumé café.docx")
    assert nfd != nfc
    encrypted_nfd, encrypted_nfc = names.encrypt(nfd, bytes(16)), names.encrypt(nfc, bytes(16))
    assert encrypted_nfd != encrypted_nfc
    assert names.decrypt_encoded(encrypted_nfd.encoded, bytes(16)) == nfd
    assert names.decrypt_encoded(encrypted_nfc.encoded, bytes(16)) == nfc


def test_any_bytes_but_slash_and_nul_are_a_name() -> None:
    names = NameCipher(KEY)
    for raw in (b"\xff\xfe not utf-8", b"\x01\x02\x7f", "ü".encode("latin-1"), b"a\\b", b"..."):
        name = raw.decode("utf-8", "surrogateescape")
        encrypted = names.encrypt(name, bytes(16))
        assert names.decrypt_encoded(encrypted.encoded, bytes(16)).encode("utf-8", "surrogateescape") == raw
    with pytest.raises(OSError) as info:
        names.encrypt("\ud800", bytes(16))  # not a surrogateescape character: no bytes stand behind it
    assert info.value.errno == errno.EINVAL


def test_a_255_byte_name_that_nfc_would_grow_is_accepted() -> None:
    """U+0958 (3 bytes) has an NFC form of 6 bytes; v1 refused 85 of them, v2 stores them as given."""
    names = NameCipher(KEY)
    name = "\u0958" * 85
    assert len(name.encode()) == 255 and len(unicodedata.normalize("NFC", name).encode()) > 255
    encrypted = names.encrypt(name, bytes(16))
    assert encrypted.sidecar is not None and names.decrypt_encoded(encrypted.encoded, bytes(16)) == name


def test_special_entries_get_their_own_suffix_and_parse_entry_reads_the_form() -> None:
    names = NameCipher(KEY)
    short, special = names.encrypt("link", bytes(16)), names.encrypt("link", bytes(16), special=True)
    assert short.entry.endswith(".vfs") and special.entry.endswith(".vfx")
    assert short.encoded == special.encoded
    long_special = names.encrypt("l" * 200, bytes(16), special=True)
    assert long_special.entry.endswith(".vxl") and long_special.sidecar.endswith(".vfn")
    assert parse_entry(short.entry) == EntryName(short.encoded, False, False)
    assert parse_entry(special.entry) == EntryName(special.encoded, False, True)
    assert parse_entry(long_special.entry) == EntryName(long_special.entry[:-4], True, True)
    for bad in ("x.txt", "ABC.vfs", ".vfs", "a" * 51 + ".vfl", "abc.vfs.path1", "vaultfs.dirid", "a" * 217 + ".vfs"):
        assert parse_entry(bad) is None, bad


def test_base32_and_padding_are_canonical() -> None:
    assert b32decode("MZXW6") is None  # upper case is not canonical
    assert b32decode("mzxw6===") is None
    assert b32decode("mzxw6") == b"foo"
    assert b32decode("mzxw7") is None  # non-zero trailing bits
    assert unpad16(pad16(b"")) == b"" and len(pad16(b"")) == 16
    assert unpad16(b"x" * 15 + b"\x02") is None


def test_format_v1_symlink_targets_still_decrypt_for_upgrade() -> None:
    names = NameCipher(KEY)
    for target in ("a", "../up/there", "/abs/ünï", "x" * 2000):
        assert names.decrypt_symlink(w_symlink(KEY, target)) == target
    assert names.decrypt_symlink("aaaa") is None


def test_long_names_through_the_vault_and_broken_sidecars_are_hidden(vault: Vault, vault_dir: VaultDir,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    long_name = "L" * 255
    vault.mkdir("/dir", 0o755)
    write_file(vault, f"/dir/{long_name}", b"long")
    assert [n for n, _ in vault.listdir("/dir")] == [long_name]
    assert read_file(vault, f"/dir/{long_name}") == b"long"
    vault.rename(f"/dir/{long_name}", "/short")
    assert [n for n, _ in vault.listdir("/dir")] == []
    (dir_path,) = [p for p in vault_dir.path.iterdir() if p.is_dir()]
    assert sorted(os.listdir(dir_path)) == ["vaultfs.dirid"], "the sidecar must go with the long name"
    vault.rename("/short", f"/dir/{long_name}")
    (sidecar,) = dir_path.glob("*.vfn")
    text = sidecar.read_text()
    sidecar.write_text(text[:-1] + ("b" if text.endswith("a") else "a"))
    assert vault.listdir("/dir") == []
    assert "sidecar" in caplog.text or "does not decrypt" in caplog.text


def test_reserved_and_foreign_entries_are_hidden_and_reported_once(vault: Vault, vault_dir: VaultDir,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    write_file(vault, "/real", b"r")
    (vault_dir.path / "garbage.vfs").write_bytes(b"")
    (vault_dir.path / "desktop.ini").write_bytes(b"")
    (vault_dir.path / "vaultfs.something").write_bytes(b"")
    for _ in range(3):
        assert [n for n, _ in vault.listdir("/")] == ["real"]
    assert caplog.text.count("garbage.vfs") == 1
    assert caplog.text.count("desktop.ini") == 1
    assert "vaultfs.something" not in caplog.text


def test_backing_dir_holds_no_plaintext_names(vault: Vault, vault_dir: VaultDir) -> None:
    vault.mkdir("/WhatsApp Backups", 0o755)
    write_file(vault, "/WhatsApp Backups/msgstore-2026-11-28.db", b"secret chat")
    vault.symlink("msgstore-latest", "/latest")
    for _root, dirs, files in os.walk(vault_dir.path):
        for name in dirs + files:
            assert "whatsapp" not in name.lower() and "msgstore" not in name.lower()
    for path in vault_dir.path.rglob("*"):
        assert not path.is_symlink()
        if path.is_file():
            assert b"secret chat" not in path.read_bytes() and b"msgstore" not in path.read_bytes()


def test_a_name_stored_in_the_wrong_form_is_hidden(vault: Vault, vault_dir: VaultDir) -> None:
    write_file(vault, "/short", b"s")
    entry = vault.locate("/short")
    digest = "a" * 52
    os.rename(entry.path, vault_dir.path / (digest + ".vfl"))
    (vault_dir.path / (digest + ".vfn")).write_text(entry.backing_name.encoded)
    # the sidecar does not hash to the digest, so make it consistent: only the form is wrong then
    from vaultfs import crypto
    from vaultfs.format.names import b32encode

    good = b32encode(crypto.sha256(entry.backing_name.encoded.encode()))
    os.rename(vault_dir.path / (digest + ".vfl"), vault_dir.path / (good + ".vfl"))
    os.rename(vault_dir.path / (digest + ".vfn"), vault_dir.path / (good + ".vfn"))
    assert vault.listdir("/") == []
