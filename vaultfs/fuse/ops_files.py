"""File handlers: open, create, read, write, flush, fsync, fallocate, release.

Reads and writes run on the event loop (in worker threads only on a network backing dir,
see ``VaultOperations._run``); a read hands the kernel a view of its own buffer, no copy;
fsync waits in a worker thread (the disk, not Python). At open the kernel keeps its page
cache only when the backing file is unchanged since the kernel cached it (a stamp per
recently released file).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from vaultfs.filehandle import FileHandle
from vaultfs.fuse.handler import handler, name_of
from vaultfs.fuse.inodes import Inode

if TYPE_CHECKING:
    pass

FALLOC_FL_KEEP_SIZE = 0x01  # <linux/falloc.h>
FALLOC_FL_PUNCH_HOLE = 0x02


def _stamp(st: os.stat_result) -> int:
    """What the backing file looked like when the kernel cached its pages, as one int.

    Kept for every file opened during the mount (100,000 of them after a backup): a hash
    costs a tenth of the tuple it is made of; a collision would only keep a page cache.
    """
    return hash((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


class FileHandlers:
    """Mixed into VaultOperations (its inode table, Vault, open files and ``_run``)."""


    def _flags(self, flags: int) -> int:
        """Open flags as the Vault must see them under the writeback cache.

        The kernel then reads pages of write-only files and does O_APPEND itself (it
        sends the end-of-file offset), as libfuse's passthrough_hp notes.
        """
        if not self.enable_writeback_cache:
            return flags
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return flags & ~os.O_APPEND

    async def _add_handle(self, inode: Inode, handle: FileHandle) -> pyfuse3.FileInfo:
        """Register a handle; keep the kernel's page cache only if the file did not change meanwhile."""
        st = await self._run(handle.stat)
        stamp = _stamp(st)
        keep = stamp == self.inodes.stamp(inode)
        self.inodes.set_stamp(inode, stamp)
        inode.handles += 1
        fh = next(self._next_fh)
        self._files[fh] = (handle, inode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @handler
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self.inodes.get(inode)
        flags = self._flags(flags)
        key = self.inodes.key_of(node)
        handle = self.vault.reopen(key, flags) if flags & os.O_TRUNC == 0 else None
        if handle is None:
            handle = await self._run(self.vault.open_at, *await self._place(node), flags)
            if handle.key != key:
                self.inodes.rekey(node, handle.key)
        return await self._add_handle(node, handle)

    @handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        plain = name_of(name)
        handle, found = await self._run(self.vault.create_at, self.inodes.dir_of(parent_inode), plain, mode,
                                        self._flags(flags), self._owner(ctx))
        reply = self._entry_reply(parent_inode, plain, found)
        return await self._add_handle(self.inodes.get(reply.st_ino), handle), reply

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._run(self._handle(fh).read_view, off, size)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._run(self._handle(fh).write, off, buf)

    @handler
    async def flush(self, fh: int) -> None:
        self._handle(fh).flush()

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handle(fh)
        await trio.to_thread.run_sync(handle.fsync, datasync, limiter=self._limiter)

    @handler
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Added by the libfuse shim (extra_ops.py), which runs it synchronously: it must never await.

        Mode 0, FALLOC_FL_KEEP_SIZE, and PUNCH_HOLE | KEEP_SIZE (format v2 holes). Everything
        else (ZERO_RANGE, COLLAPSE_RANGE ...) is EOPNOTSUPP.
        """
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
            self._handle(fh).punch_hole(offset, length)
            return
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise OSError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x} is not supported")
        self._handle(fh).allocate(offset, length, keep_size=bool(mode & FALLOC_FL_KEEP_SIZE))

    @handler
    async def release(self, fh: int) -> None:
        found = self._files.pop(fh, None)
        if found is None:
            return
        handle, inode = found
        try:
            st = await self._run(handle.stat)
            self.inodes.set_stamp(inode, _stamp(st))  # our own writes keep the page cache valid
        finally:
            inode.handles -= 1
            await self._run(handle.close)
        key = self.inodes.key_of(inode)
        if not st.st_nlink and self.vault.open_files.get(key) is None:
            self.inodes.detach(key)  # unlinked while open: now the backing file is gone
        self.inodes.forget(inode.ino, 0)  # gone if the kernel forgot it while it was open
