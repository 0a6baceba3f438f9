"""vaultfs sync: two devices share one vault through a real SFTP server on loopback (rclone bisync)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import VaultDir
from tests.rclone_servers import cloud, sftp_keys  # noqa: F401 - fixtures
from tests.remote_helpers import backing_of, edit, leaks, make_vault, read, read_copy, same_tree
from tests.test_remote_pushpull import kill_midway, total_bytes

pytestmark = pytest.mark.remote


def export(cloud, vault_dir: VaultDir, backing: Path, dest: Path) -> Path:  # noqa: F811
    cloud.vaultfs("export", str(backing), str(dest), "--passfile", str(vault_dir.passfile))
    return dest


def export_copy(cloud, vault_dir: VaultDir, path: str, suffix: str, scratch: Path) -> bytes:  # noqa: F811
    """A conflict copy through ``vaultfs export``: format v1 does not show bisync's copies yet (v2 does), so
    the copy is renamed back to the file's own name in a scratch copy of the backing dir first."""
    shutil.copytree(vault_dir.path, scratch / "backing", symlinks=True)
    own = backing_of(scratch / "backing", path)
    os.rename(f"{own}{suffix}", own)
    try:
        return (export(cloud, vault_dir, scratch / "backing", scratch / "out") / path[1:]).read_bytes()
    finally:
        shutil.rmtree(scratch)


def test_two_devices_with_concurrent_edits_lose_nothing(cloud, tmp_path: Path) -> None:  # noqa: F811
    laptop = make_vault(tmp_path / "laptop")
    phone = VaultDir(tmp_path / "phone" / "backing", laptop.password, laptop.recovery_key, laptop.passfile)
    cloud.server("sf")
    first = cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    assert "first sync" in first.stdout and "0 new conflict copies" in first.stdout, first.stdout
    cloud.vaultfs("sync", str(phone.path), "sf:chat")  # a new device: everything comes down
    assert same_tree(export(cloud, laptop, laptop.path, tmp_path / "e1"),
                     export(cloud, laptop, phone.path, tmp_path / "e2")) == []

    edit(laptop, "/Databases/msgstore.db", b"laptop's night" * 1000)
    edit(phone, "/Databases/msgstore.db", b"phone's night" * 900)
    edit(laptop, "/from-laptop.txt", b"only the laptop wrote this")
    edit(phone, "/from-phone.txt", b"only the phone wrote this")
    cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    clash = cloud.vaultfs("sync", str(phone.path), "sf:chat")
    assert "2 new conflict copies" in clash.stdout, clash.stdout
    settle = cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    assert "2 new conflict copies" in settle.stdout, settle.stdout

    for device in (laptop, phone):
        db = backing_of(device.path, "/Databases/msgstore.db")
        assert not db.exists()  # bisync renamed both sides' versions; format v2 shows them as conflicts
        # ..path1 is the syncing device's version: the phone synced second, so ..path1 is the phone's
        versions = {export_copy(cloud, device, "/Databases/msgstore.db", suffix, tmp_path / "scratch")
                    for suffix in ("..path1", "..path2")}
        assert versions == {b"laptop's night" * 1000, b"phone's night" * 900}
        assert read(device.path, "/from-laptop.txt") == b"only the laptop wrote this"
        assert read(device.path, "/from-phone.txt") == b"only the phone wrote this"
    listing = {p.name for p in backing_of(phone.path, "/Databases/msgstore.db").parent.iterdir()}
    assert {n for n in listing if n.endswith(("..path1", "..path2"))} and \
        listing == {p.name for p in backing_of(laptop.path, "/Databases/msgstore.db").parent.iterdir()}
    assert leaks(cloud.servers["sf"].files()) == []


def test_a_first_sync_keeps_both_versions_of_a_file_that_differs(cloud, tmp_path: Path) -> None:  # noqa: F811
    """bisync --resync would let this side overwrite the remote: vaultfs keeps this side's copy as NAME..path1."""
    laptop = make_vault(tmp_path / "laptop")
    cloud.server("sf")
    cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    tablet = VaultDir(tmp_path / "tablet" / "backing", laptop.password, laptop.recovery_key, laptop.passfile)
    cloud.vaultfs("pull", "sf:chat", str(tablet.path))  # a copy made earlier, never synced from here
    edit(laptop, "/Databases/msgstore.db", b"newer on the laptop")
    cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    edit(tablet, "/Databases/msgstore.db", b"edited on the tablet before its first sync")
    first = cloud.vaultfs("sync", str(tablet.path), "sf:chat")
    assert "first sync" in first.stdout and "differed" in first.stdout, first.stdout
    assert read(tablet.path, "/Databases/msgstore.db") == b"newer on the laptop"
    kept = read_copy(tablet.path, "/Databases/msgstore.db", "..path1", tmp_path / "scratch")
    assert kept == b"edited on the tablet before its first sync"
    cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    assert read_copy(laptop.path, "/Databases/msgstore.db", "..path1", tmp_path / "scratch") == kept
    assert read(laptop.path, "/Databases/msgstore.db") == b"newer on the laptop"


def test_sync_needs_a_remote_that_keeps_times(cloud, tmp_path: Path) -> None:  # noqa: F811
    laptop = make_vault(tmp_path / "laptop")
    cloud.server("dav")
    refused = cloud.vaultfs("sync", str(laptop.path), "dav:chat", check=False)
    assert refused.returncode == 22 and "modification times" in refused.stderr and "push and pull" in refused.stderr
    assert cloud.servers["dav"].files() == {}


def test_a_sync_killed_midfile_and_run_again_leaves_no_fake_conflict(cloud, tmp_path: Path) -> None:  # noqa: F811
    laptop = make_vault(tmp_path / "laptop", media=3)
    server = cloud.server("sf")
    cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    before = total_bytes(server.storage)
    edit(laptop, "/Databases/msgstore.db", bytes(range(256)) * 12_000)
    kill_midway(cloud, ["sync", str(laptop.path), "sf:chat"], lambda: total_bytes(server.storage) - before,
                300_000, str(laptop.path))
    again = cloud.vaultfs("sync", str(laptop.path), "sf:chat")
    assert "0 new conflict copies" in again.stdout, again.stdout
    phone = tmp_path / "phone" / "backing"
    cloud.vaultfs("sync", str(phone), "sf:chat")
    assert read(phone, "/Databases/msgstore.db") == bytes(range(256)) * 12_000
    assert same_tree(export(cloud, laptop, laptop.path, tmp_path / "e1"),
                     export(cloud, laptop, phone, tmp_path / "e2")) == []
