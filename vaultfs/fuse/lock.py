"""``vaultfs lock``: refuse a busy mount (or cut it off with ``--force``), unmount, wait, seal.

Split from mount.py (which starts mounts); both share the state file of state.py.

The behaviour, as the README table and docs/mount.md say it:

- By default ``lock`` never cuts anything off: if a process holds a file, a working
  directory or a memory map in the mount, it refuses with exit 13 and names each one
  (pid, command, paths).  ``fusermount3 -u`` (not lazy) is the final arbiter: if it
  reports the mount busy although the scan saw nobody (another user's process, another
  mount namespace), ``lock`` refuses as well.
- ``lock --force`` names the same processes, then has the daemon detach the mount
  lazily (SIGTERM): it closes every open file through the vault, flushing it, and
  exits; the processes get ENOTCONN from then on.
- Either way the daemon logs who locked and what was cut off (activity.ended); a
  stale mount of a daemon that died is removed and logged by ``lock`` itself.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import time
from typing import Any

from vaultfs import errors
from vaultfs.fuse import holders, seal
from vaultfs.fuse.mount import fail_closed, fusermount
from vaultfs.fuse.state import (
    FUSE_TYPE,
    MountState,
    canonical,
    daemon_alive,
    load_state,
    mount_stack,
    mounts_below,
    remove_state,
    save_ending,
    take_ending,
    vaultfs_mounted,
)

log = logging.getLogger(__name__)

EXIT_TIMEOUT = 120.0  # seconds `lock` waits for the daemon to flush and exit


def terminate(state: MountState) -> None:
    """SIGTERM to the daemon: libfuse detaches the mount, the daemon flushes and exits."""
    if state.pid and state.pid > 0 and daemon_alive(state):
        os.kill(state.pid, signal.SIGTERM)


def wait_exit(state: MountState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while daemon_alive(state):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def busy_error(mountpoint: str, found: list[holders.Holder], reason: str = "") -> errors.LockError:
    if found:
        who = "; ".join(h.describe() for h in found)
    else:
        inside = mounts_below(mountpoint)
        who = (f"{', '.join(inside)} is mounted inside it" if inside else
               f"held by a process vaultfs cannot see ({reason or 'busy'})")
    return errors.LockError(f"{mountpoint} is busy: {who}. Close them, or `vaultfs lock --force {mountpoint}` "
                            "cuts them off (open files are flushed first)")


def _log_without_daemon(state: MountState | None, message: str) -> None:
    """The daemon is dead, so ``lock`` writes the record to the daemon's log itself."""
    handler: logging.Handler | None = None
    try:
        if state is not None and state.log == "syslog":
            handler = logging.handlers.SysLogHandler(address="/dev/log")
            handler.setFormatter(logging.Formatter(f"vaultfs[{os.getpid()}]: %(levelname)s %(name)s: %(message)s"))
        elif state is not None and state.log:
            handler = logging.FileHandler(state.log, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    except OSError:
        handler = None
    if handler is None:
        return
    record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, None, None)
    with contextlib.suppress(OSError):
        handler.handle(record)
    handler.close()


def lock(mountpoint: str, force: bool = False, by: str = "lock") -> list[str]:
    """Lock the vault mounted at ``mountpoint``; return the lines to show.  Raises LockError."""
    state = load_state(mountpoint)
    alive = daemon_alive(state)
    stack = mount_stack(mountpoint)
    ours = bool(stack) and stack[-1][0] == FUSE_TYPE
    if stack and not ours and stack[-1] != ("tmpfs", seal.SEAL_SOURCE):
        raise errors.LockError(f"{mountpoint} is not a vaultfs mount")
    if not ours and not alive:
        if state is None and not seal.inspect(mountpoint).any:
            raise errors.LockError(f"nothing is mounted at {mountpoint}")
        how = fail_closed(mountpoint)
        remove_state(mountpoint)
        return [f"vaultfs: {mountpoint} is already locked ({how})"]
    cut: list[str] = []
    if ours and alive:
        assert state is not None
        found = holders.find(mountpoint, exclude=(state.pid or 0,))
        if found and not force:
            raise busy_error(mountpoint, found)
        cut = [h.describe() for h in found]
        save_ending(mountpoint, {"by": by, "pid": os.getpid(), "cut_off": cut})
        result = fusermount("-u", mountpoint=mountpoint)  # the kernel flushes dirty pages first
        if result.returncode != 0:
            if not force:
                take_ending(mountpoint)
                raise busy_error(mountpoint, holders.find(mountpoint, exclude=(state.pid or 0,)),
                                 result.stderr.strip())
            if not cut:
                cut = [f"a process vaultfs cannot see ({result.stderr.strip() or 'busy'})"]
                save_ending(mountpoint, {"by": by, "pid": os.getpid(), "cut_off": cut})
            terminate(state)  # lazy detach: the daemon closes (flushes) every open file, then exits
    elif alive:  # detached already, still closing
        assert state is not None
        save_ending(mountpoint, {"by": by, "pid": os.getpid(), "cut_off": []})
        terminate(state)
    if state is not None and not wait_exit(state, EXIT_TIMEOUT):
        raise errors.LockError(f"the vaultfs daemon (pid {state.pid}) did not exit within {EXIT_TIMEOUT:.0f} s")
    lines = []
    if vaultfs_mounted(mountpoint):  # the daemon died (kill -9) or never got to unmount
        cut = [h.describe() for h in holders.find(mountpoint)]
        result = fusermount("-u", "-z", mountpoint=mountpoint)
        if result.returncode != 0 and vaultfs_mounted(mountpoint):
            raise errors.LockError(f"could not remove the mount at {mountpoint}: {result.stderr.strip()}")
        how = fail_closed(mountpoint)
        what = "; ".join(cut) if cut else "nothing was open"
        _log_without_daemon(state, f"removed the stale mount at {mountpoint} (its daemon had died; {by}, "
                                   f"pid {os.getpid()}); cut off: {what}; mountpoint {how}")
        lines.append(f"vaultfs: removed a stale mount at {mountpoint} (its daemon had died)")
    else:
        fail_closed(mountpoint)  # the daemon did it; again in case it could not
    remove_state(mountpoint)
    if cut:
        lines.append(f"vaultfs: cut off {len(cut)}: " + "; ".join(cut))
    lines.append(f"vaultfs: locked {mountpoint}")
    return lines


def cmd_lock(args: Any) -> int:
    force = bool(getattr(args, "force", False))
    for line in lock(canonical(args.mountpoint), force=force, by="lock --force" if force else "lock"):
        print(line, flush=True)
    return 0
