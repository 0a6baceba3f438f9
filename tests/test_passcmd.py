"""``--passcmd CMD`` on every verb that unlocks: the first line CMD prints is the password;
CMD is split like a shell would, but no shell runs; its failure is a clear error (18)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.conftest import VaultDir, run_cli, write_file, write_passfile
from tests.mounting import Vault, vaultfs


@pytest.fixture
def keyring(tmp_path: Path, vault_dir: VaultDir) -> str:
    """A password command like `secret-tool lookup ...`: a script that prints the password
    (and a second line, as `pass` does), in a directory whose name needs quoting."""
    folder = tmp_path / "key ring $HOME"
    folder.mkdir()
    script = folder / "lookup"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {shlex.quote(str(folder / 'calls'))}\nprintf '%s\\n' "
                      f"{shlex.quote(vault_dir.password)} 'comment: not the password'\n")
    script.chmod(0o700)
    return shlex.join([str(script), "vaultfs", "chat backup"])


VERBS = {
    "ls": ["/"],
    "cat": ["/hello.txt"],
    "export": ["OUT"],
    "fsck": [],
    "conflicts": [],
    "passwd": ["--new-passfile", "NEWPASS", "--kdf-memory-kib", "1024", "--kdf-time", "1",
               "--kdf-parallelism", "1", "--insecure-kdf-for-tests"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_unlocking_verb_takes_passcmd(verb: str, vault_dir: VaultDir, keyring: str, tmp_path: Path) -> None:
    vault = vault_dir.unlock()
    try:
        write_file(vault, "/hello.txt", b"hello from the vault")
    finally:
        vault.close()
    new_pass = write_passfile(tmp_path / "new", "a new password")
    args = [{"OUT": str(tmp_path / "out"), "NEWPASS": str(new_pass)}.get(a, a) for a in VERBS[verb]]
    result = run_cli(verb, str(vault_dir.path), *args, "--passcmd", keyring)
    assert result.returncode == 0, result.stderr
    if verb == "cat":
        assert result.stdout == "hello from the vault"
    calls = (Path(shlex.split(keyring)[0]).parent / "calls").read_text()
    assert calls == "vaultfs chat backup\n"  # quoted argument kept whole, nothing expanded


def test_mount_and_run_take_passcmd(new_vault: Vault) -> None:
    command = f"cat {shlex.quote(str(new_vault.passfile))}"
    vaultfs("mount", str(new_vault.backing), str(new_vault.mnt), "--passcmd", command)
    try:
        (new_vault.mnt / "f").write_bytes(b"x")
    finally:
        new_vault.lock()
    result = vaultfs("run", str(new_vault.backing), str(new_vault.mnt), "--passcmd", command, "--",
                     "cat", str(new_vault.mnt / "f"), check=False)
    assert result.returncode == 0 and result.stdout == "x", result.stderr


@pytest.mark.parametrize(("command", "message"), [
    ("false", "`false` exited with status 1"),
    ("no-such-keyring-tool lookup x", "no-such-keyring-tool: command not found"),
    ("true", "`true` printed no password"),
    ("sh -c 'kill -9 $$'", "`sh -c 'kill -9 $$'` was killed by signal 9"),
])
def test_a_failing_passcmd_is_a_clear_error(vault_dir: VaultDir, command: str, message: str) -> None:
    result = run_cli("ls", str(vault_dir.path), "--passcmd", command)
    assert result.returncode == 18, result
    assert result.stderr.strip() == f"vaultfs: the password command failed: {message}"


def test_a_wrong_password_from_passcmd_is_not_asked_again(new_vault: Vault, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    command = f"sh -c 'echo . >> {calls}; echo wrong'"
    result = vaultfs("mount", str(new_vault.backing), str(new_vault.mnt), "--passcmd", command, check=False)
    assert result.returncode == 3 and "wrong password" in result.stderr
    assert calls.read_text() == ".\n" and not new_vault.is_mounted()


def test_passcmd_and_passfile_exclude_each_other(vault_dir: VaultDir) -> None:
    result = run_cli("ls", str(vault_dir.path), "--passfile", str(vault_dir.passfile), "--passcmd", "true")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    result = run_cli("ls", str(vault_dir.path), "--passcmd", "'unclosed")
    assert result.returncode == 2 and "--passcmd" in result.stderr
