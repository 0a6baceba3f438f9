"""``vaultfs run BACKING MOUNTPOINT -- COMMAND``: the nightly job that cannot leak.

Real CLI, real mount: the command sees the mount ready, the vault is locked afterwards
whatever the command did (failed, was signalled, left a process behind), and the exit
status is the command's, or vaultfs's own when the mount could not be made.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.mounting import VAULTFS, Vault, env, mounted, vaultfs


def run(vault: Vault, *command: str, password_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    return vaultfs("run", str(vault.backing), str(vault.mnt), "--passfile", str(password_file or vault.passfile),
                   "--log", str(vault.logfile), "--", *command, check=False)


def test_the_command_runs_on_the_ready_mount_and_its_status_is_returned(new_vault: Vault) -> None:
    job = f"test -f {new_vault.mnt}/seen || echo first > {new_vault.mnt}/seen; cat {new_vault.mnt}/seen; exit 7"
    result = run(new_vault, "sh", "-c", job)
    assert result.returncode == 7, result
    assert result.stdout == "first\n"  # the command owns stdout; vaultfs speaks on stderr
    assert f"locked {new_vault.mnt}" in result.stderr
    assert not new_vault.is_mounted()
    again = run(new_vault, "cat", str(new_vault.mnt / "seen"))
    assert again.returncode == 0 and again.stdout == "first\n"


def test_a_failed_unlock_runs_nothing(new_vault: Vault, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    marker = tmp_path / "ran"
    result = run(new_vault, "touch", str(marker), password_file=wrong)
    assert result.returncode == 3 and "wrong password" in result.stderr
    assert not marker.exists() and not new_vault.is_mounted()
    result = vaultfs("run", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(new_vault.passfile),
                     check=False)
    assert result.returncode == 2 and "needs a command" in result.stderr


def test_command_not_found_still_locks(new_vault: Vault) -> None:
    result = run(new_vault, "no-such-command-anywhere")
    assert result.returncode == 127 and "command not found: no-such-command-anywhere" in result.stderr
    assert not new_vault.is_mounted()


def test_what_the_command_left_open_is_cut_off_and_logged(new_vault: Vault) -> None:
    job = f"echo data > {new_vault.mnt}/f; sleep 60 < {new_vault.mnt}/f > /dev/null 2>&1 & exit 0"
    result = run(new_vault, "sh", "-c", job)
    assert result.returncode == 0, result
    assert "cut off 1: pid" in result.stderr and "(sleep)" in result.stderr
    os.kill(int(result.stderr.split("cut off 1: pid ")[1].split()[0]), signal.SIGKILL)
    assert not new_vault.is_mounted()
    log = new_vault.logfile.read_text()
    assert "by run, pid" in log and "(sleep)" in log


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


SIGNAL_COUNTER = """
import os, signal, sys, time
count = 0
def on_signal(signo, frame):
    global count
    count += 1
for signo in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signo, on_signal)
open(sys.argv[1], "w").close()
while count == 0:
    time.sleep(0.05)
time.sleep(0.5)  # a second copy of the signal would arrive now
with open(sys.argv[2], "w") as f:
    f.write(str(count))
sys.exit(3)
"""


def test_sigterm_reaches_the_command_and_the_vault_is_locked(new_vault: Vault, tmp_path: Path) -> None:
    started, counted = tmp_path / "started", tmp_path / "count"
    proc = subprocess.Popen(
        [VAULTFS, "run", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(new_vault.passfile), "--",
         sys.executable, "-c", SIGNAL_COUNTER, str(started), str(counted)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())  # fmt: skip
    try:
        wait_for_file(started)
        assert new_vault.is_mounted()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err  # the command's own status
    assert counted.read_text() == "1"
    assert not new_vault.is_mounted()
    with mounted(new_vault):
        pass  # it mounts again: nothing was left behind


def test_ctrl_c_on_the_terminal_reaches_the_command_once(new_vault: Vault, tmp_path: Path) -> None:
    started, counted = tmp_path / "started", tmp_path / "count"
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(VAULTFS, [VAULTFS, "run", str(new_vault.backing), str(new_vault.mnt), "--passfile",
                            str(new_vault.passfile), "--", sys.executable, "-c", SIGNAL_COUNTER, str(started),
                            str(counted)], env())
    output = b""
    try:
        wait_for_file(started)
        os.write(fd, b"\x03")  # the terminal sends SIGINT to the whole foreground process group
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 3, output
    assert counted.read_text() == "1", "the command got Ctrl-C twice (from the terminal and from vaultfs)"
    assert not new_vault.is_mounted()
