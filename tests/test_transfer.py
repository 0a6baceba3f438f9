"""export, import, ls and cat through the real CLI, without FUSE."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import VAULTFS_BIN, VaultDir, cli_env, read_file, run_cli, without_test_kdf_warning, write_file
from tests.terminal import shown_on_terminal


def make_tree(root: Path, big_files: int = 3, size: int = 300_000) -> Path:
    (root / "Media" / "Images").mkdir(parents=True)
    (root / "Databases").mkdir()
    (root / "Databases" / "msgstore.db").write_bytes(os.urandom(50_000))
    (root / "Databases" / "empty.db").write_bytes(b"")
    for i in range(big_files):
        (root / "Media" / "Images" / f"IMG-{i:04d}.jpg").write_bytes(os.urandom(size))
    (root / "notes ünï.txt").write_text("Grüße\n")
    os.symlink("Databases/msgstore.db", root / "latest.db")
    os.link(root / "notes ünï.txt", root / "Media" / "hardlink.txt")
    os.mkfifo(root / "pipe")
    (root / "Databases" / "msgstore.db").chmod(0o600)
    os.utime(root / "Databases", ns=(1_600_000_000_000_000_001, 1_600_000_000_123_456_789))
    return root


def assert_same_tree(left: Path, right: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(left):
        rel = Path(dirpath).relative_to(left)
        other = right / rel
        assert sorted(os.listdir(dirpath)) == sorted(os.listdir(other)), rel
        for name in dirnames + filenames + [""]:
            a, b = Path(dirpath) / name, other / name
            sa, sb = os.lstat(a), os.lstat(b)
            assert (sa.st_mode, sa.st_nlink) == (sb.st_mode, sb.st_nlink), a
            assert sa.st_mtime_ns == sb.st_mtime_ns, a
            if a.is_symlink():
                assert os.readlink(a) == os.readlink(b)
            elif a.is_file():
                assert filecmp.cmp(a, b, shallow=False), a


def cli(vault_dir: VaultDir, verb: str, *args: str):
    return run_cli(verb, str(vault_dir.path), *args, "--passfile", str(vault_dir.passfile))


def test_import_then_export_is_the_identity(tmp_path: Path, vault_dir: VaultDir) -> None:
    source = make_tree(tmp_path / "src")
    result = cli(vault_dir, "import", str(source))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    result = cli(vault_dir, "export", str(out))
    assert result.returncode == 0, result.stderr
    assert_same_tree(source, out)
    again = cli(vault_dir, "import", str(source))
    assert "0 files" in again.stdout  # nothing left to do
    assert cli(vault_dir, "export", str(out)).returncode == 9  # refuses to overwrite
    assert cli(vault_dir, "export", str(out), "--force").returncode == 0
    assert_same_tree(source, out)


def test_export_of_some_paths_and_ls_and_cat(tmp_path: Path, vault_dir: VaultDir) -> None:
    source = make_tree(tmp_path / "src")
    assert cli(vault_dir, "import", str(source), "--into", "/backup/2026").returncode == 0
    out = tmp_path / "part"
    assert cli(vault_dir, "export", str(out), "/backup/2026/Databases").returncode == 0
    assert sorted(os.listdir(out / "backup" / "2026" / "Databases")) == ["empty.db", "msgstore.db"]
    listing = cli(vault_dir, "ls", "/backup/2026")
    assert listing.returncode == 0
    assert "Databases" in listing.stdout and "latest.db -> Databases/msgstore.db" in listing.stdout
    cat = subprocess.run([VAULTFS_BIN, "cat", str(vault_dir.path), "/backup/2026/Databases/msgstore.db",
                          "--passfile", str(vault_dir.passfile)], capture_output=True, env=cli_env())
    assert cat.returncode == 0 and cat.stdout == (source / "Databases" / "msgstore.db").read_bytes()
    missing = cli(vault_dir, "cat", "/nope")
    assert missing.returncode == 19 and without_test_kdf_warning(missing.stderr) == "vaultfs: no such file: /nope\n"


def test_export_skips_a_corrupt_file_and_says_so(tmp_path: Path, vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/good.txt", b"good")
    write_file(vault, "/bad.bin", os.urandom(10000))
    bad = Path(vault.locate("/bad.bin").path)
    vault.close()
    raw = bytearray(bad.read_bytes())
    raw[5000] ^= 0xFF
    bad.write_bytes(raw)
    out = tmp_path / "out"
    result = cli(vault_dir, "export", str(out))
    assert result.returncode == 14, result.stderr
    assert "/bad.bin" in result.stderr and "Traceback" not in result.stderr
    assert (out / "good.txt").read_bytes() == b"good"
    assert not (out / "bad.bin").exists()


def test_import_killed_midway_resumes_to_the_identical_result(tmp_path: Path, vault_dir: VaultDir) -> None:
    source = make_tree(tmp_path / "src", big_files=40, size=2_000_000)
    process = subprocess.Popen([VAULTFS_BIN, "import", str(vault_dir.path), str(source),
                                "--passfile", str(vault_dir.passfile)], env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(vault_dir.path.rglob("*.vfs"))) >= 12:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the import finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    vault = vault_dir.unlock()
    images = vault.listdir("/Media/Images")
    assert 0 < len(images) < 40
    for name, attr in images:  # whatever is visible is complete
        assert attr.st_size == 2_000_000
        assert read_file(vault, f"/Media/Images/{name}") == (source / "Media" / "Images" / name).read_bytes()
    vault.close()
    result = cli(vault_dir, "import", str(source))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert cli(vault_dir, "export", str(out)).returncode == 0
    assert_same_tree(source, out)
    assert not list(vault_dir.path.rglob("vaultfs.tmp-*"))
    vault = vault_dir.unlock()
    assert len(vault.listdir("/Media/Images")) == 40
    vault.close()


@pytest.mark.parametrize("verb", ["import", "export", "fsck"])
def test_progress_bars_on_a_tty_only(tmp_path: Path, vault_dir: VaultDir, verb: str) -> None:
    source = make_tree(tmp_path / "src", big_files=5, size=1_000_000)
    if verb != "import":
        assert cli(vault_dir, "import", str(source)).returncode == 0
    extra = {"import": [str(source)], "export": [str(tmp_path / "out")], "fsck": []}[verb]
    _, _, shown = shown_on_terminal([VAULTFS_BIN, verb, str(vault_dir.path), *extra, "--passfile",
                                     str(vault_dir.passfile)], cli_env())
    on_tty = shown.decode("utf-8", "replace")
    assert f"{verb}:" in on_tty and "B/s" in on_tty, on_tty
    if verb == "export":
        extra = [str(tmp_path / "out2")]
    if verb == "import":
        extra = [str(make_tree(tmp_path / "src2", big_files=2))]
    piped = cli(vault_dir, verb, *extra)
    assert piped.returncode == 0, piped.stderr
    assert "B/s" not in piped.stderr and "B/s" not in piped.stdout


def owners_and_modes(root: Path) -> dict[str, tuple[int, int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + [""]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid)
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to other users")
def test_owners_and_set_id_bits_survive_import_and_export(tmp_path: Path, vault_dir: VaultDir) -> None:
    """As root (cp -a, tar): other users' files stay theirs, and set-user-ID / set-group-ID
    survive the chown that would clear them if the mode were set first."""
    source = tmp_path / "src"
    (source / "shared").mkdir(parents=True)
    (source / "prog").write_bytes(b"#!/bin/sh\n")
    (source / "shared" / "group-tool").write_bytes(b"tool")
    os.symlink("prog", source / "link")
    os.mkfifo(source / "pipe")
    for rel, uid, gid, mode in (("prog", 1000, 1000, 0o4755), ("shared/group-tool", 1001, 1002, 0o2750),
                                ("shared", 1001, 1002, 0o2775), ("pipe", 1000, 1001, 0o640)):
        os.chown(source / rel, uid, gid)  # chown first: it clears the set-ID bits
        os.chmod(source / rel, mode)
    os.chown(source / "link", 1003, 1003, follow_symlinks=False)
    expected = owners_and_modes(source)
    assert expected["prog"][0] & 0o7777 == 0o4755 and expected["link"][1] == 1003

    assert cli(vault_dir, "import", str(source)).returncode == 0
    vault = vault_dir.unlock()
    attr = vault.getattr("/prog")
    assert (attr.st_mode & 0o7777, attr.st_uid, attr.st_gid) == (0o4755, 1000, 1000)
    vault.chown("/shared/group-tool", 0, 0)  # as a run killed after publishing it leaves it
    vault.close()
    assert cli(vault_dir, "import", str(source)).returncode == 0  # the rerun finishes the owner
    out = tmp_path / "out"
    assert cli(vault_dir, "export", str(out)).returncode == 0
    assert owners_and_modes(out) == expected
