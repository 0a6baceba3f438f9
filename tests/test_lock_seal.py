"""A locked vault that even root cannot write into: every way a lock happens, as root.

The Syncthing case of issue 13: a job running as root kept writing into the bare
mountpoint after the lock.  After each kind of lock, mkdir, touch and cp into the
mountpoint must fail for root; after the next mount they work (and land in the vault).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.mounting import Vault, mounted, vaultfs
from tests.test_mount_lifecycle import daemon_pid, wait_until
from vaultfs.fuse import seal

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the seal against root needs root to be tested")


def writes_fail(mountpoint: Path, tmp_path: Path) -> list[str]:
    """Try mkdir, touch and cp as root; return the errors (all three must fail)."""
    source = tmp_path / "plaintext.jpg"
    source.write_bytes(b"a photo that must not land on the local disk")
    errors = []
    for command in (["mkdir", str(mountpoint / "Media")], ["touch", str(mountpoint / "msgstore.db")],
                    ["cp", str(source), str(mountpoint / "IMG-0001.jpg")]):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode != 0, f"{command} succeeded into the locked mountpoint"
        errors.append(result.stderr.strip())
    return errors


def assert_sealed(vault: Vault, tmp_path: Path) -> None:
    assert not vault.is_mounted()
    errors = writes_fail(vault.mnt, tmp_path)
    assert all("Operation not permitted" in e or "Read-only file system" in e for e in errors), errors
    assert os.listdir(vault.mnt) == []


def assert_writes_work(vault: Vault, tag: str = "") -> None:
    with mounted(vault):
        os.mkdir(vault.mnt / f"Media{tag}")
        (vault.mnt / f"msgstore{tag}.db").touch()
        subprocess.run(["cp", "/etc/hostname", str(vault.mnt / f"Media{tag}" / "copied")], check=True)
        assert {f"Media{tag}", f"msgstore{tag}.db"} <= set(os.listdir(vault.mnt))


def test_after_lock_root_cannot_write_and_after_mount_it_can(new_vault: Vault, tmp_path: Path) -> None:
    with mounted(new_vault):
        (new_vault.mnt / "kept").write_bytes(b"in the vault")
    assert_sealed(new_vault, tmp_path)
    assert seal.inspect(str(new_vault.mnt)).immutable
    assert_writes_work(new_vault)
    assert_sealed(new_vault, tmp_path)
    with mounted(new_vault):
        assert (new_vault.mnt / "kept").read_bytes() == b"in the vault"


def test_a_first_mount_that_fails_leaves_the_directory_as_it_was(new_vault: Vault) -> None:
    new_vault.mnt.chmod(0o750)
    result = new_vault.mount("-o", "no_such_fuse_option", check=False)
    assert result.returncode == 10 and "no_such_fuse_option" in result.stderr
    assert not seal.inspect(str(new_vault.mnt)).any
    assert stat.S_IMODE(os.stat(new_vault.mnt).st_mode) == 0o750


def test_the_seal_is_in_place_before_the_first_mount_ends(new_vault: Vault, tmp_path: Path) -> None:
    """The mount goes on top of the seal: no gap between an unmount and a re-lock."""
    with mounted(new_vault):
        subprocess.run(["umount", "-l", str(new_vault.mnt)], check=True)  # from outside vaultfs, at once
        assert_sealed(new_vault, tmp_path)


def test_after_idle_lock_root_cannot_write(new_vault: Vault, tmp_path: Path) -> None:
    with mounted(new_vault, "--idle", "1s"):
        (new_vault.mnt / "f").write_bytes(b"data")
        assert wait_until(lambda: not new_vault.is_mounted(), timeout=15)
    assert_sealed(new_vault, tmp_path)
    assert "after 1 s idle; nothing was open" in new_vault.logfile.read_text()
    assert_writes_work(new_vault)


def test_after_the_daemon_is_killed_root_cannot_write(new_vault: Vault, tmp_path: Path) -> None:
    with mounted(new_vault):
        os.kill(daemon_pid(new_vault), signal.SIGTERM)
        assert wait_until(lambda: not new_vault.is_mounted())
        assert_sealed(new_vault, tmp_path)
    assert "was unmounted outside vaultfs lock" in new_vault.logfile.read_text()
    with mounted(new_vault):
        os.kill(daemon_pid(new_vault), signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(OSError) as info:
            os.mkdir(new_vault.mnt / "d")
        assert info.value.errno == errno.ENOTCONN  # the dead mount refuses; lock then removes it
        result = new_vault.lock()
        assert "removed a stale mount" in result.stdout
        assert_sealed(new_vault, tmp_path)
    assert "removed the stale mount" in new_vault.logfile.read_text()
    assert_writes_work(new_vault)


def test_after_run_root_cannot_write(new_vault: Vault, tmp_path: Path) -> None:
    result = vaultfs("run", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(new_vault.passfile),
                     "--", "touch", str(new_vault.mnt / "from-the-job"), check=False)
    assert result.returncode == 0, result.stderr
    assert_sealed(new_vault, tmp_path)
    with mounted(new_vault):
        assert os.listdir(new_vault.mnt) == ["from-the-job"]


def test_without_the_immutable_attribute_a_read_only_mount_seals(new_vault: Vault, tmp_path: Path) -> None:
    """A mountpoint on a filesystem without FS_IMMUTABLE_FL (here: inside another vaultfs mount)."""
    outer = Vault.create(tmp_path / "outer")
    with mounted(outer):
        inner = Vault(new_vault.backing, outer.mnt / "inner", new_vault.passfile, new_vault.logfile)
        inner.mnt.mkdir()
        try:
            with mounted(inner):
                (inner.mnt / "f").write_bytes(b"inner data")
            state = seal.inspect(str(inner.mnt))
            assert state.mounted and not state.immutable, state
            errors = writes_fail(inner.mnt, tmp_path)
            assert all("Read-only file system" in e for e in errors), errors
            status = vaultfs("status", str(inner.mnt), check=False)
            assert status.returncode == 16 and "read-only mount" in status.stdout
            with mounted(inner):
                assert (inner.mnt / "f").read_bytes() == b"inner data"
            # the outer vault cannot be locked while the seal is mounted inside it, and says why
            busy = outer.lock(check=False)
            assert busy.returncode == 13 and f"{inner.mnt} is mounted inside it" in busy.stderr
        finally:
            seal.release(str(inner.mnt))
