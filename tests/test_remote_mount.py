"""vaultfs mount REMOTE:PATH: rclone's own mount underneath, against a real WebDAV server on loopback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VaultDir
from tests.mounting import track_mountpoint
from tests.rclone_servers import Cloud, cloud, sftp_keys  # noqa: F401 - fixtures
from tests.remote_helpers import leaks, make_vault, read, same_tree
from vaultfs.fuse.state import canonical, mount_type, process_start, vaultfs_mounted
from vaultfs.remote import rmount

pytestmark = [pytest.mark.remote, pytest.mark.mount]

FAST_FAIL = {"RCLONE_LOW_LEVEL_RETRIES": "1", "RCLONE_RETRIES": "1", "RCLONE_CONTIMEOUT": "2s",
             "RCLONE_TIMEOUT": "5s"}


def rclone_dir(mnt: Path) -> Path:
    return Path(rmount.private_dir(canonical(str(mnt)))) / "backing"


def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@contextlib.contextmanager
def remote_mounted(cloud: Cloud, vault_dir: VaultDir, source: str, mnt: Path, *extra: str,  # noqa: F811
                   env: dict | None = None) -> Iterator[subprocess.CompletedProcess[str]]:
    """Mount REMOTE:PATH, yield, and always lock; whatever is left is torn down and fails the test."""
    mnt.mkdir(exist_ok=True)
    track_mountpoint(mnt)  # sealed once locked: released after the test
    record = None
    try:
        yield cloud.vaultfs("mount", source, str(mnt), "--passfile", str(vault_dir.passfile),
                            "--log", str(mnt.parent / "daemon.log"), *extra, extra_env=env)
    finally:
        record = rmount.load(canonical(str(mnt)))
        if vaultfs_mounted(canonical(str(mnt))):
            cloud.vaultfs("lock", str(mnt), check=False)
        left = rmount.load(canonical(str(mnt)))
        if left is not None:  # a failed lock: take rclone down by hand
            rmount.stop(left, wait=False, say=lambda _text: None)
        if record is not None and record.pid:
            assert wait_until(lambda: process_start(record.pid) is None, 10), "rclone kept running after lock"


def test_lock_waits_until_rclone_has_uploaded_everything(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one")
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = tmp_path / "mnt"
    big = os.urandom(3_000_000)
    with remote_mounted(cloud, one, "dav:chat", mnt, env={"RCLONE_BWLIMIT": "1M"}) as mounted:
        assert "rclone's mount of dav:chat" in mounted.stdout
        assert mount_type(str(rclone_dir(mnt))) == "fuse.rclone"
        # format v2 keeps the symlink as a .vfx file, which rclone's mount carries (docs/remote.md)
        assert sorted(os.listdir(mnt)) == ["Databases", "Media", "empty.txt", "latest.db"]
        assert os.readlink(mnt / "latest.db") == "Databases/msgstore.db"
        assert (mnt / "Databases" / "msgstore.db").read_bytes() == read(one.path, "/Databases/msgstore.db")
        (mnt / "Databases" / "msgstore.db").write_bytes(big)
        (mnt / "PLANTED-NAME-Hochzeitsfotos.txt").write_bytes(b"PLANTED-CONTENT-7f3a9c-do-not-leak")
        record = rmount.load(canonical(str(mnt)))
        assert record is not None
        started = time.monotonic()
        locked = cloud.vaultfs("lock", str(mnt))
        waited = time.monotonic() - started
    assert "rclone uploaded everything" in locked.stdout, locked.stdout
    assert waited > 2.0  # 3 MB at 1 MB/s: lock waited for the upload
    assert process_start(record.pid) is None and mount_type(str(rclone_dir(mnt))) is None
    assert not rclone_dir(mnt).parent.exists()
    # what lock left on the server is the whole vault: a second machine sees every change
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/Databases/msgstore.db") == big
    assert read(two, "/PLANTED-NAME-Hochzeitsfotos.txt") == b"PLANTED-CONTENT-7f3a9c-do-not-leak"
    assert cloud.vaultfs("fsck", str(two), "--passfile", str(one.passfile)).returncode == 0
    assert leaks(server.files()) == []


def test_a_network_drop_gives_eio_or_a_wait_never_wrong_data(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=6)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    expected = {f"/Media/PLANTED-NAME-Hochzeitsfotos/IMG-{n:04d}.jpg": read(one.path,
                f"/Media/PLANTED-NAME-Hochzeitsfotos/IMG-{n:04d}.jpg") for n in range(6)}
    mnt = tmp_path / "mnt"
    with remote_mounted(cloud, one, "dav:chat", mnt, env=FAST_FAIL):
        first = next(iter(expected))
        assert (mnt / first[1:]).read_bytes() == expected[first]  # cached now
        os.listdir(mnt / "Media" / "PLANTED-NAME-Hochzeitsfotos")
        server.stop()
        assert (mnt / first[1:]).read_bytes() == expected[first]  # the cache keeps serving
        uncached = list(expected)[1]  # never read before: rclone must fetch it from the server
        cat = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
        reader = subprocess.run([sys.executable, "-c", cat, str(mnt / uncached[1:])], capture_output=True,
                                timeout=180)  # a wait, bounded by rclone's retries (RCLONE_LOW_LEVEL_RETRIES=1)
        if reader.returncode == 0:
            assert reader.stdout == expected[uncached], "wrong data during the network drop"
        else:
            assert b"Input/output error" in reader.stderr, reader.stderr
        (mnt / "written-offline.txt").write_bytes(b"kept in rclone's cache until the server is back")
        server.start()
        for path, data in expected.items():
            assert wait_until(lambda p=path, d=data: _reads(mnt / p[1:]) == d, 60), path
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/written-offline.txt") == b"kept in rclone's cache until the server is back"
    assert cloud.vaultfs("fsck", str(two), "--passfile", str(one.passfile)).returncode == 0
    export_one = tmp_path / "e1"
    cloud.vaultfs("export", str(one.path), str(export_one), "--passfile", str(one.passfile))
    export_two = tmp_path / "e2"
    cloud.vaultfs("export", str(two), str(export_two), "--passfile", str(one.passfile))
    assert [d for d in same_tree(export_one, export_two) if "written-offline" not in d and "latest.db" not in d] == []


def _reads(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def test_lock_gives_up_on_stalled_uploads_and_the_next_mount_sends_them(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=2)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = tmp_path / "mnt"
    with remote_mounted(cloud, one, "dav:chat", mnt, "--upload-timeout", "3s", env=FAST_FAIL):
        server.stop()
        (mnt / "late.txt").write_bytes(b"written while the server was down")
        stalled = cloud.vaultfs("lock", str(mnt), check=False)
    assert stalled.returncode == 26, stalled.stdout + stalled.stderr
    assert "not uploaded" in stalled.stderr and "next time you mount dav:chat" in stalled.stderr
    assert not vaultfs_mounted(canonical(str(mnt))) and rmount.load(canonical(str(mnt))) is None
    server.start()
    with remote_mounted(cloud, one, "dav:chat", mnt):
        assert (mnt / "late.txt").read_bytes() == b"written while the server was down"
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/late.txt") == b"written while the server was down"


def test_an_idle_lock_takes_rclone_down_too(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = tmp_path / "mnt"
    with remote_mounted(cloud, one, "dav:chat", mnt, "--idle", "1s"):
        (mnt / "before-idle.txt").write_bytes(b"uploaded by the daemon itself")
        record = rmount.load(canonical(str(mnt)))
        assert record is not None
        assert wait_until(lambda: not vaultfs_mounted(canonical(str(mnt))), 30)
        assert wait_until(lambda: process_start(record.pid) is None and rmount.load(canonical(str(mnt))) is None, 30)
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/before-idle.txt") == b"uploaded by the daemon itself"


def test_failed_remote_mounts_leave_no_rclone_behind_and_never_touch_a_live_one(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = track_mountpoint(tmp_path / "mnt")
    mnt.mkdir()
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    refused = cloud.vaultfs("mount", "dav:chat", str(mnt), "--passfile", str(wrong), check=False)
    assert refused.returncode == 3, refused.stderr
    empty = cloud.vaultfs("mount", "dav:nothing-here", str(mnt), "--passfile", str(one.passfile), check=False)
    assert empty.returncode == 5 and "holds no vault" in empty.stderr
    assert rmount.load(canonical(str(mnt))) is None and not rclone_dir(mnt).exists()
    assert not vaultfs_mounted(canonical(str(mnt)))
    with remote_mounted(cloud, one, "dav:chat", mnt):
        again = cloud.vaultfs("mount", "dav:chat", str(mnt), "--passfile", str(one.passfile), check=False)
        assert again.returncode == 10 and "already mounted" in again.stderr
        assert (mnt / "empty.txt").read_bytes() == b""  # the mount underneath was left alone


def test_a_local_dir_named_like_a_remote_still_mounts_locally(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    os.rename(one.path, tmp_path / "cloud:chat")  # "cloud" is no remote in rclone.conf
    mnt = track_mountpoint(tmp_path / "mnt")
    mnt.mkdir()
    done = subprocess.run([str(Path(sys.executable).with_name("vaultfs")), "mount", "cloud:chat", str(mnt),
                           "--passfile", str(one.passfile)], cwd=tmp_path, env=cloud.env(), capture_output=True,
                          text=True, timeout=60)
    try:
        assert done.returncode == 0, done.stderr
        assert f"{tmp_path}/cloud:chat is mounted" in done.stdout
        assert (mnt / "empty.txt").read_bytes() == b""
    finally:
        cloud.vaultfs("lock", str(mnt), check=False)
