"""fsck on format version 2, through the real CLI: directory IDs (several, stray records, none), duplicate
names, foreign backing entries, interrupted writes into holes and truncates; ``--repair`` fixes what loses
nothing; ``vaultfs conflicts`` and fsck's conflicts section list what waits for the user; ls and export
never stop on a name found twice."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, run_cli, write_file
from tests.test_conflicts import plant_copy, two_devices_made
from tests.test_v2_dirs import rename_while_writing
from vaultfs.format import blocks
from vaultfs.format.dirids import DIRID_NAME

STORED = 4096 + blocks.BLOCK_OVERHEAD


def fsck(vault_dir: VaultDir, *extra: str):
    return run_cli("fsck", str(vault_dir.path), "--passfile", str(vault_dir.passfile), *extra)


def lines(result, status: str = "PROBLEM") -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(status)]


def test_several_ids_a_stray_record_and_a_duplicate_are_reported_then_repaired(vault_dir: VaultDir,
                                                                              tmp_path: Path) -> None:
    two_devices_made(vault_dir, tmp_path, "/shared", {"a.txt": b"A", "both.txt": b"A's"},
                     {"b.txt": b"B", "both.txt": b"B's"})
    vault = vault_dir.unlock(read_only=True)
    d = Path(vault.locate("/shared").path)
    vault.close()
    vault = vault_dir.unlock()
    vault.mkdir("/other", 0o755)
    other = Path(vault.locate("/other").path)
    vault.close()
    (other / "vaultfs (1).dirid").write_bytes((d / DIRID_NAME).read_bytes())  # /shared's ID, copied into /other
    found = fsck(vault_dir)
    assert found.returncode == 12, found.stdout + found.stderr
    kinds = sorted(line.split(":")[0] for line in lines(found))
    assert kinds == ["PROBLEM dir-id-record", "PROBLEM dir-ids", "PROBLEM duplicate"], lines(found)
    assert any("/shared" in line and "2 directory IDs" in line for line in lines(found))
    assert any("/other" in line and "vaultfs (1).dirid" in line for line in lines(found))
    assert any("/shared/both.txt" in line for line in lines(found, "PROBLEM duplicate"))
    repaired = fsck(vault_dir, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # the merge renames B's both.txt to its conflict name: the duplicate is gone with it
    assert sorted(line.split(":")[0] for line in lines(repaired, "REPAIRED")) == [
        "REPAIRED dir-id-record", "REPAIRED dir-ids"] and not lines(repaired)
    assert "both (conflict duplicate).txt: a version of /shared/both.txt, named by vaultfs" in repaired.stdout
    again = fsck(vault_dir)
    assert again.returncode == 0 and "0 problem(s)" in again.stdout, again.stdout + again.stderr
    assert "1 sync conflict(s) waiting for you" in again.stdout
    assert sorted(n for n in os.listdir(d) if "dirid" in n) == [DIRID_NAME] == [n for n in os.listdir(other)
                                                                                 if "dirid" in n]


def test_foreign_backing_entries_are_reported_and_left_alone(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/f", b"f")
    target = Path(vault.locate("/f").path)
    vault.close()
    os.symlink("/etc/passwd", vault_dir.path / ("a" * 52 + ".vfs"))
    os.mkfifo(vault_dir.path / "planted-fifo")
    target.rename(target.with_name("renamed.txt"))
    os.symlink("renamed.txt", target)  # a backing symlink under an entry's very name
    found = fsck(vault_dir, "--repair")
    foreign = lines(found, "PROBLEM foreign-entry")
    assert found.returncode == 12 and len(foreign) == 4, found.stdout + found.stderr
    assert sum("symlink" in line for line in foreign) == 2 and sum("FIFO" in line for line in foreign) == 1
    assert any(line.startswith("PROBLEM foreign-entry: /f ") for line in foreign)
    assert (vault_dir.path / "planted-fifo").exists() and target.is_symlink()


def sparse_file(vault_dir: VaultDir) -> Path:
    vault = vault_dir.unlock()
    handle = vault.create("/sparse.db", 0o644)
    handle.write(0, b"a" * 4096)
    handle.write(20 * 4096, b"b" * 4096)
    handle.close()
    path = Path(vault.locate("/sparse.db").path)
    vault.close()
    return path


def test_an_interrupted_write_into_a_hole_is_repaired_keeping_the_data(vault_dir: VaultDir) -> None:
    path = sparse_file(vault_dir)
    before = path.read_bytes()
    vault = vault_dir.unlock()
    handle = vault.open("/sparse.db", os.O_RDWR)
    handle.write(5 * 4096, b"c" * 4096)  # writes block 5, then re-seals block 20 with run start 6
    handle.close()
    vault.close()
    after = bytearray(path.read_bytes())
    after[40 + 20 * STORED : 40 + 21 * STORED] = before[40 + 20 * STORED : 40 + 21 * STORED]  # crash before that
    path.write_bytes(bytes(after))
    found = fsck(vault_dir)
    assert found.returncode == 12 and [line.split(":")[0] for line in lines(found)] == ["PROBLEM torn-fill"]
    repaired = fsck(vault_dir, "--repair")
    assert repaired.returncode == 0 and lines(repaired, "REPAIRED torn-fill: /sparse.db")
    vault = vault_dir.unlock()
    expected = b"a" * 4096 + bytes(4 * 4096) + b"c" * 4096 + bytes(14 * 4096) + b"b" * 4096
    assert read_file(vault, "/sparse.db") == expected
    vault.close()


def test_an_interrupted_truncate_is_finished(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/t", os.urandom(5 * 4096))
    path = Path(vault.locate("/t").path)
    before = path.read_bytes()
    vault.truncate("/t", 4096 + 100)
    vault.close()
    cut = path.read_bytes()
    path.write_bytes(cut + before[len(cut):])  # the new last block written, the file not yet cut after it
    found = fsck(vault_dir)
    assert [line.split(":")[0] for line in lines(found)] == ["PROBLEM interrupted-truncate"], found.stdout
    assert fsck(vault_dir, "--repair").returncode == 0
    assert path.read_bytes() == cut


def test_a_directory_without_its_id_is_reported_with_its_owner_and_moved_there(vault_dir: VaultDir,
                                                                               tmp_path: Path) -> None:
    x_path, _ = rename_while_writing(vault_dir, tmp_path)
    found = fsck(vault_dir)
    (problem,) = lines(found)
    assert problem.startswith("PROBLEM dir-id: /X ") and "belong to /Y" in problem
    repaired = fsck(vault_dir, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert lines(repaired, "REPAIRED dir-id: /X ") and not x_path.exists()
    vault = vault_dir.unlock(read_only=True)
    assert read_file(vault, "/Y/new.txt") == b"written on B"
    vault.close()
    again = fsck(vault_dir)
    assert again.returncode == 0 and "0 problem(s)" in again.stdout
    assert "/Y/old (conflict moved).txt: a version of /Y/old.txt" in again.stdout


def test_conflicts_lists_what_waits_with_client_and_original(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    vault.mkdir("/chats", 0o755)
    write_file(vault, "/chats/msgstore.db", b"mine")
    plant_copy(vault, "/chats/msgstore.db", "{e} (conflicted copy 2026-12-01 laptop){x}", b"theirs")
    write_file(vault, "/notes.txt", b"mine")
    plant_copy(vault, "/notes.txt", "{e}{x}..path1", b"theirs")
    vault.close()
    before = sorted(str(p) for p in vault_dir.path.rglob("*"))
    listed = run_cli("conflicts", str(vault_dir.path), "--passfile", str(vault_dir.passfile))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "/notes (conflict path1).txt: a version of /notes.txt, named by rclone bisync",
        "/chats/msgstore (conflicted copy 2026-12-01 laptop).db: a version of /chats/msgstore.db, named by "
        "Dropbox, Nextcloud or ownCloud",
    ]
    assert "2 sync conflict(s) waiting" in listed.stderr
    assert sorted(str(p) for p in vault_dir.path.rglob("*")) == before, "read-only"


def test_ls_and_export_show_a_name_found_twice_under_a_conflict_name(vault_dir: VaultDir, tmp_path: Path) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/x", b"a file")
    vault.symlink("elsewhere", "/y")
    os.rename(vault.locate("/y").path, Path(vault.locate("/x").path).with_suffix(".vfx"))
    vault.close()
    listing = run_cli("ls", str(vault_dir.path), "/", "--passfile", str(vault_dir.passfile))
    assert listing.returncode == 0, listing.stderr
    assert [line.split(" ", 5)[-1].strip() for line in listing.stdout.splitlines()][-2:] == [
        "x", "x (conflict duplicate) -> elsewhere"] or "x (conflict duplicate) -> elsewhere" in listing.stdout
    out = tmp_path / "out"
    exported = run_cli("export", str(vault_dir.path), str(out), "--passfile", str(vault_dir.passfile))
    assert exported.returncode == 0, exported.stderr
    assert (out / "x").read_bytes() == b"a file" and os.readlink(out / "x (conflict duplicate)") == "elsewhere"
    assert "conflict duplicate" in exported.stderr


@pytest.mark.parametrize("copy_form", ["vaultfs.dirid..path2", "vaultfs (1).dirid"])
def test_export_of_an_unmerged_directory_matches_what_a_writable_vault_shows(vault_dir: VaultDir, tmp_path: Path,
                                                                            copy_form: str) -> None:
    two_devices_made(vault_dir, tmp_path, "/shared", {"a.txt": b"A", "same": b"S"}, {"b.txt": b"B", "same": b"S"},
                     copy_form)
    out_ro = tmp_path / "read-only"
    assert run_cli("export", str(vault_dir.path), str(out_ro), "--passfile", str(vault_dir.passfile)).returncode == 0
    vault = vault_dir.unlock()
    shown = sorted(name for name, _ in vault.listdir("/shared"))
    vault.close()
    assert sorted(os.listdir(out_ro / "shared")) == shown == ["a.txt", "b.txt", "same"]
    shutil.rmtree(out_ro)
