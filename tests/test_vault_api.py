"""The Vault API behaves like a POSIX directory tree, errno for errno."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.vault import Vault


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def test_lookup_errors(vault: Vault) -> None:
    write_file(vault, "/file", b"f")
    vault.mkdir("/dir", 0o755)
    assert errno_of(vault.getattr, "/missing") == errno.ENOENT
    assert errno_of(vault.getattr, "/file/below") == errno.ENOTDIR
    assert errno_of(vault.listdir, "/file") == errno.ENOTDIR
    assert errno_of(vault.mkdir, "/dir", 0o755) == errno.EEXIST
    assert errno_of(vault.mkdir, "/file", 0o755) == errno.EEXIST
    assert errno_of(vault.create, "/file", 0o644, os.O_RDWR | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    assert errno_of(vault.open, "/dir", os.O_RDONLY) == errno.EISDIR
    assert errno_of(vault.unlink, "/dir") == errno.EISDIR
    assert errno_of(vault.rmdir, "/file") == errno.ENOTDIR
    assert errno_of(vault.getattr, "/" + "x" * 256) == errno.ENAMETOOLONG
    assert errno_of(vault.open, "/missing", os.O_RDONLY) == errno.ENOENT


def test_mkdir_rmdir_and_not_empty(vault: Vault) -> None:
    vault.mkdir("/a", 0o750)
    assert stat.S_IMODE(vault.getattr("/a").st_mode) == 0o750
    vault.mkdir("/a/b", 0o755)
    assert errno_of(vault.rmdir, "/a") == errno.ENOTEMPTY
    assert vault.getattr("/a").st_nlink == 3
    vault.rmdir("/a/b")
    vault.rmdir("/a")
    assert vault.listdir("/") == []


def test_rename_semantics(vault: Vault) -> None:
    write_file(vault, "/a", b"A")
    write_file(vault, "/b", b"B")
    vault.mkdir("/d", 0o755)
    vault.mkdir("/e", 0o755)
    write_file(vault, "/e/inside", b"I")
    vault.rename("/a", "/b")  # replaces
    assert read_file(vault, "/b") == b"A"
    assert errno_of(vault.getattr, "/a") == errno.ENOENT
    assert errno_of(vault.rename, "/b", "/d") == errno.EISDIR
    assert errno_of(vault.rename, "/d", "/b") == errno.ENOTDIR
    assert errno_of(vault.rename, "/d", "/e") == errno.ENOTEMPTY
    assert errno_of(vault.rename, "/d", "/d/sub") == errno.EINVAL
    vault.mkdir("/empty", 0o755)
    vault.rename("/e", "/empty")  # over an empty directory
    assert read_file(vault, "/empty/inside") == b"I"
    vault.rename("/empty", "/d/moved")  # a directory moves with its ID: children keep their names
    assert read_file(vault, "/d/moved/inside") == b"I"
    assert errno_of(vault.rename, "/missing", "/x") == errno.ENOENT


def test_rename_noreplace_and_exchange(vault: Vault) -> None:
    write_file(vault, "/a", b"A")
    write_file(vault, "/b", b"B")
    assert errno_of(vault.rename, "/a", "/b", 1) == errno.EEXIST
    vault.rename("/a", "/b", 2)
    assert read_file(vault, "/a") == b"B" and read_file(vault, "/b") == b"A"
    assert errno_of(vault.rename, "/a", "/nothing", 2) == errno.ENOENT
    vault.rename("/a", "/c", 1)
    assert read_file(vault, "/c") == b"B"


def test_unlink_while_open_and_rename_over_open_file(vault: Vault) -> None:
    write_file(vault, "/open", b"still here")
    handle = vault.open("/open", os.O_RDWR)
    vault.unlink("/open")
    assert errno_of(vault.getattr, "/open") == errno.ENOENT
    handle.write(10, b"!")
    assert handle.read(0, 100) == b"still here!"
    assert handle.getattr().st_size == 11
    handle.close()
    write_file(vault, "/target", b"old")
    old = vault.open("/target", os.O_RDONLY)
    write_file(vault, "/new", b"new")
    vault.rename("/new", "/target")
    assert old.read(0, 10) == b"old"
    assert read_file(vault, "/target") == b"new"
    old.close()


def test_hard_links_share_content_and_count(vault: Vault) -> None:
    vault.mkdir("/d", 0o755)
    write_file(vault, "/orig", b"one")
    vault.link("/orig", "/d/other")
    assert vault.getattr("/orig").st_nlink == 2
    handle = vault.open("/d/other", os.O_WRONLY | os.O_APPEND)
    handle.write(0, b" two")
    handle.close()
    assert read_file(vault, "/orig") == b"one two"
    assert errno_of(vault.link, "/d", "/dlink") == errno.EPERM
    assert errno_of(vault.link, "/orig", "/d/other") == errno.EEXIST
    vault.unlink("/orig")
    assert vault.getattr("/d/other").st_nlink == 1


def test_symlinks(vault: Vault) -> None:
    vault.symlink("some/where/ünï", "/ln")
    attr = vault.getattr("/ln")
    assert stat.S_ISLNK(attr.st_mode)
    assert attr.st_size == len("some/where/ünï".encode())
    assert vault.readlink("/ln") == "some/where/ünï"
    assert errno_of(vault.symlink, "x", "/ln") == errno.EEXIST


def test_metadata(vault: Vault) -> None:
    write_file(vault, "/m", b"meta")
    vault.chmod("/m", 0o600)
    assert stat.S_IMODE(vault.getattr("/m").st_mode) == 0o600
    vault.utime("/m", 1_000_000_123, 2_000_000_456)
    attr = vault.getattr("/m")
    assert (attr.st_atime_ns, attr.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    vault.chown("/m", 1234, 5678)
    attr = vault.getattr("/m")
    assert (attr.st_uid, attr.st_gid) == (1234, 5678)
    vault.truncate("/m", 2)
    assert read_file(vault, "/m") == b"me"
    vault.truncate("/m", 6000)
    assert read_file(vault, "/m") == b"me" + bytes(5998)
    info = vault.statfs()
    assert info["f_namemax"] == 255 and info["f_bsize"] > 0
    vault.fsyncdir("/")


def test_mknod_fifo_and_devices(vault: Vault) -> None:
    vault.mknod("/fifo", stat.S_IFIFO | 0o644, 0)
    assert stat.S_ISFIFO(vault.getattr("/fifo").st_mode)
    vault.mknod("/regular", stat.S_IFREG | 0o644, 0)
    assert read_file(vault, "/regular") == b""
    if os.geteuid() == 0:  # device nodes need CAP_MKNOD, as on any filesystem
        vault.mknod("/null", stat.S_IFCHR | 0o640, os.makedev(1, 3))
        attr = vault.getattr("/null")
        assert stat.S_ISCHR(attr.st_mode) and attr.st_rdev == os.makedev(1, 3)
        assert stat.S_IMODE(attr.st_mode) == 0o640
    else:
        assert errno_of(vault.mknod, "/dev", stat.S_IFCHR | 0o644, os.makedev(1, 3)) == errno.EPERM


def test_read_only_vault_refuses_changes(vault_dir: VaultDir) -> None:
    writable = vault_dir.unlock()
    write_file(writable, "/r", b"r")
    writable.close()
    vault = vault_dir.unlock(read_only=True)
    assert read_file(vault, "/r") == b"r"
    assert errno_of(vault.mkdir, "/x", 0o755) == errno.EROFS
    assert errno_of(vault.open, "/r", os.O_RDWR) == errno.EROFS
    assert errno_of(vault.unlink, "/r") == errno.EROFS
    vault.close()


def test_a_reopened_vault_reads_everything_back(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    tree = {"/a": os.urandom(10), "/d/b": os.urandom(5000), "/d/e/c": b""}
    vault.mkdir("/d", 0o755)
    vault.mkdir("/d/e", 0o700)
    for path, data in tree.items():
        write_file(vault, path, data)
    vault.close()
    vault = vault_dir.unlock()
    for path, data in tree.items():
        assert read_file(vault, path) == data
    vault.close()
