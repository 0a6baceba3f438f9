"""A FIFO, socket or directory where vaultfs expects one of its small files never hangs anything.

Names vaultfs reads whole with ``backing.read_bounded``: ``vaultfs.conf``, ``vaultfs.dirid``
and its sync-conflict copies (``vaultfs (1).dirid``), long-name sidecars ``*.vfn``.  Opening
a FIFO for reading used to block forever (issue 11); every command here runs under a
timeout, and a hang fails the test instead of the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import VaultDir, run_cli, write_file
from tests.mounting import Vault, backing_path, mounted

KINDS = {"fifo": "a FIFO", "socket": "a socket", "dir": "a directory"}
LONG_NAME = "voice note " + "x" * 150 + ".opus"
TIMEOUT = 20


def plant(path: Path, kind: str) -> None:
    """Replace ``path`` by a FIFO, a (dead) Unix socket or an empty directory."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":  # bound by a relative name: backing paths exceed AF_UNIX's 108 bytes
        subprocess.run([sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
                        path.name], cwd=path.parent, check=True)
    else:
        path.mkdir()


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    (line,) = [line for line in result.stderr.splitlines() if line.strip() and "below the floor" not in line]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_non_regular_vaultfs_conf_is_a_damaged_config_for_every_verb(vault_dir: VaultDir, kind: str) -> None:
    plant(vault_dir.path / "vaultfs.conf", kind)
    passfile = ["--passfile", str(vault_dir.passfile)]
    for args in (["info"], ["ls", *passfile], ["fsck", *passfile], ["cat", "/x", *passfile],
                 ["passwd", *passfile, "--new-passfile", str(vault_dir.passfile)]):
        result = run_cli(args[0], str(vault_dir.path), *args[1:], timeout=TIMEOUT)
        one_line_error(result, 6, "vaultfs.conf is " + KINDS[kind], "not a regular file")


@pytest.fixture
def populated(vault_dir: VaultDir) -> VaultDir:
    vault = vault_dir.unlock()
    try:
        vault.mkdir("/sub", 0o755)
        write_file(vault, "/sub/kept.txt", b"kept")
        write_file(vault, "/" + LONG_NAME, b"long")
        write_file(vault, "/short.txt", b"short")
    finally:
        vault.close()
    return vault_dir


def sub_backing(vault_dir: VaultDir) -> Path:
    (sub,) = [p for p in vault_dir.path.iterdir() if p.is_dir() and p.suffix == ".vfs"]
    return sub


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_non_regular_dirid_conflict_copy_is_ignored_and_reported(populated: VaultDir, kind: str) -> None:
    plant(populated.path / "vaultfs (1).dirid", kind)
    plant(sub_backing(populated) / "vaultfs (1).dirid", kind)
    passfile = ["--passfile", str(populated.passfile)]
    listing = run_cli("ls", str(populated.path), "/sub", *passfile, timeout=TIMEOUT)
    assert listing.returncode == 0 and "kept.txt" in listing.stdout, listing
    assert run_cli("info", str(populated.path), timeout=TIMEOUT).returncode == 0
    fsck = run_cli("fsck", str(populated.path), *passfile, timeout=TIMEOUT)
    problems = [line for line in fsck.stdout.splitlines() + fsck.stderr.splitlines() if line.startswith("PROBLEM")]
    assert fsck.returncode == 12 and len(problems) == 2, fsck
    assert all("PROBLEM dir-id-record" in line and "vaultfs (1).dirid" in line and KINDS[kind] in line
               for line in problems), problems


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_non_regular_vaultfs_dirid_makes_its_directory_an_integrity_error(populated: VaultDir, kind: str) -> None:
    plant(sub_backing(populated) / "vaultfs.dirid", kind)
    passfile = ["--passfile", str(populated.passfile)]
    listing = run_cli("ls", str(populated.path), "/sub", *passfile, timeout=TIMEOUT)
    one_line_error(listing, 8, "/sub", KINDS[kind])
    fsck = run_cli("fsck", str(populated.path), *passfile, timeout=TIMEOUT)
    assert fsck.returncode == 12, fsck
    assert "PROBLEM dir-id: /sub" in fsck.stdout + fsck.stderr and KINDS[kind] in fsck.stdout + fsck.stderr


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_non_regular_long_name_sidecar_hides_its_entry(populated: VaultDir, kind: str) -> None:
    (sidecar,) = populated.path.glob("*.vfn")
    plant(sidecar, kind)
    passfile = ["--passfile", str(populated.passfile)]
    listing = run_cli("ls", str(populated.path), "/", *passfile, timeout=TIMEOUT)
    assert listing.returncode == 0 and "short.txt" in listing.stdout and LONG_NAME not in listing.stdout, listing
    fsck = run_cli("fsck", str(populated.path), *passfile, timeout=TIMEOUT)
    assert fsck.returncode == 12 and "PROBLEM long-name-sidecar" in fsck.stdout + fsck.stderr, fsck


def timed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.mount
def test_mount_lookups_never_block_on_non_regular_metadata(new_vault: Vault) -> None:
    with mounted(new_vault):
        for kind in KINDS:
            (new_vault.mnt / kind).mkdir()
            (new_vault.mnt / kind / "inside.txt").write_text("inside")
            (new_vault.mnt / f"{kind}-{LONG_NAME}").write_text("long")
        (new_vault.mnt / "plain.txt").write_text("plain")
    for kind in KINDS:
        directory = backing_path(new_vault, f"/{kind}")
        plant(directory / "vaultfs.dirid", kind)
        sidecar = backing_path(new_vault, f"/{kind}-{LONG_NAME}").with_suffix(".vfn")
        plant(sidecar, kind)
    plant(new_vault.backing / "vaultfs (1).dirid", "fifo")
    with mounted(new_vault):
        mnt = new_vault.mnt
        listing = timed("ls", "-la", str(mnt))
        assert listing.returncode == 0 and "plain.txt" in listing.stdout, listing
        for kind in KINDS:
            assert f"{kind}-{LONG_NAME}" not in listing.stdout
            timed("cat", str(mnt / f"{kind}-{LONG_NAME}"))  # a lookup needs no sidecar: it only must not block
            inside = timed("ls", str(mnt / kind))
            assert inside.returncode != 0 and "Input/output error" in inside.stderr, inside
            assert timed("cat", str(mnt / kind / "inside.txt")).returncode != 0
        assert (mnt / "plain.txt").read_text() == "plain"
    log = new_vault.logfile.read_text()
    assert "Traceback" not in log
