"""Sync clients' conflict copies and names found twice, at the Vault API level (docs/format.md section 9).

A copy shows up next to the original under its shown name, in the client's own words; a writable
vault renames it (a directory's copy is rebound to its new name), a read-only one shows the same
names without touching the backing dir.  A copy whose original is gone takes its name; one identical
to it goes.  Two devices' IDs for one directory are merged by a writable vault.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.format.conflicts import client_of, is_dirid_copy, parse_copy, parse_shown_name, shown_name
from vaultfs.vault import Vault

# client: (its copy of the backing entry <e><x>, the shown name of msgstore.db's copy)
PROVIDERS = {
    "google-drive": ("{e} (1){x}", "msgstore (conflict 1).db"),
    "dropbox": ("{e} (conflicted copy 2026-11-28){x}", "msgstore (conflicted copy 2026-11-28).db"),
    "dropbox-named": ("{e} (Alice's conflicted copy 2026-11-28){x}",
                      "msgstore (Alice's conflicted copy 2026-11-28).db"),
    "dropbox-case": ("{e} (Case Conflict){x}", "msgstore (Case Conflict).db"),
    "onedrive": ("{e}-LAPTOP-42{x}", "msgstore (conflict LAPTOP-42).db"),
    "icloud": ("{e} 2{x}", "msgstore (conflict 2).db"),
    "nextcloud": ("{e} (conflicted copy 2026-11-28 101500){x}", "msgstore (conflicted copy 2026-11-28 101500).db"),
    "rclone-bisync-1.58": ("{e}{x}..path1", "msgstore (conflict path1).db"),
    "rclone-bisync-1.66": ("{e}{x}.conflict1", "msgstore (conflict 1).db"),
    "syncthing": ("{e}.sync-conflict-20261201-101500-MFZWI3D{x}", "msgstore.sync-conflict-20261201-101500-MFZWI3D.db"),
    "seafile": ("{e} (SFConflict alice@example.com 2026-12-01-10-15-00){x}",
                "msgstore (SFConflict alice@example.com 2026-12-01-10-15-00).db"),
}


def backing(vault: Vault, path: str) -> Path:
    return Path(vault.locate(path).path)


def copy_name(original: Path, form: str) -> Path:
    """The name a client gives its copy of a backing entry (its sidecar's copy: the same form on .vfn)."""
    return original.with_name(form.format(e=original.name[:-4], x=original.name[-4:]))


def plant_copy(vault: Vault, path: str, form: str, other_content: bytes | None) -> Path:
    """Make the backing entry a sync client would leave: same stem, its markers, other (or same) content."""
    original = backing(vault, path)
    target = copy_name(original, form)
    if original.suffix in (".vfl", ".vxl"):  # a client copies the long name's sidecar along
        shutil.copy2(original.with_suffix(".vfn"), copy_name(original.with_suffix(".vfn"), form))
    if other_content is None:
        if original.is_dir():
            shutil.copytree(original, target)
        else:
            shutil.copy2(original, target)
    else:
        write_file(vault, "/scratch", other_content)
        os.rename(backing(vault, "/scratch"), target)
    return target


def names(vault: Vault, path: str = "/") -> list[str]:
    return sorted(name for name, _ in vault.listdir(path))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_copy_is_shown_in_the_clients_words_then_renamed_read_and_deleted(vault_dir: VaultDir,
                                                                            provider: str) -> None:
    form, shown = PROVIDERS[provider]
    vault = vault_dir.unlock()
    vault.mkdir("/chats", 0o755)
    write_file(vault, "/chats/msgstore.db", b"version from this phone")
    planted = plant_copy(vault, "/chats/msgstore.db", form, b"version from the other phone")
    vault.close()
    reader = vault_dir.unlock(read_only=True)  # read-only: the same names, nothing renamed
    assert names(reader, "/chats") == sorted([shown, "msgstore.db"])
    assert read_file(reader, f"/chats/{shown}") == b"version from the other phone"
    reader.close()
    assert planted.exists()
    vault = vault_dir.unlock()
    assert names(vault, "/chats") == sorted([shown, "msgstore.db"])
    assert not planted.exists()
    assert read_file(vault, f"/chats/{shown}") == b"version from the other phone"
    assert read_file(vault, "/chats/msgstore.db") == b"version from this phone"
    vault.rename(f"/chats/{shown}", "/chats/other.db")
    assert read_file(vault, "/chats/other.db") == b"version from the other phone"
    vault.unlink("/chats/other.db")
    assert names(vault, "/chats") == ["msgstore.db"]
    vault.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_an_identical_copy_goes_and_a_lonely_copy_takes_the_original_name(vault_dir: VaultDir,
                                                                          read_only: bool) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/a.txt", b"same")
    identical = plant_copy(vault, "/a.txt", "{e}{x}..path1", b"same")
    write_file(vault, "/b.txt", b"only copy")
    original = backing(vault, "/b.txt")
    lonely = copy_name(original, "{e} 2{x}")
    os.rename(original, lonely)
    vault.close()
    vault = vault_dir.unlock(read_only=read_only)
    assert names(vault) == ["a.txt", "b.txt"]
    assert read_file(vault, "/b.txt") == b"only copy"
    vault.close()
    assert identical.exists() == lonely.exists() == read_only
    assert original.exists() != read_only


def test_copies_of_a_directory_a_symlink_a_fifo_and_a_long_name(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    vault.mkdir("/Media", 0o755)
    write_file(vault, "/Media/photo.jpg", b"p")
    media_copy = plant_copy(vault, "/Media", "{e} (conflicted copy 2026-12-01 laptop){x}", None)
    vault.symlink("target-a", "/link")
    vault.symlink("target-b", "/other-link")
    os.rename(backing(vault, "/other-link"), copy_name(backing(vault, "/link"), "{e}{x}..path2"))
    vault.mknod("/pipe", stat.S_IFIFO | 0o600)
    plant_copy(vault, "/pipe", "{e}-LAPTOP{x}", None)  # identical: it goes
    long_name = "a long file name " * 8 + ".txt"
    write_file(vault, "/" + long_name, b"long one")
    planted = plant_copy(vault, "/" + long_name, " (conflicted copy 2026-11-28)".join(("{e}", "{x}")), b"long two")
    assert planted.suffix == ".vfl"
    vault.close()

    for read_only in (True, False, True):  # read-only before and after the writable vault resolved them
        vault = vault_dir.unlock(read_only=read_only)
        listed = names(vault)
        assert "Media (conflicted copy 2026-12-01 laptop)" in listed and "Media" in listed
        assert "link (conflict path2)" in listed and listed.count("pipe") == 1
        conflict_long = [n for n in listed if n.startswith("a long") and "conflicted copy 2026-11-28" in n]
        assert len(conflict_long) == 1 and len(conflict_long[0].encode()) <= 255
        assert read_file(vault, "/Media (conflicted copy 2026-12-01 laptop)/photo.jpg") == b"p"
        assert vault.readlink("/link (conflict path2)") == "target-b" and vault.readlink("/link") == "target-a"
        assert read_file(vault, "/" + conflict_long[0]) == b"long two"
        assert read_file(vault, "/" + long_name) == b"long one"
        vault.close()
    assert not media_copy.exists()
    assert not list(vault_dir.path.glob("* (conflicted copy 2026-11-28).vfn")), "the copied sidecar went too"
    vault = vault_dir.unlock()
    write_file(vault, "/Media (conflicted copy 2026-12-01 laptop)/new.jpg", b"n")  # rebound: names still work
    vault.rename("/Media (conflicted copy 2026-12-01 laptop)", "/Media from laptop")
    assert names(vault, "/Media from laptop") == ["new.jpg", "photo.jpg"]
    vault.close()


def two_devices_made(vault_dir: VaultDir, tmp_path: Path, path: str, on_a: dict[str, bytes | None],
                     on_b: dict[str, bytes | None], copy_form: str = "vaultfs.dirid..path2") -> Path:
    """Devices A (vault_dir) and B (a copy of it) both mkdir ``path`` and write files into it; then B's
    directory is synced into A's as a sync client does: its vaultfs.dirid as a conflict copy, its entries
    beside A's (their names are encrypted under B's ID, so none collides)."""
    device_b = tmp_path / "device-b"
    shutil.copytree(vault_dir.path, device_b)
    for backing_dir, files in ((vault_dir.path, on_a), (device_b, on_b)):
        vault = Vault.unlock(str(backing_dir), vault_dir.password)
        vault.mkdir(path, 0o755)
        for name, data in files.items():
            if data is None:
                vault.mkdir(f"{path}/{name}", 0o755)
            else:
                write_file(vault, f"{path}/{name}", data)
        where = Path(vault.locate(path).path)
        vault.close()
    a_dir = vault_dir.path / where.relative_to(device_b)
    for item in where.iterdir():
        os.rename(item, a_dir / (copy_form if item.name == "vaultfs.dirid" else item.name))
    return a_dir


def test_two_devices_directory_shows_both_sets_and_a_writable_vault_merges_it(vault_dir: VaultDir,
                                                                             tmp_path: Path) -> None:
    shared = two_devices_made(vault_dir, tmp_path, "/shared",
                              {"from-a.txt": b"A", "same.txt": b"S", "both.txt": b"A's"},
                              {"from-b.txt": b"B", "same.txt": b"S", "both.txt": b"B's", "sub": None,
                               "sub/deep.txt": b"deep"})
    expected = ["both (conflict duplicate).txt", "both.txt", "from-a.txt", "from-b.txt", "same.txt", "sub"]
    before = sorted(os.listdir(shared))
    reader = vault_dir.unlock(read_only=True)
    assert names(reader, "/shared") == expected
    assert read_file(reader, "/shared/both (conflict duplicate).txt") == b"B's"
    reader.close()
    assert sorted(os.listdir(shared)) == before, "a read-only vault changes nothing"

    vault = vault_dir.unlock()
    assert names(vault, "/shared") == expected
    assert [n for n in os.listdir(shared) if "dirid" in n] == ["vaultfs.dirid"], "merged into one ID"
    assert read_file(vault, "/shared/from-b.txt") == b"B" and read_file(vault, "/shared/both.txt") == b"A's"
    write_file(vault, "/shared/new.txt", b"N")
    vault.close()
    reader = vault_dir.unlock(read_only=True)  # the subdirectory was rebound to its name under the merged ID
    assert names(reader, "/shared") == sorted([*expected, "new.txt"])
    assert read_file(reader, "/shared/both (conflict duplicate).txt") == b"B's"
    assert read_file(reader, "/shared/sub/deep.txt") == b"deep"
    reader.close()


def test_a_name_that_is_both_a_file_and_a_symlink_shows_twice(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/x", b"a file")
    vault.symlink("elsewhere", "/y")
    os.rename(backing(vault, "/y"), backing(vault, "/x").with_suffix(".vfx"))  # another device's symlink "x"
    vault.close()
    for read_only in (True, False):
        vault = vault_dir.unlock(read_only=read_only)
        assert names(vault) == ["x", "x (conflict duplicate)"]
        assert read_file(vault, "/x") == b"a file" and vault.readlink("/x (conflict duplicate)") == "elsewhere"
        vault.close()


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
    assert client_of(copy.words) != "a sync client"


@pytest.mark.parametrize("name", [
    "abcdef.vfs", "abcdef.vfs.partial", "abcdef.vfs.tmp", "abcdef.vfs.bak", "abcdef (copy).vfs", "ABC (1).vfs",
    "abcdef (1).txt", "abcdef.sync-conflict-20261201-101500-abc1234.vfs", "abcdef (1.vfs", "vaultfs.dirid",
    "vaultfs.dirid.tmp", "vaultfs.conf", "vaultfs.conf.bak", ".syncthing.abcdef.vfs.tmp", "abcdef.vfs~",
    "abcdef..vfs", " (1).vfs", "abcdef.vfs (1)",
])
def test_anything_else_is_not_a_conflict_copy(name: str) -> None:
    assert parse_copy(name) is None and not is_dirid_copy(name)


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
