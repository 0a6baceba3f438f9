"""The verbs of a mounted vault and of a locked vault's trips to a remote.

mount, lock/unmount, run, status and login-unit hand over to vaultfs.fuse, run.py,
status.py and units.py; push, pull and sync to vaultfs.remote (rclone).  Each is a thin
``cmd_<verb>`` that imports its module only when the verb runs.
"""

from __future__ import annotations

import argparse


def cmd_mount(args: argparse.Namespace) -> int:
    from vaultfs.fuse import mount
    from vaultfs.remote import mounthook

    if mounthook.remote_source(args.backing) is not None:  # REMOTE:PATH: rclone's mount underneath
        return mounthook.mount_remote(args, mount.cmd_mount)
    return mount.cmd_mount(args)


def cmd_lock(args: argparse.Namespace) -> int:
    from vaultfs.fuse import lock as mountlock
    from vaultfs.remote import mounthook

    with mounthook.locking(args.mountpoint):  # a remote mount: rclone goes down after the vault, uploads done
        return mountlock.cmd_lock(args)


# ---- remote storage through rclone (vaultfs/remote/, docs/remote.md) -----------------

def cmd_push(args: argparse.Namespace) -> int:
    from vaultfs.remote import rclone, report, transfer

    remote = rclone.remote_of(args.remote)
    print("\n".join(report.pushed(transfer.push(args.backing, remote, delete=args.delete), args.backing, remote)))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from vaultfs.remote import rclone, report, transfer

    remote = rclone.remote_of(args.remote)
    result = transfer.pull(remote, args.backing, delete=args.delete)
    print("\n".join(report.pulled(result, remote, args.backing, args.delete)))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from vaultfs.remote import bisync, rclone, report

    remote = rclone.remote_of(args.remote)
    print("\n".join(report.synced(bisync.sync(args.backing, remote, force=args.force), args.backing, remote)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vaultfs import run

    return run.cmd_run(args)


def cmd_status(args: argparse.Namespace) -> int:
    from vaultfs import status

    return status.cmd_status(args)


def cmd_login_unit(args: argparse.Namespace) -> int:
    from vaultfs import units

    return units.cmd_login_unit(args)
