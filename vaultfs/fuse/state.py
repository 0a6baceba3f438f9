"""Where vaultfs remembers its mounts: state files, the mount table, live daemons.

One small JSON file per mountpoint under the runtime directory (``/run/vaultfs`` for
root, ``$XDG_RUNTIME_DIR/vaultfs`` or ``/tmp/vaultfs-UID`` otherwise;
``VAULTFS_RUN_DIR`` overrides) holds the daemon's pid and start time, so that a
recycled pid is never signalled and a zombie counts as exited, and the mountpoint's
mode from before it was locked, so that ``mount`` can restore it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass

FUSE_TYPE = "fuse.vaultfs"


@dataclass
class MountState:
    mountpoint: str
    backing: str
    mode: int  # mountpoint mode to restore on the next mount
    pid: int | None = None
    start: str | None = None  # /proc/PID/stat start time: guards against pid reuse


def run_dir() -> str:
    """Where state files live (created 0700 on demand)."""
    if env := os.environ.get("VAULTFS_RUN_DIR"):
        return env
    if os.geteuid() == 0:
        return "/run/vaultfs"
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(xdg, "vaultfs")
    return f"/tmp/vaultfs-{os.geteuid()}"


def canonical(mountpoint: str) -> str:
    """Absolute path with the parent resolved; the last part is not followed (it may be a dead mount)."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def state_path(mountpoint: str) -> str:
    digest = hashlib.sha256(mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(run_dir(), f"{digest}.json")


def load_state(mountpoint: str) -> MountState | None:
    try:
        with open(state_path(mountpoint), encoding="utf-8") as f:
            data = json.load(f)
        state = MountState(**data)
    except (OSError, ValueError, TypeError):
        return None
    return state if state.mountpoint == mountpoint else None


def save_state(state: MountState) -> None:
    """Write atomically so `lock` never reads half a file."""
    directory = run_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = state_path(state.mountpoint)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f)
    os.replace(tmp, path)


def process_start(pid: int) -> str | None:
    """Start time of a live (non-zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def daemon_alive(state: MountState | None) -> bool:
    return bool(state and state.pid and state.start and process_start(state.pid) == state.start)


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_type(mountpoint: str) -> str | None:
    """File system type mounted exactly at mountpoint, or None (works for dead FUSE mounts too)."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == mountpoint:
                found = fields[fields.index("-") + 1]  # the last one mounted there wins
    return found


def mount_sources() -> list[tuple[str, str, str]]:
    """(source, mountpoint, type) of every mount in this namespace (vaultfs mounts: source vaultfs:BACKING)."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and "-" in fields:
                sep = fields.index("-")
                if len(fields) > sep + 2:
                    found.append((_unescape(fields[sep + 2]), _unescape(fields[4]), fields[sep + 1]))
    return found


def mounted(mountpoint: str) -> bool:
    return mount_type(mountpoint) is not None


def vaultfs_mounted(mountpoint: str) -> bool:
    """Only our own mounts may be unmounted by ``lock``: never someone else's file system."""
    return mount_type(mountpoint) == FUSE_TYPE


def is_stale(mountpoint: str) -> bool:
    """A FUSE mount whose daemon died answers ENOTCONN."""
    try:
        os.stat(mountpoint)
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False
