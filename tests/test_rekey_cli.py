"""`vaultfs rekey` refuses what it must (changing nothing), and every other reader refuses a half-done rekey.

Real command, real files: a wrong or reused password, a weak one, a version-1 vault, a mounted vault
(a real FUSE mount), a push/pull/sync holding the folder, a full disk (a small tmpfs), a directory
whose names cannot be read; a rekey killed half-way, which every other verb refuses with exit 29
until `vaultfs rekey` runs again with the same passwords; the progress bar on a terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import independent_decrypter as idec
from tests import rekey_tree
from tests.conftest import REPO, VAULTFS_BIN, WEAK_KDF, cli_env, run_cli, write_file, write_passfile
from tests.mounting import PASSWORD as MOUNT_PASSWORD
from tests.mounting import Vault as MountVault
from tests.terminal import shown_on_terminal
from tests.test_rekey_crash import rekey_until
from vaultfs.format import keyfile
from vaultfs.format.keyfile import TEST_KDF
from vaultfs.vault import Vault, init_vault

OLD = "the old password, leaked"
NEW = "a fresh passphrase nobody has seen"


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    backing = tmp_path / "vault"
    init_vault(str(backing), OLD, TEST_KDF)
    opened = Vault.unlock(str(backing), OLD)
    try:
        opened.mkdir("/chats", 0o755)
        for n in range(6):
            write_file(opened, f"/chats/file-{n}", os.urandom(30_000 + n))
        opened.symlink("file-0", "/chats/link")
    finally:
        opened.close()
    return backing


@pytest.fixture
def passfiles(tmp_path: Path) -> tuple[Path, Path]:
    return write_passfile(tmp_path / "old", OLD), write_passfile(tmp_path / "new", NEW)


def rekey(backing: Path, passfiles: tuple[Path, Path], *extra: str, **kw) -> subprocess.CompletedProcess[str]:
    return run_cli("rekey", str(backing), "--passfile", str(passfiles[0]), "--new-passfile", str(passfiles[1]),
                   *WEAK_KDF, *extra, **kw)


def state(backing: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every backing entry with its mtime, size and (files) bytes: what "nothing changed" compares."""
    return {str(p.relative_to(backing)): (p.lstat().st_mtime_ns, p.lstat().st_size,
                                          p.read_bytes() if p.is_file() else None)
            for p in [backing, *backing.rglob("*")]}


@pytest.mark.parametrize(("old", "new", "code", "says"), [
    ("wrong password", NEW, 3, "wrong password"),
    (OLD, OLD, 2, "must differ from the current one"),
    (OLD, "abc123", 15, "password too weak"),
])
def test_a_refused_password_changes_nothing(vault: Path, tmp_path: Path, old: str, new: str, code: int,
                                           says: str) -> None:
    before = state(vault)
    files = write_passfile(tmp_path / "o", old), write_passfile(tmp_path / "n", new)
    result = rekey(vault, files)
    assert result.returncode == code and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert state(vault) == before


def test_a_version_1_vault_is_upgraded_first(tmp_path: Path, passfiles: tuple[Path, Path]) -> None:
    vault = tmp_path / "v1"
    shutil.copytree(REPO / "tests" / "vectors" / "v1", vault, symlinks=True)
    result = rekey(vault, passfiles)
    assert result.returncode == 20 and "vaultfs upgrade" in result.stderr


def test_refused_while_mounted(tmp_path: Path) -> None:
    from tests.mounting import mounted

    mine = MountVault.create(tmp_path / "m")
    new = write_passfile(tmp_path / "new", NEW)
    with mounted(mine):
        (mine.mnt / "written").write_bytes(b"while mounted")
        before = state(mine.backing)
        result = run_cli("rekey", str(mine.backing), "--passfile", str(mine.passfile), "--new-passfile", str(new),
                         *WEAK_KDF)
        assert result.returncode == 23 and f"mounted at {mine.mnt}" in result.stderr, result.stderr
        assert state(mine.backing) == before
        assert (mine.mnt / "written").read_bytes() == b"while mounted"
    assert keyfile.unwrap(keyfile.load_config(str(mine.backing)), MOUNT_PASSWORD) is not None
    locked = run_cli("rekey", str(mine.backing), "--passfile", str(mine.passfile), "--new-passfile", str(new),
                     *WEAK_KDF)
    assert locked.returncode == 0, locked.stderr
    refused = mine.mount(check=False)
    assert refused.returncode == 3 and not mine.is_mounted(), "the old password no longer mounts it"
    mine.passfile.write_text(NEW + "\n")
    with mounted(mine):  # the new password mounts it: the same files through FUSE
        assert (mine.mnt / "written").read_bytes() == b"while mounted"
        assert sorted(p.name for p in mine.mnt.iterdir()) == ["written"]


def test_refused_while_a_push_pull_or_sync_holds_the_folder(vault: Path, passfiles: tuple[Path, Path]) -> None:
    from vaultfs.remote import guard

    before = state(vault)
    with guard.exclusive(str(vault)):  # what push, pull and sync hold while rclone runs
        result = rekey(vault, passfiles)
    assert result.returncode == 23 and "is in use" in result.stderr, result.stderr
    assert state(vault) == before


def test_a_directory_whose_names_cannot_be_read_blocks_it_before_any_change(
        vault: Path, passfiles: tuple[Path, Path]) -> None:
    (chats,) = [p for p in vault.iterdir() if p.is_dir()]
    (chats / "vaultfs.dirid").unlink()  # its ID lost: its names cannot be decrypted, so not translated
    before = state(vault)
    result = rekey(vault, passfiles)
    assert result.returncode == 12 and "/chats: no directory ID valid here" in result.stderr, result.stderr
    assert "fsck --repair" in result.stderr and state(vault) == before


def test_not_enough_free_space_is_refused_before_any_change(small_disk: Path, passfiles: tuple[Path, Path]) -> None:
    vault = small_disk / "vault"
    init_vault(str(vault), OLD, TEST_KDF)
    opened = Vault.unlock(str(vault), OLD)
    try:
        write_file(opened, "/big", os.urandom(13 << 20))
    finally:
        opened.close()
    before = state(vault)
    result = rekey(vault, passfiles)
    assert result.returncode == 30 and "not enough free space" in result.stderr, result.stderr
    assert "Nothing was changed" in result.stderr and state(vault) == before
    opened = Vault.unlock(str(vault), OLD)
    try:
        opened.truncate("/big", 6 << 20)  # now it fits once more
    finally:
        opened.close()
    assert rekey(vault, passfiles).returncode == 0
    assert Vault.unlock(str(vault), NEW, read_only=True).getattr("/big").st_size == 6 << 20


def test_a_disk_that_fills_up_during_the_rekey(small_disk: Path, passfiles: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Another program fills the disk after the space check: the run stops, the rerun finishes."""
    from vaultfs import cli
    from vaultfs.tools import rekey as rekey_module

    vault = small_disk / "vault"
    init_vault(str(vault), OLD, TEST_KDF)
    opened = Vault.unlock(str(vault), OLD)
    try:
        for n in range(4):
            write_file(opened, f"/file-{n}", os.urandom(2 << 20))
    finally:
        opened.close()
    shown = rekey_tree.without_atimes(rekey_tree.snapshot(vault, OLD))
    filler = small_disk / "someone-else's-download"
    real = rekey_module.reencrypt
    filled = []

    def fill_then_convert(*args, **kwargs):
        if not filled:
            filled.append(True)
            with open(filler, "wb") as out, pytest.raises(OSError):
                while True:
                    out.write(bytes(1 << 20))
                    out.flush()
                    os.fsync(out.fileno())
        return real(*args, **kwargs)

    monkeypatch.setattr(rekey_module, "reencrypt", fill_then_convert)
    argv = ["rekey", str(vault), "--passfile", str(passfiles[0]), "--new-passfile", str(passfiles[1]), *WEAK_KDF]
    assert cli.main(argv) == 8
    assert "the disk is full; free some space and run `vaultfs rekey` again" in capsys.readouterr().err
    assert (vault / keyfile.REKEY_NAME).exists() and not list(vault.rglob("vaultfs.tmp-*"))
    filler.unlink()
    assert cli.main(argv) == 0
    assert rekey_tree.without_atimes(rekey_tree.snapshot(vault, NEW)) == shown


def test_every_reader_refuses_a_half_done_rekey_until_it_is_run_again(
        vault: Path, passfiles: tuple[Path, Path], tmp_path: Path) -> None:
    shown = rekey_tree.without_atimes(rekey_tree.snapshot(vault, OLD))
    assert rekey_until(vault, passfiles, 40) == -1
    assert (vault / keyfile.REKEY_NAME).exists()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    key_file = tmp_path / "key"
    key_file.write_text("0" * 55 + "\n")
    for verb in (["ls"], ["cat", "/chats/file-0"], ["export", str(tmp_path / "out")], ["fsck"],
                 ["fsck", "--repair"], ["conflicts"], ["upgrade"], ["passwd", "--new-passfile", str(passfiles[1])],
                 ["mount", str(mnt)]):
        where = [str(vault), *verb[1:]] if verb[0] != "mount" else [str(vault), str(mnt)]
        result = run_cli(verb[0], *where, "--passfile", str(passfiles[0]))
        assert result.returncode == 29, (verb, result.stderr)
        assert "rekey in progress" in result.stderr and f"vaultfs rekey {vault}" in result.stderr, verb
    for verb in (["info", str(vault)], ["recover", str(vault), "--rebuild-config", "--recovery-key-file",
                                        str(key_file), "--new-passfile", str(passfiles[1])]):
        assert run_cli(*verb).returncode == 29, verb
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if str(mnt) in line]
    with pytest.raises(idec.DecryptError, match="rekey is in progress"):  # the spec's own reader refuses too
        idec.open_vault(vault, password=OLD)
    wrong = rekey(vault, (passfiles[0], write_passfile(tmp_path / "other", "another strong passphrase")))
    assert wrong.returncode == 3 and "the new password given when this rekey started" in wrong.stderr
    both = passfiles[0].read_text() + passfiles[1].read_text()  # --passfile - and --new-passfile -: two lines
    resumed = run_cli("rekey", str(vault), "--passfile", "-", "--new-passfile", "-", *WEAK_KDF, input=both)
    assert resumed.returncode == 0, resumed.stderr
    assert "finishing the interrupted rekey" in resumed.stderr and "New recovery key" in resumed.stdout
    assert rekey_tree.without_atimes(rekey_tree.snapshot(vault, NEW)) == shown


def test_backing_given_through_a_symlink(vault: Path, passfiles: tuple[Path, Path], tmp_path: Path) -> None:
    link = tmp_path / "GoogleDrive"  # cloud folders are often reached through a symlink
    link.symlink_to(vault)
    result = rekey(link, passfiles)
    assert result.returncode == 0, result.stderr
    assert keyfile.unwrap(keyfile.load_config(str(vault)), NEW) is not None


def test_a_progress_bar_on_a_terminal(vault: Path, passfiles: tuple[Path, Path]) -> None:
    returncode, stdout, shown = shown_on_terminal(
        [VAULTFS_BIN, "rekey", str(vault), "--passfile", str(passfiles[0]), "--new-passfile", str(passfiles[1]),
         *WEAK_KDF], cli_env(), stdout_piped=True, timeout=120)
    assert returncode == 0 and b"New recovery key" in stdout
    assert b"rekey:" in shown and b"100%" in shown, shown[-300:]


def test_quiet_without_a_terminal(vault: Path, passfiles: tuple[Path, Path]) -> None:
    result = rekey(vault, passfiles)
    assert result.returncode == 0
    assert [line for line in result.stderr.splitlines() if "test-only argon2id" not in line] == []
