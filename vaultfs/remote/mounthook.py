"""What the mount lifecycle sees of remote mounts: three small hooks.

- ``vaultfs mount REMOTE:PATH MOUNTPOINT`` (cli/mount_verbs.py cmd_mount): ``mount_remote`` brings
  rclone's mount up, then runs the ordinary mount on its directory.
- ``vaultfs lock MOUNTPOINT`` (cli/mount_verbs.py cmd_lock): ``locking`` marks the lock in progress,
  and once the vault is locked waits for rclone's uploads and stops it, on the user's
  terminal; exit 26 if the uploads stopped moving (they resume at the next mount).
- the end of every vaultfs mount (fuse/mount.py ``finish``): ``after_unmount`` stops
  rclone after an idle lock, a signal or a foreground mount, unless a lock does it.

A source is a remote only when the part before ``:`` is a remote in rclone's config,
so a local directory named ``a:b`` mounts as before.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from vaultfs.errors import LockError, MountError, NotAVault, UploadPending
from vaultfs.fuse.state import canonical, daemon_alive, load_state, vaultfs_mounted
from vaultfs.remote import guard, rclone, rmount
from vaultfs.remote.rclone import Remote

log = logging.getLogger(__name__)


def remote_source(source: str) -> Remote | None:
    return rclone.remote_or_none(source)


def _say(text: str) -> None:
    print(f"vaultfs: {text}", file=sys.stderr, flush=True)


def start_rclone(args: Any) -> rmount.Record:
    """Checks, then rclone's mount of REMOTE:PATH (``args.backing``) under ``args.mountpoint``."""
    remote = rclone.remote_of(args.backing)
    mountpoint = canonical(args.mountpoint)
    if vaultfs_mounted(mountpoint):  # never touch the rclone mount under a live vault
        raise MountError(f"{mountpoint} is already mounted")
    if guard.remote_vault_id(remote) is None:
        raise NotAVault(f"{remote} holds no vault (no vaultfs.conf)")
    return rmount.start(remote, mountpoint, args.upload_timeout, args.read_only, say=_say)


def mount_remote(args: Any, mount_command: Callable[[Any], int]) -> int:
    """rclone's mount of REMOTE:PATH first, then the vault on top of it; rclone goes down on failure."""
    record = start_rclone(args)
    args.backing = record.directory
    try:
        code = mount_command(args)
    except BaseException:
        rmount.stop(record, say=_say)
        raise
    if not args.foreground:
        print(f"vaultfs: the backing dir is rclone's mount of {record.remote} (cache {record.cache_dir}); "
              "`vaultfs lock` waits for its uploads", flush=True)
    return code


@contextlib.contextmanager
def locking(mountpoint_arg: str, give_up: Callable[[], bool] | None = None) -> Iterator[None]:
    """Around ``lock``: afterwards the rclone mount under this mountpoint goes down, uploads done.

    ``give_up()`` true ends the wait for the uploads early (``vaultfs run`` got a signal):
    that is reported like uploads that stopped moving (exit 26).
    """
    mountpoint = canonical(mountpoint_arg)
    record = rmount.load(mountpoint)
    if record is None:
        yield
        return
    rmount.mark_locking(record)
    try:
        yield
    except LockError:
        if vaultfs_mounted(mountpoint) or daemon_alive(load_state(mountpoint)):
            rmount.unmark_locking(record)  # the vault still runs on top of rclone: leave both
            raise
        _stop(record, give_up)
        raise
    _stop(record, give_up)


def _stop(record: rmount.Record, give_up: Callable[[], bool] | None = None) -> None:
    pending = rmount.stop(record, say=_say, give_up=give_up)
    if pending:
        why = ("the wait was interrupted by a signal" if give_up is not None and give_up() else
               f"nothing moved for {record.upload_timeout:.0f} s")
        raise UploadPending(f"{pending} file(s) not uploaded to {record.remote}: {why}; they stay in rclone's cache "
                            f"({record.cache_dir}) and are uploaded the next time you mount {record.remote}")
    print(f"vaultfs: rclone uploaded everything to {record.remote} and stopped", flush=True)


def after_unmount(mountpoint: str) -> None:
    """The vault at ``mountpoint`` was unmounted: stop its rclone mount unless a lock is doing it."""
    record = rmount.load(mountpoint)
    if record is None or rmount.locking_now(record):
        return
    pending = rmount.stop(record, say=log.info)
    if pending:
        log.warning("%d file(s) not uploaded to %s (no progress for %.0f s); rclone uploads them at the next mount",
                    pending, record.remote, record.upload_timeout)
    else:
        log.info("rclone uploaded everything to %s and stopped", record.remote)
