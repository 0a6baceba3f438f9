"""Prompts and messages, driven on a real terminal (pty) and through pipes: retries at mount,
a second chance at init, recover's early check, init --help, cat/ls messages, closed
pipes, the fsck progress bar."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.conftest import VAULTFS_BIN, VaultDir, cli_env, run_cli, without_test_kdf_warning, write_file
from tests.mounting import PASSWORD, VAULTFS, WEAK_KDF, Vault, env, vaultfs
from tests.terminal import on_terminal
from vaultfs.format.keyfile import KDF_FLOOR


def test_a_mistyped_password_at_mount_is_asked_again(new_vault: Vault) -> None:
    args = ["mount", str(new_vault.backing), str(new_vault.mnt), "--log", str(new_vault.logfile)]
    code, shown = on_terminal(VAULTFS, args, env(), [(b"Password: ", b"typo one\n"), (b"Password: ", b"typo two\n"),
                                                     (b"Password: ", PASSWORD.encode() + b"\n")])
    try:
        assert code == 0, shown
        assert shown.count("wrong password, try again") == 2
        assert new_vault.is_mounted()
    finally:
        new_vault.lock(check=False)


def test_three_wrong_passwords_end_with_exit_3(new_vault: Vault) -> None:
    args = ["mount", str(new_vault.backing), str(new_vault.mnt)]
    code, shown = on_terminal(VAULTFS, args, env(), [(b"Password: ", b"a\n"), (b"Password: ", b"b\n"),
                                                     (b"Password: ", b"c\n")])
    assert code == 3, shown
    assert shown.count("Password: ") == 3 and "vaultfs: wrong password" in shown
    assert not new_vault.is_mounted()


def test_a_mismatch_at_init_is_asked_again(tmp_path: Path) -> None:
    backing = tmp_path / "cloud"
    code, shown = on_terminal(VAULTFS, ["init", str(backing), *WEAK_KDF], env(), [
        (b"New password: ", b"first try\n"), (b"Repeat password: ", b"first tyr\n"),
        (b"New password: ", b"second try\n"), (b"Repeat password: ", b"second try\n")])
    assert code == 0, shown
    assert "the two passwords differ, try again" in shown and "Recovery key" in shown
    listed = vaultfs("ls", str(backing), "--passfile", "-", input="second try\n", check=False)
    assert listed.returncode == 0, listed.stderr


def test_recover_checks_the_key_before_calibrating(vault_dir: VaultDir, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other_key = subprocess.run([VAULTFS_BIN, "init", str(other), "--passfile", str(vault_dir.passfile), *WEAK_KDF],
                               capture_output=True, text=True, env=cli_env(), check=True).stdout
    key = re.search(r"^\s{4}(\S.*)$", other_key, re.M).group(1)  # type: ignore[union-attr]
    started = time.monotonic()
    # no KDF flags: a new password would be calibrated (~1 s); stdin holds only the key
    result = subprocess.run([VAULTFS_BIN, "recover", str(vault_dir.path), "--recovery-key-file", "-",
                             "--new-passfile", "-"], input=key + "\n", capture_output=True, text=True,
                            env=cli_env())
    assert result.returncode == 3 and "does not open this vault" in result.stderr, result.stderr
    assert "calibrating" not in result.stderr and "standard input ended" not in result.stderr
    assert time.monotonic() - started < 5


def test_init_help_states_the_kdf_floor() -> None:
    shown = " ".join(run_cli("init", "--help").stdout.split())
    assert (f"memory {KDF_FLOOR.memory_kib} KiB ({KDF_FLOOR.memory_kib // 1024} MiB), time {KDF_FLOOR.time_cost}, "
            f"parallelism {KDF_FLOOR.parallelism}") in shown


def test_cat_and_ls_of_a_missing_path(vault_dir: VaultDir) -> None:
    for verb in ("cat", "ls"):
        result = run_cli(verb, str(vault_dir.path), "/nope", "--passfile", str(vault_dir.passfile))
        assert result.returncode == 19, result
        assert without_test_kdf_warning(result.stderr).strip() == "vaultfs: no such file: /nope"
    result = run_cli("cat", str(vault_dir.path), "/", "--passfile", str(vault_dir.passfile))
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_a_closed_pipe_ends_quietly(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    try:
        for i in range(3000):
            write_file(vault, f"/file-{i:05d}.jpg", b"")
        write_file(vault, "/big.bin", b"x" * (4 << 20))
    finally:
        vault.close()
    for args in (["ls", str(vault_dir.path), "/"], ["cat", str(vault_dir.path), "/big.bin"]):
        proc = subprocess.Popen([VAULTFS_BIN, *args, "--passfile", str(vault_dir.passfile)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=cli_env())
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(100)  # like `head -c 100`, then the reader goes away
        proc.stdout.close()
        err = without_test_kdf_warning(proc.stderr.read())
        proc.stderr.close()
        assert proc.wait(60) == 141, err
        assert err == "", err


def test_the_fsck_progress_bar_ends_at_100_percent(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    try:
        for i in range(20):  # small files: headers and tags weigh as much as the plaintext
            write_file(vault, f"/note-{i}.txt", b"a short chat message " * (i + 1))
    finally:
        vault.close()
    code, shown = on_terminal(VAULTFS_BIN, ["fsck", str(vault_dir.path), "--passfile", str(vault_dir.passfile)],
                              cli_env())
    assert code == 0, shown
    percentages = re.findall(r"(\d+)%\|", shown)
    assert percentages and percentages[-1] == "100", shown
