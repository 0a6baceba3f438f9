"""POSIX behaviour through a real mount: every operation fs.py serves, and its errors.

All tests share one mounted vault (each in its own directory); the session fixture
checks the daemon logged no error and left no mount behind.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def err(code: int, func, *args) -> None:
    with pytest.raises(OSError) as info:
        func(*args)
    assert info.value.errno == code, f"{func.__name__}{args}: {info.value}"


def renameat2(old: Path, new: Path, flags: int) -> int:
    if libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags) == 0:
        return 0
    return ctypes.get_errno()


def test_write_read_and_exact_size_at_every_step(mnt: Path) -> None:
    path = mnt / "f"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        expected = bytearray()
        for i, size in enumerate([1, 4095, 4096, 4097, 100_000, 3]):
            chunk = bytes([i + 1]) * size
            os.write(fd, chunk)
            expected += chunk
            assert os.fstat(fd).st_size == len(expected)
            assert os.stat(path).st_size == len(expected)
        assert os.pread(fd, len(expected) + 10, 0) == expected
    finally:
        os.close(fd)
    assert path.read_bytes() == expected


def test_error_codes(mnt: Path) -> None:
    (mnt / "file").write_bytes(b"x")
    (mnt / "dir").mkdir()
    (mnt / "dir" / "inner").write_bytes(b"y")
    err(errno.ENOENT, os.open, mnt / "missing", os.O_RDONLY)
    err(errno.ENOENT, os.stat, mnt / "missing" / "deeper")
    err(errno.EEXIST, os.mkdir, mnt / "dir")
    err(errno.EEXIST, os.open, mnt / "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    err(errno.ENOTEMPTY, os.rmdir, mnt / "dir")
    err(errno.EISDIR, os.open, mnt / "dir", os.O_WRONLY)
    err(errno.EISDIR, os.unlink, mnt / "dir")
    err(errno.ENOTDIR, os.rmdir, mnt / "file")
    err(errno.ENOTDIR, os.mkdir, mnt / "file" / "sub")
    err(errno.ENOTDIR, os.listdir, mnt / "file")
    err(errno.ENOENT, os.unlink, mnt / "missing")
    err(errno.ENOENT, os.rename, mnt / "missing", mnt / "other")


def test_name_length_limit(mnt: Path) -> None:
    longest = "é" * 127 + "x"  # 255 bytes in UTF-8
    (mnt / longest).write_bytes(b"ok")
    assert os.listdir(mnt) == [longest]
    assert (mnt / longest).read_bytes() == b"ok"
    err(errno.ENAMETOOLONG, os.open, mnt / ("x" * 256), os.O_CREAT | os.O_WRONLY)
    err(errno.ENAMETOOLONG, os.mkdir, mnt / ("y" * 256))


def test_readdir_lists_exactly_the_entries(mnt: Path) -> None:
    names = {f"file {i} ✓" for i in range(150)} | {"sub dir", ".hidden"}
    for name in names:
        if name == "sub dir":
            (mnt / name).mkdir()
        else:
            (mnt / name).write_bytes(name.encode())
    assert set(os.listdir(mnt)) == names
    with os.scandir(mnt) as it:
        kinds = {e.name: e.is_dir(follow_symlinks=False) for e in it}
    assert kinds["sub dir"] and not kinds[".hidden"]
    dot = subprocess.run(["ls", "-a", str(mnt)], capture_output=True, text=True, check=True).stdout.split()
    assert "." in dot and ".." in dot


def test_unlink_while_open_stays_usable(mnt: Path) -> None:
    path = mnt / "doomed"
    path.write_bytes(b"hello world")
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        assert not path.exists()
        assert os.pread(fd, 100, 0) == b"hello world"
        os.pwrite(fd, b"HELLO", 0)
        os.ftruncate(fd, 8000)
        assert os.fstat(fd).st_size == 8000
        assert os.pread(fd, 11, 0) == b"HELLO world"
        assert os.listdir(mnt) == []
        os.rmdir(mnt)  # nothing visible is left, so the directory can go
    finally:
        os.close(fd)
    assert not mnt.exists()


def test_rename_over_an_open_file(mnt: Path) -> None:
    (mnt / "old").write_bytes(b"old content")
    (mnt / "new").write_bytes(b"new content")
    fd = os.open(mnt / "old", os.O_RDONLY)
    try:
        os.rename(mnt / "new", mnt / "old")
        assert os.pread(fd, 100, 0) == b"old content"
        assert (mnt / "old").read_bytes() == b"new content"
        assert os.listdir(mnt) == ["old"]
    finally:
        os.close(fd)


def test_rename_directories_and_type_errors(mnt: Path) -> None:
    (mnt / "a" / "b").mkdir(parents=True)
    (mnt / "a" / "b" / "f").write_bytes(b"deep")
    (mnt / "empty").mkdir()
    (mnt / "full").mkdir()
    (mnt / "full" / "x").write_bytes(b"")
    (mnt / "file").write_bytes(b"")
    os.rename(mnt / "a", mnt / "empty")  # over an empty directory
    assert (mnt / "empty" / "b" / "f").read_bytes() == b"deep"
    err(errno.ENOTEMPTY, os.rename, mnt / "empty", mnt / "full")
    err(errno.EISDIR, os.rename, mnt / "file", mnt / "full")
    err(errno.ENOTDIR, os.rename, mnt / "full", mnt / "file")
    err(errno.EINVAL, os.rename, mnt / "empty", mnt / "empty" / "b" / "inside")
    os.rename(mnt / "empty" / "b", mnt / "moved")
    assert (mnt / "moved" / "f").read_bytes() == b"deep"


def test_rename_noreplace_and_exchange(mnt: Path) -> None:
    (mnt / "x").write_bytes(b"xx")
    (mnt / "y").write_bytes(b"yy")
    assert renameat2(mnt / "x", mnt / "y", RENAME_NOREPLACE) == errno.EEXIST
    assert (mnt / "y").read_bytes() == b"yy"
    assert renameat2(mnt / "x", mnt / "z", RENAME_NOREPLACE) == 0
    assert renameat2(mnt / "z", mnt / "y", RENAME_EXCHANGE) == 0
    assert (mnt / "z").read_bytes() == b"yy"
    assert (mnt / "y").read_bytes() == b"xx"
    assert renameat2(mnt / "z", mnt / "nothing", RENAME_EXCHANGE) == errno.ENOENT


def test_hard_link_counts(mnt: Path) -> None:
    (mnt / "one").write_bytes(b"shared")
    os.link(mnt / "one", mnt / "two")
    (mnt / "sub").mkdir()
    os.link(mnt / "two", mnt / "sub" / "three")
    inode = os.stat(mnt / "one").st_ino
    for name in ("one", "two", "sub/three"):
        st = os.stat(mnt / name)
        assert (st.st_nlink, st.st_ino) == (3, inode)
    with open(mnt / "two", "r+b") as f:
        f.write(b"SHARED, changed")
    assert (mnt / "sub" / "three").read_bytes() == b"SHARED, changed"
    os.rename(mnt / "one", mnt / "two")  # two links of one inode: rename(2) does nothing
    assert sorted(os.listdir(mnt)) == ["one", "sub", "two"]
    os.unlink(mnt / "one")
    assert os.stat(mnt / "two").st_nlink == 2
    err(errno.EEXIST, os.link, mnt / "two", mnt / "sub" / "three")
    err(errno.EPERM, os.link, mnt / "sub", mnt / "dirlink")


def test_symlinks(mnt: Path) -> None:
    (mnt / "target").write_bytes(b"pointed at")
    (mnt / "dir").mkdir()
    os.symlink("target", mnt / "rel")
    os.symlink("../target", mnt / "dir" / "up")
    os.symlink("/nonexistent/ünïcode target", mnt / "dangling")
    os.symlink("dir", mnt / "dirlink")
    assert os.readlink(mnt / "rel") == "target"
    assert os.readlink(mnt / "dangling") == "/nonexistent/ünïcode target"
    assert stat.S_ISLNK(os.lstat(mnt / "rel").st_mode)
    assert os.lstat(mnt / "rel").st_size == len("target")
    assert (mnt / "rel").read_bytes() == b"pointed at"
    assert (mnt / "dir" / "up").read_bytes() == b"pointed at"
    assert os.listdir(mnt / "dirlink") == ["up"]
    assert not (mnt / "dangling").exists()
    err(errno.EEXIST, os.symlink, "x", mnt / "rel")
    err(errno.EINVAL, os.readlink, mnt / "target")


def test_append_from_two_processes(mnt: Path) -> None:
    path = mnt / "log"
    path.write_bytes(b"")
    script = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
        "for i in range(300):\n"
        "    os.write(fd, f'{sys.argv[2]} {i:05d} '.encode() + b'.' * (i % 97) + b'\\n')\n"
        "os.close(fd)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), tag]) for tag in ("AAAA", "BBBB")]
    assert [p.wait(60) for p in procs] == [0, 0]
    lines = path.read_bytes().splitlines()
    assert len(lines) == 600
    for tag in (b"AAAA", b"BBBB"):
        mine = [line for line in lines if line.startswith(tag)]
        assert mine == [f"{tag.decode()} {i:05d} ".encode() + b"." * (i % 97) for i in range(300)]
    assert path.stat().st_size == sum(len(line) + 1 for line in lines)


def test_truncate_up_and_down(mnt: Path) -> None:
    path = mnt / "t"
    path.write_bytes(b"a" * 10_000)
    os.truncate(path, 5)
    assert path.read_bytes() == b"aaaaa"
    os.truncate(path, 20_000)
    data = path.read_bytes()
    assert data == b"aaaaa" + bytes(19_995)
    with open(path, "r+b") as f:
        f.truncate(4096)
        assert os.fstat(f.fileno()).st_size == 4096
    assert path.stat().st_size == 4096
    os.truncate(path, 0)
    assert path.read_bytes() == b""


def test_write_far_beyond_eof(mnt: Path) -> None:
    path = mnt / "sparse"
    far = 10 * 1024 * 1024 + 5
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"start")
        os.pwrite(fd, b"end", far)
        assert os.fstat(fd).st_size == far + 3
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read(5) == b"start"
        f.seek(far - 4096)
        assert f.read() == bytes(4096) + b"end"
        f.seek(5_000_000)
        assert f.read(70_000) == bytes(70_000)


def test_o_trunc_and_write_only_partial_overwrite(mnt: Path) -> None:
    path = mnt / "w"
    path.write_bytes(b"0123456789" * 1000)
    fd = os.open(path, os.O_WRONLY)  # partial-block rewrite needs the old block: no read access
    try:
        os.pwrite(fd, b"XY", 4095)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[4090:4100] == b"01234XY789" and len(data) == 10_000
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert path.stat().st_size == 0


def test_mmap_read_and_write(mnt: Path) -> None:
    path = mnt / "mapped"
    path.write_bytes(b"\0" * 3 * 4096)
    with open(path, "r+b") as f:
        with mmap.mmap(f.fileno(), 0) as m:
            m[4000:4010] = b"mmap-write"
            m.flush()
            assert m[:4] == b"\0\0\0\0"
        # seen through a plain read, in this and another process
        assert os.pread(f.fileno(), 10, 4000) == b"mmap-write"
    out = subprocess.run(
        [sys.executable, "-c", f"print(open({str(path)!r}, 'rb').read()[4000:4010].decode())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "mmap-write"
    with open(path, "r+b") as f:
        f.seek(8192)
        f.write(b"written")
        f.flush()
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert m[8192:8199] == b"written"


def test_handles_see_each_others_writes(mnt: Path) -> None:
    path = mnt / "shared"
    a = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    b = os.open(path, os.O_RDWR)
    try:
        os.pwrite(a, b"from a" * 1000, 0)
        assert os.pread(b, 6, 5994) == b"from a"
        os.pwrite(b, b"B", 3)
        assert os.pread(a, 6, 0) == b"froB a"
        assert os.fstat(b).st_size == 6000
    finally:
        os.close(a)
        os.close(b)


def test_utimens_nanoseconds_round_trip(mnt: Path) -> None:
    path = mnt / "timed"
    path.write_bytes(b"")
    os.utime(path, ns=(1_234_567_890_123_456_789, 987_654_321_987_654_321))
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_234_567_890_123_456_789, 987_654_321_987_654_321)
    # touch -m sends UTIME_OMIT for atime: atime must not change.  An old atime is the
    # case relatime would update, had vaultfs's own reads of the backing file touched it.
    old = 1_000_000_000_123_456_789
    os.utime(path, ns=(old, 5))
    with open(path, "rb") as handle:
        handle.read()
    subprocess.run(["touch", "-m", "-d", "2001-02-03 04:05:06.000000007", str(path)], check=True)
    st = os.stat(path)
    assert st.st_atime_ns == old
    assert st.st_mtime_ns % 1_000_000_000 == 7
    os.symlink("timed", mnt / "link")
    os.utime(mnt / "link", ns=(5, 6), follow_symlinks=False)
    assert os.lstat(mnt / "link").st_mtime_ns == 6
    assert os.stat(path).st_mtime_ns != 6


def test_chmod_chown(mnt: Path) -> None:
    path = mnt / "owned"
    path.write_bytes(b"")
    os.chmod(path, 0o4751)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o4751
    os.chown(path, 1234, 5678)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(path, -1, 42)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 42)


def test_special_files_statfs_fsync_access(mnt: Path) -> None:
    os.mkfifo(mnt / "fifo", 0o600)
    assert stat.S_ISFIFO(os.stat(mnt / "fifo").st_mode)
    sv = os.statvfs(mnt)
    assert sv.f_bsize > 0 and sv.f_blocks > 0
    path = mnt / "synced"
    with open(path, "wb") as f:
        f.write(b"data")
        f.flush()
        os.fsync(f.fileno())
        os.fdatasync(f.fileno())
    dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert os.access(path, os.R_OK | os.W_OK)
    assert not os.access(mnt / "missing", os.F_OK)


def test_unsupported_operations_get_an_errno(mnt: Path) -> None:
    path = mnt / "plain"
    path.write_bytes(b"")
    for call, code in (
        (lambda: os.setxattr(path, "trusted.test", b"v"), errno.ENOTSUP),  # only user.* is stored
        (lambda: os.getxattr(path, "user.missing"), errno.ENODATA),
        (lambda: os.getxattr(path, "security.capability"), errno.ENODATA),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == code
    assert os.stat(path).st_size == 0  # and the mount still answers


def test_concurrent_writers_same_and_different_files(mnt: Path) -> None:
    block = 4096
    shared = mnt / "same"
    shared.write_bytes(b"")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            own = mnt / f"own{n}"
            with open(own, "wb") as f:
                for i in range(64):
                    f.write(bytes([n]) * 1000 + i.to_bytes(2, "big"))
            fd = os.open(shared, os.O_WRONLY)
            try:
                for i in range(n, 256, 8):  # interleaved, unaligned slots
                    os.pwrite(fd, bytes([i % 251 + 1]) * (block - 3), i * (block - 3))
            finally:
                os.close(fd)
        except BaseException as e:  # noqa: BLE001 - reported below by the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = shared.read_bytes()
    assert len(data) == 256 * (block - 3)
    for i in range(256):
        assert data[i * (block - 3) : (i + 1) * (block - 3)] == bytes([i % 251 + 1]) * (block - 3), i
    for n in range(8):
        assert (mnt / f"own{n}").read_bytes() == b"".join(bytes([n]) * 1000 + i.to_bytes(2, "big") for i in range(64))


def test_big_sequential_io(mnt: Path) -> None:
    data = os.urandom(1 << 20) * 6 + os.urandom(12345)
    (mnt / "big").write_bytes(data)
    assert (mnt / "big").stat().st_size == len(data)
    assert (mnt / "big").read_bytes() == data


def test_fd_based_metadata_calls(mnt: Path) -> None:
    path = mnt / "fdmeta"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 2)
        os.fchmod(fd, 0o600)
        os.utime(fd, ns=(11, 22))
        os.fchown(fd, 4321, -1)
        st = os.fstat(fd)
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_size) == (0o600, 22, 4321, 2)
        os.unlink(path)  # and the same on an unlinked, still open file
        os.fchmod(fd, 0o640)
        os.utime(fd, ns=(33, 44))
        st = os.fstat(fd)
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_nlink) == (0o640, 44, 0)
    finally:
        os.close(fd)


def test_access_follows_the_modes_without_default_permissions(mnt: Path) -> None:
    """Without --allow-other the kernel leaves access(2) to the daemon (Vault.access)."""
    path = mnt / "script"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    assert os.access(path, os.R_OK) and not os.access(path, os.X_OK)
    path.chmod(0o755)
    assert os.access(path, os.X_OK)
    assert not os.access(mnt / "missing", os.F_OK)
