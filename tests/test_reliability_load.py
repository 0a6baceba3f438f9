"""Load on a real mount: fio with data verification, stress-ng, concurrent SQLite writers."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess

import pytest

from tests.mounting import Vault, mounted, scan_backing
from tests.reliability import SCALE, daemon_pid, need, run, wait_for
from vaultfs.fuse import state as mountstate

pytestmark = pytest.mark.slow


def daemon_alive(vault: Vault) -> bool:
    return mountstate.process_start(daemon_pid(vault.mnt)) is not None


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("seq", ["--rw=write", "--bs=1M", f"--size={128 * SCALE}M", "--numjobs=2", "--end_fsync=1"]),
        ("randrw", ["--rw=randrw", "--bs=4k", f"--size={32 * SCALE}M", "--numjobs=4"]),
        ("randrw-mixed-sizes", ["--rw=randrw", "--bsrange=1k-192k", f"--size={32 * SCALE}M", "--numjobs=2"]),
    ],
)
def test_fio_with_crc32c_verification(mounted_vault: Vault, name: str, options: list[str]) -> None:
    need("fio")
    result = run("fio", f"--name={name}", f"--directory={mounted_vault.mnt}", "--verify=crc32c", "--do_verify=1",
                 "--verify_fatal=1", "--verify_state_save=0", "--group_reporting", *options)
    assert "err= 0" in result.stdout, result.stdout
    assert "verify" not in result.stderr.lower(), result.stderr
    assert daemon_alive(mounted_vault)
    assert not mounted_vault.log_problems()
    assert not scan_backing(mounted_vault.backing, [name.encode()])


def test_stress_ng_filesystem_stressors(mounted_vault: Vault) -> None:
    need("stress-ng")
    workdir = mounted_vault.mnt / "stress"
    workdir.mkdir()
    stressors = ["--hdd", "1", "--hdd-bytes", "16M", "--dir", "1", "--rename", "1", "--seek", "1", "--chmod", "1",
                 "--utime", "1", "--dentry", "1", "--fstat", "1", "--io", "1"]
    if SCALE > 1:
        stressors += ["--link", "1", "--symlink", "1", "--fallocate", "1"]
    try:
        result = run("stress-ng", "--temp-path", str(workdir), *stressors, "--timeout", f"{5 * SCALE}s",
                     "--metrics-brief", timeout=300 * SCALE)
    finally:
        # A stressor can outlive stress-ng in sync(2), which waits on every filesystem: the
        # next test's mount would count it as a holder. None may survive this test.
        subprocess.run(["pkill", "-KILL", "-f", f"stress-ng.*{workdir}"], check=False)
        subprocess.run(["pkill", "-KILL", "^stress-ng"], check=False)
        assert wait_for(lambda: subprocess.run(["pgrep", "^stress-ng"], capture_output=True).returncode != 0)
    assert "successful run completed" in result.stdout + result.stderr
    assert daemon_alive(mounted_vault)
    assert not mounted_vault.log_problems()


def _sqlite_writer(path: str, writer: int, rows: int) -> None:
    connection = sqlite3.connect(path, timeout=60)
    connection.execute("PRAGMA busy_timeout = 60000")
    for batch in range(rows // 50):
        with connection:
            connection.executemany(
                "INSERT INTO messages(writer, seq, body) VALUES (?, ?, ?)",
                [(writer, batch * 50 + i, f"message {writer}/{batch * 50 + i} " * 4) for i in range(50)],
            )
    connection.close()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_four_processes_write_one_sqlite_database(new_vault: Vault, journal: str) -> None:
    rows = 1000 * SCALE
    with mounted(new_vault):
        db = str(new_vault.mnt / "msgstore.db")
        with sqlite3.connect(db) as connection:
            connection.execute(f"PRAGMA journal_mode = {journal}")
            connection.execute("CREATE TABLE messages(id INTEGER PRIMARY KEY, writer INT, seq INT, body TEXT)")
        connection.close()  # `with` only commits; an open database keeps `lock` from locking
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_sqlite_writer, args=(db, n, rows)) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
            assert worker.exitcode == 0
    with mounted(new_vault):
        connection = sqlite3.connect(str(new_vault.mnt / "msgstore.db"))
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counts = dict(connection.execute("SELECT writer, COUNT(DISTINCT seq) FROM messages GROUP BY writer"))
        assert counts == {n: rows for n in range(4)}
        connection.close()
    assert not new_vault.log_problems()
