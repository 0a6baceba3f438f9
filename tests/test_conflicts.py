"""Sync clients' conflict copies show up readable under '<stem> (conflict N)<ext>' (Vault API level)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.format.conflicts import split_conflict
from vaultfs.vault import Vault

PROVIDERS = {
    "google-drive": " (1)",
    "dropbox": " (conflicted copy 2026-11-28)",
    "dropbox-named": " (Alice's conflicted copy 2026-11-28)",
    "dropbox-case": " (Case Conflict)",
    "onedrive": "-LAPTOP-42",
    "icloud": " 2",
    "nextcloud": " (conflicted copy 2026-11-28 101500)",
}


def backing(vault: Vault, path: str) -> Path:
    return Path(vault.locate(path).path)


def copy_name(original: Path, suffix: str) -> Path:
    stem, ext = original.name[:-4], original.name[-4:]
    return original.with_name(stem + suffix + ext)


def plant_copy(vault: Vault, path: str, suffix: str, other_content: bytes | None) -> Path:
    """Make the backing entry a sync client would leave: same stem, suffix, other (or same) content."""
    original = backing(vault, path)
    target = copy_name(original, suffix)
    if other_content is None:
        if original.is_dir():
            shutil.copytree(original, target, symlinks=True)
        elif original.is_symlink():
            os.symlink(os.readlink(original), target)
        else:
            shutil.copy2(original, target)
    else:
        write_file(vault, "/scratch", other_content)
        os.rename(backing(vault, "/scratch"), target)
    return target


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_conflict_copy_of_a_file_is_shown_readable_renamable_deletable(vault: Vault, provider: str) -> None:
    vault.mkdir("/chats", 0o755)
    write_file(vault, "/chats/msgstore.db", b"version from this phone")
    planted = plant_copy(vault, "/chats/msgstore.db", PROVIDERS[provider], b"version from the other phone")
    names = sorted(n for n, _ in vault.listdir("/chats"))
    assert names == ["msgstore (conflict 1).db", "msgstore.db"]
    assert not planted.exists()
    assert read_file(vault, "/chats/msgstore (conflict 1).db") == b"version from the other phone"
    assert read_file(vault, "/chats/msgstore.db") == b"version from this phone"
    vault.rename("/chats/msgstore (conflict 1).db", "/chats/other.db")
    assert read_file(vault, "/chats/other.db") == b"version from the other phone"
    vault.unlink("/chats/other.db")
    assert [n for n, _ in vault.listdir("/chats")] == ["msgstore.db"]


def test_identical_copy_is_removed_and_lonely_copy_takes_the_original_name(vault: Vault) -> None:
    write_file(vault, "/a.txt", b"same")
    identical = plant_copy(vault, "/a.txt", " (1)", b"same")
    assert [n for n, _ in vault.listdir("/")] == ["a.txt"]
    assert not identical.exists()
    write_file(vault, "/b.txt", b"only copy")
    original = backing(vault, "/b.txt")
    lonely = copy_name(original, " 2")
    os.rename(original, lonely)
    assert [n for n, _ in vault.listdir("/")] == ["a.txt", "b.txt"]
    assert read_file(vault, "/b.txt") == b"only copy"


def test_conflict_copies_of_directories_symlinks_and_long_names(vault: Vault) -> None:
    vault.mkdir("/Media", 0o755)
    write_file(vault, "/Media/photo.jpg", b"p")
    plant_copy(vault, "/Media", " (1)", None)
    vault.symlink("target-a", "/link")
    original_link = backing(vault, "/link")
    os.symlink(vault.names.encrypt_symlink("target-b"), copy_name(original_link, "-HOST"))
    long_name = "a long file name " * 8 + ".txt"
    write_file(vault, "/" + long_name, b"long one")
    planted = plant_copy(vault, "/" + long_name, " (conflicted copy 2026-11-28)", b"long two")
    assert planted.suffix == ".vfl"
    names = sorted(n for n, _ in vault.listdir("/"))
    assert "Media (conflict 1)" in names and "Media" in names
    assert "link (conflict 1)" in names
    conflict_long = [n for n in names if n.startswith("a long") and "(conflict 1)" in n]
    assert conflict_long and len(conflict_long[0].encode()) <= 255
    assert read_file(vault, "/Media (conflict 1)/photo.jpg") == b"p"
    assert vault.readlink("/link (conflict 1)") == "target-b"
    assert read_file(vault, "/" + conflict_long[0]) == b"long two"
    assert read_file(vault, "/" + long_name) == b"long one"


def test_read_only_vault_shows_copies_without_touching_the_backing_dir(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/msgstore.db", b"mine")
    planted = plant_copy(vault, "/msgstore.db", " (1)", b"theirs")
    vault.close()
    before = sorted(p.name for p in vault_dir.path.iterdir())
    reader = vault_dir.unlock(read_only=True)
    assert sorted(n for n, _ in reader.listdir("/")) == ["msgstore (conflict 1).db", "msgstore.db"]
    assert read_file(reader, "/msgstore (conflict 1).db") == b"theirs"
    reader.close()
    assert sorted(p.name for p in vault_dir.path.iterdir()) == before
    assert planted.exists()


def test_conflict_copies_of_the_directory_id_are_all_tried(vault_dir: VaultDir) -> None:
    """Two machines made the same directory: two sealed IDs, names under each."""
    vault = vault_dir.unlock()
    vault.mkdir("/shared", 0o755)
    write_file(vault, "/shared/from-a.txt", b"A")
    vault.mkdir("/other", 0o755)
    write_file(vault, "/other/from-b.txt", b"B")
    shared, other = backing(vault, "/shared"), backing(vault, "/other")
    vault.close()
    os.rename(other / "vaultfs.dirid", shared / "vaultfs (1).dirid")
    for item in other.iterdir():
        os.rename(item, shared / item.name)
    other.rmdir()
    vault = vault_dir.unlock()
    assert sorted(n for n, _ in vault.listdir("/shared")) == ["from-a.txt", "from-b.txt"]
    assert read_file(vault, "/shared/from-b.txt") == b"B"
    write_file(vault, "/shared/new.txt", b"N")
    assert read_file(vault, "/shared/new.txt") == b"N"
    vault.close()


def test_split_conflict_recognises_each_provider_and_nothing_else() -> None:
    for suffix in PROVIDERS.values():
        assert split_conflict(f"abcdef{suffix}.vfs") == ("abcdef.vfs", suffix)
        assert split_conflict(f"abcdef{suffix}.vfl") == ("abcdef.vfl", suffix)
    for name in ("abcdef.vfs", "abcdef (copy).vfs", "ABC (1).vfs", "abcdef (1).txt", "vaultfs (1).dirid"):
        assert split_conflict(name) is None
