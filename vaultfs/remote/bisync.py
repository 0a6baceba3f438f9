"""sync: several devices share one vault through a remote, with rclone bisync.

bisync keeps a listing of both sides from its last run and carries each side's changes
to the other.  A file changed on both sides is kept twice, renamed ``NAME..path1`` (this
device's version) and ``NAME..path2`` (the remote's), on both sides: vaultfs shows such
copies as conflicts and never deletes either.  bisync 1.60 needs modification times on
the remote (SFTP, S3, Drive, OneDrive, Dropbox, Nextcloud... not plain WebDAV).

The first run, and any run after bisync lost its listings (a new device, a cleared
state dir, a failed run that bisync says needs ``--resync``), is ``bisync --resync``,
which in 1.60 lets this side's version overwrite the remote's wherever both have a
file.  So before it, every file present on both sides with different contents (``rclone
check``, by hash or by download) is renamed here to ``NAME..path1``: --resync then
brings the remote's version down under the name and carries this device's copy up, and
both versions are on both sides.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from vaultfs.errors import NotAVault, RemoteFailed, RemoteUnusable
from vaultfs.fuse.state import process_start
from vaultfs.remote import guard, rclone, rules
from vaultfs.remote.inflight import Inflight
from vaultfs.remote.progress import RcloneProgress
from vaultfs.remote.rclone import Features, Remote

LOCAL_COPY = "..path1"  # what bisync 1.60 calls this side's copy in a conflict


@dataclass
class SyncResult:
    first_run: bool = False
    cleaned: int = 0  # files an interrupted sync was carrying, deleted on their way's end first
    files: int = 0
    bytes: int = 0
    kept_before_resync: list[str] = field(default_factory=list)  # NAME renamed to NAME..path1 first
    new_conflicts: list[str] = field(default_factory=list)


def sync(backing: str, remote: Remote, force: bool = False) -> SyncResult:
    backing = os.path.abspath(backing)
    with guard.exclusive(backing):
        found = rclone.features(remote)
        if not found.modtime:
            raise RemoteUnusable(f"{remote} keeps no modification times, which rclone bisync needs; use vaultfs "
                                 "push and pull with it, or a remote that keeps them (SFTP, S3, Drive, Nextcloud...)")
        local_id, remote_id = guard.local_vault_id(backing), guard.remote_vault_id(remote)
        if local_id is None and remote_id is None:
            raise NotAVault(f"neither {backing} nor {remote} holds a vault")
        guard.check_same_vault(local_id, remote_id, backing, remote)
        if remote_id is not None:
            guard.drop_stale_config(remote)
        workdir = _workdir(backing, remote)
        inflight = Inflight(workdir)
        result = SyncResult()
        if inflight.left_behind():  # a sync was killed mid-file: no half-written copy may pass for a change
            result.cleaned = inflight.clean_up(backing, remote)
        result.first_run = not _has_listings(workdir)
        before = rules.conflict_copies(backing)
        args = ["bisync", backing, remote.text, "--workdir", workdir, "--filters-file",
                os.path.join(workdir, "filters.txt"), "--remove-empty-dirs", *rules.TRANSFER_FLAGS]
        up: set[str] = set()
        down: set[str] = set()
        if result.first_run:
            result.kept_before_resync, up, down = _prepare_resync(backing, remote, found)
            args.append("--resync")
        if force:
            args.append("--force")
        inflight.start(up, down)
        progress = RcloneProgress("sync")
        try:
            outcome = rclone.stream(args, progress.stats, inflight.watch)
        finally:
            progress.close()
        result.files = int(outcome.stats.get("transfers") or 0)
        result.bytes = int(outcome.stats.get("bytes") or 0)
        result.new_conflicts = sorted(rules.conflict_copies(backing) - before)
        if outcome.returncode != 0:
            inflight.flush(force=True)
            raise RemoteFailed(_explain(outcome))
        inflight.clear()
        return result


def _workdir(backing: str, remote: Remote) -> str:
    """bisync's listings for this pair, and the filters they were made with."""
    workdir = os.path.join(guard.state_dir(), "bisync", guard.pair_key(backing, remote))
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    filters = os.path.join(workdir, "filters.txt")
    text = rules.filters_file_text()
    try:
        with open(filters, encoding="utf-8") as f:
            same = f.read() == text
    except FileNotFoundError:
        same = False
    if not same:  # new rules: listings made under the old ones would mislead bisync
        for listing in glob.glob(os.path.join(glob.escape(workdir), "*.lst*")):
            os.unlink(listing)
        with open(filters, "w", encoding="utf-8") as f:
            f.write(text)
    for lock in glob.glob(os.path.join(glob.escape(workdir), "*.lck")):
        _remove_if_stale(lock)
    return workdir


def _remove_if_stale(lock: str) -> None:
    """bisync's lock file names its pid; a killed run leaves it behind and blocks every later run."""
    try:
        with open(lock, encoding="ascii", errors="replace") as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        pid = 0
    if pid <= 0 or process_start(pid) is None:
        os.unlink(lock)


def _has_listings(workdir: str) -> bool:
    pattern = os.path.join(glob.escape(workdir), "*.path{}.lst")
    return bool(glob.glob(pattern.format(1))) and bool(glob.glob(pattern.format(2)))


def _prepare_resync(backing: str, remote: Remote, found: Features) -> tuple[list[str], set[str], set[str]]:
    """Keep this side's version of every file that differs from the remote's as NAME..path1.

    Returns those names, and what --resync will then carry up and down.
    """
    os.makedirs(backing, exist_ok=True)
    rclone.run(["mkdir", remote.text])
    here, there = set(rules.local_files(backing)), set(rclone.lsjson(remote.text, rules.filter_args()))
    if not here & there:
        return [], here - there, there - here
    check = ["check", backing, remote.text, "--combined", "-", *rules.TRANSFER_FLAGS, *rules.filter_args()]
    if not found.hashes:
        check.append("--download")
    done = rclone.run(check, ok_codes=(0, 1), timeout=24 * 3600)
    differing = [line[2:] for line in done.stdout.splitlines() if line.startswith("* ")]
    failed = [line[2:] for line in done.stdout.splitlines() if line.startswith("! ")]
    if failed:
        raise RemoteFailed(f"could not compare {len(failed)} file(s) before the first sync, e.g. {failed[0]}")
    kept = []
    for relative in differing:
        source = os.path.join(backing, relative)
        if os.path.lexists(source + LOCAL_COPY):
            raise RemoteFailed(f"{source} differs from the remote's and {source + LOCAL_COPY} exists already: "
                               "move one of them away, then sync again")
        os.rename(source, source + LOCAL_COPY)
        kept.append(relative)
    up = (here - there) | {relative + LOCAL_COPY for relative in kept}
    return kept, up, (there - here) | set(kept)


def _explain(outcome: rclone.Outcome) -> str:
    said = " ".join(outcome.errors + outcome.notices)
    if "Safety abort" in said or "too many deletes" in said or "all files were changed" in said:
        return (f"bisync stopped for safety ({outcome.failure()}); check both sides, then run "
                "`vaultfs sync --force` if that many changes are meant")
    if "--resync" in said:
        return f"bisync failed ({outcome.failure()}); run vaultfs sync again: it starts over with a safe --resync"
    return outcome.failure()
