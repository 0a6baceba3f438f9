"""What the mount does to the backing dir (the synced folder): nothing extra, nothing followed.

Unlinked-but-open files leave no trace there (clean lock or kill -9), a symlink planted in
it is never followed by chmod/chown/utimens, one backing dir is mounted once, and the mount
table names the vault.  After every kind of entry was made through the mount, the backing
dir holds only regular files and directories (format v2).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from tests.mounting import Vault, backing_path, mounted
from tests.reliability import daemon_pid

pytestmark = pytest.mark.mount


def backing_entries(vault: Vault) -> set[str]:
    return {str(p.relative_to(vault.backing)) for p in vault.backing.rglob("*")}


def sqlite_work(db: Path, commits: int) -> None:
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (x)")
    for i in range(commits):
        con.execute("INSERT INTO t VALUES (?)", (i,))
        con.commit()
    con.close()


def test_sqlite_wal_and_journal_leave_nothing_in_the_backing_dir(mounted_vault: Vault) -> None:
    db = mounted_vault.mnt / "msgstore.db"
    sqlite_work(db, 300)
    con = sqlite3.connect(db)  # DELETE journal mode too: its journal is unlinked after each commit
    con.execute("PRAGMA journal_mode=DELETE")
    for i in range(100):
        con.execute("INSERT INTO t VALUES (?)", (-i,))
        con.commit()
    con.close()
    mounted_vault.lock()
    assert backing_entries(mounted_vault) == {"vaultfs.conf", "vaultfs.dirid",
                                              backing_path(mounted_vault, "/msgstore.db").name}
    mounted_vault.mount()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone()[0] == 400


def test_an_open_unlinked_file_leaves_nothing_after_kill_9(new_vault: Vault) -> None:
    with mounted(new_vault):
        before = backing_entries(new_vault)
        path = new_vault.mnt / "scratch"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.write(fd, b"temporary" * 1000)
        os.unlink(path)
        assert os.read(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY), 9) == b"temporary"
        assert backing_entries(new_vault) == before  # gone from the synced folder at once
        os.kill(daemon_pid(new_vault.mnt), signal.SIGKILL)
        time.sleep(0.2)
        with contextlib.suppress(OSError):
            os.close(fd)
        new_vault.lock(check=False)
    assert backing_entries(new_vault) == before
    new_vault.logfile.write_text("")


def test_a_planted_backing_symlink_is_never_followed(mounted_vault: Vault, tmp_path: Path) -> None:
    outside = tmp_path / "outside-the-vault"
    outside.write_text("not vaultfs's business")
    os.chmod(outside, 0o644)
    before = os.stat(outside)
    mnt = mounted_vault.mnt
    for name in ("f", "g", "h"):
        (mnt / name).write_text("inside")
    # an attacker (or a confused sync client) swaps the backing files for symlinks
    for name in ("f", "g", "h"):
        entry = backing_path(mounted_vault, f"/{name}")
        entry.unlink()
        entry.symlink_to(outside)
    time.sleep(1.3)  # past the attribute timeout: the daemon must look again
    for call in (lambda: os.chmod(mnt / "f", 0o777), lambda: os.chown(mnt / "g", 1234, 1234),
                 lambda: os.utime(mnt / "h", ns=(1, 1))):
        with contextlib.suppress(OSError):
            call()
    after = os.stat(outside)
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_mtime_ns) == \
        (stat.S_IMODE(before.st_mode), before.st_uid, before.st_mtime_ns)
    assert outside.read_text() == "not vaultfs's business"
    mounted_vault.logfile.write_text("")


def test_a_second_mount_of_the_same_backing_dir_is_refused(mounted_vault: Vault, tmp_path: Path) -> None:
    other = tmp_path / "other-mnt"
    other.mkdir()
    result = mounted_vault.mount_at(other, check=False)
    assert result.returncode == 10
    assert str(mounted_vault.mnt) in result.stderr and "already mounted" in result.stderr
    with open("/proc/self/mountinfo") as f:
        assert str(other) not in {line.split()[4] for line in f}


def test_the_mount_table_names_the_vault(mounted_vault: Vault) -> None:
    with open("/proc/self/mountinfo") as f:
        (line,) = [x for x in f if f" {mounted_vault.mnt} " in x]
    after = line.split(" - ")[1].split()
    assert after[0] == "fuse.vaultfs" and after[1] == f"vaultfs:{mounted_vault.backing}"


def test_times_in_nanoseconds_on_files_directories_and_symlinks(mounted_vault: Vault) -> None:
    mnt = mounted_vault.mnt
    (mnt / "f").write_text("x")
    (mnt / "d").mkdir()
    os.symlink("f", mnt / "l")
    times = (1_600_000_000_123_456_789, 1_700_000_000_987_654_321)
    for name in ("f", "d", "l"):
        os.utime(mnt / name, ns=times, follow_symlinks=False)
    mounted_vault.remount()
    for name in ("f", "d", "l"):
        st = os.lstat(mnt / name)
        assert (st.st_atime_ns, st.st_mtime_ns) == times, name
    # Format v2 keeps a symlink as a .vfx file: a stat reads its header only (O_NOATIME), and
    # readlink decrypts it, neither moving the atime (older than the mtime: relatime would).
    assert os.readlink(mnt / "l") == "f"
    mounted_vault.remount()
    for _ in range(3):
        assert (os.lstat(mnt / "l").st_atime_ns, os.lstat(mnt / "l").st_mtime_ns) == times
        assert os.readlink(mnt / "l") == "f"
        time.sleep(0.6)  # past the attribute timeout now and then: the daemon answers again
    assert os.stat(backing_path(mounted_vault, "/l")).st_atime_ns == times[0]
    info = os.statvfs(mnt)
    assert info.f_namemax == 255 and info.f_bsize > 0 and info.f_blocks > 0


def test_every_kind_of_entry_leaves_only_regular_files_and_directories(mounted_vault: Vault) -> None:
    """``find BACKING ! -type f ! -type d`` is empty after files, directories, hard links, symlinks (a 4095-byte
    target too), FIFOs, sockets, character and block devices were made through the mount."""
    import socket
    import subprocess

    mnt = mounted_vault.mnt
    (mnt / "dir").mkdir()
    (mnt / "dir" / "file").write_text("x")
    os.link(mnt / "dir" / "file", mnt / "hard")
    os.symlink("dir/file", mnt / "link")
    os.symlink("t" * 4095, mnt / "long-link")
    os.symlink("dir/file", mnt / ("l" * 200))  # a long name: .vxl with a sidecar
    os.mkfifo(mnt / "fifo", 0o640)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(mnt / "sock"))
    finally:
        server.close()
    os.mknod(mnt / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(mnt / "disk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    found = subprocess.run(["find", str(mounted_vault.backing), "!", "-type", "f", "!", "-type", "d"],
                           capture_output=True, text=True, check=True).stdout
    assert found == ""
    mounted_vault.remount()
    kinds = {name: stat.S_IFMT(os.lstat(mnt / name).st_mode) for name in os.listdir(mnt)}
    assert kinds == {"dir": stat.S_IFDIR, "hard": stat.S_IFREG, "link": stat.S_IFLNK, "long-link": stat.S_IFLNK,
                     "l" * 200: stat.S_IFLNK, "fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK, "null": stat.S_IFCHR,
                     "disk": stat.S_IFBLK}
    assert os.readlink(mnt / "long-link") == "t" * 4095 and os.lstat(mnt / "long-link").st_size == 4095
    assert os.lstat(mnt / "null").st_rdev == os.makedev(1, 3) and os.lstat(mnt / "disk").st_rdev == os.makedev(7, 0)
    assert stat.S_IMODE(os.lstat(mnt / "fifo").st_mode) == 0o640
    assert stat.S_IMODE(os.lstat(mnt / "link").st_mode) == 0o777
    assert (mnt / "link").read_text() == "x" and os.stat(mnt / "hard").st_nlink == 2
    with pytest.raises(OSError) as info:
        os.symlink("t" * 4096, mnt / "too-long")
    assert info.value.errno == errno.ENAMETOOLONG


def test_equal_symlink_targets_give_unrelated_ciphertext(mounted_vault: Vault) -> None:
    mnt = mounted_vault.mnt
    (mnt / "a").mkdir()
    for where in (mnt / "one", mnt / "two", mnt / "a" / "three"):
        os.symlink("the same target", where)
    data = [backing_path(mounted_vault, p).read_bytes() for p in ("/one", "/two", "/a/three")]
    assert len({d[8:40] for d in data}) == 3, "each has its own file ID"
    assert len({d[40:] for d in data}) == 3 and all(b"the same target" not in d for d in data)
