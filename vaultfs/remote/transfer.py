"""push and pull: copy a locked vault to or from a remote with rclone, whole files only.

Both run rclone's copy (``sync`` for ``push --delete``) with the rules of rules.py, in
up to three runs: files whose difference only vaultfs can see (manifest.py), then the
data, then vaultfs.conf, so that a copy interrupted on its way to an empty place is not
yet a vault that opens half filled.  Run again, rclone skips what arrived: that is the
resume.

pull never writes into a file in place (rclone 1.60 writes a download straight into its
final name, and an interrupted download would leave a truncated file where the old
whole one was): it fetches into ``BACKING/vaultfs.pull/`` (``--compare-dest BACKING``, so
only what differs is fetched; what is staged survives an interruption) and then renames
each file into place, one atomic step per file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from vaultfs.errors import NotAVault, RemoteFailed
from vaultfs.remote import guard, rclone, rules
from vaultfs.remote.manifest import Manifest
from vaultfs.remote.progress import RcloneProgress
from vaultfs.remote.rclone import Remote


@dataclass
class Result:
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    compare: str = "modtime"
    copied: set[str] = field(default_factory=set)


class _Runs:
    """The rclone runs of one transfer: one progress bar, the files copied, the first failure."""

    def __init__(self, verb: str, result: Result) -> None:
        self.progress = RcloneProgress(verb)
        self.result = result
        self.failure: RemoteFailed | None = None

    def run(self, args: list[str]) -> None:
        if self.failure is not None:
            return  # after a failure, only what already arrived is recorded
        self.progress.next_run()
        outcome = rclone.stream(args, self.progress.stats)
        self.result.copied.update(outcome.copied)
        self.result.files += int(outcome.stats.get("transfers") or 0)
        self.result.bytes += int(outcome.stats.get("bytes") or 0)
        if outcome.returncode != 0:
            self.failure = RemoteFailed(outcome.failure())

    def finish(self) -> None:
        self.progress.close()
        if self.failure is not None:
            raise self.failure


def _compare_flags(compare: str) -> list[str]:
    return ["--checksum"] if compare == "checksum" else []


def _files_from(paths: list[str]) -> str:
    handle, name = tempfile.mkstemp(prefix="files-from-", suffix=".txt", dir=guard.state_dir())
    with os.fdopen(handle, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(path + "\n" for path in paths)
    return name


def _copy_runs(runs: _Runs, source: str, dest: str, unsure: list[str], compare: str, extra: list[str],
               delete: bool = False) -> None:
    """Unsure files unconditionally, then the data, then vaultfs.conf."""
    data_unsure = [p for p in unsure if p not in rules.CONFIG_FILES]
    if data_unsure:
        listing = _files_from(data_unsure)
        try:
            runs.run(["copy", source, dest, "--files-from", listing, "--ignore-times", "--no-traverse",
                      *rules.TRANSFER_FLAGS])
        finally:
            os.unlink(listing)
    runs.run(["sync" if delete else "copy", source, dest, *_compare_flags(compare), *extra, *rules.TRANSFER_FLAGS,
              *rules.filter_args(config=False)])
    config_unsure = ["--ignore-times"] if any(p in rules.CONFIG_FILES for p in unsure) else []
    runs.run(["copy", source, dest, *_compare_flags(compare), *extra, *config_unsure, *rules.config_only_args()])


def push(backing: str, remote: Remote, delete: bool = False) -> Result:
    """Upload BACKING to REMOTE; with ``delete``, remove what BACKING no longer has."""
    backing = os.path.abspath(backing)
    with guard.exclusive(backing):
        if not any(os.path.isfile(os.path.join(backing, name)) for name in rules.CONFIG_FILES):
            raise NotAVault(f"{backing} holds no vault (no {rules.CONFIG_FILES[0]})")
        local_id = guard.local_vault_id(backing)
        guard.check_same_vault(local_id, guard.remote_vault_id(remote), backing, remote)
        result = Result(compare=rclone.features(remote).compare)
        manifest, unsure = _unsure(backing, remote, result.compare)
        guard.drop_stale_config(remote)
        runs = _Runs("push", result)
        try:
            _copy_runs(runs, backing, remote.text, unsure, result.compare, [], delete=delete)
        finally:
            if manifest is not None:
                _record(manifest, backing, _listing(remote), result, unsure)
        runs.finish()
        return result


def pull(remote: Remote, backing: str, delete: bool = False) -> Result:
    """Download REMOTE into BACKING (new, empty or the same vault); ``delete`` removes what REMOTE lacks."""
    backing = os.path.abspath(backing)
    with guard.exclusive(backing):
        local_id = guard.local_vault_id(backing)
        remote_id = guard.remote_vault_id(remote)
        if remote_id is None:
            raise NotAVault(f"{remote} holds no vault (no {rules.CONFIG_FILES[0]})")
        guard.check_same_vault(local_id, remote_id, backing, remote)
        os.makedirs(backing, exist_ok=True)
        result = Result(compare=rclone.features(remote).compare)
        manifest, unsure = _unsure(backing, remote, result.compare)
        staging = os.path.join(backing, rules.PULL_STAGING)
        runs = _Runs("pull", result)
        complete = False
        try:
            _copy_runs(runs, remote.text, staging, unsure, result.compare, ["--compare-dest", backing])
            complete = runs.failure is None
        finally:
            far = _listing(remote)
            _publish(staging, backing, far, result.copied, complete)
            if far is not None and delete and complete:
                result.deleted = _delete_missing(backing, far)
            if manifest is not None:
                _record(manifest, backing, far, result, unsure)
        runs.finish()
        return result


def _unsure(backing: str, remote: Remote, compare: str) -> tuple[Manifest | None, list[str]]:
    """For a size-only remote: the manifest and the files that only vaultfs can tell apart."""
    if compare != "size":
        return None, []
    manifest = Manifest(backing, remote)
    return manifest, manifest.unsure(rules.local_files(backing), rclone.lsjson(remote.text, rules.filter_args()))


def _listing(remote: Remote) -> dict[str, tuple[int, str]] | None:
    try:
        return rclone.lsjson(remote.text, rules.filter_args())
    except RemoteFailed:
        return None  # the remote went away


def _record(manifest: Manifest, backing: str, far: dict[str, tuple[int, str]] | None, result: Result,
            was_unsure: list[str]) -> None:
    if far is None:
        return  # the old record stays: the next run re-sends whatever is unsure
    manifest.update(rules.local_files(backing), far, result.copied, set(was_unsure))
    manifest.save()


def _publish(staging: str, backing: str, far: dict[str, tuple[int, str]] | None, copied: set[str],
             complete: bool) -> None:
    """Rename each whole staged file into place, vaultfs.conf last; the rest waits for the next run.

    Whole: rclone reported it copied in this run, or the run succeeded (so rclone checked
    every staged file against the remote) and the remote lists it with this size.
    """
    if not os.path.isdir(staging):
        return
    staged = rules.local_files(staging, symlinks=True)
    for relative in sorted(staged, key=lambda path: (path in rules.CONFIG_FILES, path)):
        if os.path.islink(os.path.join(staging, relative)):
            target = os.fsencode(os.readlink(os.path.join(staging, relative)))
            listed, size = (far or {}).get(relative + ".rclonelink"), len(target)
        else:
            listed, size = (far or {}).get(relative), staged[relative][0]
        whole = relative in copied or complete
        if not whole or (far is not None and (listed is None or listed[0] != size)):
            continue
        target = os.path.join(backing, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(staging, relative), target)
    _remove_empty_dirs(staging, keep_root=False)


def _remove_empty_dirs(root: str, keep_root: bool) -> None:
    for directory, _subdirs, _files in os.walk(root, topdown=False):
        if (directory != root or not keep_root) and not os.listdir(directory):
            os.rmdir(directory)


def _delete_missing(backing: str, far: dict[str, tuple[int, str]]) -> int:
    """pull --delete: remove local files the remote does not have (never excluded names)."""
    gone = [relative for relative in rules.local_files(backing) if relative not in far]
    for relative in gone:
        os.unlink(os.path.join(backing, relative))
    _remove_empty_dirs(backing, keep_root=True)
    return len(gone)
