"""``vaultfs status [MOUNTPOINT|BACKING] [--json]``: mounted or locked, and what the daemon is doing.

Sources, none of which sends a request through the mount (a hung daemon cannot hang
``status``): the kernel's mount table (/proc/self/mountinfo), the daemon's state file
(pid, start time, what it last reported: open files, last access; see activity.py for
why a file), a /proc scan for the processes holding the mount (holders.py), and the
seal on a locked mountpoint.

A remote mount (``vaultfs mount REMOTE:PATH``) shows the remote as the vault, and rclone's
mount underneath: its pid, mount dir, cache dir and the uploads it still has queued (asked
of its remote control, with a short timeout; "unknown" if it does not answer).

Exit codes: 0 mounted, 16 locked (not mounted), 17 stale (the mount is there but its
daemon died, or on a remote mount rclone did: ``vaultfs lock`` cleans it up), 5 for a path that is neither a vault nor a
vaultfs mountpoint.  Without an argument: every vaultfs mount of this user (everyone's
for root), 0 if any is mounted (17 if any is stale), else 16.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from vaultfs import errors
from vaultfs.fuse import holders, seal
from vaultfs.fuse.state import (
    FUSE_TYPE,
    MountState,
    all_states,
    canonical,
    daemon_alive,
    fuse_owner,
    is_stale,
    load_state,
    mount_stack,
    mount_table,
    prune_states,
)

EXIT_MOUNTED = 0
EXIT_LOCKED = 16
EXIT_STALE = 17
SOURCE_PREFIX = "vaultfs:"  # the mount's fsname names its backing dir


RC_TIMEOUT = 2.0  # seconds for rclone's remote control to answer status


@dataclass
class RcloneMount:
    """rclone's mount under a remote vault mount, as its record and its remote control say."""

    remote: str
    pid: int | None
    running: bool
    mount: str
    cache_dir: str
    log: str
    upload_timeout: float
    uploads_pending: int | None = None  # queued, uploading or dirty; None if rc did not answer

    def as_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "pid": self.pid, "running": self.running, "mount": self.mount,
                "cache_dir": self.cache_dir, "log": self.log, "upload_timeout": self.upload_timeout,
                "uploads_pending": self.uploads_pending}

    def lines(self) -> list[str]:
        state = f"pid {self.pid}" if self.running else f"not running (pid {self.pid} is gone)"
        if not self.running:
            uploads = f"unknown: rclone is not running; its cache keeps what it did not upload ({self.cache_dir})"
        elif self.uploads_pending is None:
            uploads = "unknown (rclone's remote control does not answer)"
        else:
            uploads = f"{self.uploads_pending} file(s) queued or uploading" if self.uploads_pending else "none queued"
        return [f"  rclone:       {state}, mount {self.mount}",
                f"  rclone cache: {self.cache_dir}",
                f"  uploads:      {uploads}"]


def rclone_mount(mountpoint: str) -> RcloneMount | None:
    """rclone's mount under ``mountpoint``, if it is a remote mount."""
    from vaultfs.remote import rmount

    record = rmount.load(mountpoint)
    if record is None:
        return None
    found = RcloneMount(record.remote, record.pid, rmount.alive(record), record.directory, record.cache_dir,
                        record.log, record.upload_timeout)
    if found.running:
        try:
            found.uploads_pending = rmount.pending_uploads(record, timeout=RC_TIMEOUT)[0]
        except (OSError, ValueError):
            found.uploads_pending = None
    return found


@dataclass
class Status:
    state: str  # "mounted", "locked" or "stale"
    mountpoint: str | None
    backing: str | None
    pid: int | None = None
    since: float | None = None
    read_only: bool | None = None
    open_handles: int | None = None  # as the daemon last reported
    holders: list[holders.Holder] = field(default_factory=list)
    idle: float | None = None
    idle_for: float | None = None
    seal: str | None = None
    remote: RcloneMount | None = None  # a remote mount: rclone's mount underneath

    @property
    def exit_code(self) -> int:
        return {"mounted": EXIT_MOUNTED, "stale": EXIT_STALE}.get(self.state, EXIT_LOCKED)

    @property
    def locks_in(self) -> float | None:
        """Seconds until the idle lock, None without one or while something is open."""
        if self.idle is None or self.idle_for is None or self.open_handles or self.holders:
            return None
        return max(0.0, self.idle - self.idle_for)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state, "mountpoint": self.mountpoint, "backing": self.backing, "pid": self.pid,
            "since": self.since, "read_only": self.read_only, "open_handles": self.open_handles,
            "holders": [h.as_dict() for h in self.holders],
            "idle": None if self.idle is None else
            {"timeout": self.idle, "idle_for": self.idle_for, "locks_in": self.locks_in},
            "seal": self.seal, "remote": None if self.remote is None else self.remote.as_dict(),
        }  # fmt: skip


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h " if hours else "") + (f"{minutes}m " if hours or minutes else "") + f"{secs}s"


def lines(status: Status) -> list[str]:
    """The human form."""
    name = status.mountpoint or status.backing
    if status.state == "locked":
        where = f"sealed: {status.seal}" if status.seal else "not mounted"
        head = [f"{name}: locked ({where})"]
        return head + ([f"  backing dir:  {status.backing}"] if status.backing and status.mountpoint else [])
    died = "rclone died under it" if status.remote is not None and not status.remote.running else "its daemon died"
    out = [f"{name}: {status.state}" + (f" ({died}; `vaultfs lock` removes the mount)"
                                        if status.state == "stale" else "")]
    if status.remote is not None:
        out.append(f"  remote:       {status.remote.remote} (rclone's mount is the backing dir)")
    else:
        out.append(f"  backing dir:  {status.backing or 'unknown'}")
    if status.mountpoint and status.backing == name:
        out.append(f"  mountpoint:   {status.mountpoint}")
    if status.pid:
        since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(status.since)) if status.since else ""
        out.append(f"  daemon:       pid {status.pid}{since}" + (", read-only" if status.read_only else ""))
    count = max(status.open_handles or 0, len(status.holders))
    held = "; ".join(h.describe() for h in status.holders)
    out.append(f"  open files:   {count}" + (f" ({held})" if held else ""))
    if status.idle is None:
        out.append("  idle lock:    none")
    else:
        text = f"after {_duration(status.idle)}"
        if status.idle_for is not None:
            text += f"; idle for {_duration(status.idle_for)}"
        locks_in = status.locks_in
        text += f"; locks in {_duration(locks_in)}" if locks_in is not None else "; waits until nothing is open"
        out.append(f"  idle lock:    {text}")
    if status.remote is not None:
        out += status.remote.lines()
    return out


def _backing_from_table(mountpoint: str) -> str | None:
    for kind, source in reversed(mount_stack(mountpoint)):
        if kind == FUSE_TYPE and source.startswith(SOURCE_PREFIX):
            return source[len(SOURCE_PREFIX):]
    return None


def of_mountpoint(mountpoint: str) -> Status | None:
    """The status of a mountpoint, None if vaultfs knows nothing about it."""
    state = load_state(mountpoint)
    stack = mount_stack(mountpoint)
    backing = state.backing if state else _backing_from_table(mountpoint)
    if stack and stack[-1][0] == FUSE_TYPE:
        remote = rclone_mount(mountpoint)
        if remote is not None:
            backing = remote.remote  # the vault is REMOTE:PATH, not rclone's directory
        if remote is not None and not remote.running:  # the vault's daemon may live on, over nothing
            status = _mounted(mountpoint, backing, state)
            status.state, status.remote = "stale", remote
            return status
        if is_stale(mountpoint) or (state is not None and not daemon_alive(state)):
            return Status("stale", mountpoint, backing, holders=holders.find(mountpoint), remote=remote)
        status = _mounted(mountpoint, backing, state)
        status.remote = remote
        return status
    sealed = seal.inspect(mountpoint)
    if state is None and not sealed.any:
        return None
    return Status("locked", mountpoint, backing, seal=sealed.describe() if sealed.any else None)


def _mounted(mountpoint: str, backing: str | None, state: MountState | None) -> Status:
    status = Status("mounted", mountpoint, backing)
    exclude: tuple[int, ...] = ()
    if state is not None and daemon_alive(state):
        exclude = (state.pid or 0,)
        status.pid, status.since, status.read_only = state.pid, state.started, state.read_only
        status.open_handles, status.idle = state.open_handles, state.idle
        if state.last_access is not None:
            status.idle_for = max(0.0, time.time() - state.last_access)
    status.holders = holders.find(mountpoint, exclude=exclude)
    return status


def _is_vault(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in ("vaultfs.conf", "vaultfs.conf.bak"))


def of_backing(backing: str) -> Status:
    found = [s.mountpoint for s in all_states() if s.backing == backing]
    found += [where for where, kind, source in mount_table()
              if kind == FUSE_TYPE and source == SOURCE_PREFIX + backing and where not in found]
    for mountpoint in found:
        status = of_mountpoint(mountpoint)
        if status is not None and status.state != "locked":
            status.backing = backing
            return status
    return Status("locked", None, backing)


def collect(target: str | None) -> list[Status]:
    prune_states()
    if target is None:
        mountpoints = [s.mountpoint for s in all_states()]
        mine = {None, os.geteuid()} if os.geteuid() else None  # root: everyone's
        mountpoints += [where for where, kind, _ in mount_table() if kind == FUSE_TYPE and where not in mountpoints
                        and (mine is None or fuse_owner(where) in mine)]
        return [s for m in mountpoints if (s := of_mountpoint(m)) is not None and s.state != "locked"]
    path = canonical(target)
    status = of_mountpoint(path)
    if status is not None:
        return [status]
    if _is_vault(os.path.abspath(target)):
        return [of_backing(os.path.abspath(target))]
    if not os.path.lexists(target):
        remote = of_remote(target)
        if remote is not None:
            return [remote]
    raise errors.NotAVault(f"{target} is neither a vault nor a vaultfs mountpoint")


def of_remote(text: str) -> Status | None:
    """``status REMOTE:PATH``: the remote mount serving it, or locked; None if ``text`` is no remote."""
    from vaultfs.remote import rclone, rmount

    if rclone.split_remote(text) is None or rclone.remote_or_none(text) is None:
        return None
    for record in rmount.all_records():
        if record.remote == text:
            status = of_mountpoint(record.mountpoint)
            if status is not None and status.state != "locked":
                return status
    return Status("locked", None, text)


def cmd_status(args: Any) -> int:
    found = collect(args.target)
    if args.json:
        payload: Any = [s.as_dict() for s in found] if args.target is None else found[0].as_dict()
        print(json.dumps(payload, indent=2, sort_keys=True))
    elif not found:
        print("vaultfs: no vault is mounted")
    else:
        for status in found:
            print("\n".join(lines(status)))
    if args.target is not None:
        return found[0].exit_code
    if any(s.state == "stale" for s in found):
        return EXIT_STALE
    return EXIT_MOUNTED if found else EXIT_LOCKED
