"""Mount and lock through the real CLI: refusals, fail-closed mountpoint, signals, crashes."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.mounting import (
    NOBODY,
    VAULTFS,
    Vault,
    as_user,
    env,
    force_unmount,
    mounted,
    vaultfs,
    vaultfs_mounts,
)
from vaultfs.fuse import mount as vmount
from vaultfs.fuse import state as mountstate


def daemon_pid(vault: Vault) -> int:
    with open(mountstate.state_path(str(vault.mnt))) as f:
        pid = json.load(f)["pid"]
    assert pid
    return pid


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_mount_prints_where_and_lock_fails_closed(new_vault: Vault) -> None:
    result = new_vault.mount()
    try:
        assert result.stdout.strip().splitlines() == [f"vaultfs: {new_vault.backing} is mounted at {new_vault.mnt}"]
        assert new_vault.is_mounted()
        (new_vault.mnt / "msgstore.db").write_bytes(b"secret")
    finally:
        new_vault.lock()
    assert not new_vault.is_mounted()
    assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0
    assert os.listdir(new_vault.mnt) == []
    # a non-root app cannot write its backup into the locked mountpoint
    probe = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "touch", str(new_vault.mnt / "x")],
        capture_output=True, check=False,
    )  # fmt: skip
    assert probe.returncode != 0
    with mounted(new_vault):
        assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0o755
        assert (new_vault.mnt / "msgstore.db").read_bytes() == b"secret"
    assert "is already locked" in new_vault.lock(check=False).stdout


def test_wrong_password_and_not_a_vault_mount_nothing(new_vault: Vault, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    result = vaultfs("mount", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(wrong), check=False)
    assert result.returncode == 3 and "wrong password" in result.stderr
    assert not new_vault.is_mounted()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = vaultfs("mount", str(empty), str(new_vault.mnt), "--passfile", str(new_vault.passfile), check=False)
    assert result.returncode == 5 and "not a vaultfs vault" in result.stderr
    assert vaultfs_mounts() == [m for m in vaultfs_mounts() if m != str(new_vault.mnt)]
    assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0o755  # untouched by failed mounts


def test_bad_mountpoints_are_refused_before_the_password(new_vault: Vault, tmp_path: Path) -> None:
    def mount(mnt: Path) -> subprocess.CompletedProcess[str]:
        # no --passfile and no tty: reaching the password prompt would be an error of its own
        return subprocess.run(
            [VAULTFS, "mount", str(new_vault.backing), str(mnt)],
            capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip

    result = mount(tmp_path / "missing")
    assert result.returncode == 10 and "does not exist" in result.stderr
    (tmp_path / "file").write_text("")
    result = mount(tmp_path / "file")
    assert result.returncode == 10 and "not a directory" in result.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "msgstore.db").write_text("plaintext backup")
    (full / "Media").mkdir()
    result = mount(full)
    assert result.returncode == 10 and "not empty" in result.stderr
    assert "msgstore.db" in result.stderr and "Media/" in result.stderr
    result = mount(new_vault.backing / "inside")
    assert result.returncode != 0
    with mounted(new_vault):
        result = mount(new_vault.mnt)
        assert result.returncode == 10 and "already mounted" in result.stderr


def test_lock_with_a_file_open_refuses_and_force_ends_cleanly(new_vault: Vault) -> None:
    with mounted(new_vault):
        pid = daemon_pid(new_vault)
        fd = os.open(new_vault.mnt / "open.txt", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.write(fd, b"written before lock")
            refused = new_vault.lock(check=False)
            assert refused.returncode == 13 and f"pid {os.getpid()}" in refused.stderr, refused.stderr
            assert new_vault.is_mounted()
            result = new_vault.lock("--force", check=False)
            assert result.returncode == 0, result.stderr
            assert f"cut off 1: pid {os.getpid()}" in result.stdout
            assert not new_vault.is_mounted()
            assert mountstate.process_start(pid) is None
        finally:
            # the daemon is gone: the kernel can no longer deliver this close (ENOTCONN),
            # but the daemon flushed and closed the file through the vault before exiting
            with pytest.raises(OSError) as info:
                os.close(fd)
            assert info.value.errno == errno.ENOTCONN
    with mounted(new_vault):
        assert (new_vault.mnt / "open.txt").read_bytes() == b"written before lock"
    problems = new_vault.log_problems()
    assert len(problems) == 1 and "cut off: pid" in problems[0], problems


def test_kill_9_then_lock_cleans_up_and_fsynced_files_survive(new_vault: Vault) -> None:
    with mounted(new_vault):
        with open(new_vault.mnt / "kept", "wb") as f:
            f.write(b"fsynced" * 1000)
            f.flush()
            os.fsync(f.fileno())
        os.kill(daemon_pid(new_vault), signal.SIGKILL)
        assert wait_until(lambda: mountstate.is_stale(str(new_vault.mnt)))
        again = new_vault.mount(check=False)
        assert again.returncode == 10 and "vaultfs lock" in again.stderr
        result = new_vault.lock()
        assert "stale" in result.stdout
        assert not new_vault.is_mounted()
        assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0
    with mounted(new_vault):
        assert (new_vault.mnt / "kept").read_bytes() == b"fsynced" * 1000


def test_sigterm_unmounts_cleanly(mounted_vault: Vault) -> None:
    (mounted_vault.mnt / "f").write_bytes(b"x" * 10_000)
    pid = daemon_pid(mounted_vault)
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: mountstate.process_start(pid) is None)
    assert not mounted_vault.is_mounted()
    assert stat.S_IMODE(os.stat(mounted_vault.mnt).st_mode) == 0


def test_idle_auto_lock(new_vault: Vault) -> None:
    with mounted(new_vault, "--idle", "1s"):
        (new_vault.mnt / "f").write_bytes(b"data")
        fd = os.open(new_vault.mnt / "f", os.O_RDONLY)
        time.sleep(2)
        assert new_vault.is_mounted(), "an open file keeps the vault unlocked"
        os.close(fd)
        assert wait_until(lambda: not new_vault.is_mounted(), timeout=10)
        # the daemon sets mode 0 once its FUSE loop has ended, just after the unmount
        assert wait_until(lambda: stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0, timeout=10)


def test_read_only_mount(new_vault: Vault) -> None:
    with mounted(new_vault):
        (new_vault.mnt / "f").write_bytes(b"data")
    with mounted(new_vault, "--read-only"):
        assert (new_vault.mnt / "f").read_bytes() == b"data"
        for call in (
            lambda: (new_vault.mnt / "g").write_bytes(b""),
            lambda: os.mkdir(new_vault.mnt / "d"),
            lambda: os.unlink(new_vault.mnt / "f"),
            lambda: os.open(new_vault.mnt / "f", os.O_RDWR),
        ):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.EROFS


def test_allow_other_enforces_modes(public_vault: Vault) -> None:
    new_vault = public_vault
    with mounted(new_vault, "--allow-other"):
        new_vault.mnt.chmod(0o755)
        (new_vault.mnt / "private").write_bytes(b"root only")
        os.chmod(new_vault.mnt / "private", 0o600)
        (new_vault.mnt / "public").write_bytes(b"everyone")
        os.chmod(new_vault.mnt / "public", 0o644)

        def as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
            return as_user(NOBODY, *cmd)

        assert as_nobody("stat", str(new_vault.mnt / "private")).returncode == 0
        private = as_nobody("cat", str(new_vault.mnt / "private"))
        assert private.returncode != 0 and "Permission denied" in private.stderr
        assert as_nobody("cat", str(new_vault.mnt / "public")).stdout == "everyone"
        denied = as_nobody("touch", str(new_vault.mnt / "new"))
        assert "Permission denied" in denied.stderr


def test_foreground_mount_stays_attached(new_vault: Vault) -> None:
    proc = subprocess.Popen(
        [VAULTFS, "mount", str(new_vault.backing), str(new_vault.mnt), "--foreground",
         "--passfile", str(new_vault.passfile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "is mounted at" in proc.stdout.readline()
        (new_vault.mnt / "f").write_bytes(b"foreground")
        assert proc.poll() is None
        subprocess.run(["fusermount3", "-u", str(new_vault.mnt)], check=True)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # reap and close the pipes
        force_unmount(new_vault.mnt)
    with mounted(new_vault):
        assert (new_vault.mnt / "f").read_bytes() == b"foreground"


def test_lock_of_nothing_is_an_error(tmp_path: Path) -> None:
    result = vaultfs("lock", str(tmp_path), check=False)
    assert result.returncode == 13 and "nothing is mounted" in result.stderr


def test_failed_mount_keeps_a_locked_mountpoint_closed(new_vault: Vault, tmp_path: Path) -> None:
    with mounted(new_vault):
        pass
    assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    result = vaultfs("mount", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(wrong), check=False)
    assert result.returncode == 3
    assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0


def test_fuse_unavailable_is_reported_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_fuse(path, *args, **kwargs):
        if str(path) == "/dev/fuse":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_fuse)
    with pytest.raises(vmount.errors.FuseUnavailable) as info:
        vmount.check_fuse()
    assert info.value.exit_code == 11 and "fuse3" in info.value.message
