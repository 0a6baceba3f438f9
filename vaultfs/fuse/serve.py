"""Serving an unlocked vault over FUSE with pyfuse3: mount options, the event loop, signals.

mount.py owns the lifecycle around it (mountpoint checks, unlock, daemon, state file);
this module owns what is specific to libfuse: whether FUSE can work at all, which mount
options a vault gets and why, and the pyfuse3/trio loop that runs until the mount goes
away (lock, idle, SIGTERM), after which the vault is closed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import threading
from typing import Any

from vaultfs import errors
from vaultfs.fuse import extra_ops  # first: the libfuse shim must be loaded before pyfuse3 (see there)
from vaultfs.fuse.state import FUSE_TYPE, mount_table

log = logging.getLogger(__name__)

READ_AHEAD = 1 << 20  # bytes the kernel reads ahead per request once the mount is up


def check_fuse() -> None:
    """Fail early, with the fix, where FUSE cannot work at all."""
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as e:
        raise errors.FuseUnavailable(f"/dev/fuse: {e.strerror}") from None
    os.close(fd)
    try:
        import pyfuse3  # noqa: F401 - the binding and libfuse3 behind it must load
    except ImportError as e:
        raise errors.FuseUnavailable(f"pyfuse3 cannot load libfuse3 ({e}); install fuse3 and libfuse3-dev") from None
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        raise errors.FuseUnavailable("fusermount3 not found")


def fsname(backing: str) -> str:
    """What `mount` and /proc/mounts show as the source: the vault's backing dir."""
    return f"vaultfs:{backing}"


def _escape(value: str) -> str:
    """libfuse splits options at commas; a backslash escapes one."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def fuse_options(args: Any, backing: str) -> set[str]:
    """The mount options of a vault (see docs/mount.md for each).

    ``allow_other`` (or ``allow_root``), however it is asked for, always comes with
    ``default_permissions``: other users must meet the kernel's mode checks, since the
    daemon itself may read everything.
    """
    options = {f"fsname={_escape(fsname(backing))}", "subtype=vaultfs"}
    for group in args.fuse_options or []:
        for item in filter(None, group.split(",")):
            if item.startswith(("fsname=", "subtype=")):
                raise errors.UsageError(f"-o {item}: vaultfs sets the mount's name and type itself")
            options.add(item)
    if args.allow_other:
        options.add("allow_other")
    if options & {"allow_other", "allow_root"}:
        options.add("default_permissions")
    if args.read_only:
        options.add("ro")
    return options


def mounted_backing(backing: str) -> str | None:
    """The mountpoint where this backing dir is mounted now, if any (from /proc/self/mountinfo)."""
    wanted = fsname(backing)
    for mountpoint, kind, source in mount_table():
        if kind == FUSE_TYPE and source == wanted:
            return mountpoint
    return None


SLOW_TYPES = ("fuse", "nfs", "cifs", "smb", "9p", "ceph", "glusterfs", "davfs")


def backing_is_slow(backing: str) -> bool:
    """Is the backing dir on a filesystem whose calls may wait on a network (rclone's mount, NFS ...)?"""
    real = os.path.realpath(backing)
    best, kind = "", ""
    for mountpoint, fstype, _ in mount_table():
        inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) >= len(best):
            best, kind = mountpoint, fstype
    return kind.split(".")[0].startswith(SLOW_TYPES)


def claim_backing(backing: str) -> int:
    """Refuse a second mount of one backing dir; return the fd whose lock marks it as mounted.

    Two daemons on one backing dir would each cache names and sizes the other changes,
    and the second one's writes would fail authentication. An flock on the backing
    directory, inherited by the daemon and held until it exits, closes the race two
    simultaneous mounts would have; the mount table names the mountpoint.
    """
    from vaultfs.format.keyfile import check_backing_dir

    check_backing_dir(backing)  # a missing one is "not a vault", as unlocking would say
    fd = os.open(backing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise errors.MountError(f"{backing}: {e.strerror}") from None
        where = mounted_backing(backing)
        raise errors.MountError(f"{backing} is already mounted" + (f" at {where}" if where else "")) from None
    return fd


def raise_readahead(mountpoint: str) -> None:
    """Let the kernel read ahead READ_AHEAD per request instead of its default 128 KiB.

    FUSE_INIT can only lower the kernel's read-ahead, so this is set afterwards, through
    the mount's backing-device entry in sysfs (root only; otherwise the default stays).
    """
    try:
        dev = os.stat(mountpoint).st_dev  # answered once the INIT reply is through
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD // 1024))
    except OSError as e:
        log.debug("read-ahead stays at the kernel default: %s", e)


async def _run_until_unmounted(ops: Any) -> None:
    """pyfuse3's loop, ended by an unmount or by SIGTERM/SIGINT/SIGHUP.

    A signal means `lock --force` (or a shutdown): processes may still hold files open. Their
    cached pages are dropped first (dirty ones written back through the still running loop),
    so that after the cut their reads reach the dead connection instead of the page cache.
    """
    import pyfuse3
    import trio

    async def on_signal(scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal %d: unmounting", signum)
                await trio.to_thread.run_sync(ops.drop_page_cache, ops.inodes.files())  # listed on the loop
                pyfuse3.terminate()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signal, nursery.cancel_scope)
        await pyfuse3.main(min_tasks=2, max_tasks=32)
        nursery.cancel_scope.cancel()


def serve(vault: Any, args: Any, mountpoint: str, on_ready: Any) -> None:
    """Run FUSE until unmounted (lock, signal, idle); the vault is closed afterwards."""
    import pyfuse3
    import trio

    from vaultfs.fuse.mount import idle_watch
    from vaultfs.fuse.ops import VaultOperations

    def ready() -> None:
        on_ready()
        threading.Thread(target=raise_readahead, args=(mountpoint,), daemon=True).start()

    slow = backing_is_slow(vault.backing)
    if slow:
        log.info("the backing dir is on a network filesystem: backing calls run in worker threads")
    ops = VaultOperations(vault, on_ready=ready, slow_backing=slow)
    extra_ops.bind(ops)  # fallocate: routed to ops before pyfuse3.init creates the FUSE session
    try:
        pyfuse3.init(ops, mountpoint, fuse_options(args, vault.backing))
    except RuntimeError as e:  # libfuse printed why on stderr
        vault.close()
        raise errors.MountError(f"libfuse could not mount {mountpoint} ({e})") from None
    stop = threading.Event()
    # reports open files and the last access for `vaultfs status`; with --idle, also locks
    threading.Thread(target=idle_watch, args=(ops, mountpoint, args.idle, stop), daemon=True).start()
    try:
        trio.run(_run_until_unmounted, ops)
    finally:
        stop.set()
        pyfuse3.close(unmount=True)  # detaches the mount if a signal ended the loop
        if answered := extra_ops.getxattr_answered():  # requests that never reached Python
            ops.requests["getxattr in the shim"] = answered
        log.info("served %s", ops.request_summary())
        try:
            vault.close()
        except Exception:  # noqa: BLE001 - the daemon is exiting; the log says what was lost
            log.exception("closing the vault on unmount failed")
