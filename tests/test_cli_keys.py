"""The key verbs through the real ``vaultfs`` command: messages, exit codes, effects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import WEAK_KDF, VaultDir, read_file, run_cli, write_file, write_passfile
from vaultfs.vault import Vault

KEY_PATTERN = re.compile(r"\b([0-9A-Z]{5}(?:-[0-9A-Z]{5}){10})\b")


def init_via_cli(tmp_path: Path, password: str = "cli password") -> tuple[Path, str, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    backing = tmp_path / "cloud"
    passfile = write_passfile(tmp_path / "pass", password)
    result = run_cli("init", str(backing), "--passfile", str(passfile), *WEAK_KDF)
    assert result.returncode == 0, result.stderr
    match = KEY_PATTERN.search(result.stdout)
    assert match, result.stdout
    assert "Nobody can recover" in result.stdout
    return backing, match.group(1), passfile


def assert_fails(result, code: int, message: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("verb", ["init", "info", "passwd", "recover", "mount", "lock", "unmount"])
def test_every_verb_has_help(verb: str) -> None:
    result = run_cli(verb, "--help")
    assert result.returncode == 0 and "usage: vaultfs" in result.stdout


def test_init_then_info_shows_parameters_and_no_secrets(tmp_path: Path) -> None:
    backing, key, _ = init_via_cli(tmp_path)
    info = run_cli("info", str(backing))
    assert info.returncode == 0
    for expected in ("version 1", "AES-256-GCM", "4096", "argon2id"):
        assert expected in info.stdout
    config = json.loads((backing / "vaultfs.conf").read_text())
    for secret in (config["slots"][0]["wrapped_key"], config["slots"][0]["kdf"]["salt"], key, "cli password"):
        assert secret not in info.stdout


def test_init_refuses_a_vault_or_a_non_empty_dir(tmp_path: Path) -> None:
    backing, _, passfile = init_via_cli(tmp_path)
    assert_fails(run_cli("init", str(backing), "--passfile", str(passfile)), 9, "already holds a vault")
    other = tmp_path / "full"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"x")
    assert_fails(run_cli("init", str(other), "--passfile", str(passfile)), 9, "not empty")


def test_password_errors(tmp_path: Path, vault_dir: VaultDir) -> None:
    wrong = write_passfile(tmp_path / "wrong", "nope")
    assert_fails(run_cli("passwd", str(vault_dir.path), "--passfile", str(wrong), "--new-passfile", str(wrong)),
                 3, "wrong password")
    empty = tmp_path / "empty"
    empty.write_text("")
    assert_fails(run_cli("passwd", str(vault_dir.path), "--passfile", str(empty)), 2, "empty password")
    assert_fails(run_cli("passwd", str(vault_dir.path), "--passfile", str(tmp_path / "absent")), 2,
                 "cannot read")
    assert_fails(run_cli("passwd", str(vault_dir.path)), 2, "no terminal")
    assert_fails(run_cli("init", str(tmp_path / "new")), 2, "no terminal")


def test_missing_backing_and_not_a_vault(tmp_path: Path) -> None:
    assert_fails(run_cli("info", str(tmp_path / "absent")), 5, "does not exist")
    (tmp_path / "plain").mkdir()
    assert_fails(run_cli("info", str(tmp_path / "plain")), 5, "no vaultfs.conf")
    (tmp_path / "file").write_text("x")
    assert_fails(run_cli("info", str(tmp_path / "file")), 5, "not a directory")


def test_edited_config_and_unknown_version(vault_dir: VaultDir) -> None:
    config_path = vault_dir.path / "vaultfs.conf"
    original = config_path.read_text()
    document = json.loads(original)
    document["block_size"] = 4096
    document["name_encoding"] = "AES-SIV+base32"
    document["slots"][0]["id"] = 7  # a plausible edit that breaks the slot AAD and the MAC
    config_path.write_text(json.dumps(document))
    result = run_cli("passwd", str(vault_dir.path), "--passfile", str(vault_dir.passfile), "--new-passfile", "-",
                     *WEAK_KDF, input="whatever it takes to change\n")
    assert result.returncode in (3, 6) and "Traceback" not in result.stderr
    document = json.loads(original)
    document["cipher_suite"] = document["cipher_suite"]
    document["format"] = "vaultfs"
    document["mac"] = "0" * 64
    config_path.write_text(json.dumps(document))
    assert_fails(run_cli("passwd", str(vault_dir.path), "--passfile", str(vault_dir.passfile),
                         "--new-passfile", str(vault_dir.passfile)), 6, "damaged or was tampered")
    document["version"] = 2
    config_path.write_text(json.dumps(document))
    assert_fails(run_cli("info", str(vault_dir.path)), 7, "unsupported vault format")
    config_path.write_text("{not json")
    assert_fails(run_cli("info", str(vault_dir.path)), 6, "damaged")


def test_passwd_changes_only_the_config(tmp_path: Path, vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/chat.db", b"hello" * 2000)
    vault.close()
    before = {p: p.read_bytes() for p in vault_dir.path.rglob("*") if p.is_file() and p.name != "vaultfs.conf"}
    result = run_cli("passwd", str(vault_dir.path), "--passfile", "-", "--new-passfile", "-", *WEAK_KDF,
                     input=f"{vault_dir.password}\nbrand new\n")
    assert result.returncode == 0, result.stderr
    after = {p: p.read_bytes() for p in vault_dir.path.rglob("*") if p.is_file()
             and p.name != "vaultfs.conf"}
    assert after == before
    new_pass = write_passfile(tmp_path / "new", "brand new")
    assert_fails(run_cli("passwd", str(vault_dir.path), "--passfile", str(vault_dir.passfile),
                         "--new-passfile", str(new_pass)), 3, "wrong password")
    vault = Vault.unlock(str(vault_dir.path), "brand new")
    assert read_file(vault, "/chat.db") == b"hello" * 2000
    vault.close()


def test_recover_with_the_key_and_typos(tmp_path: Path) -> None:
    backing, key, _ = init_via_cli(tmp_path)
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert_fails(run_cli("recover", str(backing), "--recovery-key-file", "-", "--new-passfile", "-",
                         input=f"{typo}\nx\n"), 4, "mistyped")
    _, other_key, _ = init_via_cli(tmp_path / "other")
    assert_fails(run_cli("recover", str(backing), "--recovery-key-file", "-", "--new-passfile", "-",
                         input=f"{other_key}\nx\n"), 3, "does not open this vault")
    result = run_cli("recover", str(backing), "--recovery-key-file", "-", "--new-passfile", "-", *WEAK_KDF,
                     input=f"{key.lower()}\nrecovered pw\n")
    assert result.returncode == 0, result.stderr
    Vault.unlock(str(backing), "recovered pw").close()


def test_rebuild_config_after_it_is_deleted(tmp_path: Path) -> None:
    backing, key, passfile = init_via_cli(tmp_path)
    vault = Vault.unlock(str(backing), "cli password")
    write_file(vault, "/kept", b"kept")
    vault.close()
    (backing / "vaultfs.conf").unlink()
    assert_fails(run_cli("info", str(backing)), 5, "rebuild-config")
    result = run_cli("recover", str(backing), "--rebuild-config", "--recovery-key-file", "-", "--new-passfile", "-",
                     *WEAK_KDF, input=f"{key}\nrebuilt from the key\n")
    assert result.returncode == 0, result.stderr
    vault = Vault.unlock(str(backing), "rebuilt from the key")
    assert read_file(vault, "/kept") == b"kept"
    vault.close()


def test_kdf_below_the_floor_needs_the_test_flag_and_ignores_the_old_env_switch(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.conftest import VAULTFS_BIN

    passfile = write_passfile(tmp_path / "p", "a long enough test password")
    env = {**os.environ, "VAULTFS_TESTONLY_WEAK_KDF": "1"}  # the switch of old versions: obeyed no more
    cheap = ["--kdf-memory-kib", "1024", "--kdf-time", "1", "--kdf-parallelism", "1"]
    result = subprocess.run([VAULTFS_BIN, "init", str(tmp_path / "v"), "--passfile", str(passfile), *cheap],
                            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "below the floor" in result.stderr
    assert not (tmp_path / "v").exists()
    assert "TEST ONLY" in run_cli("init", "--help").stdout.replace("\n", " ")
    made = run_cli("init", str(tmp_path / "v"), "--passfile", str(passfile), *cheap, "--insecure-kdf-for-tests")
    assert made.returncode == 0, made.stderr
    info = run_cli("info", str(tmp_path / "v"))
    assert "memory 1 MiB (1024 KiB), time cost 1, parallelism 1" in info.stdout
    listing = run_cli("ls", str(tmp_path / "v"), "--passfile", str(passfile))
    assert listing.returncode == 0, listing.stderr
    (warning,) = [line for line in listing.stderr.splitlines() if line.strip()]
    assert "below the floor" in warning and "vaultfs passwd" in warning
