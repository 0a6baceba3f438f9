"""What vaultfs knows to be equal on both sides, for remotes that keep neither times nor checksums.

rclone decides whether to transfer a file by size and modification time, or by checksum.
A remote that keeps neither (plain WebDAV, ``rclone serve webdav``) leaves only the size,
and an encrypted file rewritten in place (msgstore.db, every night) keeps its size: rclone
would skip it and the copy on the other side would silently stay old.  So for such
remotes vaultfs records, after each transfer, the fingerprints of both sides of every
file it knows to be equal: local size and mtime in ns, remote size and modification time
(on such servers, the time of the upload).  A file of the same size on both sides whose
pair of fingerprints is not on record is transferred unconditionally (rclone
--ignore-times); everything else is left to rclone.  Losing the record costs one full
transfer of the same-size files, never a skipped change.
"""

from __future__ import annotations

import json
import os

from vaultfs.remote.guard import pair_key, state_dir
from vaultfs.remote.rclone import Remote

Local = tuple[int, int]  # size, mtime_ns
Far = tuple[int, str]  # size, modification time as rclone lists it


class Manifest:
    """Pairs of fingerprints known to be equal, for one (backing dir, remote) pair."""

    def __init__(self, backing: str, remote: Remote) -> None:
        self.path = os.path.join(state_dir(), f"{pair_key(backing, remote)}.manifest.json")
        self.files: dict[str, list] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data.get("files"), dict):
                self.files = data["files"]
        except (OSError, ValueError, AttributeError):
            self.files = {}  # no record: every same-size file is transferred once

    def in_sync(self, relative: str, local: Local, far: Far) -> bool:
        return self.files.get(relative) == [local[0], local[1], far[0], far[1]]

    def unsure(self, local: dict[str, Local], far: dict[str, Far]) -> list[str]:
        """Files of equal size on both sides not known to be equal: rclone cannot tell them apart."""
        return sorted(path for path in local.keys() & far.keys()
                      if local[path][0] == far[path][0] and not self.in_sync(path, local[path], far[path]))

    def update(self, local: dict[str, Local], far: dict[str, Far], transferred: set[str],
               was_unsure: set[str]) -> None:
        """After a transfer: record every file now known equal; forget files gone from either side."""
        known: dict[str, list] = {}
        for path in local.keys() & far.keys():
            if local[path][0] != far[path][0]:
                continue
            if path in transferred or path not in was_unsure:
                known[path] = [local[path][0], local[path][1], far[path][0], far[path][1]]
        self.files = known

    def save(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"files": self.files}, f)
        os.replace(tmp, self.path)
