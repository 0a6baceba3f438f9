"""``vaultfs status``: mounted, locked or stale, with the documented exit codes, and what the
daemon reports (open files, idle timer); state files of ended mounts do not pile up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.mounting import VAULTFS, Vault, env, mounted, vaultfs
from tests.test_lock_busy import holding
from tests.test_mount_lifecycle import daemon_pid, wait_until


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return vaultfs("status", *args, check=False)


def status_json(*args: str) -> dict:
    result = status(*args, "--json")
    return json.loads(result.stdout)


def test_mounted_by_mountpoint_and_by_backing_dir(new_vault: Vault) -> None:
    with mounted(new_vault):
        pid = daemon_pid(new_vault)
        for target in (new_vault.mnt, new_vault.backing):
            result = status(str(target))
            assert result.returncode == 0, result
            assert f"{new_vault.mnt}: mounted" in result.stdout
            assert f"backing dir:  {new_vault.backing}" in result.stdout
            assert f"pid {pid}" in result.stdout
            data = status_json(str(target))
            assert (data["state"], data["mountpoint"], data["backing"], data["pid"]) == (
                "mounted", str(new_vault.mnt), str(new_vault.backing), pid)
            assert data["idle"] is None and data["read_only"] is False
        # the listing covers the whole machine: another suite's leftover stale mount makes it 17
        listing, every = status(), json.loads(status("--json").stdout)
        assert f"{new_vault.mnt}: mounted" in listing.stdout
        assert listing.returncode == (17 if any(s["state"] == "stale" for s in every) else 0), listing
        assert [s["state"] for s in every if s["mountpoint"] == str(new_vault.mnt)] == ["mounted"]


def test_open_files_and_the_idle_timer(new_vault: Vault) -> None:
    with mounted(new_vault, "--idle", "1h"):
        (new_vault.mnt / "msgstore.db").write_bytes(b"data")
        with holding(new_vault.mnt / "msgstore.db") as holder:
            # the daemon reports once a second, only when something changed
            assert wait_until(lambda: status_json(str(new_vault.mnt))["open_handles"] == 1, timeout=10)
            data = status_json(str(new_vault.mnt))
            assert data["holders"] == [{"pid": holder.pid, "command": "sleep",
                                        "paths": [str(new_vault.mnt / "msgstore.db")]}]
            assert data["idle"]["timeout"] == 3600 and data["idle"]["locks_in"] is None
            assert 0 <= data["idle"]["idle_for"] < 60
            text = status(str(new_vault.mnt)).stdout
            assert "open files:   1 (pid" in text and "idle lock:    after 1h 0m 0s" in text
        assert wait_until(lambda: status_json(str(new_vault.mnt))["open_handles"] == 0, timeout=10)
        data = status_json(str(new_vault.mnt))
        assert data["holders"] == [] and 3500 < data["idle"]["locks_in"] <= 3600
        assert "locks in 5" in status(str(new_vault.mnt)).stdout  # 59m ...s


def test_locked_and_stale_exit_codes(new_vault: Vault, tmp_path: Path) -> None:
    with mounted(new_vault):
        pass
    for target in (new_vault.mnt, new_vault.backing):
        result = status(str(target))
        assert result.returncode == 16, result
        assert "locked" in result.stdout
        assert status_json(str(target))["state"] == "locked"
    with mounted(new_vault):
        os.kill(daemon_pid(new_vault), signal.SIGKILL)
        assert wait_until(lambda: status(str(new_vault.mnt)).returncode == 17)
        assert "its daemon died" in status(str(new_vault.mnt)).stdout
        assert status_json(str(new_vault.backing))["state"] == "stale"
    nothing = tmp_path / "plain"
    nothing.mkdir()
    result = status(str(nothing))
    assert result.returncode == 5 and "neither a vault nor a vaultfs mountpoint" in result.stderr


def test_state_files_of_ended_mounts_do_not_pile_up(new_vault: Vault, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    private = {**env(), "VAULTFS_RUN_DIR": str(run_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VAULTFS, *args], capture_output=True, text=True, env=private, timeout=120)

    mount = ["mount", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(new_vault.passfile),
             "--log", str(new_vault.logfile)]
    for _ in range(3):
        assert cli(*mount).returncode == 0
        assert len(list(run_dir.glob("*.json"))) == 1
        assert cli("lock", str(new_vault.mnt)).returncode == 0
        assert list(run_dir.glob("*.json")) == []
    assert cli(*mount).returncode == 0  # a daemon killed without anyone locking after it
    pid = json.loads(cli("status", str(new_vault.mnt), "--json").stdout)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists())
    subprocess.run(["fusermount3", "-uz", str(new_vault.mnt)], check=True)
    assert len(list(run_dir.glob("*.json"))) == 1
    assert cli("status", str(new_vault.mnt)).returncode == 16  # status (like mount) prunes leftovers
    assert list(run_dir.glob("*")) == []


def test_without_an_argument_a_user_sees_only_their_own_mounts(mounted_vault: Vault) -> None:
    as_nobody = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", VAULTFS, "status",
                                "--json"], capture_output=True, text=True, env=env(), cwd="/", timeout=60)
    assert as_nobody.returncode == 16 and json.loads(as_nobody.stdout) == [], as_nobody
    assert str(mounted_vault.mnt) in [s["mountpoint"] for s in json.loads(status("--json").stdout)]
