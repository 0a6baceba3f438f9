"""Mount lifecycle: check the mountpoint, unlock, serve FUSE, lock.

``vaultfs mount`` unlocks in the foreground (so a wrong password is a clear error and
nothing gets mounted), then forks the daemon, which serves FUSE from the already
unlocked vault: the key never travels.  The parent returns only when the daemon's
``init`` callback has run, i.e. the kernel connected and the mount answers.

The daemon's pid and the mountpoint's mode live in a state file (state.py).

Fail closed: after every unmount the empty mountpoint gets mode 0, so an app that
writes its nightly backup while the vault is locked fails instead of writing
plaintext (root bypasses modes: the README says so); ``mount`` restores the mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import stat
import subprocess
import sys
import threading
import time
from typing import Any

from vaultfs import errors
from vaultfs import log as vlog
from vaultfs.fuse.state import (
    MountState,
    canonical,
    daemon_alive,
    is_stale,
    load_state,
    mounted,
    process_start,
    save_state,
    state_path,
)

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o755
MAX_IO = 1 << 20  # bytes per FUSE read request (also max_write, set in fs.init_with_config)
READY_TIMEOUT = 60.0  # seconds the parent waits for the daemon's mount to answer


def fusermount(*flags: str, mountpoint: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise errors.FuseUnavailable("fusermount3 not found")
    return subprocess.run([tool, *flags, mountpoint], capture_output=True, text=True, check=False)


# ---- checks before asking for the password ------------------------------------------


def check_fuse() -> None:
    """Fail early, with the fix, where FUSE cannot work at all."""
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as e:
        raise errors.FuseUnavailable(f"/dev/fuse: {e.strerror}") from None
    os.close(fd)
    try:
        from vaultfs.fuse import fs
    except (OSError, AttributeError) as e:  # mfusepy: no libfuse / wrong ABI
        raise errors.FuseUnavailable(str(e)) from None
    if fs.fuse_version()[0] != 3:
        raise errors.FuseUnavailable(f"libfuse {'.'.join(map(str, fs.fuse_version()))} found, libfuse3 needed")
    if os.geteuid() != 0 and not (shutil.which("fusermount3") or shutil.which("fusermount")):
        raise errors.FuseUnavailable("fusermount3 not found")


def describe_entries(path: str, limit: int = 5) -> str:
    names = sorted(os.listdir(path))
    shown = [n + ("/" if os.path.isdir(os.path.join(path, n)) else "") for n in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def prepare_mountpoint(mountpoint: str, backing: str) -> int | None:
    """Validate the mountpoint and undo the fail-closed mode 0.

    Returns the mode the directory had before (to put back if the mount fails), or
    None when it was left untouched.
    """
    if mounted(mountpoint) or is_stale(mountpoint):
        if is_stale(mountpoint) or not daemon_alive(load_state(mountpoint)):
            raise errors.MountError(
                f"{mountpoint} holds a stale mount left by a daemon that died; run `vaultfs lock {mountpoint}`"
            )
        raise errors.MountError(f"{mountpoint} is already mounted")
    if not os.path.lexists(mountpoint):
        raise errors.MountError(f"mountpoint {mountpoint} does not exist")
    if not os.path.isdir(mountpoint) or os.path.islink(mountpoint):
        raise errors.MountError(f"mountpoint {mountpoint} is not a directory")
    real_mnt, real_backing = os.path.realpath(mountpoint), os.path.realpath(backing)
    if os.path.commonpath([real_mnt, real_backing]) in (real_mnt, real_backing):
        # Inside the backing dir the sync client would upload the plaintext view;
        # a backing dir inside the mount would recurse into itself.
        raise errors.UsageError("the mountpoint and the vault directory must not contain one another")
    old_mode = stat.S_IMODE(os.stat(mountpoint).st_mode)
    touched = None
    if old_mode == 0:
        state = load_state(mountpoint)
        os.chmod(mountpoint, state.mode if state and state.mode else DEFAULT_MODE)
        touched = old_mode
    try:
        entries = os.listdir(mountpoint)
    except OSError as e:
        restore_mode(mountpoint, touched)
        raise errors.MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    if entries:
        restore_mode(mountpoint, touched)
        raise errors.MountError(
            f"mountpoint {mountpoint} is not empty (it holds {describe_entries(mountpoint)}); "
            "move that away, mount, then move it into the vault"
        )
    return touched


def restore_mode(mountpoint: str, mode: int | None) -> None:
    if mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(mountpoint, mode)


def fail_closed(mountpoint: str) -> None:
    """Mode 0 on the empty, unmounted mountpoint: the app's writes fail while locked."""
    try:
        if not mounted(mountpoint) and os.path.isdir(mountpoint) and not os.listdir(mountpoint):
            os.chmod(mountpoint, 0)
    except OSError as e:
        log.warning("could not set mode 0 on %s: %s", mountpoint, e.strerror)


# ---- serving --------------------------------------------------------------------------


def fuse_options(args: Any) -> dict[str, Any]:
    """mfusepy keyword options for this mount (see docs: why each one)."""
    opts: dict[str, Any] = {
        "fsname": "vaultfs",
        "subtype": "vaultfs",
        "max_read": MAX_IO,
    }
    if args.allow_other:
        # Other users: the kernel must enforce modes for each caller (DESIGN.md). For the
        # mounting user alone the daemon's own access to the backing files, which carry
        # the same modes, already does; skipping the kernel's check saves a GETATTR per
        # directory on every path lookup (stat 3,100 -> 8,400/s measured).
        opts["allow_other"] = True
        opts["default_permissions"] = True
    if args.read_only:
        opts["ro"] = True
    for group in args.fuse_options or []:
        for item in filter(None, group.split(",")):
            key, sep, value = item.partition("=")
            opts[key] = value if sep else True
    return opts


def raise_readahead(mountpoint: str) -> None:
    """Let the kernel read ahead MAX_IO per request instead of its default 128 KiB.

    FUSE_INIT can only lower the kernel's read-ahead, so this is set afterwards, through
    the mount's backing-device entry in sysfs (root only; otherwise the default stays).
    One 1 MiB read request instead of eight of 128 KiB: cold sequential reads measured
    about 20-25% faster (docs/performance.md).
    """
    try:
        dev = os.stat(mountpoint).st_dev  # answered once the INIT reply is through
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
            f.write(str(MAX_IO // 1024))
    except OSError as e:
        log.debug("read-ahead stays at the kernel default: %s", e)


def idle_watch(ops: Any, mountpoint: str, idle: float, stop: threading.Event) -> None:
    """Unmount once nothing touched the vault for `idle` seconds and no file is open."""
    interval = max(0.2, min(idle / 4, 5.0))
    while not stop.wait(interval):
        if ops.open_handles() or time.monotonic() - ops.last_access < idle:
            continue
        result = fusermount("-u", mountpoint=mountpoint)
        if result.returncode == 0:
            log.info("idle for %.0f s: locked %s", idle, mountpoint)
            return
        log.info("idle lock postponed: %s", result.stderr.strip())


def serve(vault: Any, args: Any, mountpoint: str, on_ready: Any) -> None:
    """Run FUSE until unmounted (lock, signal, idle); the vault is closed afterwards."""
    from vaultfs.fuse import fs

    def ready() -> None:
        on_ready()
        threading.Thread(target=raise_readahead, args=(mountpoint,), daemon=True).start()

    ops = fs.VaultOperations(vault, on_ready=ready)
    stop = threading.Event()
    if args.idle:
        threading.Thread(target=idle_watch, args=(ops, mountpoint, args.idle, stop), daemon=True).start()
    try:
        fs.VaultFUSE(ops, mountpoint, foreground=True, nothreads=False, **fuse_options(args))
    except RuntimeError as e:  # fuse_main failed: libfuse printed why on stderr
        raise errors.MountError(f"libfuse could not mount {mountpoint} (status {e})") from None
    finally:
        stop.set()
        ops.destroy("/")  # idempotent: also when libfuse never called destroy


def cmd_mount(args: Any) -> int:
    from vaultfs import passwords
    from vaultfs.vault import Vault

    mountpoint = canonical(args.mountpoint)
    backing = os.path.abspath(args.backing)
    if args.log:
        args.log = os.path.abspath(args.log)  # the daemon changes to /
    check_fuse()
    touched = prepare_mountpoint(mountpoint, backing)
    try:
        password = passwords.read_password(args.passfile, prompt="Password: ")
        vault = Vault.unlock(backing, password, read_only=args.read_only)
        del password
    except BaseException:
        restore_mode(mountpoint, touched)
        raise
    mode = stat.S_IMODE(os.stat(mountpoint).st_mode)
    state = MountState(mountpoint=mountpoint, backing=backing, mode=mode or DEFAULT_MODE)
    try:
        if args.foreground:
            return run_foreground(vault, args, state)
        return run_detached(vault, args, state)
    except errors.MountError:
        if state.pid is None:  # never mounted: put the mountpoint back as it was
            restore_mode(mountpoint, touched)
        raise


def log_path(mountpoint: str) -> str:
    """Where a detached daemon logs when neither --log nor syslog is available."""
    return os.path.splitext(state_path(mountpoint))[0] + ".log"


def _announce(state: MountState) -> str:
    return f"vaultfs: {state.backing} is mounted at {state.mountpoint}"


def run_foreground(vault: Any, args: Any, state: MountState) -> int:
    vlog.setup(foreground=True, logfile=args.log)

    def ready() -> None:
        state.pid, state.start = os.getpid(), process_start(os.getpid())
        save_state(state)
        print(_announce(state), flush=True)

    try:
        serve(vault, args, state.mountpoint, ready)
    finally:
        if state.pid is not None:
            finish(state)
    return 0


def finish(state: MountState) -> None:
    """After unmount: fail closed and forget the pid (the saved mode stays for the next mount)."""
    fail_closed(state.mountpoint)
    state.pid = state.start = None
    with contextlib.suppress(OSError):
        save_state(state)
    from vaultfs.remote import mounthook

    mounthook.after_unmount(state.mountpoint)  # REMOTE:PATH: rclone's mount goes down too, after its uploads


def run_detached(vault: Any, args: Any, state: MountState) -> int:
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_fd)
        code = 1
        try:
            code = _daemon(vault, args, state, write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    del vault  # the parent drops its copy of the unlocked vault
    message = _wait_ready(read_fd)
    os.close(read_fd)
    if message != "":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise errors.MountError(message or "the mount daemon exited before the mount answered")
    try:
        os.stat(state.mountpoint)  # the mount answers (blocks until the INIT reply)
    except OSError as e:
        raise errors.MountError(f"the mount at {state.mountpoint} does not answer: {e.strerror}") from None
    print(_announce(state), flush=True)
    return 0


def _wait_ready(read_fd: int) -> str | None:
    """'' once the daemon is ready, its error text if it failed, None if it died silently."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(read_fd, 4096)
        if not data:
            break
        chunks.append(data)
        if chunks[0][:1] == b"R":
            return ""
    raw = b"".join(chunks)
    if raw[:1] == b"E":
        return raw[1:].decode("utf-8", "replace")
    return None


def _daemon(vault: Any, args: Any, state: MountState, write_fd: int) -> int:
    """Child side: new session, logs to file/syslog, serve until unmounted."""
    os.setsid()
    try:
        vlog.setup(foreground=False, logfile=args.log, fallback=log_path(state.mountpoint))
    except OSError as e:
        os.write(write_fd, f"E--log {args.log}: {e.strerror}".encode())
        return errors.MountError.exit_code
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    # libfuse prints its reasons for failing to mount on stderr: keep them to pass on
    # to the caller, and drop its noise on success (3.14 warns about max_threads).
    captured = os.memfd_create("vaultfs-stderr")
    os.dup2(captured, 2)

    def ready() -> None:
        state.pid, state.start = os.getpid(), process_start(os.getpid())
        save_state(state)
        os.dup2(null, 2)
        os.write(write_fd, b"R")
        os.close(write_fd)

    try:
        serve(vault, args, state.mountpoint, ready)
    except errors.VaultError as e:
        os.lseek(captured, 0, os.SEEK_SET)
        said = [
            line
            for line in os.read(captured, 65536).decode("utf-8", "replace").splitlines()
            if line.strip() and "max threads" not in line
        ]
        detail = f"{e.message} ({'; '.join(said)})" if said else e.message
        with contextlib.suppress(OSError):
            os.write(write_fd, b"E" + detail.encode())
        return e.exit_code
    except Exception:  # noqa: BLE001 - the daemon's last word goes to its log
        log.exception("mount daemon failed")
        return 1
    finally:
        if state.pid is not None:
            finish(state)
    log.info("unmounted %s", state.mountpoint)
    return 0
