"""The backing directory through the format's eyes: directories, entry names, listings.

``BackingTree`` owns the backing root fd and one ``Dir`` per backing directory (a weak
registry keyed by the directory's (st_dev, st_ino)), resolves plaintext names to backing
entries under a directory's IDs, and decodes listings.  Every access to a backing entry
goes through ``dir_fd`` (the directory opened beneath the root without following any
symlink) and *at calls on the entry name, so nothing planted in the backing dir is
ever followed.  It knows nothing of file contents or of FUSE: the namespace, the
conflict resolver and the Vault build on it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator

from vaultfs import backing
from vaultfs.entries import BackingKey, Dir, Entry, backing_key, join_path, split_path
from vaultfs.errors import IntegrityError
from vaultfs.format.dirids import DIRID_NAME, DirIds
from vaultfs.format.keys import VaultKeys
from vaultfs.format.names import (
    LONG_SUFFIX,
    MAX_BACKING_NAME,
    MAX_SIDECAR_BYTES,
    SHORT_SUFFIX,
    SIDECAR_SUFFIX,
    BackingName,
    NameCipher,
    is_reserved,
)

log = logging.getLogger("vaultfs")

_PATH_CACHE_SIZE = 4096
DIR_FDS = 256  # directory fds kept open: well below any RLIMIT_NOFILE, enough for a backup's hot dirs


class _FdSlot:
    __slots__ = ("fd", "pins", "dropped")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pins = 1
        self.dropped = False


class DirFdCache:
    """Open fds of recently used directories; an fd is closed only when nobody is using it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._slots: OrderedDict[BackingKey, _FdSlot] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: BackingKey) -> _FdSlot | None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                self._slots.move_to_end(key)
                slot.pins += 1
            return slot

    def put(self, key: BackingKey, fd: int) -> _FdSlot:
        slot = _FdSlot(fd)
        with self._lock:
            old = self._slots.pop(key, None)
            if old is not None:
                self._retire(old)
            self._slots[key] = slot
            while len(self._slots) > self._capacity:
                _, oldest = self._slots.popitem(last=False)
                self._retire(oldest)
        return slot

    def release(self, slot: _FdSlot) -> None:
        with self._lock:
            slot.pins -= 1
            if slot.dropped and not slot.pins:
                os.close(slot.fd)

    def drop(self, key: BackingKey) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is not None:
                self._retire(slot)

    def close_all(self) -> None:
        with self._lock:
            while self._slots:
                self._retire(self._slots.popitem()[1])

    @staticmethod
    def _retire(slot: _FdSlot) -> None:
        slot.dropped = True
        if not slot.pins:
            os.close(slot.fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of an entry in a directory fd, or None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class BackingTree:
    """Directories and names of one unlocked vault's backing dir."""

    def __init__(self, root_path: str, keys: VaultKeys, names: NameCipher, dirids: DirIds) -> None:
        self.root_path = os.path.abspath(root_path)
        self.names = names
        self.dirids = dirids
        # Check-then-act namespace steps (exists? then create) hold this lock.
        self.lock = threading.RLock()
        self._root_fd = os.open(self.root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            root_ids = dirids.read_all(self.root_path, "/")
            if keys.root_dir_id not in root_ids:
                raise IntegrityError("/: the root directory ID does not belong to this vault")
        except BaseException:
            os.close(self._root_fd)
            raise
        self.root = Dir(None, "", root_ids, backing_key(os.fstat(self._root_fd)), "/", self.root_path,
                        load_ids=self._read_ids)
        self._root_id = keys.root_dir_id
        self._dirs: weakref.WeakValueDictionary[BackingKey, Dir] = weakref.WeakValueDictionary()
        self._dirs[self.root.key] = self.root
        self._paths: OrderedDict[str, Dir] = OrderedDict()
        self._virtual: dict[tuple[BackingKey, str], str] = {}  # read-only views of conflict copies
        self._reported: set[str] = set()
        self._fds = DirFdCache(DIR_FDS)

    def close(self) -> None:
        self._fds.close_all()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    # ------------------------------------------------------------ directory fds

    @contextlib.contextmanager
    def dir_fd(self, directory: Dir) -> Iterator[int]:
        """The backing directory of ``directory``, opened without following links.

        Recently used directories keep their fd open (an LRU of DIR_FDS, each pinned while
        in use): an fd follows its directory through renames, so a cached one stays right
        where a path would go stale.  ESTALE when the directory found at that place is
        not the one we knew (a sync client replaced it): its IDs would name other entries.
        """
        if directory.parent is None:
            yield self._root_fd
            return
        slot = self._fds.take(directory.key)
        if slot is None:
            fd = backing.open_dir_beneath(self._root_fd, directory.relpath())
            if backing_key(os.fstat(fd)) != directory.key:
                os.close(fd)
                self.forget(directory)
                raise OSError(errno.ESTALE, "the backing directory was replaced", directory.label)
            slot = self._fds.put(directory.key, fd)
        try:
            yield slot.fd
        finally:
            self._fds.release(slot)

    # ------------------------------------------------------------ names

    def report_once(self, where: str, why: str) -> None:
        if where not in self._reported:
            self._reported.add(where)
            log.warning("hidden invalid entry %s: %s", where, why)

    def locate(self, directory: Dir, name: str, fd: int) -> tuple[Entry, os.stat_result | None]:
        """The entry ``name`` of ``directory`` and its backing lstat; (the entry a new one gets, None) if absent.

        Names are looked up under every ID of the directory (conflict copies of its
        vaultfs.dirid), then among the read-only views of conflict copies.
        """
        primary = Entry(directory, name, self.names.encrypt(name, directory.dir_id))
        st = lstat_at(fd, primary.backing_name.entry)
        if st is not None or (len(directory.dir_ids) == 1 and not self._virtual):
            return primary, st
        for other_id in directory.dir_ids[1:]:
            candidate = Entry(directory, name, self.names.encrypt(name, other_id))
            st = lstat_at(fd, candidate.backing_name.entry)
            if st is not None:
                return candidate, st
        virtual = self._virtual.get((directory.key, name))
        if virtual is not None:
            st = lstat_at(fd, virtual)
            if st is not None:
                return Entry(directory, name, BackingName(virtual)), st
        return primary, None

    def read_sidecar(self, fd: int, digest: str, stem: str | None = None) -> str | None:
        """The full encoding a ``<digest>.vfl`` entry stands for, or None if its sidecar is bad."""
        try:
            text = backing.read_bounded((stem or digest) + SIDECAR_SUFFIX, MAX_SIDECAR_BYTES,
                                        dir_fd=fd).decode("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        return text if self.names.sidecar_matches(digest, text) else None

    def decode_name(self, directory: Dir, backing_entry: str, fd: int) -> str | None:
        """Plaintext name of a ``.vfs``/``.vfl`` backing entry under any of the directory's IDs."""
        if backing_entry.endswith(SHORT_SUFFIX):
            encoded = backing_entry[: -len(SHORT_SUFFIX)]
            if len(backing_entry) > MAX_BACKING_NAME:
                return None
        elif backing_entry.endswith(LONG_SUFFIX):
            encoded = self.read_sidecar(fd, backing_entry[: -len(LONG_SUFFIX)])
            if encoded is None or len(encoded) + len(SHORT_SUFFIX) <= MAX_BACKING_NAME:
                return None  # missing sidecar, or a short name stored in the long form
        else:
            return None
        for dir_id in directory.dir_ids:
            name = self.names.decrypt_encoded(encoded, dir_id)
            if name is not None:
                return name
        return None

    def write_sidecar(self, fd: int, name: BackingName) -> None:
        """Create the ``.vfn`` sidecar of a long name (or fix a stale one) before its entry appears."""
        if name.sidecar is None:
            return
        data = name.encoded.encode("ascii")
        try:
            backing.write_new_file_at(fd, name.sidecar, data, 0o644)
        except FileExistsError:
            if backing.read_bounded(name.sidecar, MAX_SIDECAR_BYTES, dir_fd=fd) != data:
                backing.replace_file_at(fd, name.sidecar, data, 0o644)

    @staticmethod
    def remove_sidecar(fd: int, name: BackingName) -> None:
        if name.sidecar is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name.sidecar, dir_fd=fd)

    def set_virtual(self, directory: Dir, name: str, backing_entry: str) -> None:
        self._virtual[(directory.key, name)] = backing_entry

    def has_virtual(self, directory: Dir, name: str) -> bool:
        return (directory.key, name) in self._virtual

    def scan(self, directory: Dir, fd: int) -> tuple[list[tuple[str, str, os.stat_result]], list[str]]:
        """Decoded entries (name, backing entry, lstat) and the names of conflict copies to resolve.

        Reserved entries and sidecars are skipped; entries that neither decrypt here nor look
        like a sync client's conflict copy are hidden and reported once.
        """
        from vaultfs.format.conflicts import split_conflict

        found: list[tuple[str, str, os.stat_result]] = []
        copies: list[str] = []
        with os.scandir(fd) as listing:
            names = [item.name for item in listing]
        self._check_ids(directory, names)
        for item in names:
            if is_reserved(item) or item.endswith(SIDECAR_SUFFIX):
                continue
            name = self.decode_name(directory, item, fd)
            if name is None:
                if split_conflict(item) is not None:
                    copies.append(item)
                else:
                    self.report_once(os.path.join(directory.backing, item), "name does not decrypt in this directory")
                continue
            st = lstat_at(fd, item)
            if st is not None:  # else removed while listing
                found.append((name, item, st))
        return found, sorted(copies)

    def _check_ids(self, directory: Dir, names: list[str]) -> None:
        """A listing sees what a sync client did to the directory's IDs since they were read.

        The IDs are read once per directory lookup (they never change in place); but a
        missing ``vaultfs.dirid`` must fail the listing, and a conflict copy of it that
        arrived meanwhile (two devices made this directory) brings names under another ID.
        """
        from vaultfs.format.conflicts import is_dirid_copy

        present = [name for name in names if name == DIRID_NAME or is_dirid_copy(name)]
        if DIRID_NAME not in names and not present:
            raise IntegrityError(f"{directory.label}: directory has no {DIRID_NAME}")
        if len(present) > len(directory.dir_ids):
            directory.dir_ids = None  # read again, with the new copies

    # ------------------------------------------------------------ directories

    def child_dir(self, parent: Dir, entry: Entry, st: os.stat_result) -> Dir:
        """The Dir of an existing directory entry; one object per backing directory.

        Its IDs are read when first needed (a name looked up or listed inside it), so a
        listing of the parent or a stat never opens the child's vaultfs.dirid.
        """
        key = backing_key(st)
        label = join_path(parent.label, entry.name)
        with self.lock:
            known = self._dirs.get(key)
            if known is not None:
                if known.parent is not parent or known.backing_name != entry.backing_name.entry:
                    # moved behind our back: follow the backing tree (and re-read its IDs there)
                    known.parent, known.backing_name, known.label = parent, entry.backing_name.entry, label
                    known.dir_ids = None
                return known
            directory = Dir(parent, entry.backing_name.entry, None, key, label, load_ids=self._read_ids)
            self._dirs[key] = directory
            return directory

    def _read_ids(self, directory: Dir) -> tuple[bytes, ...]:
        ids = self.dirids.read_all(directory.backing, directory.label)
        if directory.parent is None and self._root_id not in ids:
            raise IntegrityError("/: the root directory ID does not belong to this vault")
        return ids

    def moved(self, directory: Dir, new_parent: Dir, new_entry: str, new_name: str) -> None:
        """A directory was renamed in the backing tree: move its Dir (and so its subtree) along."""
        with self.lock:
            directory.parent, directory.backing_name = new_parent, new_entry
            directory.label = join_path(new_parent.label, new_name)
            self._paths.clear()

    def known_dir(self, key: BackingKey) -> Dir | None:
        return self._dirs.get(key)

    def forget(self, directory: Dir | None = None) -> None:
        """Drop cached path resolutions (after a directory was renamed, removed or replaced)."""
        with self.lock:
            self._paths.clear()
            if directory is not None:
                self.removed(directory.key)

    def removed(self, key: BackingKey) -> None:
        """A backing directory is gone: its cached fd and Dir must not serve a new one with its number."""
        with self.lock:
            self._paths.clear()
            self._fds.drop(key)
            self._dirs.pop(key, None)

    def resolve(self, path: str) -> Dir:
        """The directory at a plaintext path (ENOENT / ENOTDIR as open(2) would say)."""
        parts = split_path(path)
        key = "/" + "/".join(parts)
        with self.lock:
            cached = self._paths.get(key)
        if cached is not None:
            return cached
        current = self.root
        for part in parts:
            with self.dir_fd(current) as fd:
                entry, st = self.locate(current, part, fd)
            if st is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            current = self.child_dir(current, entry, st)
        with self.lock:
            self._paths[key] = current
            if len(self._paths) > _PATH_CACHE_SIZE:
                self._paths.popitem(last=False)
        return current
