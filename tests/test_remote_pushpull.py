"""push and pull through real rclone servers on loopback: WebDAV (no times, no checksums) and SFTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import VaultDir
from tests.mounting import track_mountpoint
from tests.rclone_servers import VAULTFS_BIN, cloud, sftp_keys  # noqa: F401 - fixtures
from tests.remote_helpers import edit, leaks, make_vault, read, rewrite_in_place, same_tree
from tests.terminal import shown_on_terminal

pytestmark = pytest.mark.remote


def export(cloud, vault_dir, backing: Path, dest: Path) -> Path:  # noqa: F811 - cloud is the fixture's value
    cloud.vaultfs("export", str(backing), str(dest), "--passfile", str(vault_dir.passfile))
    return dest


@pytest.mark.parametrize("remote", ["dav", "sf"])
def test_push_then_pull_on_a_second_machine_gives_the_same_tree(cloud, tmp_path: Path, remote: str) -> None:  # noqa: F811
    vault_dir = make_vault(tmp_path / "one")
    cloud.server(remote)
    pushed = cloud.vaultfs("push", str(vault_dir.path), f"{remote}:backups/chat")
    assert "pushed" in pushed.stdout
    second = tmp_path / "two" / "backing"
    pulled = cloud.vaultfs("pull", f"{remote}:backups/chat", str(second))
    assert "pulled" in pulled.stdout
    mine = export(cloud, vault_dir, vault_dir.path, tmp_path / "export-one")
    theirs = export(cloud, vault_dir, second, tmp_path / "export-two")
    assert same_tree(mine, theirs) == []
    assert (theirs / "latest.db").is_symlink()
    assert leaks(cloud.servers[remote].files()) == []
    mnt = track_mountpoint(tmp_path / "mnt")  # the pulled vault mounts as well
    mnt.mkdir()
    cloud.vaultfs("mount", str(second), str(mnt), "--passfile", str(vault_dir.passfile))
    try:
        assert (mnt / "Databases" / "msgstore.db").read_bytes() == (mine / "Databases" / "msgstore.db").read_bytes()
    finally:
        cloud.vaultfs("lock", str(mnt))


def total_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_a_same_size_rewrite_travels_both_ways_on_a_remote_without_times(cloud, tmp_path: Path) -> None:  # noqa: F811
    """Plain WebDAV keeps only sizes; msgstore.db rewritten in place keeps its size: it must still travel."""
    one = make_vault(tmp_path / "one")
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    two = VaultDir(tmp_path / "two" / "backing", one.password, one.recovery_key, one.passfile)
    cloud.vaultfs("pull", "dav:chat", str(two.path))
    old = read(one.path, "/Databases/msgstore.db")
    rewrite_in_place(one, "/Databases/msgstore.db", 8192, b"night two" * 100)
    new = read(one.path, "/Databases/msgstore.db")
    assert len(new) == len(old) and new != old
    again = cloud.vaultfs("push", str(one.path), "dav:chat")
    assert "pushed 1 file(s)" in again.stdout, again.stdout  # only the rewritten database
    cloud.vaultfs("pull", "dav:chat", str(two.path))
    assert read(two.path, "/Databases/msgstore.db") == new
    # and back: machine two rewrites, pushes; machine one pulls
    rewrite_in_place(two, "/Databases/msgstore.db", 0, b"night three" * 50)
    cloud.vaultfs("push", str(two.path), "dav:chat")
    cloud.vaultfs("pull", "dav:chat", str(one.path))
    assert read(one.path, "/Databases/msgstore.db") == read(two.path, "/Databases/msgstore.db")
    unchanged = cloud.vaultfs("push", str(one.path), "dav:chat")
    assert "pushed 0 file(s)" in unchanged.stdout, unchanged.stdout


def test_pull_keeps_local_files_the_remote_lacks_unless_delete(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one")
    cloud.server("sf")
    cloud.vaultfs("push", str(one.path), "sf:chat")
    two = VaultDir(tmp_path / "two" / "backing", one.password, one.recovery_key, one.passfile)
    cloud.vaultfs("pull", "sf:chat", str(two.path))
    edit(two, "/only-here.txt", b"written on machine two")
    cloud.vaultfs("pull", "sf:chat", str(two.path))
    assert read(two.path, "/only-here.txt") == b"written on machine two"
    deleted = cloud.vaultfs("pull", "sf:chat", str(two.path), "--delete")
    assert "deleted 1" in deleted.stdout, deleted.stdout
    listing = cloud.vaultfs("ls", str(two.path), "/", "--passfile", str(one.passfile)).stdout
    assert "only-here.txt" not in listing and "empty.txt" in listing


def test_temporary_names_never_leave_the_machine(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one")
    subdir = next(p for p in one.path.iterdir() if p.is_dir())
    (subdir / "vaultfs.tmp-0123456789abcdef").write_bytes(b"half an import")
    (one.path / "vaultfs.conf.tmp").write_bytes(b"half a config")
    (one.path / ".fuse_hidden0000001").write_bytes(b"deleted while open")
    (one.path / "vaultfs.conf.bak").write_bytes(b"an older vaultfs's previous config: an old password's slot")
    cloud.server("dav")
    cloud.rclone("copyto", str(one.path / "vaultfs.conf.bak"), "dav:chat/vaultfs.conf.bak")  # pushed long ago
    cloud.vaultfs("push", str(one.path), "dav:chat")
    stored = cloud.servers["dav"].files()
    assert stored and not [p for p in stored if "tmp" in p or "fuse_hidden" in p or p.endswith(".bak")], sorted(stored)
    assert "chat/vaultfs.conf" in stored


def test_push_and_pull_refuse_while_the_vault_is_mounted(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one")
    mnt = track_mountpoint(tmp_path / "mnt")
    mnt.mkdir()
    cloud.server("dav")
    cloud.vaultfs("mount", str(one.path), str(mnt), "--passfile", str(one.passfile))
    try:
        pushed = cloud.vaultfs("push", str(one.path), "dav:chat", check=False)
        pulled = cloud.vaultfs("pull", "dav:chat", str(one.path), check=False)
    finally:
        cloud.vaultfs("lock", str(mnt))
    assert pushed.returncode == 23 and "lock it first" in pushed.stderr, pushed.stderr
    assert pulled.returncode == 23, pulled.stderr
    assert cloud.servers["dav"].files() == {}
    assert cloud.vaultfs("push", str(one.path), "dav:chat").returncode == 0


def test_clear_errors_and_exit_codes(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one")
    other = make_vault(tmp_path / "other")
    cloud.server("dav")
    unknown = cloud.vaultfs("push", str(one.path), "nosuch:chat", check=False)
    assert unknown.returncode == 22 and "'nosuch' is not a remote" in unknown.stderr and "dav" in unknown.stderr
    no_rclone = cloud.vaultfs("push", str(one.path), "dav:chat", check=False,
                              extra_env={"PATH": str(Path(VAULTFS_BIN).parent)})
    assert no_rclone.returncode == 21 and "apt-get install rclone" in no_rclone.stderr, no_rclone.stderr
    nothing = cloud.vaultfs("pull", "dav:empty", str(tmp_path / "new"), check=False)
    assert nothing.returncode == 5 and "holds no vault" in nothing.stderr
    not_vault = tmp_path / "plain"
    not_vault.mkdir()
    (not_vault / "notes.txt").write_text("mine")
    assert cloud.vaultfs("push", str(not_vault), "dav:chat", check=False).returncode == 5
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mixed = cloud.vaultfs("push", str(other.path), "dav:chat", check=False)
    assert mixed.returncode == 25 and "another vault" in mixed.stderr
    assert cloud.vaultfs("pull", "dav:chat", str(other.path), check=False).returncode == 25
    refused = cloud.vaultfs("pull", "dav:chat", str(not_vault), check=False)
    assert refused.returncode == 9 and (not_vault / "notes.txt").read_text() == "mine"
    down = cloud.servers["dav"]
    down.stop()
    failed = cloud.vaultfs("push", str(one.path), "dav:chat", check=False,
                           extra_env={"RCLONE_LOW_LEVEL_RETRIES": "1", "RCLONE_RETRIES": "1"})
    assert failed.returncode == 24 and "rclone" in failed.stderr, failed.stderr


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_midway(cloud, args: list[str], progress: Callable[[], int], threshold: int, mention: str) -> None:  # noqa: F811
    """Start a slowed-down transfer, SIGKILL vaultfs once ``progress()`` passes ``threshold``; rclone must die too."""
    process = subprocess.Popen([VAULTFS_BIN, *args], env={**cloud.env(), "RCLONE_BWLIMIT": "150k"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while progress() < threshold and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the transfer ended before it could be interrupted"
    finally:
        process.kill()
        process.wait(10)
    deadline = time.monotonic() + 10
    while processes_mentioning(mention) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(mention) == [], "rclone kept running after vaultfs was killed"


@pytest.mark.parametrize("remote", ["dav", "sf"])
def test_a_push_killed_midway_and_run_again_completes(cloud, tmp_path: Path, remote: str) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=40)
    server = cloud.server(remote)
    full = total_bytes(one.path)
    kill_midway(cloud, ["push", str(one.path), f"{remote}:chat"], lambda: total_bytes(server.storage), full // 4,
                str(one.path))
    assert 0 < total_bytes(server.storage) < full
    cloud.vaultfs("push", str(one.path), f"{remote}:chat")
    two = tmp_path / "two" / "backing"
    cloud.vaultfs("pull", f"{remote}:chat", str(two))
    assert same_tree(export(cloud, one, one.path, tmp_path / "e1"), export(cloud, one, two, tmp_path / "e2")) == []


def test_a_pull_killed_midway_leaves_no_partial_file_and_run_again_completes(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=40)
    cloud.server("sf")
    cloud.vaultfs("push", str(one.path), "sf:chat")
    two = tmp_path / "two" / "backing"
    full = total_bytes(one.path)
    kill_midway(cloud, ["pull", "sf:chat", str(two)], lambda: total_bytes(two) if two.exists() else 0, full // 4,
                str(two))
    staged = two / "vaultfs.pull"
    assert staged.is_dir() and total_bytes(staged) > 0
    for path in two.rglob("*"):  # outside the staging dir, every file is whole or absent
        if path.is_file() and staged not in path.parents:
            assert path.read_bytes() == (one.path / path.relative_to(two)).read_bytes(), path
    assert not (two / "vaultfs.conf").exists()  # not a vault yet: nothing half-pulled opens
    cloud.vaultfs("pull", "sf:chat", str(two))
    assert not staged.exists()
    assert same_tree(export(cloud, one, one.path, tmp_path / "e1"), export(cloud, one, two, tmp_path / "e2")) == []


def test_progress_on_a_terminal_only(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=30)
    cloud.server("dav")
    returncode, _, shown = shown_on_terminal([VAULTFS_BIN, "push", str(one.path), "dav:chat"],
                                             {**cloud.env(), "RCLONE_BWLIMIT": "400k"})
    assert returncode == 0
    text = shown.decode("utf-8", "replace")
    assert "push:" in text and "B/s" in text and "files" in text, text
    piped = cloud.vaultfs("pull", "dav:chat", str(tmp_path / "two"))
    assert "B/s" not in piped.stderr + piped.stdout
