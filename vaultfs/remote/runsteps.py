"""The nightly job in one line: ``vaultfs run BACKING MNT --pull R --push R -- CMD`` (or ``--sync R``).

``run`` pulls (or syncs) before it mounts and pushes (or syncs) after it has locked, so
that only a locked vault travels, as push, pull and sync require.  Each step's outcome
decides what happens next and what the exit status says:

- a pull or sync *before* that fails stops the job: nothing is mounted or run (exit 27).
  Backing up into a vault that missed the remote's changes, and then pushing it, would
  overwrite them on the remote;
- the mount, the command and the lock are ``run``'s usual steps (run.py);
- a push or sync *after* runs whatever the command's status: the locked vault is
  consistent, and what the command wrote is better off in the cloud.  If it fails, the
  exit status is 28 (the command's status is in the message); if ``run`` was signalled
  (Ctrl-C, SIGTERM from a supervisor), it is skipped and said so: the job was told to
  stop, and the next run (or ``vaultfs push``) sends it.

The command's status is the exit status only when every vault step succeeded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaultfs.errors import RunAfterFailed, RunBeforeFailed, UsageError, VaultError
from vaultfs.remote import rclone
from vaultfs.remote.rclone import Remote


@dataclass
class Plan:
    """The transfers around one ``run`` of a local vault (all None: none)."""

    backing: str
    pull: Remote | None = None
    push: Remote | None = None
    sync: Remote | None = None
    delete: bool = False

    @property
    def empty(self) -> bool:
        return self.pull is None and self.push is None and self.sync is None


def plan(args: Any, remote_mount: bool) -> Plan:
    """The flags checked, and their remotes found in rclone.conf, before anything happens."""
    given = {flag: getattr(args, flag, None) for flag in ("pull", "push", "sync")}
    if remote_mount and any(given.values()):
        raise UsageError("--pull, --push and --sync work on a local backing dir; with REMOTE:PATH rclone's mount "
                         "is the backing dir and `run` waits for its uploads at the lock")
    if given["sync"] and (given["pull"] or given["push"]):
        raise UsageError("--sync already pulls before and pushes after; give either --sync or --pull/--push")
    if getattr(args, "delete", False) and not given["push"]:
        raise UsageError("--delete goes with --push (the remote becomes a mirror of the vault)")
    found = {flag: rclone.remote_of(text) if text else None for flag, text in given.items()}
    return Plan(args.backing, found["pull"], found["push"], found["sync"], bool(getattr(args, "delete", False)))


def _say(lines: list[str]) -> None:
    for line in lines:
        print(f"vaultfs: {line}", file=sys.stderr, flush=True)


def _step(what: str, work: Callable[[], list[str]], failure: type[VaultError], tail: str = "") -> None:
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the command owns stdout, before and after too
            lines = work()
    except VaultError as exc:
        raise failure(f"{what}: {exc.message} (exit {exc.exit_code} as its own verb){tail}") from None
    _say(lines)


def before(job: Plan) -> None:
    """Pull or sync before the mount; RunBeforeFailed (27) if that failed."""
    from vaultfs.remote import bisync, report, transfer

    if job.pull is not None:
        remote = job.pull
        _step(f"pull from {remote}",
              lambda: report.pulled(transfer.pull(remote, job.backing), remote, job.backing, False), RunBeforeFailed)
    if job.sync is not None:
        remote = job.sync
        _step(f"sync with {remote}",
              lambda: report.synced(bisync.sync(job.backing, remote), job.backing, remote), RunBeforeFailed)


def after(job: Plan, status: int, signo: int | None) -> int:
    """Push or sync after the lock; the exit status of the whole job."""
    from vaultfs.remote import bisync, report, transfer

    target = job.push or job.sync
    if target is None:
        return status
    verb = "push" if job.push is not None else "sync"
    if signo is not None:
        _say([f"not running the {verb} with {target}: the job was interrupted by signal {signo}; the vault is "
              f"locked, and the next run (or `vaultfs {verb}`) sends it"])
        return status
    tail = (f"; the command exited with status {status}; run `vaultfs {verb} {job.backing} {target}` "
            "again when the remote answers")
    if job.push is not None:
        remote = job.push
        _step(f"push to {remote}", lambda: report.pushed(transfer.push(job.backing, remote, delete=job.delete),
                                                         job.backing, remote), RunAfterFailed, tail)
    else:
        _step(f"sync with {target}", lambda: report.synced(bisync.sync(job.backing, target), job.backing, target),
              RunAfterFailed, tail)
    return status
