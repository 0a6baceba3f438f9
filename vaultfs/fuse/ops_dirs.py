"""Directory handlers: opendir, readdir (readdirplus: every entry with its attributes), releasedir, fsyncdir.

A listing is read once per open directory (at its first readdir), conflict copies resolved
as the Vault lists; each entry the kernel receives counts one lookup of its inode.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyfuse3

from vaultfs.fuse.handler import handler, raw_of
from vaultfs.fuse.inodes import ROOT_INODE

if TYPE_CHECKING:
    from vaultfs.vault import Found


@dataclass
class _OpenDir:
    ino: int
    listing: list[Found] | None = None


class DirHandlers:
    """Mixed into VaultOperations (its inode table, Vault and ``_run``)."""


    @handler
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        self.inodes.dir_of(inode)
        fh = next(self._next_fh)
        self._dirs[fh] = _OpenDir(inode)
        return fh

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        state = self._dirs.get(fh)
        if state is None:
            raise OSError(errno.EBADF, "unknown directory handle")
        node = self.inodes.get(state.ino)
        if state.listing is None or start_id == 0:
            state.listing = await self._run(self.vault.listdir_at, self.inodes.dir_of(state.ino))
        # ids: 1 ".", 2 "..", 3.. the entries; each reply's next_id is where to resume.
        if start_id < 2:
            parent = node.links[0][0] if node.links else ROOT_INODE
            dots = [(b".", node.ino), (b"..", parent)]
            for index in range(start_id, 2):
                name, dot = dots[index]
                entry = pyfuse3.EntryAttributes()  # the kernel links neither name: no lookup is counted
                entry.st_ino = dot
                entry.st_mode = stat.S_IFDIR
                if not pyfuse3.readdir_reply(token, name, entry, index + 1):
                    return
        for index in range(max(0, start_id - 2), len(state.listing)):
            found = state.listing[index]
            inode = self._learn(state.ino, found.entry.name, found)
            if not pyfuse3.readdir_reply(token, raw_of(found.entry.name), self._reply(inode, found.attr), index + 3):
                self.inodes.forget(inode.ino, 0)  # not sent: a new inode with no lookup goes again
                return
            inode.lookups += 1  # readdirplus: the kernel links every entry it receives

    @handler
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        state = self._dirs.get(fh)
        if state is None:
            raise OSError(errno.EBADF, "unknown directory handle")
        await self._run(self.vault.fsyncdir_at, self.inodes.dir_of(state.ino))
