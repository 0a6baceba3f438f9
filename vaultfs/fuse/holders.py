"""Which processes hold a mount: open files, working directories, memory maps (like fuser -m).

``lock`` names them when it refuses a busy mount and says whom ``--force`` cut off;
``status`` lists them as the mount's open files.  Read from /proc without touching the
mount itself: ``readlink`` of /proc/PID/fd/N never sends a request to the FUSE daemon,
so a hung or dead daemon cannot hang the scan.  A user sees their own processes, root
sees all of them (in this mount namespace).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

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


def _links(pid: int) -> list[tuple[str, str]]:
    """(path, how) for the process's cwd, root and open fds."""
    found = []
    for name, how in (("cwd", " (cwd)"), ("root", " (root)")):
        with contextlib.suppress(OSError):
            found.append((os.readlink(f"/proc/{pid}/{name}"), how))
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        with contextlib.suppress(OSError):
            found.append((os.readlink(f"/proc/{pid}/fd/{fd}"), ""))
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
    """Every process (but ``exclude`` and this one) with something open under ``mountpoint``."""
    skip = {os.getpid(), *exclude}
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        paths: list[str] = []
        for path, how in _links(pid):
            if _inside(path, mountpoint) and path + how not in paths:
                paths.append(path + how)
        for path in _mapped(pid, mountpoint):
            if path not in paths and path + " (mapped)" not in paths:
                paths.append(path + " (mapped)")
        if paths:
            holders.append(Holder(pid, _command(pid), paths))
    return holders
