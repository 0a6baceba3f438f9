"""The login unit and the fstab line with a remote source (REMOTE:PATH).

The unit: ``systemd-analyze verify``, then a real ``systemd --user`` in a private mount
namespace (tests/remote_login_session.py) against ``rclone serve webdav`` on loopback:
offline at login it retries exit 24 and mounts once the server answers; logout waits
for rclone's uploads; stalled uploads at stop are reported (exit 26) and go out at the
next login.  The fstab line: refused with a clear message, by the real mount(8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.mounting import track_mountpoint
from tests.rclone_servers import VAULTFS_BIN, cloud, sftp_keys  # noqa: F401 - fixtures
from tests.remote_helpers import make_vault
from tests.test_login_units import need
from tests.test_remote_mount import FAST_FAIL
from vaultfs.fuse import seal
from vaultfs.fuse.state import canonical, vaultfs_mounted
from vaultfs.remote import rmount


def test_the_unit_verifies_with_its_remote_retry_settings(tmp_path: Path) -> None:
    need("systemd-analyze")
    unit = subprocess.run([VAULTFS_BIN, "login-unit"], capture_output=True, text=True, check=True).stdout
    assert "RestartForceExitStatus=24" in unit and "Restart=no" in unit
    (tmp_path / "vaultfs@.service").write_text(unit)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(["systemd-analyze", "--user", "verify", str(tmp_path / "vaultfs@cloud.service")],
                            capture_output=True, text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.remote
@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace for the user manager needs root")
def test_the_unit_mounts_a_remote_at_login_and_uploads_before_logout(cloud, tmp_path: Path) -> None:  # noqa: F811
    need("systemctl")
    need("unshare")
    one = make_vault(tmp_path / "one", media=1)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    server.stop()  # the session starts it again, when it wants the network to come up
    work = tmp_path / "session"
    units = work / "config" / "systemd" / "user"
    (units / "vaultfs@.service.d").mkdir(parents=True)
    (units / "vaultfs@.service").write_text(subprocess.run([VAULTFS_BIN, "login-unit"], capture_output=True,
                                                           text=True, check=True).stdout)
    (units / "vaultfs@.service.d" / "quick.conf").write_text("[Service]\nRestartSec=1s\n")  # not 30 s in a test
    mnt = track_mountpoint(tmp_path / "mnt")
    mnt.mkdir()
    env = cloud.env()
    settings = {key: env[key] for key in ("RCLONE_CONFIG", "XDG_STATE_HOME", "XDG_CACHE_HOME")}
    lines = ["BACKING=dav:chat", f"MOUNTPOINT={mnt}", f"PASSCMD=cat {one.passfile}",
             f"OPTIONS=--log {tmp_path / 'daemon.log'} --upload-timeout 3s",
             *(f"{key}={value}" for key, value in {**settings, **FAST_FAIL}.items())]
    (work / "config" / "vaultfs").mkdir(parents=True)
    (work / "config" / "vaultfs" / "cloud.conf").write_text("\n".join(lines) + "\n")
    (work / "settings.json").write_text(json.dumps({
        "mountpoint": str(mnt), "vaultfs": VAULTFS_BIN, "env": env, "passfile": str(one.passfile),
        "storage": str(server.storage), "port": server.port}))
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-m",
                             "tests.remote_login_session", str(work)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    manager_log = (work / "manager.log").read_text() if (work / "manager.log").exists() else ""
    assert result.returncode == 0, result.stderr + manager_log[-4000:]
    seen = json.loads(result.stdout)
    # offline at login: exit 24, tried again, mounted by itself once the server answers
    assert seen["offline_start"] != 0 and seen["offline"]["ExecMainStatus"] == "24", seen
    assert seen["retried_offline"] >= 1 and seen["mounted_once_online"] and seen["active"] == "active", seen
    status = seen["status"]
    assert status["backing"] == "dav:chat" and status["remote"]["running"], status
    # logout: locked, rclone gone, the file uploaded (5. below)
    assert not seen["mounted_after_logout"] and not seen["rclone_after_logout"], seen
    # the server dropped before a stop: lock exits 26, the unit is failed, rclone stopped anyway
    assert seen["mounted_second_login"], seen
    assert seen["stopped_offline"]["ActiveState"] == "failed", seen  # visible in systemctl --user status
    assert seen["stopped_offline"]["Result"] == "exit-code" and "status=26" in seen["stop_command"], seen
    assert not seen["mounted_after_stalled_stop"] and not seen["rclone_after_stalled_stop"], seen
    # next login: the offline file was kept in rclone's cache and went out
    assert seen["offline_file"] == "written before the server went down", seen
    assert seen["pull"] == 0 and seen["files"] == {"at-login.txt": "written in the first session",
                                                   "offline.txt": "written before the server went down"}, seen
    assert rmount.load(canonical(str(mnt))) is None and not vaultfs_mounted(canonical(str(mnt)))
    assert seal.inspect(str(mnt)).immutable  # locked at logout: sealed
    assert "by lock --force" in (tmp_path / "daemon.log").read_text()


@pytest.mark.remote
@pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) with an fstab line needs root")
def test_an_fstab_line_with_a_remote_source_is_refused_clearly(cloud, tmp_path: Path) -> None:  # noqa: F811
    need("mount")
    one = make_vault(tmp_path / "one", media=1)
    program = tmp_path / "bin" / "vaultfs"  # mount.fuse3 resets PATH: the type names the program (no dots)
    program.parent.mkdir()
    program.symlink_to(VAULTFS_BIN)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"dav:chat {mnt} fuse.{program} noauto,_netdev,passfile={one.passfile} 0 0\n")
    result = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True, timeout=60,
                            env=cloud.env())
    assert result.returncode != 0, result
    assert "a remote source (dav:chat) is not supported: umount cannot wait for rclone's uploads" in result.stderr
    assert not vaultfs_mounted(canonical(str(mnt))) and rmount.load(canonical(str(mnt))) is None
    assert os.listdir(mnt) == []
