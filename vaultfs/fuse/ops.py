"""The FUSE request handlers on libfuse's low-level API (pyfuse3): a protocol adapter.

Requests come in as inode numbers and names (bytes); each handler finds the inode's
directory and name in the inode table, makes one Vault call and encodes the reply.  No
crypto, no offset math, no backing syscalls live here.  This is the one place where
exceptions become errnos: only ``FUSEError`` leaves a handler (anything else would stop
pyfuse3's event loop), and an authentication failure is always EIO, logged.

Every entry and attribute reply carries ENTRY_TIMEOUT / ATTR_TIMEOUT, and a missing name
is a cached negative entry: a request the kernel answers from its caches never reaches
this Python daemon (docs/mount.md has the measurements behind the values).  Reads and
writes of THREAD_MIN bytes or more run in a worker thread: the AES releases the GIL, so
two of them use both cores; small ones stay on the event loop, where a thread hop would
cost more than it saves.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3
import trio

from vaultfs.entries import Attr, Dir
from vaultfs.filehandle import FileHandle
from vaultfs.fuse.inodes import ROOT_INODE, Inode, InodeTable
from vaultfs.namespace import Owner
from vaultfs.vault import Found, Vault

log = logging.getLogger(__name__)

ENTRY_TIMEOUT = 1.0  # seconds the kernel may trust a name -> inode answer
ATTR_TIMEOUT = 1.0  # seconds it may trust attributes
NEGATIVE_TIMEOUT = 1.0  # seconds it may trust "no such entry"
THREAD_MIN = 128 * 1024  # bytes: reads/writes from this size run in a worker thread
SLOW_BACKING_THREADS = 8  # worker threads for the backing calls of a slow (network) backing dir
FALLOC_FL_KEEP_SIZE = 0x01  # <linux/falloc.h>
FALLOC_FL_PUNCH_HOLE = 0x02
_CURRENT = {"uid": "st_uid", "gid": "st_gid", "mode": "st_mode", "atime_ns": "st_atime_ns", "mtime_ns": "st_mtime_ns"}


def _current(attr: Attr, field: str) -> int:
    """The value a setattr field has now (mode without the file type bits)."""
    value = getattr(attr, _CURRENT[field])
    return stat.S_IMODE(value) if field == "mode" else value

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def handler(func: F) -> F:
    """Record the access (for --idle, and a count per request type) and turn every failure into an errno."""
    name = func.__name__

    @functools.wraps(func)
    async def wrapper(self: VaultOperations, *args: Any) -> Any:
        self.last_access = time.monotonic()
        self.requests[name] += 1
        try:
            return await func(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
            if code == errno.EIO:
                log.error("%s: %s", func.__name__, exc)
            raise pyfuse3.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - a bug must cost one EIO, not the whole mount
            log.exception("%s: unexpected error", func.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _stamp(st: os.stat_result) -> int:
    """What the backing file looked like when the kernel cached its pages, as one int.

    Kept for every file opened during the mount (100,000 of them after a backup): a hash
    costs a tenth of the tuple it is made of; a collision would only keep a page cache.
    """
    return hash((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def _name(raw: bytes) -> str:
    """A name exactly as the kernel gave it (any bytes), as the Vault API's str."""
    return raw.decode("utf-8", "surrogateescape")


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


@dataclass
class _OpenDir:
    ino: int
    listing: list[Found] | None = None


class VaultOperations(pyfuse3.Operations):
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
            pyfuse3.invalidate_entry_async(ino, _raw(name), ignore_enoent=True)

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

    def _offload(self, size: int) -> bool:
        return self.slow_backing or size >= THREAD_MIN

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
        plain = _name(name)
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
        return _raw(await self._run(self.vault.readlink_at, *await self._place(self.inodes.get(inode))))

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

    # ------------------------------------------------------------ extended attributes

    async def _xattr_place(self, inode: int) -> tuple[Any, str, Any]:
        """(directory, name, key): the open file's own fd is used when it is open (even unlinked)."""
        node = self.inodes.get(inode)
        if node.ino == ROOT_INODE:
            return None, ".", None
        try:
            directory, name = await self._place(node)
        except FileNotFoundError:
            if self.vault.open_files.get(self.inodes.key_of(node)) is None:
                raise
            directory, name = None, ""  # only its open fd is left
        return directory, name, self.inodes.key_of(node)

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if not name.startswith(b"user."):  # the kernel asks for security.capability before every write
            raise pyfuse3.FUSEError(errno.ENODATA)
        directory, entry, key = await self._xattr_place(inode)
        return await self._run(self.vault.getxattr_at, directory, entry, name, key)

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        directory, entry, key = await self._xattr_place(inode)
        await self._run(self.vault.setxattr_at, directory, entry, name, value, key)

    @handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        directory, entry, key = await self._xattr_place(inode)
        return await self._run(self.vault.listxattr_at, directory, entry, key)

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        directory, entry, key = await self._xattr_place(inode)
        await self._run(self.vault.removexattr_at, directory, entry, name, key)

    # ------------------------------------------------------------ namespace

    @handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        plain = _name(name)
        found = await self._run(self.vault.mkdir_at, self.inodes.dir_of(parent_inode), plain, mode,
                                self._owner(ctx))
        return self._entry_reply(parent_inode, plain, found)

    @handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        plain = _name(name)
        found = await self._run(self.vault.mknod_at, self.inodes.dir_of(parent_inode), plain, mode, rdev,
                                self._owner(ctx))
        return self._entry_reply(parent_inode, plain, found)

    @handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        plain = _name(name)
        found = await self._run(self.vault.symlink_at, self.inodes.dir_of(parent_inode), plain, _name(target),
                                self._owner(ctx))
        return self._entry_reply(parent_inode, plain, found)

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        plain = _name(new_name)
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
        plain = _name(name)
        self._removed(await self._run(self.vault.unlink_at, self.inodes.dir_of(parent_inode), plain))
        self.inodes.unlinked(parent_inode, plain)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        plain = _name(name)
        directory = self.inodes.dir_of(parent_inode)
        found = await self._run(self.vault.lookup, directory, plain)
        await self._run(self.vault.rmdir_at, directory, plain)
        self._removed(found.st)
        self.inodes.unlinked(parent_inode, plain)

    @handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any = None) -> None:
        old, new = _name(name_old), _name(name_new)
        self._removed(await self._run(self.vault.rename_at, self.inodes.dir_of(parent_inode_old), old,
                                           self.inodes.dir_of(parent_inode_new), new, flags))
        if flags & 2:  # RENAME_EXCHANGE
            self.inodes.exchanged(parent_inode_old, old, parent_inode_new, new)
        else:
            self.inodes.renamed(parent_inode_old, old, parent_inode_new, new)

    # ------------------------------------------------------------ directories

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
            if not pyfuse3.readdir_reply(token, _raw(found.entry.name), self._reply(inode, found.attr), index + 3):
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

    # ------------------------------------------------------------ files

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
        plain = _name(name)
        handle, found = await self._run(self.vault.create_at, self.inodes.dir_of(parent_inode), plain, mode,
                                        self._flags(flags), self._owner(ctx))
        reply = self._entry_reply(parent_inode, plain, found)
        return await self._add_handle(self.inodes.get(reply.st_ino), handle), reply

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        if self._offload(size):
            return await trio.to_thread.run_sync(handle.read, off, size, limiter=self._limiter)
        return handle.read(off, size)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        if self._offload(len(buf)):
            return await trio.to_thread.run_sync(handle.write, off, buf, limiter=self._limiter)
        return handle.write(off, buf)

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
