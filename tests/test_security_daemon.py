"""The mount daemon holds the keys: its log is private, it dumps no core, and no peer can read its memory.

Proved on a real mount (issue 11, items 8 and 9).  A root process with CAP_SYS_PTRACE
may read any process's memory, dumpable or not, so the daemon and the probe both run
as root *without* CAP_SYS_PTRACE (``setpriv``), the position of any other process of
the same user: it can read a dumpable process's ``/proc/PID/mem``, and must not be able
to read the daemon's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.mounting import VAULTFS, Vault, env, force_unmount, vaultfs
from tests.reliability import daemon_pid, need, wait_for

pytestmark = pytest.mark.mount

NO_PTRACE = ["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace", "--"]
READ_MEM = """
import sys
pid = sys.argv[1]
with open(f"/proc/{pid}/maps") as maps:
    start = int(maps.readline().split("-")[0], 16)
try:
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(start)
        print("read", len(mem.read(16)))
except PermissionError:
    print("refused")
"""


def read_memory_of(pid: int) -> str:
    """What a same-user process without CAP_SYS_PTRACE gets from /proc/PID/mem: 'read 16' or 'refused'."""
    result = subprocess.run([*NO_PTRACE, sys.executable, "-c", READ_MEM, str(pid)], capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout.strip()


def has_daemon(mountpoint: Path) -> bool:
    from vaultfs.fuse import state as mountstate

    state = mountstate.load_state(str(mountpoint))
    return bool(state and state.pid)


@contextmanager
def mounted_without_ptrace(vault: Vault, foreground: bool) -> Iterator[int]:
    """Mount through setpriv (daemon without CAP_SYS_PTRACE); yield the daemon's pid; always unmount."""
    args = [*NO_PTRACE, VAULTFS, "mount", str(vault.backing), str(vault.mnt), "--passfile", str(vault.passfile),
            "--log", str(vault.logfile)]
    process = None
    try:
        if foreground:
            process = subprocess.Popen([*args, "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env=env())
            # mounted (in the mount table) comes before answering (the state file gets its pid at INIT)
            assert wait_for(lambda: vault.is_mounted() and has_daemon(vault.mnt), timeout=60), \
                "the foreground mount did not come up"
        else:
            subprocess.run(args, check=True, capture_output=True, env=env(), timeout=120)
        yield daemon_pid(vault.mnt)
    finally:
        if vault.is_mounted():
            vaultfs("lock", str(vault.mnt), check=False)
        if vault.is_mounted():
            force_unmount(vault.mnt)
        if process is not None:
            process.wait(30)


@pytest.mark.parametrize("foreground", [False, True], ids=["detached", "foreground"])
def test_the_daemon_is_not_dumpable_has_no_core_limit_and_locks_its_keys(new_vault: Vault,
                                                                          foreground: bool) -> None:
    need("setpriv")
    control = subprocess.Popen([*NO_PTRACE, sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)
        assert read_memory_of(control.pid) == "read 16"  # the probe can read an ordinary process
    finally:
        control.kill()
        control.wait()
    with mounted_without_ptrace(new_vault, foreground) as pid:
        (new_vault.mnt / "chat.txt").write_text("still works")
        assert read_memory_of(pid) == "refused"
        limits = Path(f"/proc/{pid}/limits").read_text()
        (core,) = [line for line in limits.splitlines() if line.startswith("Max core file size")]
        assert core.split()[4:6] == ["0", "0"], core
        status = Path(f"/proc/{pid}/status").read_text()
        (locked,) = [line for line in status.splitlines() if line.startswith("VmLck:")]
        assert int(locked.split()[1]) > 0, locked  # the key buffers' pages
        assert (new_vault.mnt / "chat.txt").read_text() == "still works"
    assert "Traceback" not in new_vault.logfile.read_text()


def test_the_log_file_is_created_private_whatever_the_umask(new_vault: Vault, tmp_path: Path) -> None:
    logfile = tmp_path / "new.log"
    result = subprocess.run([VAULTFS, "mount", str(new_vault.backing), str(new_vault.mnt), "--passfile",
                             str(new_vault.passfile), "--log", str(logfile)], capture_output=True, text=True,
                            env=env(), preexec_fn=lambda: os.umask(0o022), timeout=120)
    try:
        assert result.returncode == 0, result.stderr
        (new_vault.mnt / "secret plan.txt").write_text("x")
    finally:
        vaultfs("lock", str(new_vault.mnt), check=False)
        if new_vault.is_mounted():
            force_unmount(new_vault.mnt)
    assert (logfile.stat().st_mode & 0o777) == 0o600
