"""Kernel caching stays correct: hard links share one inode, writeback keeps O_APPEND and mmap right,
fsynced data survives a killed daemon, and changes made behind the mount show up within the timeouts."""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mounting import Vault, backing_path, mounted
from tests.reliability import daemon_pid
from vaultfs.fuse.ops import ATTR_TIMEOUT, ENTRY_TIMEOUT

pytestmark = pytest.mark.mount

READER = """
import os, sys, time
path, until = sys.argv[1], float(sys.argv[2])
seen = set()
while time.time() < until:
    size = os.stat(path).st_size
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < size or data != b'x' * len(data):
        print(f'incoherent: stat {size}, read {len(data)}'); sys.exit(1)
    seen.add(size)
print(len(seen))
"""


def test_hard_links_stay_coherent_while_one_is_appended_to(mounted_vault: Vault) -> None:
    mnt = mounted_vault.mnt
    first, second = mnt / "one", mnt / "two"
    first.write_bytes(b"x" * 100)
    os.link(first, second)
    assert os.stat(first).st_ino == os.stat(second).st_ino
    reader = subprocess.Popen([sys.executable, "-c", READER, str(second), str(time.time() + 3)],
                              stdout=subprocess.PIPE, text=True)
    with open(first, "ab") as f:
        for _ in range(300):
            f.write(b"x" * 50)
            f.flush()
            time.sleep(0.005)
    out, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0, out
    assert int(out) > 1  # it saw the file grow, never a stale size
    # what one link wrote, the other shows at once: one inode, one attribute cache
    assert os.stat(second).st_size == 100 + 300 * 50
    os.truncate(second, 10)
    assert os.stat(first).st_size == 10 and first.read_bytes() == b"x" * 10
    assert os.stat(first).st_nlink == 2
    os.unlink(second)
    assert os.stat(first).st_nlink == 1


def test_writeback_append_and_mmap_together(mounted_vault: Vault) -> None:
    path = mounted_vault.mnt / "log"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    other = os.open(path, os.O_WRONLY | os.O_APPEND)
    for i in range(100):
        os.write(fd if i % 2 else other, f"{i:04d}\n".encode())
    os.close(other)
    os.write(fd, b"x" * 4091)  # up to 8,192: two whole pages
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as view:
        assert view[:10] == b"0000\n0001\n"
        view[5:9] = b"ABCD"
        view.flush()
    os.write(fd, b"tail")  # O_APPEND after the mapped write lands at the end
    os.close(fd)
    data = path.read_bytes()
    assert len(data) == 500 + 4091 + 4 == os.stat(path).st_size
    assert data[:10] == b"0000\nABCD\n" and data.endswith(b"tail")
    mounted_vault.remount()
    assert path.read_bytes() == data


def test_kill_9_under_writeback_keeps_fsynced_data(new_vault: Vault) -> None:
    synced = os.urandom(3 << 20)
    with mounted(new_vault):
        fd = os.open(new_vault.mnt / "db", os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, synced)
        os.fsync(fd)
        os.write(fd, os.urandom(1 << 20))  # in the page cache, not synced
        os.kill(daemon_pid(new_vault.mnt), signal.SIGKILL)
        time.sleep(0.2)
        with contextlib.suppress(OSError):  # ENOTCONN: the daemon is gone
            os.close(fd)
        new_vault.lock(check=False)
    with mounted(new_vault):
        data = (new_vault.mnt / "db").read_bytes()
        assert data[: len(synced)] == synced
    new_vault.logfile.write_text("")  # the kill's aftermath is not what this test checks


def test_changes_behind_the_mount_show_up_within_the_timeouts(mounted_vault: Vault) -> None:
    mnt = mounted_vault.mnt
    (mnt / "a").write_bytes(b"first version")
    (mnt / "b").write_bytes(b"second version, longer")
    assert (mnt / "a").read_bytes() == b"first version"  # in the page cache now
    assert not (mnt / "c").exists()  # a cached negative entry
    # a sync client replaces a's backing file with b's, and makes a new file c (a copy of b)
    backing_a, backing_b = backing_path(mounted_vault, "/a"), backing_path(mounted_vault, "/b")
    replacement = backing_a.with_name("replacement.tmp")
    replacement.write_bytes(backing_b.read_bytes())
    os.replace(replacement, backing_a)
    backing_c = backing_path(mounted_vault, "/c")
    backing_c.write_bytes(backing_b.read_bytes())
    time.sleep(max(ENTRY_TIMEOUT, ATTR_TIMEOUT) + 0.3)
    assert os.stat(mnt / "a").st_size == len(b"second version, longer")
    assert (mnt / "a").read_bytes() == b"second version, longer"  # page cache not kept: the file changed
    assert (mnt / "c").read_bytes() == b"second version, longer"


def test_an_unchanged_file_keeps_its_page_cache(mounted_vault: Vault, tmp_path: Path) -> None:
    path = mounted_vault.mnt / "big"
    path.write_bytes(os.urandom(8 << 20))
    path.read_bytes()
    reads = _daemon_reads(mounted_vault, lambda: path.read_bytes())
    assert reads == 0, f"{reads} READ requests for a file that did not change"


def _daemon_reads(vault: Vault, action) -> int:
    """How many bytes the daemon read from backing files while ``action`` ran (/proc/PID/io)."""
    pid = daemon_pid(vault.mnt)

    def read_bytes() -> int:
        with open(f"/proc/{pid}/io") as f:
            return int(next(line for line in f if line.startswith("rchar:")).split()[1])

    before = read_bytes()
    action()
    return max(0, read_bytes() - before - 64 * 1024)  # allow for small metadata reads
