"""Very weak new passwords are refused unless the user insists; the estimate is shown (issue 11).

Through the real CLI with --passfile, and at a real terminal (a pty) for the prompt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import VAULTFS_BIN, WEAK_KDF, VaultDir, cli_env, run_cli, write_passfile
from tests.terminal import on_terminal
from vaultfs.format import keyfile, recovery
from vaultfs.vault import Vault

STRONG = "four random words: otter velvet quarry"


def refused(result, *fragments: str) -> None:
    assert result.returncode == 15, (result.returncode, result.stdout, result.stderr)
    (line,) = [line for line in result.stderr.splitlines() if line.strip() and "below the floor" not in line]
    assert line.startswith("vaultfs: password too weak: very weak (zxcvbn score "), line
    assert "--allow-weak-password" in line and "guesses" in line
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("password", ["a", "password1", "qwerty", "ChatBackup"])
def test_init_refuses_a_very_weak_password_and_creates_nothing(tmp_path: Path, password: str) -> None:
    passfile = write_passfile(tmp_path / "p", password)
    backing = tmp_path / "ChatBackup"
    refused(run_cli("init", str(backing), "--passfile", str(passfile), *WEAK_KDF))
    assert not backing.exists()
    made = run_cli("init", str(backing), "--passfile", str(passfile), "--allow-weak-password", *WEAK_KDF)
    assert made.returncode == 0, made.stderr
    Vault.unlock(str(backing), password).close()


def test_the_folder_name_counts_against_the_password(tmp_path: Path) -> None:
    passfile = write_passfile(tmp_path / "p", "WhatsAppBackup")  # "good" for zxcvbn on its own
    refused(run_cli("init", str(tmp_path / "WhatsAppBackup"), "--passfile", str(passfile), *WEAK_KDF))


def test_passwd_and_recover_refuse_a_very_weak_new_password(vault_dir: VaultDir, tmp_path: Path) -> None:
    weak = write_passfile(tmp_path / "weak", "123456")
    before = (vault_dir.path / "vaultfs.conf").read_bytes()
    refused(run_cli("passwd", str(vault_dir.path), "--passfile", str(vault_dir.passfile), "--new-passfile",
                    str(weak), *WEAK_KDF), "top-10 common password")
    key = vault_dir.recovery_key
    refused(run_cli("recover", str(vault_dir.path), "--recovery-key-file", "-", "--new-passfile", str(weak),
                    *WEAK_KDF, input=f"{key}\n"))
    assert (vault_dir.path / "vaultfs.conf").read_bytes() == before  # nothing written
    keyfile.unlock(str(vault_dir.path), vault_dir.password)
    done = run_cli("passwd", str(vault_dir.path), "--passfile", str(vault_dir.passfile), "--new-passfile",
                   str(weak), "--allow-weak-password", *WEAK_KDF)
    assert done.returncode == 0, done.stderr
    keyfile.unlock(str(vault_dir.path), "123456")
    assert recovery.decode(key)  # the recovery key stays the way out


def converse(args: list[str], script: list[tuple[bytes, bytes]], timeout: float = 30) -> tuple[int, str]:
    """Run the CLI on a pty; answer each (prompt, reply) in order; return exit code and everything shown."""
    return on_terminal(VAULTFS_BIN, args, cli_env(), script, timeout)


def test_the_prompt_shows_the_estimate_before_the_repeat(tmp_path: Path) -> None:
    code, shown = converse(["init", str(tmp_path / "weak"), *WEAK_KDF], [(b"New password:", b"qwerty\n")])
    assert code == 15, shown
    assert "Password strength: very weak (zxcvbn score 0 of 4" in shown
    assert "Repeat password" not in shown  # refused before it has to be typed twice
    typed = STRONG.encode() + b"\n"
    code, shown = converse(["init", str(tmp_path / "good"), *WEAK_KDF],
                           [(b"New password:", typed), (b"Repeat password:", typed)])
    assert code == 0, shown
    assert "Password strength: strong (zxcvbn score 4 of 4" in shown and STRONG not in shown
    Vault.unlock(str(tmp_path / "good"), STRONG).close()
