"""The FUSE layer's inode table: vaultfs's own inode numbers for the kernel.

One inode per file, shared by all its hard links (found by the backing entry's
(st_dev, st_ino)), so the kernel's attribute and page caches stay coherent across links.
Numbers count up from 2 and are never reused while the mount lives, so a number the
kernel still holds can never come to mean another file (reusing the backing st_ino would:
the backing filesystem recycles numbers).  Each inode counts the kernel's lookups (lookup,
create, mkdir, mknod, symlink, link and every readdirplus entry add one; forget takes them
back) and knows its names as (parent inode, name) links, which renames and unlinks keep
current; a directory inode also holds the vault's ``Dir``, whose parent chain the vault
moves along on rename, so everything below a renamed directory follows at no cost.
Used from the event loop thread only: no locks.
"""

from __future__ import annotations

import errno
import stat

from vaultfs.entries import BackingKey, Dir

ROOT_INODE = 1  # FUSE_ROOT_ID

Link = tuple[int, str]  # (parent inode, plaintext name)


class Inode:
    """One file or directory the kernel knows. Slots and a tuple of links: a walk of 100,000
    files keeps 100,000 of these, so each costs a few hundred bytes, not a kilobyte."""

    __slots__ = ("ino", "key", "kind", "lookups", "link", "more", "dir", "handles", "cache_stamp")

    def __init__(self, ino: int, key: BackingKey, kind: int, lookups: int = 0, dir: Dir | None = None) -> None:
        self.ino = ino
        self.key = key
        self.kind = kind  # stat.S_IFMT of the entry
        self.lookups = lookups
        self.link: Link | None = None  # its name (almost always the only one) ...
        self.more: tuple[Link, ...] = ()  # ... and the names of its other hard links
        self.dir = dir  # directories only
        self.handles = 0  # open file handles
        self.cache_stamp: int | None = None  # the backing file's stamp when the kernel cached its pages

    @property
    def links(self) -> tuple[Link, ...]:
        return self.more if self.link is None else (self.link, *self.more)

    def add_link(self, link: Link) -> None:
        if self.link is None:
            if link not in self.more:
                self.link = link
        elif link != self.link and link not in self.more:
            self.more += (link,)

    def drop_link(self, link: Link) -> None:
        if link == self.link:
            self.link = None
        elif link in self.more:
            self.more = tuple(other for other in self.more if other != link)


class InodeTable:
    def __init__(self, root: Dir, generation: int) -> None:
        self.generation = generation  # the same for every inode of this mount
        root_inode = Inode(ROOT_INODE, root.key, stat.S_IFDIR, lookups=1, dir=root)
        self._by_ino: dict[int, Inode] = {ROOT_INODE: root_inode}
        self._by_key: dict[BackingKey, int] = {root.key: ROOT_INODE}
        self._by_link: dict[Link, int] = {}
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Inode:
        found = self._by_ino.get(ino)
        if found is None:  # the kernel holds no inode we did not give it: a stale handle
            raise OSError(errno.ESTALE, "unknown inode", str(ino))
        return found

    def cached(self) -> list[Inode]:
        """Inodes whose pages the kernel may hold (they were opened during this mount)."""
        return [inode for inode in self._by_ino.values() if inode.cache_stamp is not None]

    def ino_of(self, key: BackingKey) -> int | None:
        return self._by_key.get(key)

    def dir_of(self, ino: int) -> Dir:
        inode = self.get(ino)
        if inode.dir is None:
            raise OSError(errno.ENOTDIR, "not a directory", str(ino))
        return inode.dir

    def learn(self, parent: int, name: str, key: BackingKey, kind: int, directory: Dir | None = None) -> Inode:
        """The inode of the entry ``name`` in ``parent`` (new if unknown); the link is recorded.

        A backing key already known for another kind of entry means the backing
        filesystem reused the number for a new file: that is a new inode.
        """
        ino = self._by_key.get(key)
        inode = self._by_ino.get(ino) if ino is not None else None
        if inode is None or inode.kind != stat.S_IFMT(kind):
            inode = Inode(self._next, key, stat.S_IFMT(kind))
            self._next += 1
            self._by_ino[inode.ino] = inode
            self._by_key[key] = inode.ino
        if directory is not None:
            inode.dir = directory
        self._link(inode, (parent, name))
        return inode

    def _link(self, inode: Inode, link: Link) -> None:
        previous = self._by_link.get(link)
        if previous == inode.ino:
            return
        if previous is not None:  # the name now means another file (replaced behind our back)
            other = self._by_ino.get(previous)
            if other is not None:
                other.drop_link(link)
        self._by_link[link] = inode.ino
        inode.add_link(link)

    def count_lookup(self, inode: Inode, count: int = 1) -> None:
        inode.lookups += count

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references; at zero (and nothing open) the inode goes."""
        inode = self._by_ino.get(ino)
        if inode is None or ino == ROOT_INODE:
            return
        inode.lookups -= count
        if inode.lookups > 0 or inode.handles > 0:
            return
        del self._by_ino[ino]
        if self._by_key.get(inode.key) == ino:
            del self._by_key[inode.key]
        for link in inode.links:
            if self._by_link.get(link) == ino:
                del self._by_link[link]

    def unlinked(self, parent: int, name: str) -> Inode | None:
        """A name went away; return the inode it named, if known."""
        ino = self._by_link.pop((parent, name), None)
        inode = self._by_ino.get(ino) if ino is not None else None
        if inode is not None:
            inode.drop_link((parent, name))
        return inode

    def renamed(self, parent: int, name: str, new_parent: int, new_name: str) -> None:
        """``name`` moved; whatever the new name meant before is no longer reachable by it."""
        moved = self.unlinked(parent, name)
        self.unlinked(new_parent, new_name)
        if moved is not None:
            self._link(moved, (new_parent, new_name))

    def exchanged(self, parent: int, name: str, new_parent: int, new_name: str) -> None:
        first = self.unlinked(parent, name)
        second = self.unlinked(new_parent, new_name)
        if first is not None:
            self._link(first, (new_parent, new_name))
        if second is not None:
            self._link(second, (parent, name))

    def detach(self, key: BackingKey) -> None:
        """The backing file with this key is gone: the backing filesystem may give its number
        to a new file, which must not come back as the old inode (the kernel may hold it)."""
        self._by_key.pop(key, None)

    def rekey(self, inode: Inode, key: BackingKey) -> None:
        """The file at the inode's name is a new backing file now (a sync client replaced it)."""
        if self._by_key.get(inode.key) == inode.ino:
            del self._by_key[inode.key]
        inode.key = key
        self._by_key[key] = inode.ino

    def locations(self, inode: Inode) -> list[tuple[Link, tuple[Dir, str]]]:
        """Each known name of the inode as (link, (directory, name)); names may be stale."""
        result = []
        for link in inode.links:
            parent_inode = self._by_ino.get(link[0])
            if parent_inode is not None and parent_inode.dir is not None:
                result.append((link, (parent_inode.dir, link[1])))
        return result

    def drop_link(self, inode: Inode, link: Link) -> None:
        """A name of the inode turned out to be gone (changed behind our back)."""
        inode.drop_link(link)
        if self._by_link.get(link) == inode.ino:
            del self._by_link[link]
