"""``vaultfs run BACKING MOUNTPOINT -- COMMAND``: unlock, mount, run, lock whatever happens.

The one-line nightly job: the command runs only once the mount answers, and the vault
is locked afterwards whether the command succeeded, failed, was interrupted (Ctrl-C,
SIGTERM from cron or systemd) or left processes behind (``lock --force``: a job has no
one to ask).  The exit status is the command's (128+N if a signal N ended it), or
vaultfs's own code when vaultfs failed: the mount (nothing is run) or the lock.

:func:`run_job` is the reusable part: it takes *how to bring the vault up* and *how to
take it down* as two callables, so the rclone remote mount runs the same loop
(``run REMOTE:PATH``), and it says whether a signal came, so that the transfers after
the lock (remote/runsteps.py: ``--push``, ``--sync``) are skipped when the job was told
to stop.

Signals: SIGINT, SIGTERM and SIGHUP are blocked in this process from just before the
mount until the lock, and received with ``sigtimedwait``, so none can strike between
"mounted" and "will lock".  The command gets them unblocked and at their defaults.
A Ctrl-C typed at the terminal already reached the command (same process group); any
other signal is passed on to it.  If the command has not ended GRACE seconds after
being signalled, it is killed, so the lock happens before a supervisor's own timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vaultfs import errors

GRACE = 10.0  # seconds a signalled command gets before SIGKILL
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SI_KERNEL = 0x80  # si_code of a signal the kernel raised (a tty's Ctrl-C), not kill(2)
COMMAND_NOT_FOUND = 127
COMMAND_NOT_EXECUTABLE = 126


def _spawn(command: Sequence[str]) -> int:
    """Start the command with the caller's stdio, signals unblocked and at their defaults."""
    path = command[0] if "/" in command[0] else shutil.which(command[0])
    if path is None:
        raise FileNotFoundError(command[0])
    defaults = {*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ}  # Python ignores SIGPIPE/SIGXFSZ
    return os.posix_spawn(path, list(command), os.environ, setsigmask=(), setsigdef=defaults)


def _exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _wait(pid: int) -> tuple[int, int | None]:
    """Wait for the command, passing signals on; its exit status (128+N for a signal N), and
    the first signal that reached ``run`` meanwhile (None if none did)."""
    deadline = None
    received: int | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _exit_status(status), received
        timeout = 0.2
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"vaultfs: the command did not end {GRACE:.0f} s after the signal; killing it",
                      file=sys.stderr, flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = None
                continue
            timeout = min(timeout, remaining)
        info = signal.sigtimedwait(FORWARDED, timeout)
        if info is None:
            continue
        received = info.si_signo if received is None else received
        if not (info.si_signo == signal.SIGINT and info.si_code == SI_KERNEL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)
        if deadline is None:
            deadline = time.monotonic() + GRACE


def _pending() -> int | None:
    waiting = signal.sigpending() & set(FORWARDED)
    return next(iter(waiting)).value if waiting else None


def signalled() -> bool:
    """A signal is waiting (``run`` blocks them until the vault is locked): stop waiting for slow things."""
    return bool(signal.sigpending() & set(FORWARDED))


def run_job(command: Sequence[str], up: Callable[[], Any], down: Callable[[], Any]) -> tuple[int, int | None]:
    """Bring the vault up, run ``command``, take the vault down whatever happened.

    ``up()`` raises a VaultError when it failed and then leaves nothing to take down;
    ``down()`` raises a VaultError when the lock failed (the command's status is said on
    stderr first).  Returns the exit status and the signal that reached ``run`` while
    the command ran (None if none did).
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        up()
        try:
            code, received = _run(command)
        except BaseException:
            down()
            raise
        try:
            down()
        except errors.VaultError:
            print(f"vaultfs: the command exited with status {code}", file=sys.stderr, flush=True)
            raise
        return code, received
    finally:
        # a signal that arrived meanwhile was handled here (passed on, or it ends the
        # job anyway): drop it before unblocking, so it does not strike again
        while signal.sigpending() & set(FORWARDED):
            signal.sigtimedwait(FORWARDED, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _run(command: Sequence[str]) -> tuple[int, int | None]:
    early = _pending()
    if early is not None:
        signal.sigtimedwait(FORWARDED, 0)
        print(f"vaultfs: signal {early} before the command started; not running it", file=sys.stderr)
        return 128 + early, early
    try:
        pid = _spawn(command)
    except FileNotFoundError:
        print(f"vaultfs: command not found: {command[0]}", file=sys.stderr)
        return COMMAND_NOT_FOUND, None
    except PermissionError:
        print(f"vaultfs: cannot run {command[0]}: permission denied", file=sys.stderr)
        return COMMAND_NOT_EXECUTABLE, None
    except OSError as exc:
        print(f"vaultfs: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return COMMAND_NOT_EXECUTABLE, None
    return _wait(pid)


def cmd_run(args: Any) -> int:
    """Mount detached, run, ``lock --force`` (nothing may stay unlocked after a job).

    A local vault may have transfers around that (remote/runsteps.py: pull or sync
    before, push or sync after); a REMOTE:PATH source runs on rclone's mount instead
    (:func:`_run_on_remote_mount`).
    """
    from vaultfs.fuse import lock, mount
    from vaultfs.remote import mounthook, runsteps

    if not args.command:
        raise errors.UsageError("run needs a command after -- (vaultfs run BACKING MOUNTPOINT -- COMMAND ...)")
    args.idle, args.foreground = None, False
    remote_mount = mounthook.remote_source(args.backing) is not None
    job = runsteps.plan(args, remote_mount)  # flags and remotes checked before anything happens
    if remote_mount:
        return _run_on_remote_mount(args)
    runsteps.before(job)
    prepared = mount.prepare(args)  # checks and the password, with the terminal's Ctrl-C still working
    mountpoint = prepared.state.mountpoint

    def down() -> None:
        for line in lock.lock(mountpoint, force=True, by="run"):
            print(line, file=sys.stderr, flush=True)

    def up() -> None:
        with contextlib.redirect_stdout(sys.stderr):  # the command owns stdout
            prepared.start(detach=True)

    status, received = run_job(args.command, up, down)
    return runsteps.after(job, status, received)


def _run_on_remote_mount(args: Any) -> int:
    """``vaultfs run REMOTE:PATH MNT -- CMD``: rclone's mount underneath, as ``vaultfs mount`` makes it.

    The lock waits for rclone's uploads (exit 26 if they stop moving, or if a signal
    cuts the wait short: the files stay in rclone's cache for the next mount).
    """
    from vaultfs.fuse import lock, mount
    from vaultfs.remote import mounthook, rmount

    def say(text: str) -> None:
        print(f"vaultfs: {text}", file=sys.stderr, flush=True)

    with contextlib.redirect_stdout(sys.stderr):
        record = mounthook.start_rclone(args)
    args.backing = record.directory
    try:
        prepared = mount.prepare(args)
    except BaseException:
        rmount.stop(record, say=say)
        raise
    mountpoint = prepared.state.mountpoint

    def up() -> None:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                prepared.start(detach=True)
        except BaseException:
            rmount.stop(record, say=say)
            raise
        say(f"the backing dir is rclone's mount of {record.remote} (cache {record.cache_dir})")

    def down() -> None:
        with contextlib.redirect_stdout(sys.stderr), mounthook.locking(mountpoint, give_up=signalled):
            for line in lock.lock(mountpoint, force=True, by="run"):
                print(line, flush=True)

    return run_job(args.command, up, down)[0]
