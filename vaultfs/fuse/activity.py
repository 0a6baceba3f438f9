"""What a running daemon tells the world: its status report, and its last log line.

``vaultfs status`` shows open files and the idle timer, which only the daemon knows.
The daemon's watcher (mount.idle_watch) writes them into the mount's state file, at
most once a second and only when they changed; ``status`` reads the file.  Why a file
and not a socket to ask the daemon: the state file already exists (pid guard), it is
private to the user (0700 directory), it needs no listener thread and no protocol to
secure, and ``status`` still works when the daemon is hung or dead (it then says so).
Named processes and files come from a /proc scan (holders.py), which the daemon
cannot do for a mount the kernel has already detached.

When the mount ends, :func:`ended` logs one line: who ended it (``lock``, ``lock
--force``, ``run``, the idle timer, or something outside vaultfs: umount, fusermount,
a signal) and what that cut off, then removes the state file.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from vaultfs.fuse.state import MountState, load_state, remove_state, save_state, take_ending

log = logging.getLogger(__name__)

_lock = threading.Lock()
_finished = False
_reported: tuple[int, int] | None = None
_open_handles: int | None = None
_idle_lock: float | None = None


def report(mountpoint: str, open_handles: int, last_access: float) -> None:
    """Publish open files and the last access (``time.monotonic()`` value) if they changed."""
    global _reported, _open_handles
    wall = time.time() - (time.monotonic() - last_access)
    key = (open_handles, round(wall))
    with _lock:
        _open_handles = open_handles
        if _finished or key == _reported:
            return
        state = load_state(mountpoint)
        if state is None or state.pid != os.getpid():
            return
        state.open_handles, state.last_access = open_handles, wall
        try:
            save_state(state)
        except OSError as exc:
            log.debug("status report not written: %s", exc)
            return
        _reported = key


def idle_locked(idle: float | None) -> None:
    """The idle timer is unmounting the vault (None: it could not, something is busy)."""
    global _idle_lock
    _idle_lock = idle


def ended(state: MountState, sealed: str) -> None:
    """The mount is gone: stop reporting, log who ended it and what it cut off, drop the state file."""
    global _finished
    with _lock:
        _finished = True
    note = take_ending(state.mountpoint)
    where = f"{state.mountpoint} ({state.backing})"
    if note is not None:
        cut = note.get("cut_off") or []
        by = f"{note.get('by', 'lock')}, pid {note.get('pid', '?')}"
        if cut:
            log.warning("locked %s by %s; cut off: %s; mountpoint %s", where, by, "; ".join(cut), sealed)
        else:
            log.info("locked %s by %s; nothing was open; mountpoint %s", where, by, sealed)
    elif _idle_lock is not None:
        log.info("locked %s after %.0f s idle; nothing was open; mountpoint %s", where, _idle_lock, sealed)
    else:
        count = "unknown" if _open_handles is None else str(_open_handles)
        log.warning("%s was unmounted outside vaultfs lock (umount, fusermount -u or a signal); "
                    "files open at the last check (closed and flushed): %s; mountpoint %s", where, count, sealed)
    remove_state(state.mountpoint)
