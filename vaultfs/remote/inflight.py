"""The files a sync is carrying, on disk while it runs, so that a killed sync leaves no fake conflict.

rclone 1.60 writes an upload (SFTP, WebDAV) or a download straight into the file's
final name.  A sync killed mid-file leaves a truncated copy there, and the next bisync
run would take it for a change on that side: a "conflict" whose one copy is junk.  So
while bisync runs, the files it has queued for each side and not yet reported copied
are kept in ``inflight.json``; the next run first deletes their copies on the side they
were going to.  That loses nothing: bisync carries a file onto a side only where that
side did not change it, so the copy there was absent or the old version, and bisync
then sees "deleted here, changed there" and carries the whole file again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

from vaultfs.remote import rclone
from vaultfs.remote.rclone import Remote

_ROOTS = re.compile(r'Synching Path1 "(.*)" with Path2 "(.*)"')
_QUEUED = re.compile(r"Queue copy to Path([12])\s+- (.+)$")
_RESYNC_DOWN = re.compile(r"Resync will copy to Path1\s+- (.+)$")


class Inflight:
    """{"up": [...], "down": [...]}: backing-relative paths on their way to the remote / to here."""

    def __init__(self, workdir: str) -> None:
        self.path = os.path.join(workdir, "inflight.json")
        self.up: set[str] = set()
        self.down: set[str] = set()
        self._roots = ("", "")
        self._dirty = False
        self._flushed = 0.0

    def left_behind(self) -> bool:
        return os.path.exists(self.path)

    def clean_up(self, backing: str, remote: Remote) -> int:
        """Delete the copies a killed sync may have left half-written; returns how many were looked at."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            up, down = [str(p) for p in data.get("up", [])], [str(p) for p in data.get("down", [])]
        except (OSError, ValueError, AttributeError):
            up, down = [], []
        if up:
            listing = os.path.join(os.path.dirname(self.path), "partial-uploads.txt")
            with open(listing, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.writelines(path + "\n" for path in up)
            try:
                rclone.run(["delete", remote.text, "--files-from", listing, "--no-traverse"], ok_codes=(0, 3, 4))
            finally:
                os.unlink(listing)
        for path in down:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(backing, path))
        self.clear()
        return len(up) + len(down)

    def start(self, up: set[str], down: set[str]) -> None:
        """Before bisync starts (a resync logs no queue: what it will carry is known from the listings)."""
        self.up, self.down = set(up), set(down)
        self.flush(force=True)

    def watch(self, record: dict) -> None:
        """Feed every JSON record of bisync's log."""
        message = str(record.get("msg", ""))
        if (match := _ROOTS.search(message)) is not None:
            self._roots = (match.group(1), match.group(2))
        elif (match := _QUEUED.search(message)) is not None:
            side, full = match.group(1), match.group(2)
            root = self._roots[int(side) - 1]
            relative = full[len(root):] if root and full.startswith(root) else full
            (self.up if side == "2" else self.down).add(relative)
            self._dirty = True
        elif (match := _RESYNC_DOWN.search(message)) is not None:
            self.down.add(match.group(1))
            self._dirty = True
        elif message.startswith("Copied") and record.get("object"):
            self.up.discard(str(record["object"]))
            self.down.discard(str(record["object"]))
            self._dirty = True
        if "Do queued copies" in message or "stats" in record:
            self.flush(force="Do queued copies" in message)

    def flush(self, force: bool = False) -> None:
        if not (self._dirty or force) or (not force and time.monotonic() - self._flushed < 0.5):
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            json.dump({"up": sorted(self.up), "down": sorted(self.down)}, f)
        os.replace(tmp, self.path)
        self._dirty, self._flushed = False, time.monotonic()

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
