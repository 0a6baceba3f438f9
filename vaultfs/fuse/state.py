"""Where vaultfs remembers its mounts: state files, the mount table, live daemons.

One small JSON file per live mount under the runtime directory (``/run/vaultfs`` for
root, ``$XDG_RUNTIME_DIR/vaultfs`` or ``/tmp/vaultfs-UID`` otherwise;
``VAULTFS_RUN_DIR`` overrides) holds the daemon's pid and start time, so that a
recycled pid is never signalled and a zombie counts as exited, where the daemon logs,
and what the daemon last reported about itself (open files, last access: what
``vaultfs status`` shows).  The daemon removes it when the mount ends; ``lock`` removes
the one of a daemon that died; ``mount`` and ``status`` prune files whose daemon is gone
and whose mount is gone too, so they never pile up.

``lock`` leaves a second, short-lived file for the daemon (``<hash>.ending.json``):
who ended the mount and which processes it cut off, for the daemon's last log line.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

FUSE_TYPE = "fuse.vaultfs"


@dataclass
class MountState:
    mountpoint: str
    backing: str
    pid: int | None = None
    start: str | None = None  # /proc/PID/stat start time: guards against pid reuse
    started: float | None = None  # time.time() when the mount answered
    log: str | None = None  # where the daemon logs: a file, "syslog", or None (its stderr)
    idle: float | None = None  # --idle, seconds
    read_only: bool = False
    # reported by the running daemon (at most once a second, only when they change):
    last_access: float | None = None  # time.time() of the last FUSE request
    open_handles: int | None = None  # files the kernel holds open


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


def _read(path: str) -> MountState | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in fields(MountState)}
        return MountState(**{k: v for k, v in data.items() if k in known})  # older files: extra keys
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def load_state(mountpoint: str) -> MountState | None:
    state = _read(state_path(mountpoint))
    return state if state is not None and state.mountpoint == mountpoint else None


def all_states() -> list[MountState]:
    """Every state file of this user's runtime directory."""
    found = []
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir()), "*.json"))):
        if not path.endswith(".ending.json") and (state := _read(path)) is not None:
            found.append(state)
    return found


def remove_state(mountpoint: str) -> None:
    """The mount ended: its state file (and any ending note) go."""
    base = os.path.splitext(state_path(mountpoint))[0]
    for path in (base + ".json", base + ".ending.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def prune_states() -> None:
    """Remove state files whose daemon is gone and whose mount is gone as well."""
    for state in all_states():
        if not daemon_alive(state) and not vaultfs_mounted(state.mountpoint):
            remove_state(state.mountpoint)


def save_ending(mountpoint: str, note: dict[str, Any]) -> None:
    """``lock`` tells the daemon who ends the mount and what was cut off (it logs that)."""
    path = os.path.splitext(state_path(mountpoint))[0] + ".ending.json"
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(note, f)
    os.replace(tmp, path)


def take_ending(mountpoint: str) -> dict[str, Any] | None:
    path = os.path.splitext(state_path(mountpoint))[0] + ".ending.json"
    try:
        with open(path, encoding="utf-8") as f:
            note = json.load(f)
        os.unlink(path)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


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


def mount_table() -> list[tuple[str, str, str]]:
    """(mountpoint, type, source) of every mount in this namespace, in mount order."""
    table = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and "-" in parts:
                sep = parts.index("-")
                source = _unescape(parts[sep + 2]) if len(parts) > sep + 2 else ""
                table.append((_unescape(parts[4]), parts[sep + 1], source))
    return table


def mount_id(mountpoint: str) -> int | None:
    """The ID (mountinfo's first field, fdinfo's ``mnt_id``) of the mount on top at mountpoint."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and _unescape(parts[4]) == mountpoint:
                found = int(parts[0])
    return found


def fuse_owner(mountpoint: str) -> int | None:
    """The uid a FUSE mount belongs to (its ``user_id=`` option), None if unknown."""
    owner = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and _unescape(parts[4]) == mountpoint and "-" in parts:
                for option in parts[-1].split(","):
                    if option.startswith("user_id=") and option[8:].isdigit():
                        owner = int(option[8:])
    return owner


def mount_stack(mountpoint: str) -> list[tuple[str, str]]:
    """(type, source) of the mounts exactly at mountpoint, bottom first (dead FUSE mounts too)."""
    return [(kind, source) for where, kind, source in mount_table() if where == mountpoint]


def mount_type(mountpoint: str) -> str | None:
    """File system type on top at mountpoint, or None."""
    stack = mount_stack(mountpoint)
    return stack[-1][0] if stack else None


def mounts_below(mountpoint: str) -> list[str]:
    """Mountpoints strictly inside ``mountpoint`` (they keep it busy)."""
    prefix = mountpoint.rstrip("/") + "/"
    return [where for where, _, _ in mount_table() if where.startswith(prefix)]


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
