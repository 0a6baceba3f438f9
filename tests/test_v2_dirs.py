"""Format-v2 directory IDs through the Vault: bound to their place at mkdir, rebound crash-safely on rename
and exchange, merged when two devices made one directory, and a directory left without its ID by a rename
on another device taken in by the directory its names belong to (docs/format.md section 5)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from tests.test_conflicts import two_devices_made
from vaultfs import backing as backing_module
from vaultfs import namespace
from vaultfs.errors import IntegrityError
from vaultfs.format.dirids import DIRID_NAME, ROOT, SEALED_SIZE, BoundDirIds, Place, split_records
from vaultfs.vault import Vault


def where(vault: Vault, path: str) -> Path:
    return Path(vault.locate(path).path)


def records(directory: Path) -> list[bytes]:
    return split_records((directory / DIRID_NAME).read_bytes()) or []


def valid_at(vault: Vault, directory: Path, parent_id: bytes, name: str) -> list[bytes | None]:
    return [vault.dirids.open(record, Place.of(parent_id, name)) for record in records(directory)]


def names(vault: Vault, path: str = "/") -> list[str]:
    return sorted(name for name, _ in vault.listdir(path))


def test_mkdir_binds_the_new_id_to_its_place(vault: Vault) -> None:
    vault.mkdir("/a", 0o755)
    vault.mkdir("/a/b", 0o755)
    a, b = where(vault, "/a"), where(vault, "/a/b")
    (a_id,) = valid_at(vault, a, vault.keys.root_dir_id, "a")
    assert a_id is not None and valid_at(vault, b, a_id, "b") != [None]
    assert valid_at(vault, a, vault.keys.root_dir_id, "b") == [None], "not valid under another name"
    assert valid_at(vault, b, vault.keys.root_dir_id, "b") == [None], "nor under another parent"
    (root_record,) = records(Path(vault.backing))
    assert vault.dirids.open(root_record, ROOT) == vault.keys.root_dir_id


def test_rename_and_exchange_rebind_every_directory_they_move(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    for path in ("/a", "/a/sub", "/b", "/c"):
        vault.mkdir(path, 0o755)
    write_file(vault, "/a/sub/deep.txt", b"deep")
    write_file(vault, "/c/file", b"c")
    vault.rename("/a/sub", "/b/moved")  # another parent and another name
    vault.rename("/a", "/renamed")
    vault.rename("/b", "/c", backing_module.RENAME_EXCHANGE)  # two directories trade places
    vault.symlink("somewhere", "/link")
    vault.rename("/link", "/c/moved/link")  # a special entry keeps its form
    vault.close()
    vault = vault_dir.unlock(read_only=True)
    assert names(vault) == ["b", "c", "renamed"]
    assert read_file(vault, "/c/moved/deep.txt") == b"deep" and read_file(vault, "/b/file") == b"c"
    assert vault.readlink("/c/moved/link") == "somewhere"
    for path in ("/b", "/c", "/c/moved", "/renamed"):
        assert len(records(where(vault, path))) == 1, path  # the old places' records are gone
    vault.close()


def test_a_file_and_a_symlink_exchange_names(vault: Vault) -> None:
    write_file(vault, "/f", b"file")
    vault.symlink("target", "/l")
    vault.rename("/f", "/l", backing_module.RENAME_EXCHANGE)
    assert read_file(vault, "/l") == b"file" and vault.readlink("/f") == "target"
    assert sorted(p.suffix for p in Path(vault.backing).iterdir() if p.suffix.startswith(".vf")) == [".vfs", ".vfx"]
    vault.rename("/l", "/f")  # a file renamed over a symlink replaces it
    assert names(vault) == ["f"] and read_file(vault, "/f") == b"file"


@pytest.mark.parametrize("crash_at", ["before-rename", "after-rename"])
def test_a_directory_rename_killed_at_either_step_leaves_it_valid_where_it_is(
        vault_dir: VaultDir, monkeypatch: pytest.MonkeyPatch, crash_at: str) -> None:
    vault = vault_dir.unlock()
    vault.mkdir("/old", 0o755)
    write_file(vault, "/old/inside.txt", b"inside")
    real_bind = vault.dirids.bind
    binds = []

    def bind(directory, ids, places, *rest):
        binds.append(len(places))
        if crash_at == "after-rename" and len(binds) == 2:
            raise KeyboardInterrupt("killed")  # the rename happened, the final bind did not
        return real_bind(directory, ids, places, *rest)

    def rename(*args, **kwargs):
        if crash_at == "before-rename":
            raise KeyboardInterrupt("killed")
        return real_rename(*args, **kwargs)

    real_rename = backing_module.rename_at
    monkeypatch.setattr(vault.dirids, "bind", bind)
    monkeypatch.setattr(namespace.backing, "rename_at", rename)
    with pytest.raises(KeyboardInterrupt):
        vault.rename("/old", "/new")
    monkeypatch.undo()
    vault.close()
    expected = "old" if crash_at == "before-rename" else "new"
    reader = vault_dir.unlock(read_only=True)
    assert names(reader) == [expected] and read_file(reader, f"/{expected}/inside.txt") == b"inside"
    assert len(records(where(reader, f"/{expected}"))) == 2, "one record for each place, one of them stale"
    reader.close()
    vault = vault_dir.unlock()  # a writer drops the stale record as it reads the IDs
    assert names(vault, f"/{expected}") == ["inside.txt"]
    assert len(records(where(vault, f"/{expected}"))) == 1
    vault.close()


def test_a_merge_killed_anywhere_is_finished_by_the_next_writer(vault_dir: VaultDir, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    files_a = {f"a{i}.txt": f"A{i}".encode() for i in range(4)}
    files_b = {f"b{i}.txt": f"B{i}".encode() for i in range(4)} | {"sub": None, "sub/deep.txt": b"deep"}
    shared = two_devices_made(vault_dir, tmp_path, "/shared", files_a, files_b)
    os.rename(shared / DIRID_NAME, shared / "vaultfs.dirid..path1")  # as rclone bisync leaves them: copies only
    pristine = tmp_path / "pristine"
    shutil.copytree(vault_dir.path, pristine)
    expected = sorted([*files_a, "b0.txt", "b1.txt", "b2.txt", "b3.txt", "sub"])
    for kill_after in [*range(5), "keep", "copies"]:  # after N of the 5 entries; at the new record; at the copies
        shutil.rmtree(vault_dir.path)
        shutil.copytree(pristine, vault_dir.path)

        def move(*args, moves=[], kill_after=kill_after, real_move=namespace.move_entry, **kwargs):  # noqa: B006
            if len(moves) == kill_after:
                raise KeyboardInterrupt("killed")
            moves.append(args)
            return real_move(*args, **kwargs)

        def killed(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr("vaultfs.dirmerge.move_entry", move)
        if kill_after == "keep":
            monkeypatch.setattr(BoundDirIds, "keep", killed)
        if kill_after == "copies":
            monkeypatch.setattr("vaultfs.dirmerge.os.unlink", killed)
        with pytest.raises(KeyboardInterrupt):
            vault = vault_dir.unlock()
            try:
                vault.listdir("/shared")
            finally:
                vault.close()
        monkeypatch.undo()
        vault = vault_dir.unlock()
        assert names(vault, "/shared") == expected, kill_after
        assert read_file(vault, "/shared/b3.txt") == b"B3" and read_file(vault, "/shared/sub/deep.txt") == b"deep"
        assert [n for n in os.listdir(shared) if "dirid" in n] == [DIRID_NAME]
        vault.close()


def rename_while_writing(vault_dir: VaultDir, tmp_path: Path) -> tuple[Path, Path]:
    """Device A renames /X to /Y while device B writes into /X; then a sync client brings B's writes back
    to the old place, which holds nothing else (its vaultfs.dirid moved with the directory on A)."""
    vault = vault_dir.unlock()
    vault.mkdir("/X", 0o755)
    vault.mkdir("/X/sub", 0o755)
    write_file(vault, "/X/old.txt", b"old")
    write_file(vault, "/X/sub/deep.txt", b"deep")
    x_path = where(vault, "/X")
    vault.close()
    device_b = tmp_path / "device-b"
    shutil.copytree(vault_dir.path, device_b)
    vault = vault_dir.unlock()  # A
    vault.rename("/X", "/Y")
    vault.close()
    vault = Vault.unlock(str(device_b), vault_dir.password)  # B
    write_file(vault, "/X/new.txt", b"written on B")
    write_file(vault, "/X/old.txt", b"edited on B")
    write_file(vault, "/X/sub/deeper.txt", b"B's, deeper")
    b_x = Path(vault.locate("/X").path)
    new, old = Path(vault.locate("/X/new.txt").path), Path(vault.locate("/X/old.txt").path)
    deeper = Path(vault.locate("/X/sub/deeper.txt").path)
    vault.close()
    sub = x_path / deeper.parent.name  # what the sync client makes of it on A: only B's changes at /X
    sub.mkdir(parents=True)
    shutil.copy2(new, x_path / new.name)
    shutil.copy2(old, x_path / old.name)
    shutil.copy2(deeper, sub / deeper.name)
    return x_path, b_x


def test_a_directory_renamed_on_one_device_while_another_wrote_into_it_loses_nothing(
        vault_dir: VaultDir, tmp_path: Path) -> None:
    x_path, _ = rename_while_writing(vault_dir, tmp_path)
    reader = vault_dir.unlock(read_only=True)
    assert names(reader) == ["X", "Y"]
    with pytest.raises(IntegrityError):
        reader.listdir("/X")  # read-only: an error (fsck says where its names belong), nothing moved
    reader.close()
    vault = vault_dir.unlock()
    with pytest.raises(FileNotFoundError):
        vault.listdir("/X")  # taken in by /Y, where its names belong
    assert names(vault) == ["Y"] and not x_path.exists()
    assert names(vault, "/Y") == ["new.txt", "old (conflict moved).txt", "old.txt", "sub"]
    assert read_file(vault, "/Y/new.txt") == b"written on B"
    assert read_file(vault, "/Y/old (conflict moved).txt") == b"edited on B"
    assert read_file(vault, "/Y/old.txt") == b"old"
    assert names(vault, "/Y/sub") == ["deep.txt", "deeper.txt"]
    assert read_file(vault, "/Y/sub/deeper.txt") == b"B's, deeper"
    vault.close()


def test_the_root_keeps_only_its_own_id(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/f", b"f")
    vault.close()
    root = vault_dir.path
    record = (root / DIRID_NAME).read_bytes()
    (root / "vaultfs.dirid..path1").write_bytes(record)  # a sync client's copy: same ID, left alone
    vault = vault_dir.unlock()
    assert names(vault) == ["f"] and (root / "vaultfs.dirid..path1").exists()
    planted = vault.dirids.seal(os.urandom(16), ROOT)
    vault.close()
    (root / "vaultfs (1).dirid").write_bytes(planted)  # another ID at the root's place: never valid there
    reader = vault_dir.unlock(read_only=True)
    assert names(reader) == ["f"] and reader.tree.root.dir_ids == (reader.keys.root_dir_id,)
    reader.close()
    vault = vault_dir.unlock()  # a writer drops it
    assert not (root / "vaultfs (1).dirid").exists() and len((root / DIRID_NAME).read_bytes()) == SEALED_SIZE
    vault.close()
