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
import os
from collections.abc import Iterator

from vaultfs.errors import AlreadyExists, DifferentVault, NotAVault, VaultBusy, VaultError
from vaultfs.format import keyfile
from vaultfs.fuse import state as mountstate
from vaultfs.remote import rclone
from vaultfs.remote.rclone import Remote
from vaultfs.remote.rules import PULL_STAGING, STALE_CONFIG


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
    """The mountpoint where ``backing`` is mounted now, or None (the mount's state files say)."""
    real = os.path.realpath(backing)
    for state in mountstate.all_states():
        if state.backing and os.path.realpath(state.backing) == real and (
                mountstate.daemon_alive(state) or mountstate.vaultfs_mounted(state.mountpoint)):
            return state.mountpoint
    return None


def _refuse_mounted(backing: str, where: str | None) -> VaultBusy:
    at = f" at {where}; lock it first (vaultfs lock {where})" if where else "; lock it first"
    return VaultBusy(f"{backing} is mounted{at}, so that no half-written file leaves the machine")


@contextlib.contextmanager
def exclusive(backing: str) -> Iterator[None]:
    """Hold the backing dir for one push, pull or sync: not mounted now, not mountable meanwhile.

    A mount daemon holds an flock on its backing directory until it exits (fuse/serve.py
    claim_backing); taking the same flock here refuses a mounted vault and keeps a
    mount from starting in the middle of a transfer.  A lock file in the state dir also
    covers a backing dir that does not exist yet (a first pull).
    """
    digest = hashlib.sha256(os.path.realpath(backing).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    fds = [os.open(os.path.join(state_dir(), f"{digest}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)]
    try:
        try:
            fcntl.flock(fds[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaultBusy(f"another push, pull or sync of {backing} is running") from None
        if (where := mounted_at(backing)) is not None:
            raise _refuse_mounted(backing, where)
        if os.path.isdir(backing):
            fds.append(os.open(backing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            try:
                fcntl.flock(fds[1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _refuse_mounted(backing, None) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)


def local_vault_id(backing: str) -> bytes | None:
    """The vault ID in BACKING's vaultfs.conf; None for a missing or empty dir; NotAVault otherwise."""
    if not os.path.isdir(backing):
        if os.path.lexists(backing):
            raise NotAVault(f"{backing} is not a directory")
        return None
    if not os.path.lexists(os.path.join(backing, keyfile.CONFIG_NAME)):
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


def drop_stale_config(remote: Remote) -> None:
    """An older vaultfs kept the previous config as vaultfs.conf.bak: on the remote it would keep an old
    password working after ``passwd`` (issue 11), so push and sync delete it there."""
    rclone.run(["delete", remote.text, "--max-depth", "1", "--filter", f"+ /{STALE_CONFIG}", "--filter", "- **"],
               ok_codes=(0, *rclone.NOT_FOUND_CODES))


def check_same_vault(local_id: bytes | None, remote_id: bytes | None, backing: str, remote: Remote) -> None:
    if local_id is not None and remote_id is not None and local_id != remote_id:
        raise DifferentVault(f"{remote} holds another vault than {backing} "
                             f"(vault IDs {remote_id.hex()[:12]}... and {local_id.hex()[:12]}...)")
