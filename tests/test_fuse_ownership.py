"""POSIX ownership and modes through a real mount run by root with --allow-other.

New entries belong to the caller, modes arrive exactly as the kernel passes them (the
caller's umask, never the daemon's), setuid/setgid drop on write and chown, setgid
directories pass their group on, and `-o allow_other` alone still enforces modes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.mounting import NOBODY, Vault, as_user, mounted

pytestmark = [pytest.mark.mount, pytest.mark.skipif(os.geteuid() != 0, reason="needs a root daemon")]

USER = (4242, 4343)  # a caller that is neither the daemon nor in any group of the files


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_new_entries_belong_to_the_caller(public_vault: Vault) -> None:
    with mounted(public_vault, "--allow-other"):
        mnt = public_vault.mnt
        mnt.chmod(0o1777)
        work = mnt / "work"
        script = (f"cd {work} && echo data > file && mkdir dir && mkfifo fifo && ln -s file link "
                  "&& python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('sock')\" "
                  "&& chmod 600 file && chmod 700 dir")
        os.mkdir(work)
        os.chmod(work, 0o777)
        result = as_user(USER, "sh", "-c", script)
        assert result.returncode == 0, result.stderr
        for name in ("file", "dir", "fifo", "link", "sock"):
            assert owner(work / name) == USER, name
        assert stat.S_IMODE(os.stat(work / "file").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(work / "dir").st_mode) == 0o700
        assert stat.S_ISSOCK(os.lstat(work / "sock").st_mode) and stat.S_ISFIFO(os.lstat(work / "fifo").st_mode)
        # the backing entries carry the same owner: that is where the mount reads it from
    public_vault.mount("--allow-other")
    try:
        assert owner(public_vault.mnt / "work" / "file") == USER
    finally:
        public_vault.lock()


def test_modes_are_applied_exactly_under_umask_0(mounted_vault: Vault) -> None:
    mnt = mounted_vault.mnt
    code = (f"import os; os.umask(0); "
            f"os.close(os.open('{mnt}/f', os.O_CREAT | os.O_WRONLY, 0o666)); os.mkdir('{mnt}/d', 0o777); "
            f"os.mkfifo('{mnt}/p', 0o666); os.umask(0o027); "
            f"os.close(os.open('{mnt}/g', os.O_CREAT | os.O_WRONLY, 0o666)); os.mkdir('{mnt}/e', 0o777)")
    pid = os.fork()
    if pid == 0:  # a child with its own umask, as an app would have
        try:
            exec(code)  # noqa: S102 - the test's own code
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    modes = {name: stat.S_IMODE(os.lstat(mnt / name).st_mode) for name in ("f", "d", "p", "g", "e")}
    assert modes == {"f": 0o666, "d": 0o777, "p": 0o666, "g": 0o640, "e": 0o750}


def test_setuid_and_setgid_drop_on_write_and_chown(public_vault: Vault) -> None:
    with mounted(public_vault, "--allow-other"):
        mnt = public_vault.mnt
        mnt.chmod(0o1777)
        target = mnt / "tool"
        result = as_user(USER, "sh", "-c", f"echo v1 > {target} && chmod 6755 {target}")
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o6755
        result = as_user(USER, "sh", "-c", f"echo v2 >> {target}")  # an unprivileged write
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(os.stat(target).st_mode) & (stat.S_ISUID | stat.S_ISGID) == 0
        os.chmod(target, 0o4755)
        os.chown(target, 1000, 1000)  # chown of a regular file drops setuid, as on any filesystem
        assert stat.S_IMODE(os.stat(target).st_mode) & stat.S_ISUID == 0
        assert target.read_text() == "v1\nv2\n"


def test_setgid_directories_pass_their_group_on(public_vault: Vault) -> None:
    with mounted(public_vault, "--allow-other"):
        mnt = public_vault.mnt
        shared = mnt / "shared"
        shared.mkdir()
        os.chown(shared, 0, 5555)
        os.chmod(shared, 0o2777)
        result = as_user(USER, "sh", "-c", f"touch {shared}/f && mkdir {shared}/sub")
        assert result.returncode == 0, result.stderr
        assert owner(shared / "f") == (USER[0], 5555)
        assert owner(shared / "sub") == (USER[0], 5555)
        assert os.stat(shared / "sub").st_mode & stat.S_ISGID


def test_device_nodes(mounted_vault: Vault) -> None:
    null = mounted_vault.mnt / "null"
    os.mknod(null, stat.S_IFCHR | 0o640, os.makedev(1, 3))
    os.mknod(mounted_vault.mnt / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and stat.S_IMODE(st.st_mode) == 0o640
    st = os.lstat(mounted_vault.mnt / "loop")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 0)
    mounted_vault.remount()
    assert os.lstat(null).st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("option", ["-o allow_other", "-o allow_root"])
def test_allow_other_in_any_form_brings_default_permissions(public_vault: Vault, option: str) -> None:
    with mounted(public_vault, *option.split()):
        mnt = public_vault.mnt
        mnt.chmod(0o755)
        secret_dir = mnt / "private"
        secret_dir.mkdir(mode=0o700)
        (secret_dir / "secret").write_text("root's own")
        os.chmod(secret_dir / "secret", 0o600)
        with open("/proc/self/mountinfo") as f:
            line = next(x for x in f if f" {mnt} " in x)
        assert "default_permissions" in line
        if option.endswith("allow_other"):
            read = as_user(NOBODY, "cat", str(secret_dir / "secret"))
            assert read.returncode != 0 and "Permission denied" in read.stderr
            listed = as_user(NOBODY, "ls", str(secret_dir))
            assert listed.returncode != 0 and "Permission denied" in listed.stderr
