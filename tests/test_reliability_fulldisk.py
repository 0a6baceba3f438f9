"""A full backing filesystem: ENOSPC to the writer, the daemon stays up, nothing stored is damaged."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.mounting import Vault, mounted
from tests.reliability import daemon_pid
from tests.test_reliability_crash import fsck_problem_paths
from vaultfs.fuse import state as mountstate

pytestmark = pytest.mark.slow


def fill(path: Path, chunk: int) -> int:
    """Write until the disk is full; return how much was accepted and check the error is ENOSPC.

    With the kernel's writeback cache a write lands in the page cache and the backing
    filesystem's ENOSPC reaches the writer at the next fsync (or close), as on any
    filesystem with delayed allocation: the writer here syncs after every chunk.
    """
    written = 0
    data = os.urandom(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with pytest.raises(OSError) as info:
            while True:
                written += os.write(fd, data)
                os.fsync(fd)
                if written > 64 << 20:
                    raise AssertionError("the 24 MiB disk never filled")
        assert info.value.errno == errno.ENOSPC, info.value
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


@pytest.mark.parametrize("chunk", [1 << 20, 4096 + 100])
def test_writes_fail_with_enospc_and_everything_else_survives(small_vault: Vault, chunk: int) -> None:
    kept = {f"kept-{i}.db": os.urandom(1_000_000 + i) for i in range(3)}
    with mounted(small_vault):
        for name, data in kept.items():
            (small_vault.mnt / name).write_bytes(data)
        fill(small_vault.mnt / "filler.bin", chunk)
        pid = daemon_pid(small_vault.mnt)
        assert mountstate.process_start(pid) is not None, "the daemon died"
        with pytest.raises(OSError) as info, open(small_vault.mnt / "another", "wb") as another:
            another.write(os.urandom(3 << 20))
            another.flush()
            os.fsync(another.fileno())
        assert info.value.errno == errno.ENOSPC
        try:  # a directory may still fit (an inode, a 44-byte dir ID) or not: either way no crash
            os.mkdir(small_vault.mnt / "dir-on-a-full-disk")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        for name, data in kept.items():
            assert (small_vault.mnt / name).read_bytes() == data
        filler = (small_vault.mnt / "filler.bin").read_bytes()  # what was accepted reads back, no EIO
        assert len(filler) == (small_vault.mnt / "filler.bin").stat().st_size > 0
    problems = fsck_problem_paths(small_vault)
    assert set(problems) <= {"/filler.bin", "/another"}, problems
    with mounted(small_vault):
        os.unlink(small_vault.mnt / "filler.bin")
        if (small_vault.mnt / "another").exists():
            os.unlink(small_vault.mnt / "another")
        (small_vault.mnt / "after.bin").write_bytes(b"space again" * 100_000)
        assert (small_vault.mnt / "after.bin").read_bytes() == b"space again" * 100_000
        for name, data in kept.items():
            assert (small_vault.mnt / name).read_bytes() == data
    assert fsck_problem_paths(small_vault) == []
