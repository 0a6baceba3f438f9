"""Value types of the Vault API: attributes, directories, entries, listings, vault paths."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vaultfs.format.names import BackingName

if TYPE_CHECKING:
    from vaultfs.format.listing import DecodedEntry


@dataclass
class Attr:
    """lstat-like attributes of a plaintext entry; st_size is the plaintext size."""

    st_mode: int
    st_ino: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blocks: int
    st_blksize: int
    st_rdev: int = 0

    @classmethod
    def from_stat(cls, st: os.stat_result, size: int, mode: int | None = None, rdev: int = 0) -> Attr:
        """From the backing lstat: the plaintext size, and (for a special entry) its mode and device.

        st_blocks is the backing file's: what it really occupies (holes take nothing).
        """
        return cls(st.st_mode if mode is None else mode, st.st_ino, st.st_nlink, st.st_uid, st.st_gid, size,
                   st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_blocks, 4096, rdev)


BackingKey = tuple[int, int]  # (st_dev, st_ino) of a backing entry: what hard links share


def backing_key(st: os.stat_result) -> BackingKey:
    return st.st_dev, st.st_ino


class Dir:
    """A plaintext directory: where its backing directory is, and the IDs that name its entries.

    The place is a parent chain (parent ``Dir`` + the entry's backing name) instead of a
    path string, so a directory rename updates one object and everything below it follows.
    The tree keeps one ``Dir`` per backing directory at a time, which is what lets that one
    update reach every holder (the FUSE inode table, the path cache).  More than one ID
    means a sync client kept conflict copies of ``vaultfs.dirid``: names are looked up under
    each, and new names use the first.
    """

    __slots__ = ("parent", "backing_name", "name", "place_id", "_ids", "_load_ids", "id_files", "key", "label",
                 "root_path", "__weakref__")

    def __init__(self, parent: Dir | None, backing_name: str, dir_ids: tuple[bytes, ...] | None, key: BackingKey,
                 label: str, root_path: str = "", load_ids: Callable[[Dir], tuple[bytes, ...]] | None = None,
                 name: str = "", place_id: bytes | None = None) -> None:
        self.parent = parent
        self.backing_name = backing_name
        # Its place (docs/format.md section 5): the exact name its IDs are bound to, and the
        # parent's ID under which that name is encrypted (None: try each of the parent's).
        self.name = name
        self.place_id = place_id
        self._ids = dir_ids
        self._load_ids = load_ids
        self.id_files: tuple[str, ...] = ()  # vaultfs.dirid and its copies when the IDs were read
        self.key = key
        self.label = label  # the plaintext path when it was resolved: for messages only
        self.root_path = root_path if parent is None else parent.root_path

    @property
    def dir_ids(self) -> tuple[bytes, ...]:
        """The IDs, read from the backing dir on first use: listing a parent or a stat needs none."""
        if self._ids is None:
            assert self._load_ids is not None, "a Dir without IDs needs a loader"
            self._ids = self._load_ids(self)
        return self._ids

    @dir_ids.setter
    def dir_ids(self, ids: tuple[bytes, ...] | None) -> None:
        self._ids = ids

    @property
    def dir_id(self) -> bytes:
        return self.dir_ids[0]

    @property
    def ids_loaded(self) -> bool:
        return self._ids is not None

    def relpath(self) -> str:
        """The backing path below the vault root ('' for the root), from the current chain."""
        parts: list[str] = []
        node: Dir | None = self
        while node is not None and node.parent is not None:
            parts.append(node.backing_name)
            node = node.parent
        return "/".join(reversed(parts))

    @property
    def backing(self) -> str:
        """Absolute backing path (for messages and path-based tools; I/O goes through dir fds)."""
        rel = self.relpath()
        return os.path.join(self.root_path, rel) if rel else self.root_path

    def __repr__(self) -> str:
        return f"Dir({self.label!r})"


@dataclass(frozen=True)
class Entry:
    """A resolved (possibly not existing) plaintext entry: its directory and backing name.

    ``dir_id`` is the directory's ID its backing name is encrypted under; ``bound_name`` is
    set when the entry is shown under another name than the one its backing name (and, for
    a directory, its IDs) are bound to: a sync client's conflict copy shown read-only.
    """

    parent: Dir
    name: str
    backing_name: BackingName
    dir_id: bytes | None = None
    bound_name: str | None = None

    @property
    def special(self) -> bool:
        return self.backing_name.special

    @property
    def place_name(self) -> str:
        return self.name if self.bound_name is None else self.bound_name

    @property
    def path(self) -> str:
        return os.path.join(self.parent.backing, self.backing_name.entry)

    @property
    def sidecar_path(self) -> str | None:
        sidecar = self.backing_name.sidecar
        return None if sidecar is None else os.path.join(self.parent.backing, sidecar)


@dataclass
class Listed:
    """An entry shown in a listing, with its backing lstat."""

    entry: Entry
    st: os.stat_result


@dataclass
class Scan:
    """One backing directory decoded: what shows as it is, and what needs a decision first."""

    entries: list[Listed] = field(default_factory=list)  # the first entry of each name
    copies: list[tuple[DecodedEntry, os.stat_result]] = field(default_factory=list)  # sync clients' copies
    duplicates: list[tuple[DecodedEntry, os.stat_result]] = field(default_factory=list)  # a name seen twice


def split_path(path: str) -> list[str]:
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, f"not an absolute vault path: {path!r}")
    return [part for part in path.split("/") if part]


def join_path(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name
