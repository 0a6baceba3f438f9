"""kill -9 in the middle of real work: the vault opens again and nothing synced is lost."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mounting import Vault, mounted, vaultfs
from tests.reliability import SCALE, daemon_pid, wait_for

pytestmark = pytest.mark.slow


def kill_daemon(vault: Vault) -> None:
    os.kill(daemon_pid(vault.mnt), signal.SIGKILL)
    assert wait_for(lambda: not os.path.exists(f"/proc/{daemon_pid_or_zero(vault)}"), timeout=10)


def daemon_pid_or_zero(vault: Vault) -> int:
    try:
        return daemon_pid(vault.mnt)
    except AssertionError:
        return 0


def recover_after_crash(vault: Vault) -> None:
    """What a user does after a crash: lock (cleans the stale mount), then mount again."""
    result = vaultfs("lock", str(vault.mnt), check=False)
    assert result.returncode == 0, result.stderr
    assert not vault.is_mounted()


def fsck_problem_paths(vault: Vault) -> list[str]:
    result = vaultfs("fsck", str(vault.backing), "--passfile", str(vault.passfile), check=False)
    assert result.returncode in (0, 12), result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("PROBLEM")]
    return [line.split(": ", 1)[1].split(" [backing")[0] for line in lines]


def write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = os.urandom(1 << 20)
for _ in range(int(sys.argv[2])):
    os.write(fd, chunk)
"""


def test_kill_during_a_large_sequential_write(new_vault: Vault) -> None:
    synced = {f"synced-{i}.bin": os.urandom(300_000 + i) for i in range(3)}
    with mounted(new_vault):
        for name, data in synced.items():
            write_synced(new_vault.mnt / name, data)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(new_vault.mnt / "big.bin"), str(400 * SCALE)],
                                  stderr=subprocess.DEVNULL)
        assert wait_for(lambda: (new_vault.mnt / "big.bin").exists()
                        and (new_vault.mnt / "big.bin").stat().st_size > 40 << 20, timeout=60)
        kill_daemon(new_vault)
        writer.wait(60)
        recover_after_crash(new_vault)
    assert set(fsck_problem_paths(new_vault)) <= {"/big.bin"}
    with mounted(new_vault):
        for name, data in synced.items():
            assert (new_vault.mnt / name).read_bytes() == data
        assert sorted(os.listdir(new_vault.mnt)) == sorted([*synced, "big.bin"])


SQLITE_WRITER = """
import sqlite3, sys
db, progress = sys.argv[1], sys.argv[2]
connection = sqlite3.connect(db)
connection.execute("PRAGMA journal_mode = " + sys.argv[3])
connection.execute("PRAGMA synchronous = FULL")
connection.execute("CREATE TABLE IF NOT EXISTS messages(id INTEGER PRIMARY KEY, body TEXT)")
for batch in range(100000):
    with connection:
        connection.executemany("INSERT INTO messages(body) VALUES (?)", [("chat " * 40,)] * 100)
    with open(progress, "w") as handle:
        handle.write(str((batch + 1) * 100))
"""


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_kill_during_sqlite_transactions(new_vault: Vault, tmp_path: Path, journal: str) -> None:
    progress = tmp_path / "committed"
    with mounted(new_vault):
        writer = subprocess.Popen([sys.executable, "-c", SQLITE_WRITER, str(new_vault.mnt / "msgstore.db"),
                                   str(progress), journal], stderr=subprocess.DEVNULL)
        assert wait_for(lambda: progress.exists() and progress.read_text() and int(progress.read_text()) >= 3000,
                        timeout=120)
        kill_daemon(new_vault)
        writer.wait(60)
        committed = int(progress.read_text())
        recover_after_crash(new_vault)
    assert set(fsck_problem_paths(new_vault)) <= {"/msgstore.db", "/msgstore.db-journal", "/msgstore.db-wal"}
    with mounted(new_vault):
        connection = sqlite3.connect(str(new_vault.mnt / "msgstore.db"))
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (count,) = connection.execute("SELECT COUNT(*) FROM messages").fetchone()
        connection.close()
    assert count >= committed, (count, committed)


RENAMER = """
import os, sys
root = sys.argv[1]
for round_ in range(1000000):
    for i in range(50):
        a, b = f"{root}/f{i}.a", f"{root}/f{i}.b"
        src, dst = (a, b) if round_ % 2 == 0 else (b, a)
        os.rename(src, dst)
"""


def test_kill_during_a_burst_of_renames(new_vault: Vault) -> None:
    contents = {i: hashlib.sha256(str(i).encode()).digest() * 100 for i in range(50)}
    with mounted(new_vault):
        for i, data in contents.items():
            write_synced(new_vault.mnt / f"f{i}.a", data)
        renamer = subprocess.Popen([sys.executable, "-c", RENAMER, str(new_vault.mnt)], stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        kill_daemon(new_vault)
        renamer.wait(60)
        recover_after_crash(new_vault)
    assert fsck_problem_paths(new_vault) == []
    with mounted(new_vault):
        names = os.listdir(new_vault.mnt)
        assert len(names) == 50
        for i, data in contents.items():
            present = [n for n in (f"f{i}.a", f"f{i}.b") if n in names]
            assert len(present) == 1
            assert (new_vault.mnt / present[0]).read_bytes() == data


# passwd killed at each step of its config write: tests/test_security_passwd.py
