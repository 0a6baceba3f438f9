"""A hostile backing directory: every oddity is hidden or EIO, logged once, and nothing escapes the root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.vault import Vault


def backing(vault: Vault, path: str) -> Path:
    return Path(vault.locate(path).path)


def eio(call, *args) -> None:
    with pytest.raises(OSError) as info:
        call(*args)
    assert info.value.errno == errno.EIO, info.value


@pytest.mark.parametrize("header_bytes", [0, 5, 39, 41, 1 << 20])
def test_files_with_odd_header_lengths_are_eio(vault: Vault, header_bytes: int) -> None:
    write_file(vault, "/odd", b"x")
    path = backing(vault, "/odd")
    path.write_bytes(os.urandom(header_bytes))
    eio(read_file, vault, "/odd")
    assert vault.getattr("/odd").st_size >= 0  # stat never decrypts and never fails on content


def test_a_block_size_field_that_differs_from_the_config_is_eio(vault: Vault) -> None:
    write_file(vault, "/bs", b"x" * 10)
    path = backing(vault, "/bs")
    raw = bytearray(path.read_bytes())
    raw[5] = 13  # 8 KiB blocks
    path.write_bytes(raw)
    eio(read_file, vault, "/bs")


def test_names_that_decrypt_only_in_another_directory_are_hidden(vault: Vault, caplog) -> None:
    vault.mkdir("/a", 0o755)
    vault.mkdir("/b", 0o755)
    write_file(vault, "/a/secret", b"s")
    moved = backing(vault, "/a/secret")
    os.rename(moved, backing(vault, "/b") / moved.name)
    assert vault.listdir("/b") == [] and vault.listdir("/a") == []
    assert caplog.text.count(moved.name) == 1


def test_a_directory_where_a_file_is_expected_and_the_reverse(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/f", b"file")
    vault.mkdir("/d", 0o755)
    file_path, dir_path = backing(vault, "/f"), backing(vault, "/d")
    vault.close()
    file_path.unlink()
    file_path.mkdir()  # a directory without a dir ID under a file's name
    (dir_path / "vaultfs.dirid").unlink()
    dir_path.rmdir()
    dir_path.write_bytes(b"not a directory")
    reader = vault_dir.unlock(read_only=True)
    with pytest.raises(OSError) as info:
        reader.open("/f", os.O_RDONLY)
    assert info.value.errno == errno.EISDIR
    eio(reader.listdir, "/f")
    with pytest.raises(NotADirectoryError):
        reader.listdir("/d")
    eio(read_file, reader, "/d")
    reader.close()
    vault = vault_dir.unlock()  # a writable vault removes an empty directory that has no ID
    with pytest.raises(FileNotFoundError):
        vault.listdir("/f")
    assert not file_path.exists() and [n for n, _ in vault.listdir("/")] == ["d"]
    vault.close()


def test_backing_symlinks_pointing_outside_are_never_followed(vault: Vault, tmp_path: Path) -> None:
    """Format v2 keeps only regular files and directories: a backing symlink is foreign, hidden, never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "vaultfs.dirid").write_bytes(b"x" * 44)
    (outside / "loot").write_text("outside the vault")
    vault.mkdir("/d", 0o755)
    write_file(vault, "/f", b"inside")
    d_path, f_path = backing(vault, "/d"), backing(vault, "/f")
    for child in d_path.iterdir():
        child.unlink()
    d_path.rmdir()
    d_path.symlink_to(outside)
    f_path.unlink()
    f_path.symlink_to(outside / "loot")
    assert vault.listdir("/") == []
    with pytest.raises(FileNotFoundError):
        vault.listdir("/d")
    with pytest.raises(OSError):
        write_file(vault, "/d/new", b"x")
    for call in (vault.readlink, vault.getattr):
        with pytest.raises(FileNotFoundError):
            call("/f")
    with pytest.raises(OSError):
        vault.open("/f", os.O_RDONLY)
    assert sorted(p.name for p in outside.iterdir()) == ["loot", "vaultfs.dirid"]
    assert (outside / "loot").read_text() == "outside the vault"


def test_a_missing_dir_id_is_eio(vault_dir: VaultDir) -> None:
    """Its names decrypt under no directory of the vault: nothing can name them (EIO), nothing moves."""
    vault = vault_dir.unlock()
    vault.mkdir("/d", 0o755)
    write_file(vault, "/d/f", b"inside")
    d_path = backing(vault, "/d")
    vault.close()
    (d_path / "vaultfs.dirid").unlink()
    for read_only in (True, False):
        vault = vault_dir.unlock(read_only=read_only)
        eio(vault.listdir, "/d")
        eio(vault.getattr, "/d/f")
        vault.close()
    assert len(list(d_path.iterdir())) == 1


def test_a_huge_sidecar_is_refused_without_reading_it(vault: Vault) -> None:
    long_name = "n" * 200
    write_file(vault, "/" + long_name, b"x")
    (sidecar,) = Path(vault.backing).glob("*.vfn")
    with open(sidecar, "r+b") as handle:
        handle.truncate(2 << 30)  # 2 GiB, sparse
    assert vault.listdir("/") == []
    sidecar.unlink()


def test_fifos_named_like_files_do_not_block(vault: Vault, vault_dir: VaultDir) -> None:
    """A backing FIFO under a file's name is foreign in format v2: hidden, never opened (so never blocking)."""
    write_file(vault, "/f", b"x")
    path = backing(vault, "/f")
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(FileNotFoundError):
        vault.open("/f", os.O_RDONLY)
    assert vault.listdir("/") == []
    with pytest.raises(OSError):
        write_file(vault, "/f", b"new")  # the name is taken in the backing dir: never replaced
    assert path.is_fifo()
