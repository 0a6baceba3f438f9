"""What `vaultfs upgrade` checks and counts around the conversion (tools/upgrade.py does the work).

Kept apart so that upgrade.py stays about the walk and its atomic steps.
"""

from __future__ import annotations

import errno
import json
import os
import stat

from vaultfs.errors import UsageError
from vaultfs.format.conflicts import parse_copy
from vaultfs.format.header import MAGIC_V1
from vaultfs.format.names import RESERVED_PREFIX


def check_not_mounted(backing_dir: str) -> None:
    """Refuse while a live vaultfs daemon serves this backing dir (an older vaultfs could)."""
    from vaultfs.fuse.state import MountState, daemon_alive, run_dir

    directory = run_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                state = MountState(**json.load(handle))
        except (OSError, ValueError, TypeError):
            continue
        if daemon_alive(state) and os.path.realpath(state.backing or "/nonexistent") == os.path.realpath(backing_dir):
            raise UsageError(f"{backing_dir} is mounted at {state.mountpoint}; run `vaultfs lock {state.mountpoint}`")


def copy_user_xattrs(src: int, dst: int) -> None:
    """Copy the ``user.*`` extended attributes (vaultfs keeps encrypted ones there) to the new file."""
    try:
        names = os.listxattr(src)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        if name.startswith("user."):
            os.setxattr(dst, name, os.getxattr(src, name))


def planned_bytes(backing_dir: str) -> int:
    """The progress bar's total: the stored bytes of every VFS1 file still to convert (each inode once)."""
    total, seen = 0, set()
    for directory, _, files in os.walk(backing_dir):
        for name in files:
            if name.startswith(RESERVED_PREFIX) or not name.endswith((".vfs", ".vfl")) and parse_copy(name) is None:
                continue
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    if os.pread(fd, 4, 0) != MAGIC_V1:
                        continue
                finally:
                    os.close(fd)
            except OSError:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += max(0, st.st_size - 40)
    return total
