"""Which processes hold a mount: open files, working directories, memory maps (like fuser -m).

``lock`` names them when it refuses a busy mount and says whom ``--force`` cut off;
``status`` lists them as the mount's open files.  Read from /proc without a request to
the mount itself, so a hung or dead daemon cannot hang the scan:

- an open file counts when its ``mnt_id`` (/proc/PID/fdinfo/N) is the vault mount's ID,
  not merely when its path starts with the mountpoint: a process that entered the bare
  directory *before* the mount (its cwd is on the seal underneath) does not hold the
  vault, and a file opened through a bind mount of the vault does;
- a working or root directory is opened with O_PATH through /proc/PID/cwd (a jump to
  the dentry: no lookup, no FUSE request) and its mount ID read the same way;
- memory maps are matched by path (/proc/PID/maps has no mount ID).

A user sees their own processes, root sees all of them (in this mount namespace).
Without a mount ID (kernels before 3.15), paths are compared instead.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from vaultfs.fuse.state import mount_id

DELETED = " (deleted)"


@dataclass
class Holder:
    pid: int
    command: str
    paths: list[str] = field(default_factory=list)  # each once, with " (cwd)"/" (mapped)" where not an open file

    def describe(self) -> str:
        shown = ", ".join(self.paths[:4]) + (f" and {len(self.paths) - 4} more" if len(self.paths) > 4 else "")
        return f"pid {self.pid} ({self.command}): {shown}"

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "command": self.command, "paths": self.paths}


def _inside(path: str, mountpoint: str) -> bool:
    if path.endswith(DELETED):
        path = path[: -len(DELETED)]
    return path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _mnt_id(fdinfo: str) -> int | None:
    try:
        with open(fdinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _links(pid: int) -> list[tuple[str, str, int | None]]:
    """(path, how, mount ID) for the process's cwd, root and open fds."""
    found = []
    for name, how in (("cwd", " (cwd)"), ("root", " (root)")):
        try:
            path = os.readlink(f"/proc/{pid}/{name}")
            fd = os.open(f"/proc/{pid}/{name}", os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            found.append((path, how, _mnt_id(f"/proc/self/fdinfo/{fd}")))
        finally:
            os.close(fd)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd_name in fds:
        with contextlib.suppress(OSError):
            found.append((os.readlink(f"/proc/{pid}/fd/{fd_name}"), "", _mnt_id(f"/proc/{pid}/fdinfo/{fd_name}")))
    return found


def _mapped(pid: int, mountpoint: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        parts = line.rstrip("\n").split(maxsplit=5)
        if len(parts) == 6 and _inside(parts[5], mountpoint):
            paths.append(parts[5])
    return paths


def find(mountpoint: str, exclude: tuple[int, ...] = ()) -> list[Holder]:
    """Every process (but ``exclude`` and this one) with something open in the mount at ``mountpoint``."""
    skip = {os.getpid(), *exclude}
    target = mount_id(mountpoint)
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        paths: list[str] = []
        for path, how, mnt in _links(pid):
            held = mnt == target if target is not None and mnt is not None else _inside(path, mountpoint)
            if held and path + how not in paths:
                paths.append(path + how)
        for path in _mapped(pid, mountpoint):
            if path not in paths and path + " (mapped)" not in paths:
                paths.append(path + " (mapped)")
        if paths:
            holders.append(Holder(pid, _command(pid), paths))
    return holders
