"""Tampered ciphertext read through the mount: EIO, logged with the path; the mount lives on."""

from __future__ import annotations

import errno
import os

import pytest

from tests.mounting import Vault, scan_backing


def test_tampered_block_reads_as_eio_through_the_mount(mounted_vault: Vault) -> None:
    (mounted_vault.mnt / "victim").write_bytes(b"v" * 10_000)
    (mounted_vault.mnt / "bystander").write_bytes(b"fine")
    mounted_vault.lock()  # drop every kernel cache
    victims = [p for p in mounted_vault.backing.rglob("*.vfs") if p.stat().st_size == 40 + 10_000 + 3 * 28]
    assert len(victims) == 1
    with open(victims[0], "r+b") as f:
        f.seek(40 + 4096 + 28 + 100)  # inside the second block
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    mounted_vault.mount()
    with open(mounted_vault.mnt / "victim", "rb") as f:
        assert f.read(4096) == b"v" * 4096  # the untouched first block still reads
        with pytest.raises(OSError) as info:
            f.read()
    assert info.value.errno == errno.EIO
    assert (mounted_vault.mnt / "bystander").read_bytes() == b"fine"
    problems = mounted_vault.log_problems()
    assert problems and all("ERROR" in line for line in problems)
    assert any("/victim" in line for line in problems)


def test_the_backing_scan_finds_plaintext(tmp_path) -> None:
    """The no-plaintext checks elsewhere can fail: the scanner sees names, contents, link targets."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "secret-name.txt").write_bytes(b"xx secret-content xx")
    os.symlink("secret-target", tmp_path / "dir" / "link")
    hits = scan_backing(tmp_path, [b"secret-name", b"secret-content", b"secret-target", b"absent-thing"])
    assert len(hits) == 3
