"""Mounting at login: the systemd user unit shipped in the package, and an fstab line.

The unit is checked by ``systemd-analyze verify`` and then run by a real systemd user
manager (tests/login_session.py, in a private mount namespace): enabled, it mounts the
vault when the session starts and locks it when the session ends; a wrong password
fails once and is not restarted.  The fstab line is mounted with the real ``mount`` and
unmounted with the real ``umount`` (util-linux ``mount -T`` reads the test's own fstab).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.mounting import VAULTFS, Vault, mounted, track_mountpoint, vaultfs
from vaultfs.fuse import seal


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (scripts/test installs it)")


def write_instance(config: Path, name: str, backing: Path, mountpoint: Path, passcmd: str, options: str) -> None:
    (config / "vaultfs").mkdir(parents=True, exist_ok=True)
    (config / "vaultfs" / f"{name}.conf").write_text(
        f"BACKING={backing}\nMOUNTPOINT={mountpoint}\nPASSCMD={passcmd}\nOPTIONS={options}\n")


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    need("systemd-analyze")
    unit = vaultfs("login-unit").stdout
    assert f"ExecStart={VAULTFS} mount --foreground" in unit and f"ExecStop={VAULTFS} lock --force" in unit
    (tmp_path / "vaultfs@.service").write_text(unit)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    for mode in ([], ["--user"]):
        result = subprocess.run(["systemd-analyze", *mode, "verify", str(tmp_path / "vaultfs@chat.service")],
                                capture_output=True, text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
        assert result.returncode == 0 and result.stderr == "", (mode, result.stderr)
    broken = unit.replace("Type=notify", "Type=notfy")
    (tmp_path / "broken@.service").write_text(broken)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "broken@x.service")],
                            capture_output=True, text=True)
    assert "Failed to parse service type" in result.stderr  # the check can fail


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace for the user manager needs root")
def test_the_unit_mounts_at_login_and_locks_at_logout(new_vault: Vault, tmp_path: Path) -> None:
    need("systemctl")
    need("unshare")
    if not Path("/lib/systemd/systemd").exists():
        pytest.fail("systemd is not installed (scripts/test installs it)")
    work = tmp_path / "session"
    config = work / "config"
    (config / "systemd" / "user").mkdir(parents=True)
    (config / "systemd" / "user" / "vaultfs@.service").write_text(vaultfs("login-unit").stdout)
    bad_mnt = track_mountpoint(tmp_path / "mnt-bad")
    bad_mnt.mkdir()
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    write_instance(config, "chat", new_vault.backing, new_vault.mnt, f"cat {new_vault.passfile}",
                   f"--log {new_vault.logfile}")
    other = Vault.create(tmp_path / "other")  # its own backing dir: one backing dir is mounted once
    write_instance(config, "bad", other.backing, bad_mnt, f"cat {wrong}", "")
    (work / "settings.json").write_text(json.dumps({"mountpoint": str(new_vault.mnt),
                                                    "bad_mountpoint": str(bad_mnt)}))
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-m",
                             "tests.login_session", str(work)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    manager_log = (work / "manager.log").read_text() if (work / "manager.log").exists() else ""
    assert result.returncode == 0, result.stderr + manager_log
    seen = json.loads(result.stdout)
    assert seen["enable"] == 0 and not seen["mounted_before_login"], seen
    assert seen["mounted_at_login"] and seen["active_at_login"] == "active", (seen, manager_log)
    assert not seen["mounted_after_logout"], seen
    assert seen["locked_mountpoint_writable"] == "Operation not permitted", seen
    assert seen["bad_start"] != 0 and not seen["mounted_with_bad_password"], seen
    assert seen["bad"] == {"ActiveState": "failed", "Result": "exit-code", "NRestarts": "0",
                           "ExecMainStatus": "3"}, seen
    assert "by lock --force" in new_vault.logfile.read_text()  # ExecStop at logout, logged
    assert seal.inspect(str(new_vault.mnt)).immutable
    with mounted(new_vault):
        assert (new_vault.mnt / "written-in-session.txt").read_text() == "hello from the login session"


@pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) with an fstab line needs root")
def test_an_fstab_line_mounts_with_mount_and_unmounts_with_umount(new_vault: Vault, tmp_path: Path) -> None:
    need("mount")
    if not Path("/sbin/mount.fuse3").exists() and shutil.which("mount.fuse3") is None:
        pytest.fail("mount.fuse3 is not installed (package fuse3)")
    fstab = tmp_path / "fstab"
    # mount.fuse3 runs the type after "fuse." with a reset PATH, so vaultfs is named by its
    # path here; libmount cuts a type at its last dot, so the path must have none (.venv has)
    program = tmp_path / "bin" / "vaultfs"
    program.parent.mkdir()
    program.symlink_to(VAULTFS)
    assert "." not in str(program)
    fstab.write_text(f"# a test fstab\n{new_vault.backing} {new_vault.mnt} fuse.{program} "
                     f"noauto,nofail,passfile={new_vault.passfile},idle=1h,log={new_vault.logfile},nodev 0 0\n")
    result = subprocess.run(["mount", "-T", str(fstab), str(new_vault.mnt)], capture_output=True, text=True,
                            timeout=120)
    try:
        assert result.returncode == 0, result.stderr
        assert new_vault.is_mounted()
        (new_vault.mnt / "via-fstab").write_text("mounted by mount(8)")
        state = json.loads(vaultfs("status", str(new_vault.mnt), "--json").stdout)
        assert state["idle"]["timeout"] == 3600 and state["backing"] == str(new_vault.backing)
        with open("/proc/self/mountinfo") as f:
            options = next(line for line in f if f" {new_vault.mnt} " in line).split()[5]
        assert "nodev" in options.split(",")
    finally:
        unmounted = subprocess.run(["umount", str(new_vault.mnt)], capture_output=True, text=True, timeout=120)
    assert unmounted.returncode == 0, unmounted.stderr
    assert not new_vault.is_mounted()
    assert vaultfs("status", str(new_vault.mnt), check=False).returncode == 16
    assert seal.inspect(str(new_vault.mnt)).immutable
    with mounted(new_vault):
        assert (new_vault.mnt / "via-fstab").read_text() == "mounted by mount(8)"
