"""Value types of the Vault API: attributes, resolved directories and entries, vault paths."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from vaultfs.format.names import BackingName


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

    @classmethod
    def from_stat(cls, st: os.stat_result, size: int) -> Attr:
        return cls(st.st_mode, st.st_ino, st.st_nlink, st.st_uid, st.st_gid, size, st.st_atime_ns,
                   st.st_mtime_ns, st.st_ctime_ns, (size + 511) // 512, 4096)


@dataclass(frozen=True)
class Dir:
    """A resolved plaintext directory: its backing path and directory ID(s).

    More than one ID means a sync client kept conflict copies of ``vaultfs.dirid``; names
    are looked up under each, and new names use the first.
    """

    backing: str
    dir_ids: tuple[bytes, ...]

    @property
    def dir_id(self) -> bytes:
        return self.dir_ids[0]


@dataclass(frozen=True)
class Entry:
    """A resolved (possibly not existing) plaintext entry."""

    parent: Dir
    name: str
    backing_name: BackingName

    @property
    def path(self) -> str:
        return os.path.join(self.parent.backing, self.backing_name.entry)

    @property
    def sidecar_path(self) -> str | None:
        sidecar = self.backing_name.sidecar
        return None if sidecar is None else os.path.join(self.parent.backing, sidecar)


def split_path(path: str) -> list[str]:
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, f"not an absolute vault path: {path!r}")
    return [part for part in path.split("/") if part]


def join_path(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name
