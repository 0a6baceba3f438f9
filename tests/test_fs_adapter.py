"""fs.py without a mount: the errno boundary and the handle table (no FUSE needed)."""

from __future__ import annotations

import errno
import logging

import pytest
from mfusepy import FuseOSError

from vaultfs.errors import IntegrityError
from vaultfs.fuse import fs, fshandles


class BrokenVault:
    """Every call fails the way a real failure would."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def getattr(self, path: str):
        raise self.exc

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (FileNotFoundError(errno.ENOENT, "x"), errno.ENOENT),
        (OSError(errno.ENAMETOOLONG, "x"), errno.ENAMETOOLONG),
        (IntegrityError("block 3"), errno.EIO),
        (OSError("no errno"), errno.EIO),
        (ValueError("a bug"), errno.EIO),  # mfusepy would have made this EINVAL
    ],
)
def test_every_failure_becomes_an_errno(exc: BaseException, code: int, caplog: pytest.LogCaptureFixture) -> None:
    ops = fs.VaultOperations(BrokenVault(exc))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(FuseOSError) as info:
        ops.getattr("/some/path")
    assert info.value.errno == code
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bool(logged) == (code == errno.EIO)  # EIO is always logged, with the path
    assert all("/some/path" in r.getMessage() for r in logged)


def test_unknown_handle_is_ebadf() -> None:
    ops = fs.VaultOperations(BrokenVault(ValueError()))  # type: ignore[arg-type]
    for call in (lambda: ops.read(None, 10, 0, 99), lambda: ops.readdir(None, 99)):
        with pytest.raises(FuseOSError) as info:
            call()
        assert info.value.errno == errno.EBADF


def test_hidden_link_counts() -> None:
    links = fshandles.HiddenLinks()
    first, second = links.park(), links.park()
    assert first != second and first.startswith("/.fuse_hidden")
    links.add("/d/.fuse_hidden1", first, 7)
    links.add("/e/.fuse_hidden2", second, 7)
    assert links.resolve("/d/.fuse_hidden1") == first
    assert links.resolve("/other") == "/other"
    links.forget_parked(first)
    assert (links.count(7), links.count(8)) == (1, 0)
    links.forget_parked(second)
    assert links.count(7) == 0
    assert links.resolve("/e/.fuse_hidden2") == "/e/.fuse_hidden2"
