"""The FUSE request handlers on libfuse's low-level API (pyfuse3): a protocol adapter.

Requests come in as inode numbers and names (bytes); each handler finds the inode's
directory and name in the inode table, makes one Vault call and encodes the reply.  No
crypto, no offset math, no backing syscalls live here.  This is the one place where
exceptions become errnos: only ``FUSEError`` leaves a handler (anything else would stop
pyfuse3's event loop), and an authentication failure is always EIO, logged.

Every entry and attribute reply carries ENTRY_TIMEOUT / ATTR_TIMEOUT, and a missing name
is a cached negative entry: a request the kernel answers from its caches never reaches
this Python daemon (docs/mount.md has the measurements behind the values).  Every
request is handled on the event loop thread when the backing dir is local: the AES of
``cryptography`` keeps the GIL (measured: two threads decrypt no faster than one), so
worker threads only add GIL hand-offs (reads and writes of 1 MiB were 40% slower with
them).  On a network backing dir the Vault calls run in worker threads (``_run``).
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from vaultfs.entries import Attr, Dir
from vaultfs.filehandle import FileHandle
from vaultfs.fuse.handler import handler, name_of, raw_of
from vaultfs.fuse.inodes import ROOT_INODE, Inode, InodeTable
from vaultfs.fuse.ops_dirs import DirHandlers, _OpenDir
from vaultfs.fuse.ops_files import FileHandlers
from vaultfs.fuse.ops_xattrs import XattrHandlers
from vaultfs.namespace import Owner
from vaultfs.vault import Found, Vault

log = logging.getLogger(__name__)

ENTRY_TIMEOUT = 1.0  # seconds the kernel may trust a name -> inode answer
ATTR_TIMEOUT = 1.0  # seconds it may trust attributes
NEGATIVE_TIMEOUT = 1.0  # seconds it may trust "no such entry"
SLOW_BACKING_THREADS = 8  # worker threads for the backing calls of a slow (network) backing dir
_CURRENT = {"uid": "st_uid", "gid": "st_gid", "mode": "st_mode", "atime_ns": "st_atime_ns", "mtime_ns": "st_mtime_ns"}


def _current(attr: Attr, field: str) -> int:
    """The value a setattr field has now (mode without the file type bits)."""
    value = getattr(attr, _CURRENT[field])
    return stat.S_IMODE(value) if field == "mode" else value

class VaultOperations(DirHandlers, FileHandlers, XattrHandlers, pyfuse3.Operations):
    """pyfuse3 handlers, each a thin translation onto the Vault."""

    enable_writeback_cache = True

    def __init__(self, vault: Vault, *, writeback_cache: bool = True, slow_backing: bool = False,
                 on_ready: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.vault = vault
        self.enable_writeback_cache = writeback_cache
        # On a backing dir where a syscall may wait on a network (rclone's mount), every
        # backing call runs in a worker thread: one slow open must not stall every request.
        # On a local disk the thread hop would cost more than the call itself.
        self.slow_backing = slow_backing
        self._limiter = trio.CapacityLimiter(SLOW_BACKING_THREADS)
        self.inodes = InodeTable(vault.root, generation=int(time.time()) & 0x7FFFFFFF)
        self._files: dict[int, tuple[FileHandle, Inode]] = {}
        self._dirs: dict[int, _OpenDir] = {}
        self._next_fh = itertools.count(1)
        self._as_root = os.geteuid() == 0
        self.on_ready = on_ready
        self.last_access = time.monotonic()
        # Requests served, by type: logged at unmount. Every request that reaches this Python
        # daemon costs tens of microseconds in the binding alone; this shows which ones come.
        self.requests: Counter[str] = Counter()
        vault.conflicts.on_change = self._name_appeared

    def _name_appeared(self, directory: Dir, name: str) -> None:
        """vaultfs itself gave an entry a name (a resolved conflict copy): drop the kernel's
        cached "no such entry" for it (queued: never called back inside the request)."""
        ino = self.inodes.ino_of(directory.key)
        if ino is not None:
            pyfuse3.invalidate_entry_async(ino, raw_of(name), ignore_enoent=True)

    # ------------------------------------------------------------ lifecycle and helpers

    def init(self) -> None:
        """The kernel connected: tell the mounter that the mount answers."""
        if self.on_ready is not None:
            self.on_ready()

    def drop_page_cache(self, inodes: list[Inode]) -> None:
        """Drop the kernel's cached pages of these files (before a forced unmount; from a worker
        thread: the kernel writes dirty pages back through this daemon while it waits)."""
        for inode in inodes:
            try:
                pyfuse3.invalidate_inode(inode.ino)
            except OSError as exc:  # the kernel forgot it meanwhile (ENOENT), or the mount is gone
                log.debug("invalidate inode %d: %s", inode.ino, exc)

    async def _run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A Vault call: inline on the event loop, or in a worker thread when the backing is slow."""
        if not self.slow_backing:
            return function(*args, **kwargs)
        return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs), limiter=self._limiter)


    def request_summary(self) -> str:
        total = sum(self.requests.values())
        top = ", ".join(f"{name} {count}" for name, count in self.requests.most_common())
        return f"{total} requests" + (f" ({top})" if top else "")

    def open_handles(self) -> int:
        """How many files the kernel holds open (the idle lock waits for zero)."""
        return len(self._files)

    def _owner(self, ctx: pyfuse3.RequestContext) -> Owner | None:
        return Owner(ctx.uid, ctx.gid) if self._as_root else None

    def _reply(self, inode: Inode, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode.ino
        entry.generation = self.inodes.generation
        entry.entry_timeout = ENTRY_TIMEOUT
        entry.attr_timeout = ATTR_TIMEOUT
        entry.st_mode = attr.st_mode
        entry.st_nlink = attr.st_nlink
        entry.st_uid = attr.st_uid
        entry.st_gid = attr.st_gid
        entry.st_rdev = attr.st_rdev
        entry.st_size = attr.st_size
        entry.st_blksize = attr.st_blksize
        entry.st_blocks = attr.st_blocks
        entry.st_atime_ns = attr.st_atime_ns
        entry.st_mtime_ns = attr.st_mtime_ns
        entry.st_ctime_ns = attr.st_ctime_ns
        return entry

    @staticmethod
    def _negative() -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = 0  # "no such entry", cached by the kernel for entry_timeout
        entry.entry_timeout = NEGATIVE_TIMEOUT
        return entry

    def _learn(self, parent: int, name: str, found: Found) -> Inode:
        directory = self.vault.child_dir(found) if found.is_dir else None
        # the plaintext kind (a symlink), not its backing file's (format v2 stores it as a regular .vfx file)
        return self.inodes.learn(parent, name, found.key, found.attr.st_mode, directory)

    def _entry_reply(self, parent: int, name: str, found: Found) -> pyfuse3.EntryAttributes:
        """Reply with an entry: the kernel now holds one more lookup of its inode."""
        inode = self._learn(parent, name, found)
        inode.lookups += 1
        return self._reply(inode, found.attr)

    async def _find(self, inode: Inode) -> Found:
        """Look an inode up again by one of its names (stale names are dropped on the way).

        A name can go stale behind our back (a sync client renamed or deleted the backing
        entry). If a sync client replaced the file under a name, the inode follows the name
        (re-keyed): what the kernel's cached name leads to is what is there now.
        """
        failure: OSError | None = None
        for link, (directory, name) in self.inodes.locations(inode):
            try:
                found = await self._run(self.vault.lookup, directory, name)
            except FileNotFoundError as exc:
                self.inodes.drop_link(inode, link)
                failure = exc
                continue
            if found.key != self.inodes.key_of(inode):
                if stat.S_IFMT(found.attr.st_mode) != inode.kind or len(inode.links) > 1:
                    self.inodes.drop_link(inode, link)
                    continue
                self.inodes.rekey(inode, found.key)
            return found
        raise failure or OSError(errno.ENOENT, "no name left", str(inode.ino))

    async def _attr(self, inode: Inode) -> Attr:
        if inode.dir is not None:
            return await self._run(self.vault.dir_attr, inode.dir)
        # an open file: through its fd, even when unlinked
        opened = await self._run(self.vault.open_attr, self.inodes.key_of(inode))
        return opened if opened is not None else (await self._find(inode)).attr

    async def _place(self, inode: Inode) -> tuple[Any, str]:
        """(directory, name) to act on an inode by name, checked to be current: the root is (None, '.')."""
        if inode.ino == ROOT_INODE:
            return None, "."
        found = await self._find(inode)
        return found.entry.parent, found.entry.name

    def _handle(self, fh: int) -> FileHandle:
        found = self._files.get(fh)
        if found is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return found[0]

    # ------------------------------------------------------------ names and attributes

    @handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        directory = self.inodes.dir_of(parent_inode)
        plain = name_of(name)
        try:
            found = await self._run(self.vault.lookup, directory, plain)
        except FileNotFoundError:
            return self._negative()
        return self._entry_reply(parent_inode, plain, found)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.inodes.forget(ino, count)

    @handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        return self._reply(node, await self._attr(node))

    @handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        changes: dict[str, Any] = {}
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_mode:
            changes["mode"] = stat.S_IMODE(attr.st_mode)
        if fields.update_atime:
            changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime_ns"] = attr.st_mtime_ns
        size = attr.st_size if fields.update_size else None
        if not changes and size is None:
            # ctime alone: the writeback cache flushing it after a rename; nothing can set it.
            return self._reply(node, await self._attr(node))
        if await self._run(self.vault.setattr_open, self.inodes.key_of(node), size=size, **changes):
            return self._reply(node, await self._attr(node))
        if node.dir is not None or node.ino == ROOT_INODE:
            current, (directory, name) = await self._attr(node), await self._place(node)
        else:
            try:
                found = await self._find(node)
            except FileNotFoundError:
                # Every name is gone and nothing holds it open (the writeback cache flushing
                # the times of a deleted file): there is nothing left to change.
                attr.st_ino = node.ino
                attr.st_nlink = 0
                return attr
            current, directory, name = found.attr, found.entry.parent, found.entry.name
        # The writeback cache re-sends times the file already has (after every rename): skip those.
        changes = {field: value for field, value in changes.items() if _current(current, field) != value}
        if size is not None and size != current.st_size:
            await self._run(self.vault.truncate_at, directory, name, size)
        elif not changes:
            return self._reply(node, current)
        if changes:
            await self._run(self.vault.setattr_at, directory, name, **changes)
        return self._reply(node, await self._attr(node))

    @handler
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return raw_of(await self._run(self.vault.readlink_at, *await self._place(self.inodes.get(inode))))

    @handler
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        return await self._run(self.vault.access_at, *await self._place(self.inodes.get(inode)), mode)

    @handler
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        info = await self._run(self.vault.statfs)
        reply = pyfuse3.StatvfsData()
        for field_name, value in info.items():
            setattr(reply, field_name, value)
        return reply

    # ------------------------------------------------------------ namespace

    @handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        plain = name_of(name)
        found = await self._run(self.vault.mkdir_at, self.inodes.dir_of(parent_inode), plain, mode,
                                self._owner(ctx))
        return self._entry_reply(parent_inode, plain, found)

    @handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        plain = name_of(name)
        found = await self._run(self.vault.mknod_at, self.inodes.dir_of(parent_inode), plain, mode, rdev,
                                self._owner(ctx))
        return self._entry_reply(parent_inode, plain, found)

    @handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        plain = name_of(name)
        found = await self._run(self.vault.symlink_at, self.inodes.dir_of(parent_inode), plain, name_of(target),
                                self._owner(ctx))
        return self._entry_reply(parent_inode, plain, found)

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        plain = name_of(new_name)
        src_dir, src_name = await self._place(self.inodes.get(inode))
        found = await self._run(self.vault.link_at, src_dir, src_name, self.inodes.dir_of(new_parent_inode), plain)
        return self._entry_reply(new_parent_inode, plain, found)

    def _removed(self, st: os.stat_result | None) -> None:
        """A backing entry lost a name: if that was its last one, its number may be reused.

        An open file keeps its backing inode (and number) until its last handle closes;
        ``release`` detaches it then.
        """
        if st is not None and (stat.S_ISDIR(st.st_mode) or st.st_nlink <= 1):
            key = (st.st_dev, st.st_ino)
            if self.vault.open_files.get(key) is None:
                self.inodes.detach(key)

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        plain = name_of(name)
        self._removed(await self._run(self.vault.unlink_at, self.inodes.dir_of(parent_inode), plain))
        self.inodes.unlinked(parent_inode, plain)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        plain = name_of(name)
        directory = self.inodes.dir_of(parent_inode)
        found = await self._run(self.vault.lookup, directory, plain)
        await self._run(self.vault.rmdir_at, directory, plain)
        self._removed(found.st)
        self.inodes.unlinked(parent_inode, plain)

    @handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any = None) -> None:
        old, new = name_of(name_old), name_of(name_new)
        self._removed(await self._run(self.vault.rename_at, self.inodes.dir_of(parent_inode_old), old,
                                           self.inodes.dir_of(parent_inode_new), new, flags))
        if flags & 2:  # RENAME_EXCHANGE
            self.inodes.exchanged(parent_inode_old, old, parent_inode_new, new)
        else:
            self.inodes.renamed(parent_inode_old, old, parent_inode_new, new)

