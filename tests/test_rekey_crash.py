"""`vaultfs rekey` killed at any point: no file is lost to both keys, no reader opens the half-done vault,
and running it again with the same passwords finishes it into the same vault as an uninterrupted run.

The kill is a child that dies (like kill -9) before its N-th mutating call (rename, unlink, link,
utime, chmod, chown, truncate, a write, an extended attribute set or removed), for N spread over the
whole run, switch-over included; and the installed command under SIGKILL at random moments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import crash_points, rekey_tree
from tests.conftest import VAULTFS_BIN, WEAK_KDF, cli_env, run_cli, write_file, write_passfile
from vaultfs import backing, cli
from vaultfs.errors import RekeyInProgress
from vaultfs.format import keyfile
from vaultfs.format.keys import VaultKeys
from vaultfs.tools import rekeystate
from vaultfs.vault import Vault, init_vault

OLD = "the old password, leaked"
NEW = "a fresh passphrase nobody has seen"
MUTATIONS = ("rename", "unlink", "link", "utime", "fchmod", "fchown", "ftruncate", "setxattr", "removexattr",
             "rmdir", "mkdir")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backing_dir = tmp_path_factory.mktemp("rekey-crash") / "vault"
    rekey_tree.build(backing_dir, OLD)
    return backing_dir


def copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)
    return dst


def argv(backing_dir: Path, passfiles: tuple[Path, Path]) -> list[str]:
    return ["rekey", str(backing_dir), "--passfile", str(passfiles[0]), "--new-passfile", str(passfiles[1]),
            *WEAK_KDF]


def rekey_until(backing_dir: Path, passfiles: tuple[Path, Path], stop_at: int | None) -> int:
    """Rekey in a child that dies before its mutation number ``stop_at``; return how many it made (-1: died)."""
    done = crash_points.run_until(lambda: cli.main(argv(backing_dir, passfiles)),
                                  [(os, name) for name in MUTATIONS] + [(backing, "pwrite_all")], stop_at)
    if done is None:
        return -1
    calls, code = done
    assert code == 0, f"the uninterrupted run failed with exit {code}"
    return len(calls)


def unlock(backing_dir: Path, password: str) -> VaultKeys:
    return keyfile.unwrap(keyfile.load_config(str(backing_dir), rekeying=True), password)


def test_a_kill_at_any_step_then_a_rerun_give_the_vault_an_uninterrupted_rekey_gives(
        pristine: Path, tmp_path: Path) -> None:
    passfiles = write_passfile(tmp_path / "old", OLD), write_passfile(tmp_path / "new", NEW)
    before = rekey_tree.without_atimes(rekey_tree.snapshot(pristine, OLD))
    old = unlock(pristine, OLD)
    traced = rekey_tree.trace(pristine, old)
    payloads = rekey_tree.expected_payloads(before)
    total = rekey_until(copy(pristine, tmp_path / "whole"), passfiles, None)
    assert total > 150
    stride = max(1, total // 60)
    points = sorted(set(range(0, total, stride)) | set(range(max(0, total - 8), total)))
    kinds: set[str] = set()
    for stop_at in points:
        vault = copy(pristine, tmp_path / f"killed-{stop_at}")
        found = rekey_tree.trace(vault, old).times  # this copy's times (cp -a reading the original moves its atimes)
        assert rekey_until(vault, passfiles, stop_at) == -1, "the child died"
        config = keyfile.load_config(str(vault), rekeying=True)
        pending = rekeystate.load_pending(str(vault))
        switched = config.vault_id != old.vault_id
        kinds.add("switched" if switched else "pending" if pending is not None else "not started")
        if pending is not None:
            with pytest.raises(RekeyInProgress):
                Vault.unlock(str(vault), OLD, read_only=True)
            new = keyfile.unwrap(pending, NEW)
            missing = payloads - rekey_tree.recoverable(vault, [old, new])
            assert not missing, f"killed at {stop_at}: {len(missing)} contents open with neither key"
        elif not switched:  # killed before the new key was in place: nothing changed but the root's mtime
            unchanged = rekey_tree.trace(vault, old).times
            unchanged.pop("/")
            assert unchanged == {path: t for path, t in found.items() if path != "/"}, stop_at
        if not switched:
            rerun = cli.main(argv(vault, passfiles))
            assert rerun == 0, f"killed at {stop_at}: the rerun exited {rerun}"
        else:  # the old password no longer opens it, and the rerun says why
            told = run_cli(*argv(vault, passfiles))
            assert told.returncode == 3 and "a rekey of this vault has just finished" in told.stderr, told.stderr
        times = rekey_tree.trace(vault, unlock(vault, NEW)).times  # before anything reads (and moves atimes)
        after = rekey_tree.without_atimes(rekey_tree.snapshot(vault, NEW))
        if switched:  # killed between the switch-over and putting the root's times back: a root's mtime
            assert after.pop("/").xattrs == before["/"].xattrs
            times.pop("/")
        assert after == {path: shown for path, shown in before.items() if path in after}, f"killed at {stop_at}"
        assert set(after) | ({"/"} if switched else set()) == set(before), f"killed at {stop_at}"
        assert times == {path: t for path, t in found.items() if path in times}, f"killed at {stop_at}"
        assert rekey_tree.old_key_findings(vault, old, traced) == [], f"killed at {stop_at}"
        assert not list(vault.rglob("vaultfs.rekey*")) and not list(vault.rglob("vaultfs.tmp-*")), stop_at
        subprocess.run(["rm", "-rf", str(vault)], check=True)
    assert kinds == {"not started", "pending", "switched"}


def test_the_real_command_killed_at_random_moments_then_rerun(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    init_vault(str(vault), OLD, keyfile.TEST_KDF)
    opened = Vault.unlock(str(vault), OLD)
    try:
        for directory in range(4):
            opened.mkdir(f"/d{directory}", 0o755)
            for n in range(80):
                write_file(opened, f"/d{directory}/file-{n}", os.urandom(128 * 1024 + n))
        opened.link("/d0/file-0", "/d3/link-to-d0-file-0")
    finally:
        opened.close()
    before = rekey_tree.without_atimes(rekey_tree.snapshot(vault, OLD))
    old = unlock(vault, OLD)
    traced = rekey_tree.trace(vault, old)
    passfiles = write_passfile(tmp_path / "old", OLD), write_passfile(tmp_path / "new", NEW)
    pending = vault / keyfile.REKEY_NAME
    interrupted = 0
    for delay in (0.1, 0.7, 0.9):
        process = subprocess.Popen([VAULTFS_BIN, *argv(vault, passfiles)], env=cli_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not pending.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the first run: once it has started changing things
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not pending.exists():
            break  # it finished before the kill
        interrupted += 1
        refused = run_cli("ls", str(vault), "--passfile", str(passfiles[0]))
        assert refused.returncode == 29 and "rekey in progress" in refused.stderr
    assert interrupted, "no kill fell inside the rekey"
    if pending.exists():
        result = run_cli(*argv(vault, passfiles), timeout=300)
        assert result.returncode == 0, result.stderr
    assert rekey_tree.without_atimes(rekey_tree.snapshot(vault, NEW)) == before
    assert rekey_tree.old_key_findings(vault, old, traced) == []
