"""Sync clients' conflict copies show up readable under '<stem> (conflict N)<ext>' (Vault API level)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.format.conflicts import is_dirid_copy, parse_copy, parse_shown_name, shown_name, split_conflict
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


# ---------------------------------------------------------------- every client's words (pure)

# (client, backing copy of "<e>.vfs", what the shown name of "msgstore.db" says)
CLIENT_FORMS = [
    ("google-drive", "{e} (1).vfs", "msgstore (conflict 1).db"),
    ("google-drive-again", "{e} (1) (1).vfs", "msgstore (conflict 1) (conflict 1).db"),
    ("dropbox", "{e} (conflicted copy 2026-12-01).vfs", "msgstore (conflicted copy 2026-12-01).db"),
    ("dropbox-named", "{e} (Alice's conflicted copy 2026-12-01).vfs",
     "msgstore (Alice's conflicted copy 2026-12-01).db"),
    ("dropbox-case", "{e} (Case Conflict).vfs", "msgstore (Case Conflict).db"),
    ("dropbox-case-2", "{e} (Case Conflict 2).vfs", "msgstore (Case Conflict 2).db"),
    ("dropbox-selective", "{e} (Selective Sync Conflict).vfs", "msgstore (Selective Sync Conflict).db"),
    ("nextcloud", "{e} (conflicted copy 2026-12-01 101500).vfs", "msgstore (conflicted copy 2026-12-01 101500).db"),
    ("nextcloud-user", "{e} (conflicted copy laptop 2026-12-01 101500).vfs",
     "msgstore (conflicted copy laptop 2026-12-01 101500).db"),
    ("owncloud-old", "{e}_conflict-20261201-101500.vfs", "msgstore_conflict-20261201-101500.db"),
    ("icloud", "{e} 2.vfs", "msgstore (conflict 2).db"),
    ("onedrive", "{e}-LAPTOP-42.vfs", "msgstore (conflict LAPTOP-42).db"),
    ("rclone-1.58", "{e}.vfs..path1", "msgstore (conflict path1).db"),
    ("rclone-1.58-path2", "{e}.vfs..path2", "msgstore (conflict path2).db"),
    ("rclone-1.66-num", "{e}.vfs.conflict1", "msgstore (conflict 1).db"),
    ("rclone-1.66-num-12", "{e}.vfs.conflict12", "msgstore (conflict 12).db"),
    ("rclone-1.66-pathname", "{e}.vfs.path2", "msgstore (conflict path2).db"),
    ("rclone-conflict-of-conflict", "{e}.vfs.path1.path1", "msgstore (conflict path1) (conflict path1).db"),
    ("rclone-custom-suffix", "{e}.vfs.laptopconflict1", "msgstore (conflict laptopconflict1).db"),
    ("rclone-dated-suffix", "{e}.vfs.2026-12-01-conflict1", "msgstore (conflict 2026-12-01-conflict1).db"),
    ("rclone-keep-extension", "{e}.conflict3.vfs", "msgstore (conflict 3).db"),
    ("syncthing", "{e}.sync-conflict-20261201-101500-MFZWI3D.vfs",
     "msgstore.sync-conflict-20261201-101500-MFZWI3D.db"),
    ("seafile", "{e} (SFConflict alice@example.com 2026-12-01-10-15-00).vfs",
     "msgstore (SFConflict alice@example.com 2026-12-01-10-15-00).db"),
]
STEM = "mzxw6ytboi2dk"


@pytest.mark.parametrize(("client", "form", "shown"), CLIENT_FORMS, ids=[c for c, _, _ in CLIENT_FORMS])
def test_each_clients_copy_is_recognised_and_shown_in_its_words(client: str, form: str, shown: str) -> None:
    for ext, suffix in ((".vfs", ".vfs"), (".vfl", ".vfl"), (".vfx", ".vfx"), (".vxl", ".vxl")):
        name = form.format(e=STEM).replace(".vfs", suffix)
        copy = parse_copy(name)
        assert copy is not None and copy.original == STEM + ext, name
        assert copy.apply(STEM + ".vfn") == form.format(e=STEM).replace(".vfs", ".vfn")
    copy = parse_copy(form.format(e=STEM))
    assert shown_name("msgstore.db", copy.words) == shown
    recognised = parse_shown_name(shown)
    assert recognised is not None and recognised.original == "msgstore.db"
    dirid_copy = form.format(e="vaultfs").replace(".vfs", ".dirid")
    assert is_dirid_copy(dirid_copy) and parse_copy(dirid_copy).original == "vaultfs.dirid"
    if copy.original.endswith(".vfs"):
        assert split_conflict(form.format(e=STEM)) == (STEM + ".vfs", copy.suffix)


@pytest.mark.parametrize("name", [
    "abcdef.vfs", "abcdef.vfs.partial", "abcdef.vfs.tmp", "abcdef.vfs.bak", "abcdef (copy).vfs", "ABC (1).vfs",
    "abcdef (1).txt", "abcdef.sync-conflict-20261201-101500-abc1234.vfs", "abcdef (1.vfs", "vaultfs.dirid",
    "vaultfs.dirid.tmp", "vaultfs.conf", "vaultfs.conf.bak", ".syncthing.abcdef.vfs.tmp", "abcdef.vfs~",
    "abcdef..vfs", " (1).vfs", "abcdef.vfs (1)",
])
def test_anything_else_is_not_a_conflict_copy(name: str) -> None:
    assert parse_copy(name) is None and split_conflict(name) is None and not is_dirid_copy(name)


def test_shown_names_are_disambiguated_deterministically_and_fit_255_bytes() -> None:
    words = parse_copy(f"{STEM} (conflicted copy 2026-12-01 laptop).vfs").words
    taken = {"msgstore (conflicted copy 2026-12-01 laptop).db", "msgstore (conflicted copy 2026-12-01 laptop) 2.db"}
    assert shown_name("msgstore.db", words, taken.__contains__) == "msgstore (conflicted copy 2026-12-01 laptop) 3.db"
    assert parse_shown_name("msgstore (conflicted copy 2026-12-01 laptop) 3.db").original == "msgstore.db"
    assert shown_name(".bashrc", " (conflict 1)") == ".bashrc (conflict 1)"
    assert shown_name("Makefile", " (conflict 1)") == "Makefile (conflict 1)"
    assert shown_name("archive.tar.gz", " (conflict 1)") == "archive.tar (conflict 1).gz"
    long_name = "é" * 120 + ".jpg"  # 244 bytes
    fitted = shown_name(long_name, words)
    assert len(fitted.encode("utf-8", "surrogateescape")) <= 255 and fitted.endswith(words + ".jpg")
    raw = b"\xff\xfe" * 120 + b".db"
    odd = shown_name(raw.decode("utf-8", "surrogateescape"), " (conflict 1)")
    assert len(odd.encode("utf-8", "surrogateescape")) <= 255


@pytest.mark.parametrize("name", ["report (1).pdf", "photo 2.jpg", "notes-LAPTOP.txt", "a.path1", "plain.txt",
                                  "conflict.txt", "msgstore.db.path1"])
def test_ordinary_names_are_not_shown_conflicts(name: str) -> None:
    assert parse_shown_name(name) is None
