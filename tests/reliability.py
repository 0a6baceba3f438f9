"""Knobs and helpers shared by the reliability tests (marked slow; bounded for CI).

``VAULTFS_SLOW_SCALE`` (default 1) multiplies sizes, counts and durations, so the
same tests run much longer by hand: ``VAULTFS_SLOW_SCALE=20 scripts/test -m slow``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SCALE = max(1, int(os.environ.get("VAULTFS_SLOW_SCALE", "1")))


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: scripts/test installs it (apt-get install {tool})")


def daemon_pid(mountpoint: Path) -> int:
    """The pid of the vaultfs daemon serving ``mountpoint`` (from its state file)."""
    from vaultfs.fuse import state as mountstate

    state = mountstate.load_state(str(mountpoint))
    assert state is not None and state.pid, f"no daemon state for {mountpoint}"
    return state.pid


def wait_for(predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run(*args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        output = result.stdout[-3000:] + "\n" + result.stderr[-3000:]
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}\n{output}")
    return result
