"""``lock`` tells the truth: it refuses a busy mount and names who holds it; ``--force`` cuts
them off and says so (on stdout and in the daemon's log); ``--idle`` waits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.mounting import Vault, mounted, vaultfs
from tests.test_mount_lifecycle import wait_until


@contextmanager
def sqlite_shell(database: Path) -> Iterator[subprocess.Popen[str]]:
    """The issue's case: a sqlite3 shell holding msgstore.db open."""
    if shutil.which("sqlite3") is None:
        pytest.fail("sqlite3 is not installed (scripts/test installs it)")
    proc = subprocess.Popen(["sqlite3", str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("CREATE TABLE messages(body TEXT); INSERT INTO messages VALUES ('hello');\n"
                         "SELECT count(*) FROM messages;\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "1"
        yield proc
    finally:
        proc.kill()
        proc.wait(30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def holding(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process (not this one) that holds ``path`` open."""
    with open(path, "rb") as f:
        proc = subprocess.Popen(["sleep", "60"], stdin=f)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_lock_refuses_a_busy_mount_and_names_the_process_and_file(new_vault: Vault) -> None:
    with mounted(new_vault), sqlite_shell(new_vault.mnt / "msgstore.db") as shell:
        result = new_vault.lock(check=False)
        assert result.returncode == 13, result
        assert f"pid {shell.pid} (sqlite3): {new_vault.mnt / 'msgstore.db'}" in result.stderr
        assert "--force" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert new_vault.is_mounted()
        assert shell.poll() is None
        status = vaultfs("status", str(new_vault.mnt))
        assert f"pid {shell.pid} (sqlite3)" in status.stdout


def test_a_working_directory_in_the_mount_is_named_too(new_vault: Vault) -> None:
    with mounted(new_vault):
        (new_vault.mnt / "Media").mkdir()
        shell = subprocess.Popen(["sleep", "60"], cwd=new_vault.mnt / "Media")
        try:
            result = new_vault.lock(check=False)
            assert result.returncode == 13
            assert f"pid {shell.pid} (sleep): {new_vault.mnt / 'Media'} (cwd)" in result.stderr
        finally:
            shell.kill()
            shell.wait()
        assert "locked" in new_vault.lock().stdout


def test_a_process_in_the_bare_directory_underneath_does_not_hold_the_vault(new_vault: Vault) -> None:
    """Its cwd has the mountpoint's path but lies on the directory the vault covers."""
    before = subprocess.Popen(["sleep", "60"], cwd=new_vault.mnt)
    try:
        with mounted(new_vault):
            inside = subprocess.Popen(["sleep", "60"], cwd=new_vault.mnt)
            try:
                refused = new_vault.lock(check=False)
                assert refused.returncode == 13 and f"pid {inside.pid} (sleep)" in refused.stderr
                assert f"pid {before.pid}" not in refused.stderr
            finally:
                inside.kill()
                inside.wait()
            result = new_vault.lock()
            assert result.returncode == 0 and f"pid {before.pid}" not in result.stdout
    finally:
        before.kill()
        before.wait()


def test_lock_force_cuts_off_says_so_and_logs_it(new_vault: Vault) -> None:
    with mounted(new_vault), sqlite_shell(new_vault.mnt / "msgstore.db") as shell:
        result = new_vault.lock("--force")
        assert f"cut off 1: pid {shell.pid} (sqlite3)" in result.stdout
        assert result.stdout.strip().endswith(f"locked {new_vault.mnt}")
        assert not new_vault.is_mounted()
        assert shell.stdin is not None
        shell.stdin.write("SELECT count(*) FROM messages;\n")
        shell.stdin.flush()
        shell.stdin.close()
        assert shell.stdout is not None and shell.stderr is not None
        out, err = shell.stdout.read(), shell.stderr.read()
        assert "1" not in out.split() and err, (out, err)  # the shell lost its database
    log = new_vault.logfile.read_text()
    assert "by lock --force, pid" in log and f"cut off: pid {shell.pid} (sqlite3)" in log
    with mounted(new_vault):  # what sqlite3 committed before the cut was flushed
        query = subprocess.run(["sqlite3", str(new_vault.mnt / "msgstore.db"), "SELECT body FROM messages"],
                               capture_output=True, text=True, check=True)
        assert query.stdout.strip() == "hello"


def test_a_plain_lock_is_logged_with_nothing_cut_off(new_vault: Vault) -> None:
    with mounted(new_vault):
        (new_vault.mnt / "f").write_bytes(b"x")
    log = new_vault.logfile.read_text()
    assert "by lock, pid" in log and "nothing was open" in log
    assert not new_vault.log_problems()


def test_idle_never_cuts_off_an_open_file(new_vault: Vault) -> None:
    with mounted(new_vault, "--idle", "1s"):
        (new_vault.mnt / "f").write_bytes(b"data")
        with holding(new_vault.mnt / "f"):
            time.sleep(3)
            assert new_vault.is_mounted(), "the idle lock cut off an open file"
            status = vaultfs("status", str(new_vault.mnt))
            assert "waits until nothing is open" in status.stdout
        assert wait_until(lambda: not new_vault.is_mounted(), timeout=15)
    # the daemon writes its last record after the kernel dropped the mount (it seals first)
    assert wait_until(lambda: "idle; nothing was open" in new_vault.logfile.read_text(), timeout=15)


def test_lock_of_a_dead_daemons_mount_logs_what_it_cut_off(new_vault: Vault) -> None:
    with mounted(new_vault):
        (new_vault.mnt / "f").write_bytes(b"data")
        with holding(new_vault.mnt / "f") as holder:
            os.kill(json.loads(vaultfs("status", str(new_vault.mnt), "--json").stdout)["pid"], signal.SIGKILL)
            result = new_vault.lock()
            assert "removed a stale mount" in result.stdout and f"pid {holder.pid} (sleep)" in result.stdout
    assert f"cut off: pid {holder.pid} (sleep)" in new_vault.logfile.read_text()
