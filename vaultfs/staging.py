"""Staged writes: a file written under a hidden name, then renamed into place in one step.

``import`` uses it so that an interrupted run leaves no half-written file visible and
a second run resumes cleanly. A mixin of ``vault.Vault``; staging names are reserved
(``vaultfs.tmp-*``), so listings never show them, and ``fsck --repair`` removes leftovers.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from vaultfs.filehandle import FileHandle

if TYPE_CHECKING:
    from vaultfs.vault import Vault

STAGING_PREFIX = "vaultfs.tmp-"  # reserved, so hidden: a file being imported is never visible half-written


class StagingOps:
    """Hidden staging files of ``vault.Vault``, published by one rename."""

    def create_staged(self: Vault, path: str, mode: int) -> tuple[FileHandle, str]:
        """Open a hidden new file in ``path``'s directory; ``publish_staged`` gives it the name.

        Until then it is a reserved ``vaultfs.tmp-*`` entry: invisible in listings, removed
        by ``remove_staged`` or ``fsck --repair`` if the writer dies.
        """
        self._writable()
        entry = self._entry(path)
        staged = os.path.join(entry.parent.backing, STAGING_PREFIX + os.urandom(8).hex())
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o7777)
        try:
            opened = self.open_files.acquire(staged, path, True, new_file=True, fd=fd)
        except BaseException:
            os.unlink(staged)
            raise
        return FileHandle(self.open_files, opened, os.O_RDWR, path), staged

    def publish_staged(self: Vault, staged: str, path: str, mode: int, atime_ns: int, mtime_ns: int) -> None:
        """Set the staged file's mode and times, then rename it over ``path`` in one step."""
        self._writable()
        with self._ns_lock:
            entry = self._entry(path)
            if os.path.dirname(staged) != entry.parent.backing:
                raise OSError(errno.EXDEV, "staged file is in another directory", path)
            if os.path.isdir(entry.path) and not os.path.islink(entry.path):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            os.chmod(staged, mode & 0o7777)
            os.utime(staged, ns=(atime_ns, mtime_ns))
            self._write_sidecar(entry)
            os.rename(staged, entry.path)

    def remove_staged(self: Vault, dir_path: str) -> int:
        """Delete staging files an interrupted writer left in a directory; return how many."""
        self._writable()
        directory = self._dir(dir_path)
        removed = 0
        with os.scandir(directory.backing) as entries:
            for item in entries:
                if item.name.startswith(STAGING_PREFIX):
                    os.unlink(item.path)
                    removed += 1
        return removed
