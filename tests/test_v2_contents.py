"""Format-v2 contents through a real mount: sparse growth costs O(1) ciphertext, holes read as
verified zeros, and a zeroed data block of a sparse file is an I/O error, logged (docs/format.md 7.3)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from tests.mounting import Vault, backing_path, mounted
from vaultfs.format import blocks

pytestmark = pytest.mark.mount
TIB = 1 << 40
STORED = 4096 + blocks.BLOCK_OVERHEAD


def allocated(path: os.PathLike[str]) -> int:
    return os.stat(path).st_blocks * 512


def test_truncate_to_10_tib_keeps_the_backing_small_and_reads_zeros(mounted_vault: Vault) -> None:
    path = mounted_vault.mnt / "huge.db"
    path.write_bytes(b"head")
    # v1 wrote encrypted zeros until the disk was full; here it must finish well inside the timeout
    subprocess.run(["truncate", "-s", "10T", str(path)], check=True, timeout=60)
    assert path.stat().st_size == 10 * TIB
    backing_file = backing_path(mounted_vault, "/huge.db")
    assert backing_file.stat().st_size == blocks.cipher_size(10 * TIB)
    assert allocated(backing_file) < 1 << 20, "only the header, the old and the new last block are written"
    with open(path, "rb") as handle:
        assert handle.read(4096) == b"head" + bytes(4092)
        for offset in (1 << 30, 5 * TIB + 12345, 10 * TIB - 5000):
            handle.seek(offset)
            assert handle.read(4096) == bytes(min(4096, 10 * TIB - offset))
    with open(path, "r+b") as handle:  # a write far into the hole: one block, and the one after re-sealed
        handle.seek(3 * TIB)
        handle.write(b"in the middle")
    assert allocated(backing_file) < 1 << 20
    mounted_vault.remount()
    with open(path, "rb") as handle:
        handle.seek(3 * TIB - 3)
        assert handle.read(19) == bytes(3) + b"in the middle" + bytes(3)
        handle.seek(10 * TIB - 1)
        assert handle.read(10) == b"\0"
    assert mounted_vault.log_problems() == []


def test_writes_past_the_end_make_holes_not_zeros(mounted_vault: Vault) -> None:
    path = mounted_vault.mnt / "gaps"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for offset in (0, 100 << 20, 10 << 20, 1 << 30):
            os.pwrite(fd, b"x" * 100, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert allocated(backing_path(mounted_vault, "/gaps")) < 1 << 20
    mounted_vault.remount()
    with open(path, "rb") as handle:
        for offset in (0, 10 << 20, 100 << 20, 1 << 30):
            handle.seek(offset - 50 if offset else 0)
            assert handle.read(150) == (b"x" * 100 + bytes(50) if not offset else bytes(50) + b"x" * 100)
    assert path.stat().st_size == (1 << 30) + 100
    assert mounted_vault.log_problems() == []


def test_a_zeroed_data_block_of_a_sparse_file_is_an_io_error_and_logged(new_vault: Vault) -> None:
    with mounted(new_vault):
        path = new_vault.mnt / "sparse.db"
        with open(path, "wb") as handle:
            handle.write(b"a" * 4096)
            handle.seek(20 * 4096)
            handle.write(b"data between two holes" + bytes(4096 - 22))
            handle.seek(40 * 4096)
            handle.write(b"tail")
    backing_file = backing_path(new_vault, "/sparse.db")
    raw = bytearray(backing_file.read_bytes())
    assert raw[7] == 1 and raw[40 + 5 * STORED : 40 + 6 * STORED] == bytes(STORED), "sparse, with holes"
    raw[40 + 20 * STORED : 40 + 21 * STORED] = bytes(STORED)  # the data block now looks like a hole
    backing_file.write_bytes(bytes(raw))
    with mounted(new_vault):
        with pytest.raises(OSError) as info:
            (new_vault.mnt / "sparse.db").read_bytes()
        assert info.value.errno == errno.EIO
    log = new_vault.logfile.read_text()
    assert "sparse.db" in log and "failed authentication" in log
    new_vault.logfile.write_text("")
