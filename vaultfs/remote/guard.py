"""Checks before a transfer: the vault is not mounted, not busy, and both sides are one vault.

A mounted vault has writes in flight (a file half rewritten, a directory half renamed),
so push, pull and sync refuse while it is mounted instead of waiting: a nightly job
locks, then pushes, and a transfer that waited for a mount that never ends would hang
the job.  The state files of vaultfs/fuse/state.py say which backing dir is mounted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator

from vaultfs.errors import AlreadyExists, DifferentVault, NotAVault, VaultBusy, VaultError
from vaultfs.format import keyfile
from vaultfs.fuse import state as mountstate
from vaultfs.remote import rclone
from vaultfs.remote.rclone import Remote
from vaultfs.remote.rules import PULL_STAGING


def state_dir() -> str:
    """Where transfers keep what they know between runs (never inside the backing dir)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    path = os.path.join(base, "vaultfs", "remote")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def pair_key(backing: str, remote: Remote) -> str:
    """A stable name for one (backing dir, remote) pair."""
    text = f"{os.path.realpath(backing)}\0{remote.text}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def mounted_at(backing: str) -> str | None:
    """The mountpoint where ``backing`` is mounted now, or None."""
    real = os.path.realpath(backing)
    try:
        names = os.listdir(mountstate.run_dir())
    except FileNotFoundError:
        return None
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(mountstate.run_dir(), name), encoding="utf-8") as f:
                data = json.load(f)
            mountpoint, where = str(data["mountpoint"]), str(data["backing"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not where or os.path.realpath(where) != real:
            continue
        state = mountstate.load_state(mountpoint)
        if mountstate.daemon_alive(state) or mountstate.vaultfs_mounted(mountpoint):
            return mountpoint
    return None


def check_not_mounted(backing: str) -> None:
    mountpoint = mounted_at(backing)
    if mountpoint is not None:
        raise VaultBusy(f"{backing} is mounted at {mountpoint}; lock it first (vaultfs lock {mountpoint}), "
                        "so that no half-written file leaves the machine")


@contextlib.contextmanager
def exclusive(backing: str) -> Iterator[None]:
    """One push, pull or sync at a time per backing dir."""
    digest = hashlib.sha256(os.path.realpath(backing).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    fd = os.open(os.path.join(state_dir(), f"{digest}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaultBusy(f"another push, pull or sync of {backing} is running") from None
        check_not_mounted(backing)
        yield
    finally:
        os.close(fd)


def local_vault_id(backing: str) -> bytes | None:
    """The vault ID in BACKING's vaultfs.conf; None for a missing or empty dir; NotAVault otherwise."""
    if not os.path.isdir(backing):
        if os.path.lexists(backing):
            raise NotAVault(f"{backing} is not a directory")
        return None
    if not os.path.lexists(os.path.join(backing, keyfile.CONFIG_NAME)) and not \
            os.path.lexists(os.path.join(backing, keyfile.BACKUP_NAME)):
        if any(name != PULL_STAGING for name in os.listdir(backing)):
            raise AlreadyExists(f"{backing} is not empty and holds no vault (no vaultfs.conf)")
        return None
    return keyfile.load_config(backing).vault_id


def remote_vault_id(remote: Remote) -> bytes | None:
    """The vault ID in the remote's vaultfs.conf, or None when it has none."""
    raw = rclone.cat(remote.child(keyfile.CONFIG_NAME), keyfile.MAX_CONFIG_BYTES)
    if raw is None:
        return None
    try:
        return keyfile.parse_config(raw).vault_id
    except VaultError as exc:
        raise NotAVault(f"{remote.child(keyfile.CONFIG_NAME)}: {exc.message}") from None


def check_same_vault(local_id: bytes | None, remote_id: bytes | None, backing: str, remote: Remote) -> None:
    if local_id is not None and remote_id is not None and local_id != remote_id:
        raise DifferentVault(f"{remote} holds another vault than {backing} "
                             f"(vault IDs {remote_id.hex()[:12]}... and {local_id.hex()[:12]}...)")
