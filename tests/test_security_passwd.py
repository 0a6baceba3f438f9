"""A password change leaves no slot for the old password anywhere in the synced folder (issue 11).

The attack from the issue: after ``vaultfs passwd`` (or ``recover``), take any file of the
backing dir (older versions kept the previous config as ``vaultfs.conf.bak``), put it in
place of ``vaultfs.conf`` and unlock with the old password.  It must fail, and a kill at
any step of the config write must leave a vault that opens with the old or the new
password, never with an old slot left beside a new config.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WEAK_KDF, read_file, run_cli, write_file, write_passfile
from tests.mounting import VAULTFS, env
from tests.reliability import need
from vaultfs.errors import ConfigDamaged, NotAVault, UnsupportedFormat, WrongPassword
from vaultfs.format import keyfile
from vaultfs.vault import Vault

OLD = "correct horse battery staple"
NEW = "a brand new password"
CONTENT = b"the chat history " * 500


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    """A vault made by the real CLI with one file in it; the old password in ``tmp_path/old``."""
    write_passfile(tmp_path / "old", OLD)
    write_passfile(tmp_path / "new", NEW)
    path = tmp_path / "cloud"
    result = run_cli("init", str(path), "--passfile", str(tmp_path / "old"), *WEAK_KDF)
    assert result.returncode == 0, result.stderr
    vault = Vault.unlock(str(path), OLD)
    try:
        write_file(vault, "/chat.db", CONTENT)
    finally:
        vault.close()
    return path


def opens_with(backing: Path, password: str) -> bool:
    try:
        keyfile.unlock(str(backing), password)
    except (WrongPassword, ConfigDamaged, UnsupportedFormat, NotAVault):
        return False
    return True


def files_that_open_with(backing: Path, password: str, scratch: Path) -> list[str]:
    """Every file of the backing dir that, put in place of vaultfs.conf, unlocks with ``password``."""
    found = []
    for candidate in sorted(p for p in backing.rglob("*") if p.is_file()):
        if scratch.exists():
            shutil.rmtree(scratch)
        shutil.copytree(backing, scratch, symlinks=True)
        shutil.copyfile(candidate, scratch / "vaultfs.conf")
        if opens_with(scratch, password):
            found.append(str(candidate.relative_to(backing)))
    return found


def the_attack_from_the_issue(backing: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Copy vaultfs.conf.bak (if any) over vaultfs.conf and read a file with the old password."""
    if (backing / "vaultfs.conf.bak").exists():
        shutil.copyfile(backing / "vaultfs.conf.bak", backing / "vaultfs.conf")
    return run_cli("cat", str(backing), "/chat.db", "--passfile", str(tmp_path / "old"))


def test_after_passwd_no_file_in_the_folder_opens_with_the_old_password(backing: Path, tmp_path: Path) -> None:
    result = run_cli("passwd", str(backing), "--passfile", str(tmp_path / "old"), "--new-passfile",
                     str(tmp_path / "new"), *WEAK_KDF)
    assert result.returncode == 0, result.stderr
    assert "old vaultfs.conf" in result.stdout  # says what a password change cannot undo
    assert files_that_open_with(backing, OLD, tmp_path / "scratch") == []
    assert files_that_open_with(backing, NEW, tmp_path / "scratch") == ["vaultfs.conf"]
    attack = the_attack_from_the_issue(backing, tmp_path)
    assert attack.returncode == 3 and CONTENT.decode() not in attack.stdout, attack


def test_after_recover_no_file_in_the_folder_opens_with_the_old_password(backing: Path, tmp_path: Path) -> None:
    from vaultfs.format import recovery

    vault = Vault.unlock(str(backing), OLD)
    key = recovery.encode(vault.keys.master_key)
    vault.close()
    for extra in ([], ["--rebuild-config"]):
        result = run_cli("recover", str(backing), "--recovery-key-file", "-", "--new-passfile", "-", *extra,
                         *WEAK_KDF, input=f"{key}\n{NEW}\n")
        assert result.returncode == 0, result.stderr
        assert files_that_open_with(backing, OLD, tmp_path / "scratch") == []
        attack = the_attack_from_the_issue(backing, tmp_path)
        assert attack.returncode == 3 and CONTENT.decode() not in attack.stdout, attack


def test_a_backup_left_by_an_older_version_is_never_read_and_is_removed_on_the_next_write(
        backing: Path, tmp_path: Path) -> None:
    shutil.copyfile(backing / "vaultfs.conf", backing / "vaultfs.conf.bak")  # what vaultfs 0.1 left
    (backing / "vaultfs.conf").rename(tmp_path / "live.conf")
    result = run_cli("cat", str(backing), "/chat.db", "--passfile", str(tmp_path / "old"))
    assert result.returncode == 5 and "rebuild-config" in result.stderr, result  # no silent fallback
    (tmp_path / "live.conf").rename(backing / "vaultfs.conf")
    result = run_cli("passwd", str(backing), "--passfile", str(tmp_path / "old"), "--new-passfile",
                     str(tmp_path / "new"), *WEAK_KDF)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in backing.glob("vaultfs.conf*")) == ["vaultfs.conf"]


def run_passwd_killed_at(backing: Path, tmp_path: Path, syscall: str, when: int) -> int:
    """``vaultfs passwd`` with SIGKILL injected at the when-th ``syscall`` (strace); its exit code."""
    result = subprocess.run(
        ["strace", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}", "-e",
         f"inject={syscall}:signal=KILL:when={when}", VAULTFS, "passwd", str(backing),
         "--passfile", str(tmp_path / "old"), "--new-passfile", str(tmp_path / "new"), *WEAK_KDF],
        capture_output=True, text=True, env={**env(), "PYTHONDONTWRITEBYTECODE": "1"}, timeout=120)
    return result.returncode


@pytest.mark.slow
def test_passwd_killed_at_every_write_step_opens_with_old_or_new_and_never_keeps_a_stale_slot(
        backing: Path, tmp_path: Path) -> None:
    need("strace")
    shutil.copyfile(backing / "vaultfs.conf", backing / "vaultfs.conf.bak")  # an older version's leftover too
    original = {p.name: p.read_bytes() for p in backing.glob("vaultfs.conf*")}
    contents = {p: p.read_bytes() for p in backing.rglob("*.vfs")}
    kills = []
    for syscall in ("unlink", "fsync", "rename"):
        when = 1
        while True:
            for name, data in original.items():  # back to before passwd; a leftover .tmp stays
                (backing / name).write_bytes(data)
            code = run_passwd_killed_at(backing, tmp_path, syscall, when)
            old, new = opens_with(backing, OLD), opens_with(backing, NEW)
            assert old != new, (syscall, when, old, new)  # exactly one of them: never neither, never both
            assert {p: p.read_bytes() for p in backing.rglob("*.vfs")} == contents
            stale = files_that_open_with(backing, OLD, tmp_path / "scratch")
            if new:  # the new config is live: nothing in the folder may still take the old password
                assert stale == [], (syscall, when, stale)
            if code == 0:
                break  # this many calls and no kill: the run completed
            assert code in (-9, 137), (syscall, when, code)
            kills.append((syscall, when, "new" if new else "old"))
            when += 1
        assert sorted(p.name for p in backing.glob("vaultfs.conf*")) == ["vaultfs.conf"], (syscall, when)
    # the .bak and a leftover .tmp are removed (2 unlinks), the data and the dir are fsynced, one rename
    assert [k[:2] for k in kills] == [("unlink", 1), ("unlink", 2), ("fsync", 1), ("fsync", 2), ("rename", 1)]
    assert dict((k[:2], k[2]) for k in kills)[("fsync", 2)] == "new"  # renamed, directory fsync pending
    assert dict((k[:2], k[2]) for k in kills)[("rename", 1)] == "old"
    vault = Vault.unlock(str(backing), NEW)
    try:
        assert read_file(vault, "/chat.db") == CONTENT
    finally:
        vault.close()
