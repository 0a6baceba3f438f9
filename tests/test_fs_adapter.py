"""The FUSE handlers and inode table without a mount: the errno boundary and the bookkeeping."""

from __future__ import annotations

import errno
import logging
import stat
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from vaultfs.entries import Dir
from vaultfs.errors import IntegrityError
from vaultfs.fuse import ops as fuse_ops
from vaultfs.fuse.inodes import ROOT_INODE, InodeTable


class BrokenVault:
    """A vault whose every lookup fails the way a real failure would."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.root = Dir(None, "", (b"\0" * 16,), (1, 1), "/", "/nowhere")
        self.conflicts = SimpleNamespace(on_change=None)

    def lookup(self, directory: Dir, name: str):
        raise self.exc

    def dir_attr(self, directory: Dir):
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.ENAMETOOLONG, "x"), errno.ENAMETOOLONG),
        (IntegrityError("/some/path: block 3"), errno.EIO),
        (OSError("no errno"), errno.EIO),
        (ValueError("a bug"), errno.EIO),  # would otherwise stop pyfuse3's event loop
    ],
)
def test_every_failure_becomes_an_errno(exc: BaseException, code: int, caplog: pytest.LogCaptureFixture) -> None:
    ops = fuse_ops.VaultOperations(BrokenVault(exc))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(pyfuse3.FUSEError) as info:
        trio.run(ops.lookup, ROOT_INODE, b"name")
    assert info.value.errno == code
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bool(logged) == (code == errno.EIO)  # EIO is always logged
    if isinstance(exc, IntegrityError):
        assert any("/some/path" in r.getMessage() for r in logged)


def test_a_missing_name_is_a_cached_negative_entry() -> None:
    ops = fuse_ops.VaultOperations(BrokenVault(FileNotFoundError(errno.ENOENT, "gone")))  # type: ignore[arg-type]
    reply = trio.run(ops.lookup, ROOT_INODE, b"gone")
    assert reply.st_ino == 0 and reply.entry_timeout == fuse_ops.NEGATIVE_TIMEOUT


def test_unknown_handles_and_inodes() -> None:
    ops = fuse_ops.VaultOperations(BrokenVault(ValueError()))  # type: ignore[arg-type]
    for call, args in ((ops.read, (99, 0, 10)), (ops.readdir, (99, 0, None)), (ops.getattr, (12345,))):
        with pytest.raises(pyfuse3.FUSEError) as info:
            trio.run(call, *args)
        assert info.value.errno in (errno.EBADF, errno.ESTALE)


def test_inode_numbers_links_and_forget() -> None:
    root = Dir(None, "", (b"\0" * 16,), (1, 1), "/", "/nowhere")
    table = InodeTable(root, generation=7)
    first = table.learn(ROOT_INODE, "a", (1, 100), stat.S_IFREG)
    link = table.learn(ROOT_INODE, "b", (1, 100), stat.S_IFREG)
    assert link is first and set(first.links) == {(ROOT_INODE, "a"), (ROOT_INODE, "b")}
    table.count_lookup(first, 2)
    # A backing inode number reused for another kind of file is a new inode.
    other = table.learn(ROOT_INODE, "c", (1, 100), stat.S_IFDIR)
    assert other.ino not in (ROOT_INODE, first.ino)
    table.renamed(ROOT_INODE, "a", ROOT_INODE, "b")  # a over its own other link
    assert first.links == ((ROOT_INODE, "b"),)
    table.unlinked(ROOT_INODE, "b")
    assert first.links == () and table.get(first.ino) is first  # the kernel still holds it
    table.forget(first.ino, 2)
    with pytest.raises(OSError) as info:
        table.get(first.ino)
    assert info.value.errno == errno.ESTALE
    fresh = table.learn(ROOT_INODE, "d", (1, 101), stat.S_IFREG)
    assert fresh.ino > other.ino  # numbers are never reused
