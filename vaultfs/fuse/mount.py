"""Mount lifecycle: check the mountpoint, unlock, seal, serve FUSE, fail closed.

``vaultfs mount`` unlocks in the foreground (so a wrong password is a clear error and
nothing gets mounted), then forks the daemon, which serves FUSE from the already
unlocked vault: the key never travels.  The parent returns only when the daemon's
``init`` callback has run, i.e. the kernel connected and the mount answers.

The daemon's pid and what it reports about itself live in a state file (state.py,
activity.py) that goes away with the mount.

Fail closed: before the first mount the empty mountpoint is sealed (seal.py: mode 0,
and for root the immutable attribute or a read-only mount), and the vault is mounted on
top of the seal, so that whatever ends the mount, a job that writes its nightly backup
into the bare directory fails instead of writing plaintext to the local disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from vaultfs import errors, hardening
from vaultfs import log as vlog
from vaultfs.fuse import activity, seal
from vaultfs.fuse.notify import notify
from vaultfs.fuse.serve import check_fuse, claim_backing, serve
from vaultfs.fuse.state import (
    MountState,
    canonical,
    daemon_alive,
    is_stale,
    load_state,
    mount_stack,
    process_start,
    prune_states,
    save_state,
    state_path,
)

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0  # seconds the parent waits for the daemon's mount to answer
REPORT_INTERVAL = 1.0  # seconds between the daemon's status reports (only written when changed)


def fusermount(*flags: str, mountpoint: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise errors.FuseUnavailable("fusermount3 not found")
    return subprocess.run([tool, *flags, mountpoint], capture_output=True, text=True, check=False)


# ---- checks before asking for the password ------------------------------------------


def describe_entries(path: str, limit: int = 5) -> str:
    names = sorted(os.listdir(path))
    shown = [n + ("/" if os.path.isdir(os.path.join(path, n)) else "") for n in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def prepare_mountpoint(mountpoint: str, backing: str) -> int | None:
    """Validate the mountpoint before the password is asked; open what the mount needs opened.

    Returns the mode to put back if the mount fails (seal.open_for_mount), or None.
    """
    stack = mount_stack(mountpoint)
    if stack and stack[-1] != ("tmpfs", seal.SEAL_SOURCE):
        kind = stack[-1][0]
        if kind == "fuse.vaultfs" and (is_stale(mountpoint) or not daemon_alive(load_state(mountpoint))):
            raise errors.MountError(
                f"{mountpoint} holds a stale mount left by a daemon that died; run `vaultfs lock {mountpoint}`"
            )
        if kind == "fuse.vaultfs":
            raise errors.MountError(f"{mountpoint} is already mounted")
        raise errors.MountError(f"{mountpoint} is already mounted ({kind})")
    if not os.path.lexists(mountpoint):
        raise errors.MountError(f"mountpoint {mountpoint} does not exist")
    if not os.path.isdir(mountpoint) or os.path.islink(mountpoint):
        raise errors.MountError(f"mountpoint {mountpoint} is not a directory")
    real_mnt, real_backing = os.path.realpath(mountpoint), os.path.realpath(backing)
    if os.path.commonpath([real_mnt, real_backing]) in (real_mnt, real_backing):
        # Inside the backing dir the sync client would upload the plaintext view;
        # a backing dir inside the mount would recurse into itself.
        raise errors.UsageError("the mountpoint and the vault directory must not contain one another")
    try:
        opened = seal.open_for_mount(mountpoint)
    except OSError as e:
        raise errors.MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    try:
        entries = os.listdir(mountpoint)
    except OSError as e:
        seal.restore(mountpoint, opened)
        raise errors.MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    if entries:
        seal.restore(mountpoint, opened)
        raise errors.MountError(
            f"mountpoint {mountpoint} is not empty (it holds {describe_entries(mountpoint)}); "
            "move that away, mount, then move it into the vault"
        )
    return opened


def fail_closed(mountpoint: str) -> str:
    """After an unmount: make sure the bare mountpoint is sealed; say how (for the log)."""
    stack = mount_stack(mountpoint)
    if stack and stack[-1] != ("tmpfs", seal.SEAL_SOURCE):
        return f"still covered by {stack[-1][0]}"
    try:
        leftovers = os.listdir(mountpoint)
    except OSError:  # a user's mode-0 directory: nobody could write there either
        leftovers = []
    if leftovers:
        log.warning("%s holds %s, written while the vault was not mounted (not part of the vault)",
                    mountpoint, describe_entries(mountpoint))
    return "sealed: " + seal.seal(mountpoint).describe()


# ---- serving --------------------------------------------------------------------------


def idle_watch(ops: Any, mountpoint: str, idle: float | None, stop: threading.Event) -> None:
    """The daemon's watcher: report open files and the last access for ``vaultfs status``;
    with ``idle``, unmount once nothing touched the vault for that long and no file is open.

    The idle lock never cuts anything off: ``fusermount3 -u`` (not lazy) fails while a
    file or a working directory is open in the mount, and the lock is tried again later.
    """
    # Keep SIGTERM/SIGINT/SIGHUP for libfuse's loop: a signal delivered to this thread
    # would not wake it, and the daemon would only notice at the next request.
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    interval = REPORT_INTERVAL if not idle else max(0.2, min(idle / 4, REPORT_INTERVAL))
    while not stop.wait(interval):
        handles, last = ops.open_handles(), ops.last_access
        activity.report(mountpoint, handles, last)
        if not idle or handles or time.monotonic() - last < idle:
            continue
        activity.idle_locked(idle)
        result = fusermount("-u", mountpoint=mountpoint)
        if result.returncode == 0:
            return
        activity.idle_locked(None)
        log.info("idle lock postponed: %s", result.stderr.strip())


@dataclass
class Prepared:
    """An unlocked vault and a checked mountpoint, not mounted yet (``run`` mounts it later)."""

    vault: Any
    args: Any
    state: MountState
    opened: int | None  # mode to put back if the mount fails
    was_sealed: bool
    mode_before: int | None
    claim: int | None = None  # the fd whose flock marks the backing dir as mounted (claim_backing)

    def start(self, detach: bool = True) -> int:
        """Seal the mountpoint underneath, then mount on top of it."""
        mountpoint = self.state.mountpoint
        if not self.was_sealed and os.geteuid() == 0:
            seal.seal(mountpoint)
        try:
            if detach:
                return run_detached(self.vault, self.args, self.state)
            return run_foreground(self.vault, self.args, self.state)
        except BaseException:
            if self.state.pid is None:  # never mounted: put the mountpoint back as it was
                self.abandon()
            raise
        finally:
            if detach and self.claim is not None:
                # the daemon holds its own copy of the locked fd: a caller that lives on
                # (`vaultfs run`, which pushes after the lock) must not keep the backing dir claimed
                os.close(self.claim)
                self.claim = None

    def abandon(self) -> None:
        if not self.was_sealed and os.geteuid() == 0 and not mount_stack(self.state.mountpoint):
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                seal.release(self.state.mountpoint, 0o755 if self.mode_before is None else self.mode_before)
        seal.restore(self.state.mountpoint, self.opened)


def prepare(args: Any, foreground: bool = False) -> Prepared:
    """Everything before the mount: checks, then the password (three tries on a tty)."""
    from vaultfs import passwords
    from vaultfs.vault import Vault

    mountpoint = canonical(args.mountpoint)
    backing = os.path.abspath(args.backing)
    if args.log:
        args.log = os.path.abspath(args.log)  # the daemon changes to /
    check_fuse()
    prune_states()
    mode_before = _mode(mountpoint)
    opened = prepare_mountpoint(mountpoint, backing)
    was_sealed = seal.inspect(mountpoint).holds_root or (os.geteuid() != 0 and mode_before == 0)
    claim = None
    try:
        claim = claim_backing(backing)  # one mount per backing dir: held (inherited by the daemon) until it exits
        vault = passwords.unlock_with_retries(
            args.passfile, lambda password: Vault.unlock(backing, password, read_only=args.read_only))
    except BaseException:
        if claim is not None:
            os.close(claim)
        seal.restore(mountpoint, opened)
        raise
    state = MountState(mountpoint=mountpoint, backing=backing, idle=args.idle, read_only=bool(args.read_only),
                       log=log_destination(args, foreground))
    return Prepared(vault, args, state, opened, was_sealed, mode_before, claim)


def _mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode & 0o7777
    except OSError:
        return None


def cmd_mount(args: Any) -> int:
    return prepare(args, foreground=args.foreground).start(detach=not args.foreground)


def log_path(mountpoint: str) -> str:
    """Where a detached daemon logs when neither --log nor syslog is available."""
    return os.path.splitext(state_path(mountpoint))[0] + ".log"


def log_destination(args: Any, foreground: bool) -> str | None:
    """Where the daemon's records go (vlog.setup decides the same way): a file, "syslog", or None (stderr)."""
    if args.log:
        return args.log
    if foreground:
        return None
    return "syslog" if os.path.exists(vlog.SYSLOG_SOCKET) else log_path(canonical(args.mountpoint))


def _announce(state: MountState) -> str:
    return f"vaultfs: {state.backing} is mounted at {state.mountpoint}"


def _mounted(state: MountState) -> None:
    """The mount answers: record the daemon in the state file."""
    state.pid, state.start = os.getpid(), process_start(os.getpid())
    state.started = time.time()
    save_state(state)


def run_foreground(vault: Any, args: Any, state: MountState) -> int:
    vlog.setup(foreground=True, logfile=args.log)
    hardening.harden_daemon(vault.keys)  # no core dump, no same-user ptrace, keys mlocked

    def ready() -> None:
        _mounted(state)
        print(_announce(state), flush=True)
        notify(f"READY=1\nSTATUS=mounted {state.backing} at {state.mountpoint}\nMAINPID={os.getpid()}")

    try:
        serve(vault, args, state.mountpoint, ready)
    finally:
        if state.pid is not None:
            notify("STOPPING=1")
            finish(state)
    return 0


def finish(state: MountState) -> None:
    """After unmount: make sure the mountpoint is sealed, log the end, drop the state file."""
    activity.ended(state, fail_closed(state.mountpoint))
    state.pid = state.start = None
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
    state.pid = pid
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
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # `vaultfs run` forks with SIGTERM & co. blocked
    try:
        vlog.setup(foreground=False, logfile=args.log, fallback=log_path(state.mountpoint))
    except OSError as e:
        os.write(write_fd, f"E--log {args.log}: {e.strerror}".encode())
        return errors.MountError.exit_code
    hardening.harden_daemon(vault.keys)  # no core dump, no same-user ptrace, keys mlocked
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    # libfuse prints its reasons for failing to mount on stderr: keep them to pass on
    # to the caller, and drop its noise on success (3.14 warns about max_threads).
    captured = os.memfd_create("vaultfs-stderr")
    os.dup2(captured, 2)

    def ready() -> None:
        _mounted(state)
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
    return 0
