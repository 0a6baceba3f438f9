"""The seal: a locked mountpoint that refuses writes, from root too.

A job that writes into the mountpoint while the vault is locked must fail, or its
plaintext lands on the local disk (and a sync tool counts the vault's files as
deleted).  Mode 0 stops every writer but root.  For root, vaultfs adds one of:

- the **immutable attribute** (``chattr +i``, FS_IMMUTABLE_FL) on the empty directory,
  where the filesystem supports it (ext4, xfs, btrfs, tmpfs ...): creating, renaming or
  removing anything in it fails with EPERM, for root as well;
- else an **empty read-only tmpfs** (source ``vaultfs-seal``) mounted over it: every
  write fails with EROFS.

The seal is put in place once, before the vault is mounted for the first time, and
the FUSE mount goes *on top of it*: it is never removed while the vault is in use.
So whatever ends the mount (``lock``, ``--idle``, a killed daemon, ``umount``,
``vaultfs run``), the directory underneath is already sealed: there is no moment
between the unmount and a "re-lock" step in which a writer gets through (the
Syncthing case of issue 13 wrote 34 MB in that gap).

A non-root user cannot set the immutable attribute or mount tmpfs, and fusermount3
needs write access to the mountpoint, so for them the seal is mode 0 only: ``mount``
opens it to 0700 just before mounting and it is closed again after the unmount.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import subprocess
from dataclasses import dataclass

from vaultfs.fuse.state import mount_stack

log = logging.getLogger(__name__)

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long); the kernel reads and writes an int
FS_IOC_SETFLAGS = 0x40086602  # _IOW('f', 2, long)
FS_IMMUTABLE_FL = 0x00000010
SEAL_SOURCE = "vaultfs-seal"
OPEN_MODE = 0o700  # what a non-root mountpoint gets while mounted (fusermount3 needs write access)
_UNSUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM)


@dataclass
class Seal:
    """What is in place on a mountpoint."""

    mode0: bool
    immutable: bool
    mounted: bool  # the read-only tmpfs

    @property
    def holds_root(self) -> bool:
        return self.immutable or self.mounted

    @property
    def any(self) -> bool:
        return self.mode0 or self.holds_root

    def describe(self) -> str:
        parts = [name for name, on in (("immutable", self.immutable), ("read-only mount", self.mounted),
                                       ("mode 0", self.mode0)) if on]
        return ", ".join(parts) or "not sealed"


def _flags(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def _set_immutable(path: str, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        wanted = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        if wanted != flags:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", wanted))
    finally:
        os.close(fd)


def seal_mounted(mountpoint: str) -> bool:
    """Is the top of the mount stack at ``mountpoint`` our read-only tmpfs?"""
    stack = mount_stack(mountpoint)
    return bool(stack) and stack[-1] == ("tmpfs", SEAL_SOURCE)


def inspect(mountpoint: str) -> Seal:
    """The seal as it can be seen now (nothing to see while a vault is mounted on top of it)."""
    stack = mount_stack(mountpoint)
    mounted = ("tmpfs", SEAL_SOURCE) in stack
    if stack and stack[-1] != ("tmpfs", SEAL_SOURCE):
        return Seal(mode0=False, immutable=False, mounted=mounted)
    try:
        mode0 = stat.S_IMODE(os.lstat(mountpoint).st_mode) == 0
    except OSError:
        mode0 = False
    flags = _flags(mountpoint)
    return Seal(mode0=mode0, immutable=bool(flags is not None and flags & FS_IMMUTABLE_FL), mounted=mounted)


def _mount_seal(mountpoint: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,mode=000,size=4k,nr_inodes=1", SEAL_SOURCE, mountpoint],
                   check=True, capture_output=True, text=True)


def seal(mountpoint: str) -> Seal:
    """Seal the empty, unmounted directory as far as this process can; return what is in place.

    Idempotent.  Never raises for a mechanism that is unavailable: it logs what is
    missing instead (the mountpoint is then only as closed as the log says).
    """
    current = inspect(mountpoint)
    if current.mounted:
        return current
    if not current.mode0 and not current.immutable:
        try:
            os.chmod(mountpoint, 0, follow_symlinks=False)
            current.mode0 = True
        except OSError as exc:
            log.warning("could not set mode 0 on %s: %s", mountpoint, exc.strerror)
    if os.geteuid() != 0 or current.immutable:
        return current
    try:
        _set_immutable(mountpoint, True)
        current.immutable = True
        return current
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            log.warning("could not make %s immutable: %s", mountpoint, exc.strerror)
    try:
        _mount_seal(mountpoint)
        current.mounted = True
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        log.warning("%s: neither the immutable attribute nor a read-only mount is available (%s); "
                    "root can still write into the locked mountpoint", mountpoint, detail.strip())
    return current


def open_for_mount(mountpoint: str) -> int | None:
    """Before mounting: what the mount itself needs opened.  Returns the mode to put back on failure.

    Root mounts on top of the seal and opens nothing.  fusermount3 needs write access
    for a user, so a user's mode 0 becomes 0700 (the FUSE mount covers it at once).
    """
    if os.geteuid() == 0:
        return None
    mode = stat.S_IMODE(os.lstat(mountpoint).st_mode)
    if mode & 0o300 == 0o300:
        return None
    os.chmod(mountpoint, mode | OPEN_MODE)
    return mode


def restore(mountpoint: str, mode: int | None) -> None:
    """Undo ``open_for_mount`` after a failed mount."""
    if mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(mountpoint, mode)


def release(mountpoint: str, mode: int = 0o755) -> None:
    """Take every seal away (a directory the user no longer wants as a mountpoint; tests)."""
    while seal_mounted(mountpoint):
        subprocess.run(["umount", mountpoint], check=True, capture_output=True)
    if mount_stack(mountpoint):
        return  # something else is mounted there: not ours to change
    flags = _flags(mountpoint)
    if flags is not None and flags & FS_IMMUTABLE_FL:
        _set_immutable(mountpoint, False)
    os.chmod(mountpoint, mode, follow_symlinks=False)
