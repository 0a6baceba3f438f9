"""``vaultfs status`` on a remote mount: the remote is the vault, rclone's mount is shown underneath.

Real CLI, real ``vaultfs mount dav:chat`` over a loopback WebDAV server.  (The uploads
count while rclone is uploading is checked in test_remote_run.py, from inside a job.)
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.rclone_servers import cloud, sftp_keys  # noqa: F401 - fixtures
from tests.remote_helpers import make_vault
from tests.test_remote_mount import rclone_dir, remote_mounted, wait_until
from vaultfs.fuse.state import canonical, process_start
from vaultfs.remote import rmount

pytestmark = [pytest.mark.remote, pytest.mark.mount]


def test_status_names_the_remote_and_rclone_instead_of_its_directory(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = tmp_path / "mnt"
    with remote_mounted(cloud, one, "dav:chat", mnt):
        record = rmount.load(canonical(str(mnt)))
        assert record is not None
        human = cloud.vaultfs("status", str(mnt))
        assert f"{mnt}: mounted" in human.stdout and "  remote:       dav:chat" in human.stdout, human.stdout
        assert f"  rclone:       pid {record.pid}, mount {rclone_dir(mnt)}" in human.stdout, human.stdout
        assert f"  rclone cache: {record.cache_dir}" in human.stdout and "  uploads:      none queued" in human.stdout
        assert str(rclone_dir(mnt)) not in human.stdout.replace(f"mount {rclone_dir(mnt)}", "")  # not as backing
        by_remote = json.loads(cloud.vaultfs("status", "dav:chat", "--json").stdout)
        assert by_remote["mountpoint"] == str(mnt) and by_remote["backing"] == "dav:chat", by_remote
        assert by_remote["remote"]["pid"] == record.pid and by_remote["remote"]["uploads_pending"] == 0
        # the listing covers the whole machine (rc 17 if some other suite left a stale mount): find ours
        every = json.loads(cloud.vaultfs("status", "--json", check=False).stdout)
        assert [s["remote"]["remote"] for s in every if s["mountpoint"] == str(mnt)] == ["dav:chat"]

        os.kill(record.pid, signal.SIGKILL)  # rclone dies under the vault: status says so
        assert wait_until(lambda: process_start(record.pid) is None, 10)
        died = cloud.vaultfs("status", str(mnt), check=False)
        assert died.returncode == 17, died.stdout  # stale: the vault's daemon lives, over nothing
        assert f"{mnt}: stale (rclone died under it; `vaultfs lock` removes the mount)" in died.stdout, died.stdout
        assert f"rclone:       not running (pid {record.pid} is gone)" in died.stdout, died.stdout
        assert "uploads:      unknown: rclone is not running" in died.stdout, died.stdout
        as_json = json.loads(cloud.vaultfs("status", str(mnt), "--json", check=False).stdout)
        assert as_json["state"] == "stale" and as_json["pid"] and as_json["remote"]["uploads_pending"] is None
        locked = cloud.vaultfs("lock", "--force", str(mnt), check=False)
        assert locked.returncode == 0, locked.stderr
    after = cloud.vaultfs("status", "dav:chat", check=False)
    assert after.returncode == 16 and "dav:chat: locked" in after.stdout, after.stdout
    unknown = cloud.vaultfs("status", "nosuch:chat", check=False)
    assert unknown.returncode == 5, unknown.stdout
