"""``vaultfs lock``: flush, unmount, wait for the daemon, clean a stale mount, fail closed.

Split from mount.py (which starts mounts); both share the state file of state.py.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from vaultfs import errors
from vaultfs.fuse.mount import DEFAULT_MODE, fail_closed, finish, fusermount
from vaultfs.fuse.state import MountState, canonical, daemon_alive, load_state, mounted, vaultfs_mounted

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


def cmd_lock(args: Any) -> int:
    mountpoint = canonical(args.mountpoint)
    state = load_state(mountpoint)
    alive = daemon_alive(state)
    if mounted(mountpoint) and not vaultfs_mounted(mountpoint):
        raise errors.LockError(f"{mountpoint} is not a vaultfs mount")
    is_mounted = vaultfs_mounted(mountpoint)
    if not is_mounted and not alive:
        if state is None:
            raise errors.LockError(f"nothing is mounted at {mountpoint}")
        fail_closed(mountpoint)
        print(f"vaultfs: {mountpoint} is already locked", flush=True)
        return 0
    if is_mounted and alive:
        assert state is not None
        result = fusermount("-u", mountpoint=mountpoint)  # the kernel flushes dirty pages first
        if result.returncode != 0:
            # Busy (a file or cwd is open in it): the daemon detaches the mount lazily,
            # closes every file through the vault (flushing them) and exits.
            log.info("unmount failed (%s); asking the daemon to detach", result.stderr.strip())
            terminate(state)
    elif alive:  # detached already, still closing
        assert state is not None
        terminate(state)
    if state is not None and not wait_exit(state, EXIT_TIMEOUT):
        raise errors.LockError(f"the vaultfs daemon (pid {state.pid}) did not exit within {EXIT_TIMEOUT:.0f} s")
    if vaultfs_mounted(mountpoint):  # the daemon died (kill -9) or never got to unmount
        result = fusermount("-u", "-z", mountpoint=mountpoint)
        if result.returncode != 0 and vaultfs_mounted(mountpoint):
            raise errors.LockError(f"could not remove the mount at {mountpoint}: {result.stderr.strip()}")
        print(f"vaultfs: removed a stale mount at {mountpoint}", flush=True)
    if state is None:
        state = MountState(mountpoint=mountpoint, backing="", mode=DEFAULT_MODE)
    finish(state)
    print(f"vaultfs: locked {mountpoint}", flush=True)
    return 0
