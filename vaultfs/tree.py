"""The backing directory through the format's eyes: directories, entry names, listings.

``BackingTree`` owns the backing root fd and one ``Dir`` per backing directory (a weak
registry keyed by the directory's (st_dev, st_ino)), resolves plaintext names to backing
entries under a directory's IDs, and decodes listings.  Every access to a backing entry
goes through ``dir_fd`` (the directory opened beneath the root without following any
symlink) and *at calls on the entry name, so nothing planted in the backing dir is
ever followed.  A directory's IDs are read at its place (its parent's ID and its exact
name, docs/format.md section 5) when first needed; a writable vault then lets the
``settle`` hook merge several IDs into one, and the ``adopt`` hook take in a directory
that has none.  Only regular files and directories count: a backing symlink, FIFO,
socket or device is foreign, hidden and reported once.  It knows nothing of file
contents or of FUSE: the namespace, the conflict resolver and the Vault build on it.
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
from collections.abc import Callable, Iterator

from vaultfs import backing
from vaultfs.dirfds import DIR_FDS, DirFdCache
from vaultfs.entries import BackingKey, Dir, Entry, Listed, Scan, backing_key, join_path, split_path
from vaultfs.errors import IntegrityError
from vaultfs.format import listing
from vaultfs.format.conflicts import is_dirid_copy
from vaultfs.format.dirids import DIRID_NAME, ROOT, BoundDirIds, BoundIds, Place, dirid_files
from vaultfs.format.listing import DecodedEntry
from vaultfs.format.names import MAX_SIDECAR_BYTES, BackingName, NameCipher, is_reserved

log = logging.getLogger("vaultfs")

_PATH_CACHE_SIZE = 4096
def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of an entry in a directory fd, or None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


_TYPE_NAMES = {stat.S_IFLNK: "symlink", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "device",
               stat.S_IFBLK: "device", stat.S_IFDIR: "directory", stat.S_IFREG: "file"}


def usable(st: os.stat_result, special: bool) -> bool:
    """A regular file, or a directory under a file or directory name (``.vfs``/``.vfl``)."""
    return stat.S_ISREG(st.st_mode) or (stat.S_ISDIR(st.st_mode) and not special)


def foreign_reason(st: os.stat_result) -> str:
    kind = _TYPE_NAMES.get(stat.S_IFMT(st.st_mode), "special file")
    return f"a backing {kind} where a version-2 vault holds only regular files and directories"


def entry_of(directory: Dir, decoded: DecodedEntry) -> Entry:
    """The Entry of a decoded backing name (a copy keeps its own backing name and says its form)."""
    sidecar = None
    if decoded.long:
        form = decoded.copy.original if decoded.copy is not None else decoded.backing
        sidecar = form[:-4] + ".vfn"
    name = BackingName(decoded.backing, sidecar, "", decoded.special if decoded.copy is not None else None)
    return Entry(directory, decoded.name, name, decoded.parent_id)


class BackingTree:
    """Directories and names of one unlocked vault's backing dir."""

    def __init__(self, root_path: str, names: NameCipher, dirids: BoundDirIds, read_only: bool = False) -> None:
        self.root_path = os.path.abspath(root_path)
        self.names = names
        self.dirids = dirids
        self.read_only = read_only
        # Check-then-act namespace steps (exists? then create) hold this lock.
        self.lock = threading.RLock()
        # Set by a writable vault: merge a directory's several IDs into one / take in a directory without one.
        self.settle: Callable[[Dir, int, BoundIds], tuple[bytes, ...]] | None = None
        self.adopt: Callable[[Dir, int], tuple[bytes, ...]] | None = None
        self._root_fd = os.open(self.root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dirids.read_at(self._root_fd, ROOT, "/")  # the wrong root fails here, at unlock
            key = backing_key(os.fstat(self._root_fd))
        except BaseException:
            os.close(self._root_fd)
            raise
        self.root = Dir(None, "", None, key, "/", self.root_path, load_ids=self._read_ids)
        self._dirs: weakref.WeakValueDictionary[BackingKey, Dir] = weakref.WeakValueDictionary()
        self._dirs[self.root.key] = self.root
        self._paths: OrderedDict[str, Dir] = OrderedDict()
        self._virtual: dict[tuple[BackingKey, str], Entry] = {}  # read-only views of conflict copies
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

    @property
    def root_fd(self) -> int:
        return self._root_fd

    # ------------------------------------------------------------ names

    def report_once(self, where: str, why: str) -> None:
        if where not in self._reported:
            self._reported.add(where)
            log.warning("hidden invalid entry %s: %s", where, why)

    def _usable(self, directory: Dir, backing_name: str, st: os.stat_result, special: bool) -> bool:
        """Regular files and directories only: anything else is foreign, hidden and reported once."""
        if usable(st, special):
            return True
        self.report_once(os.path.join(directory.backing, backing_name), foreign_reason(st))
        return False

    def locate(self, directory: Dir, name: str, fd: int) -> tuple[Entry, os.stat_result | None]:
        """The entry ``name`` of ``directory`` and its backing lstat; (the entry a new one gets, None) if absent.

        A name is looked up in both forms (``.vfs`` a file or directory, ``.vfx`` a special
        entry: two stats for a short name) under every ID of the directory, then among the
        read-only views of conflict copies.
        """
        ids = directory.dir_ids
        first = None
        for dir_id in ids:
            regular = self.names.encrypt(name, dir_id)
            entry = Entry(directory, name, regular, dir_id)
            first = first or entry
            st = lstat_at(fd, regular.entry)
            if st is not None and self._usable(directory, regular.entry, st, False):
                return entry, st
            special = regular.as_special()
            st = lstat_at(fd, special.entry)
            if st is not None and self._usable(directory, special.entry, st, True):
                return Entry(directory, name, special, dir_id), st
        if self._virtual:
            virtual = self._virtual.get((directory.key, name))
            if virtual is not None:
                st = lstat_at(fd, virtual.backing_name.entry)
                if st is not None:
                    return virtual, st
        assert first is not None
        return first, None

    def exists(self, directory: Dir, name: str, fd: int) -> bool:
        """Is ``name`` taken in ``directory`` (either form, under its primary ID)?"""
        regular = self.names.encrypt(name, directory.dir_id)
        return lstat_at(fd, regular.entry) is not None or lstat_at(fd, regular.as_special().entry) is not None

    def decode(self, directory: Dir, backing_entry: str, fd: int) -> DecodedEntry | None:
        """What a backing entry of ``directory`` is (a conflict copy: of what), under any of its IDs."""
        return listing.decode(self.names, fd, directory.dir_ids, backing_entry)

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
        """Remove a long name's sidecar, unless the name lives on in the other form (a duplicate)."""
        if name.sidecar is None:
            return
        stem = name.sidecar[: -len(".vfn")]
        if any(lstat_at(fd, stem + suffix) is not None for suffix in (".vfl", ".vxl")):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name.sidecar, dir_fd=fd)

    def set_virtual(self, entry: Entry) -> None:
        self._virtual[(entry.parent.key, entry.name)] = entry

    def scan(self, directory: Dir, fd: int) -> Scan:
        """The decoded entries of a directory, and the conflict copies and duplicates to decide on.

        Reserved entries and sidecars are skipped; entries that do not decrypt here, and
        foreign ones, are hidden and reported once.  Entries under the primary ID come
        first, each group in backing-name order, so two readers of one folder agree on
        which of two entries of one name is the first.
        """
        with os.scandir(fd) as items:
            names = sorted(item.name for item in items)
        if self._ids_changed(directory, names):
            directory.dir_ids = None  # read again (a merge or an adoption may change the listing)
            directory.dir_ids  # noqa: B018 - loads them now
            with os.scandir(fd) as items:
                names = sorted(item.name for item in items)
        ids = directory.dir_ids
        found: list[tuple[DecodedEntry, os.stat_result]] = []
        for item in names:
            if is_reserved(item) or listing.is_sidecar(item):
                continue
            decoded = self.decode(directory, item, fd)
            if decoded is None:
                self.report_once(os.path.join(directory.backing, item), "name does not decrypt in this directory")
                continue
            st = lstat_at(fd, item)
            if st is None or not self._usable(directory, item, st, decoded.special):
                continue
            if stat.S_ISDIR(st.st_mode) and self._left_empty(fd, item):
                continue
            found.append((decoded, st))
        found.sort(key=lambda pair: (ids.index(pair[0].parent_id), pair[0].backing))
        result = Scan()
        seen: set[str] = set()
        for decoded, st in found:
            if decoded.copy is not None:
                result.copies.append((decoded, st))
            elif decoded.name in seen:
                result.duplicates.append((decoded, st))
            else:
                seen.add(decoded.name)
                result.entries.append(Listed(entry_of(directory, decoded), st))
        return result

    def _left_empty(self, fd: int, name: str) -> bool:
        """An empty backing directory without any ``vaultfs.dirid``: not an entry, but what a sync client
        that keeps empty directories leaves of one that moved (or an interrupted mkdir).

        Hidden from every reader alike (a writer also removes it), so that a read-only
        export shows what a mount shows.  Costs an open and a stat per subdirectory listed.
        """
        try:
            child = backing.open_file_at(fd, name, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            if lstat_at(child, DIRID_NAME) is not None:
                return False
            if any(is_dirid_copy(item) or not (is_reserved(item) or listing.is_sidecar(item))
                   for item in os.listdir(child)):
                return False
            key = backing_key(os.fstat(child))
        finally:
            os.close(child)
        if not self.read_only:
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=fd)
                self.removed(key)
        return True

    @staticmethod
    def _ids_changed(directory: Dir, names: list[str]) -> bool:
        """A listing sees what a sync client did to the directory's IDs since they were read.

        The IDs are read once per directory (they never change in place); a
        ``vaultfs.dirid`` that went missing must fail the listing, and a conflict copy of it
        that arrived meanwhile (two devices made this directory) brings names under another ID.
        """
        present = tuple(name for name in names if name == DIRID_NAME or is_dirid_copy(name))
        return not directory.ids_loaded or present != directory.id_files

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
                if (known.parent is not parent or known.backing_name != entry.backing_name.entry
                        or known.name != entry.place_name):
                    # moved behind our back: follow the backing tree (and re-read its IDs there)
                    known.parent, known.backing_name, known.label = parent, entry.backing_name.entry, label
                    known.name, known.place_id = entry.place_name, entry.dir_id
                    known.dir_ids = None
                return known
            directory = Dir(parent, entry.backing_name.entry, None, key, label, load_ids=self._read_ids,
                            name=entry.place_name, place_id=entry.dir_id)
            self._dirs[key] = directory
            return directory

    def places(self, directory: Dir) -> list[Place]:
        """Where the directory's IDs must be valid: its parent's ID for its name, and its name."""
        if directory.parent is None:
            return [ROOT]
        if directory.place_id is not None:
            return [Place.of(directory.place_id, directory.name)]
        return [Place.of(parent_id, directory.name) for parent_id in directory.parent.dir_ids]

    def _read_ids(self, directory: Dir) -> tuple[bytes, ...]:
        with self.lock, self.dir_fd(directory) as fd:
            try:
                bound = self.dirids.read_at(fd, self.places(directory), directory.label)
            except IntegrityError:
                if self.adopt is None or directory.parent is None:
                    raise
                return self.adopt(directory, fd)  # FileNotFoundError once moved into its owner
            directory.id_files = tuple(bound.files)
            if directory.parent is not None and bound.place is not None:
                directory.place_id = bound.place.parent_id
            self._report_strays(directory, bound)
            if bound.settled or self.settle is None:
                return bound.ids
            directory.dir_ids = bound.ids  # the merge looks names up under all of them
            ids = self.settle(directory, fd, bound)
            directory.id_files = tuple(dirid_files(fd))
            return ids

    def _report_strays(self, directory: Dir, bound: BoundIds) -> None:
        for stray in bound.strays:
            where = os.path.join(directory.backing, stray.file)
            record = "" if stray.record is None else f" record {stray.record}"
            if where + record not in self._reported:
                self._reported.add(where + record)
                log.warning("ignored directory ID %s%s: %s", where, record, stray.reason)

    def moved(self, directory: Dir, new_parent: Dir, entry: Entry) -> None:
        """A directory was renamed in the backing tree: move its Dir (and so its subtree) along."""
        with self.lock:
            directory.parent, directory.backing_name = new_parent, entry.backing_name.entry
            directory.label = join_path(new_parent.label, entry.name)
            directory.name, directory.place_id = entry.place_name, entry.dir_id
            self._paths.clear()

    def known_dir(self, key: BackingKey) -> Dir | None:
        return self._dirs.get(key)

    def known_dirs(self) -> list[Dir]:
        return list(self._dirs.values())

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
