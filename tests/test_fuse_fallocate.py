"""fallocate(2) through the mount: modes 0 and KEEP_SIZE, added to pyfuse3 by the libfuse shim.

KEEP_SIZE has no fallback in glibc or util-linux: when it succeeds on the mount and the
backing file's allocated blocks grow, the FUSE request went through the shim's op table
into the Python handler.  Without the shim the kernel gets ENOSYS and says EOPNOTSUPP.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, write_file
from tests.mounting import Vault, backing_path, mounted
from vaultfs import backing
from vaultfs.format import blocks
from vaultfs.fuse import extra_ops
from vaultfs.vault import Vault as ApiVault

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2), which Python's os module does not offer (only posix_fallocate)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fallocate_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """util-linux fallocate(1); never raises on failure."""
    return subprocess.run(["fallocate", *map(str, args)], capture_output=True, text=True, check=False)


def allocated(path: Path) -> int:
    """Bytes the filesystem has allocated to a file (st_blocks is in 512-byte units)."""
    return os.stat(path).st_blocks * 512


# ---------------------------------------------------------------- FileHandle.allocate, no FUSE


def test_allocate_grows_with_zeros_or_only_reserves(vault_dir: VaultDir) -> None:
    data = os.urandom(1000)
    vault = vault_dir.unlock()
    try:
        write_file(vault, "/f", data)
        handle = vault.open("/f", os.O_RDWR)
        try:
            before = os.fstat(handle.fd)
            handle.allocate(8000, 1 << 20, keep_size=True)
            after = os.fstat(handle.fd)
            assert handle.size == 1000
            assert after.st_size == before.st_size == blocks.cipher_size(1000)
            assert (after.st_blocks - before.st_blocks) * 512 >= 1 << 20
            assert handle.read(0, 4096) == data

            handle.allocate(500, 10_000, keep_size=False)  # overlaps the data, grows past it
            assert handle.size == 10_500
            assert os.fstat(handle.fd).st_size == blocks.cipher_size(10_500)
            handle.allocate(0, 10, keep_size=False)  # inside the file: nothing changes
            handle.allocate(0, 10, keep_size=True)
            assert handle.size == 10_500
        finally:
            handle.close()
    finally:
        vault.close()
    again = vault_dir.unlock()  # a fresh unlock authenticates every block the growth wrote
    try:
        assert read_file(again, "/f") == data + bytes(9_500)
    finally:
        again.close()


def test_allocate_refuses_bad_ranges_and_read_only_handles(vault: ApiVault) -> None:
    write_file(vault, "/f", b"abc")
    handle = vault.open("/f", os.O_RDWR)
    try:
        for offset, length, code in [(0, 0, errno.EINVAL), (-1, 10, errno.EINVAL), (0, -5, errno.EINVAL),
                                     (2**63 - 4096, 4095, errno.EFBIG)]:
            with pytest.raises(OSError) as info:
                handle.allocate(offset, length, keep_size=False)
            assert info.value.errno == code, (offset, length)
        assert handle.size == 3
    finally:
        handle.close()
    reader = vault.open("/f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            reader.allocate(0, 4096, keep_size=True)
        assert info.value.errno == errno.EBADF
    finally:
        reader.close()
    assert read_file(vault, "/f") == b"abc"


def test_allocate_that_fails_half_way_leaves_the_file_as_it_was(vault_dir: VaultDir) -> None:
    """A growth that the backing filesystem stops half-way (here RLIMIT_FSIZE: EFBIG) is cut back."""
    data = os.urandom(5000)
    vault = vault_dir.unlock()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        write_file(vault, "/f", data)
        handle = vault.open("/f", os.O_RDWR)
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, old_limit[1]))
            with pytest.raises(OSError) as info:
                handle.allocate(0, 8 << 20, keep_size=False)
            assert info.value.errno == errno.EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            assert handle.size == 5000
            assert os.fstat(handle.fd).st_size == blocks.cipher_size(5000)
            assert handle.read(0, 1 << 20) == data
        finally:
            handle.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
        vault.close()
    again = vault_dir.unlock()
    try:
        assert read_file(again, "/f") == data
    finally:
        again.close()


def test_keep_size_without_preallocation_says_so_and_mode_0_still_works(
        vault: ApiVault, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the backing side cannot preallocate, KEEP_SIZE cannot keep its promise: EOPNOTSUPP."""
    write_file(vault, "/f", b"abc")
    monkeypatch.setattr(backing, "_fallocate", None)  # as with a libc that has no fallocate
    handle = vault.open("/f", os.O_RDWR)
    try:
        with pytest.raises(OSError) as info:
            handle.allocate(0, 1 << 20, keep_size=True)
        assert info.value.errno == errno.EOPNOTSUPP
        handle.allocate(0, 2, keep_size=True)  # inside the data: the space exists already
        handle.allocate(0, 9000, keep_size=False)  # written, hence allocated
        assert handle.size == 9000
    finally:
        handle.close()
    assert read_file(vault, "/f") == b"abc" + bytes(8997)


# ---------------------------------------------------------------- the shim and its bridge


def test_the_shim_exports_fuse_session_new_under_the_version_pyfuse3_binds() -> None:
    """pyfuse3 binds a versioned fuse_session_new: the shim must define that very version."""
    import pyfuse3

    def dynsyms(path: str) -> str:
        return subprocess.run(["readelf", "--dyn-syms", "-W", path], capture_output=True, text=True,
                              check=True).stdout

    wanted = re.findall(r" UND fuse_session_new@(\S+)", dynsyms(pyfuse3.__file__))  # ['FUSE_3.0']
    assert wanted, "pyfuse3 imports no versioned fuse_session_new"
    defined = re.findall(r" \d+ fuse_session_new@@(\S+)", dynsyms(extra_ops.LIBRARY))  # Ndx: defined here
    assert defined == wanted


def test_the_shim_refuses_to_load_after_pyfuse3() -> None:
    """Too late is reported, not silently ignored: pyfuse3's calls would bypass the shim."""
    code = ("import pyfuse3, logging; logging.basicConfig(); from vaultfs.fuse import extra_ops; "
            "print(extra_ops.bind(object()), extra_ops.ops_added())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "-1"]
    assert "imported before the shim" in result.stderr


def test_run_handler_turns_every_outcome_into_an_errno(caplog: pytest.LogCaptureFixture) -> None:
    import pyfuse3

    class Suspend:
        def __await__(self) -> Iterator[None]:
            yield

    async def fine() -> None:
        return None

    async def full() -> None:
        raise pyfuse3.FUSEError(errno.ENOSPC)

    async def buggy() -> None:
        raise ValueError("a bug")

    async def awaits() -> None:
        await Suspend()

    assert extra_ops.run_handler("t", fine) == 0
    assert extra_ops.run_handler("t", full) == errno.ENOSPC
    assert extra_ops.run_handler("t", buggy) == errno.EIO
    assert extra_ops.run_handler("t", awaits) == errno.EIO
    assert extra_ops.run_handler("t", lambda: 1 / 0) == errno.EIO  # fails before it is a coroutine
    messages = [r.getMessage() for r in caplog.records]
    assert any("awaited" in m for m in messages) and any("ValueError" in m for m in messages)


# ---------------------------------------------------------------- through a real mount


@pytest.mark.mount
def test_keep_size_reaches_the_daemon_and_reserves_backing_blocks(mounted_vault: Vault) -> None:
    """fallocate -n and fallocate(2) with KEEP_SIZE: nothing visible changes, the backing space grows."""
    mnt = mounted_vault.mnt
    data = os.urandom(5000)
    for name in ("tool", "syscall"):
        (mnt / name).write_bytes(data)
    tool_backing, syscall_backing = backing_path(mounted_vault, "/tool"), backing_path(mounted_vault, "/syscall")
    sizes = {p: (p.stat().st_size, allocated(p)) for p in (tool_backing, syscall_backing)}

    result = fallocate_tool("-n", "-o", "4096", "-l", "4MiB", mnt / "tool")
    assert result.returncode == 0, result.stderr
    fd = os.open(mnt / "syscall", os.O_RDWR)
    try:
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 << 20)
        assert os.fstat(fd).st_size == 5000
    finally:
        os.close(fd)

    for name, path in (("tool", tool_backing), ("syscall", syscall_backing)):
        size, blocks_before = sizes[path]
        assert path.stat().st_size == size == blocks.cipher_size(5000), name
        assert allocated(path) - blocks_before >= (4 << 20) - 8192, name
        assert (mnt / name).stat().st_size == 5000
        assert (mnt / name).read_bytes() == data
    assert mounted_vault.log_problems() == []


@pytest.mark.mount
def test_fallocate_length_grows_the_file_with_zeros(mounted_vault: Vault) -> None:
    mnt = mounted_vault.mnt
    (mnt / "f").write_bytes(b"head")
    result = fallocate_tool("-l", "300000", mnt / "f")
    assert result.returncode == 0, result.stderr
    assert (mnt / "f").stat().st_size == 300_000
    assert (mnt / "f").read_bytes() == b"head" + bytes(300_000 - 4)
    assert backing_path(mounted_vault, "/f").stat().st_size == blocks.cipher_size(300_000)
    assert fallocate_tool("-l", "1000", mnt / "f").returncode == 0  # shorter than the file: no change
    assert (mnt / "f").stat().st_size == 300_000

    mounted_vault.remount()  # what was written is authentic ciphertext, not kernel cache
    assert (mnt / "f").read_bytes() == b"head" + bytes(300_000 - 4)
    assert mounted_vault.log_problems() == []


@pytest.mark.mount
def test_posix_fallocate_from_python(mounted_vault: Vault) -> None:
    path = mounted_vault.mnt / "db"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 10)
        os.posix_fallocate(fd, 3 * 4096 + 5, 10_000)
        assert os.fstat(fd).st_size == 3 * 4096 + 5 + 10_000
        os.posix_fallocate(fd, 0, 100)  # inside: nothing to do
        assert os.fstat(fd).st_size == 3 * 4096 + 5 + 10_000
        os.pwrite(fd, b"tail", 3 * 4096 + 5 + 10_000 - 4)
    finally:
        os.close(fd)
    expected = b"x" * 10 + bytes(3 * 4096 + 5 + 10_000 - 14) + b"tail"
    assert path.read_bytes() == expected
    mounted_vault.remount()
    assert path.read_bytes() == expected
    assert mounted_vault.log_problems() == []


@pytest.mark.mount
def test_zero_range_is_eopnotsupp_and_changes_nothing(mounted_vault: Vault) -> None:
    path = mounted_vault.mnt / "f"
    data = os.urandom(3 * 4096)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        for mode in (FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE):
            with pytest.raises(OSError) as info:
                fallocate(fd, mode, 4096, 4096)
            assert info.value.errno in (errno.EOPNOTSUPP, errno.EINVAL), hex(mode)  # PUNCH_HOLE needs KEEP_SIZE
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20)  # a refused mode did not turn fallocate off
        assert os.pread(fd, len(data) + 1, 0) == data
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert mounted_vault.log_problems() == []


@pytest.mark.mount
def test_punch_hole_makes_a_range_read_as_zeros_and_frees_the_backing_blocks(mounted_vault: Vault) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE) through the mount (format v2 holes): size kept, zeros read,
    whole blocks become holes in the backing file, the edges are written as encrypted zeros."""
    path = mounted_vault.mnt / "db"
    data = bytearray(os.urandom(64 * 4096 + 100))
    path.write_bytes(data)
    backing_file = backing_path(mounted_vault, "/db")
    before = allocated(backing_file)
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * 4096 + 10, 40 * 4096)
        data[3 * 4096 + 10 : 43 * 4096 + 10] = bytes(40 * 4096)
        assert os.fstat(fd).st_size == len(data)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert fallocate_tool("--punch-hole", "-o", "50000", "-l", "30000", path).returncode == 0
    data[50000:80000] = bytes(30000)
    assert allocated(backing_file) <= before - 30 * 4096, "the punched blocks no longer take space"
    assert backing_file.stat().st_size == blocks.cipher_size(len(data))
    mounted_vault.remount()  # authentic holes, not the kernel's page cache
    assert path.read_bytes() == data
    assert mounted_vault.log_problems() == []


# ---------------------------------------------------------------- a full backing filesystem


@pytest.mark.mount
@pytest.mark.slow
def test_enospc_comes_back_from_fallocate_and_a_reservation_holds(small_vault: Vault) -> None:
    with mounted(small_vault):
        mnt = small_vault.mnt
        kept = os.urandom(8 << 20)
        (mnt / "kept").write_bytes(kept)
        (mnt / "big").write_bytes(b"before")
        for args in (["-l", "20MiB"], ["-n", "-l", "20MiB"]):  # more than is free: nothing changes
            result = fallocate_tool(*args, mnt / "big")
            assert result.returncode != 0 and "No space left on device" in result.stderr, result.stderr
            assert (mnt / "big").read_bytes() == b"before"
        fd = os.open(mnt / "big", os.O_RDWR)
        try:
            with pytest.raises(OSError) as info:
                os.posix_fallocate(fd, 0, 20 << 20)
            assert info.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
        assert (mnt / "big").stat().st_size == 6

        # Reserve 4 MiB, fill the disk with another file, then write the reserved range: it fits.
        reserved = os.open(mnt / "reserved", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fallocate(reserved, FALLOC_FL_KEEP_SIZE, 0, 4 << 20)
            filler = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            chunk = os.urandom(1 << 20)
            with pytest.raises(OSError) as info:
                for _ in range(64):
                    os.write(filler, chunk)
                    os.fsync(filler)
            assert info.value.errno == errno.ENOSPC
            try:
                os.close(filler)
            except OSError as exc:  # writeback: the last error may surface at close as well
                assert exc.errno == errno.ENOSPC
            payload = os.urandom(4 << 20)
            os.pwrite(reserved, payload, 0)
            os.fsync(reserved)
        finally:
            os.close(reserved)
        assert (mnt / "reserved").read_bytes() == payload
        assert (mnt / "kept").read_bytes() == kept
    assert small_vault.log_problems() == []
    with mounted(small_vault):  # and it is all authentic after a remount
        assert (small_vault.mnt / "reserved").read_bytes() == payload
        assert (small_vault.mnt / "kept").read_bytes() == kept
