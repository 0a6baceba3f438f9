"""Secrets stay secret: no plaintext or password in the backing dir, argv, env or logs; umask honoured."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.mounting import PASSWORD, VAULTFS, WEAK_KDF, Vault, env, scan_backing, vaultfs
from tests.reliability import daemon_pid

NAMES = ["WhatsApp Databases", "msgstore-2026-11-28.1.db.crypt14", "IMG-20261128-WA0001.jpg",
         "a very long voice note name that needs the long-name sidecar " + "x" * 60 + ".opus"]
CONTENT = b"Meet me at the lighthouse at nine. Bring the flowerpot."


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for init to reap it (the daemon has exited)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def with_umask(mask: int):
    return lambda: os.umask(mask)


def test_secrets_and_plaintext_stay_out_of_reach(tmp_path: Path) -> None:
    root = tmp_path / "v"
    root.mkdir()
    vault = Vault(root / "cloud", root / "mnt", root / "pass", root / "daemon.log")
    vault.passfile.write_text(PASSWORD + "\n")
    vault.mnt.mkdir()
    base = [VAULTFS, "init", str(vault.backing), "--passfile", str(vault.passfile), *WEAK_KDF]
    subprocess.run(base, check=True, env=env(), capture_output=True, preexec_fn=with_umask(0o077))
    subprocess.run([VAULTFS, "mount", str(vault.backing), str(vault.mnt), "--passfile", str(vault.passfile),
                    "--log", str(vault.logfile)], check=True, env=env(), capture_output=True,
                   preexec_fn=with_umask(0o077))
    try:
        pid = daemon_pid(vault.mnt)
        directory = vault.mnt / NAMES[0]
        directory.mkdir()
        for name in NAMES[1:]:
            (directory / name).write_bytes(CONTENT * 100)
        os.symlink(NAMES[2], directory / "latest.jpg")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert PASSWORD.encode() not in cmdline and PASSWORD.encode() not in environ
        other = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "ls",
                                str(vault.mnt)], capture_output=True, text=True)
        assert other.returncode != 0 and "Permission denied" in other.stderr, other
    finally:
        vaultfs("lock", str(vault.mnt))
    assert process_gone(pid), "the daemon outlived lock"
    assert PASSWORD not in vault.logfile.read_text()
    assert not scan_backing(vault.backing, [*NAMES, CONTENT[:20], PASSWORD, "lighthouse", "flowerpot"])
    config = vault.backing / "vaultfs.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    for path in vault.backing.rglob("*"):
        if path.name.startswith("vaultfs.") or path.suffix == ".vfn" or path == vault.backing:
            assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, f"{path} ignores the umask"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_init_and_passwd_respect_the_umask(tmp_path: Path, mask: int) -> None:
    backing = tmp_path / "cloud"
    passfile = tmp_path / "pass"
    passfile.write_text(PASSWORD + "\n")
    weak = WEAK_KDF
    subprocess.run([VAULTFS, "init", str(backing), "--passfile", str(passfile), *weak], check=True, env=env(),
                   capture_output=True, preexec_fn=with_umask(mask))
    subprocess.run([VAULTFS, "passwd", str(backing), "--passfile", str(passfile), "--new-passfile", str(passfile),
                    *weak], check=True, env=env(), capture_output=True, preexec_fn=with_umask(mask))
    assert stat.S_IMODE((backing / "vaultfs.conf").stat().st_mode) == 0o600
    assert not (backing / "vaultfs.conf.bak").exists()
    assert stat.S_IMODE((backing / "vaultfs.dirid").stat().st_mode) == 0o644 & ~mask
    assert stat.S_IMODE(backing.stat().st_mode) == 0o777 & ~mask
