"""An unlocked vault as a Python API: every operation a filesystem needs, without FUSE.

Two ways in, one implementation: by (directory, name), which is what the FUSE layer's
inode table holds (``lookup``, ``open_at``, ``mkdir_at`` ...), and by absolute plaintext
path ("/" is the root), which is what export, import, fsck and the tests use
(``getattr``, ``open``, ``mkdir`` ...).  Every failure is an ``OSError`` with the errno
that open(2), rename(2) and friends would give; anything that fails authentication is
``IntegrityError`` (EIO).  The parts live in their own modules: the backing tree
(tree.py), namespace changes (namespace.py), attributes without decrypting (attrs.py),
conflict copies and duplicate names (conflictfix.py), merging a directory's IDs and
taking in one without an ID (dirmerge.py, writable vaults only), staged writes
(staging.py), the open-file table (openfiles.py); this class wires them together.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from vaultfs import backing
from vaultfs.attrs import AttrReader
from vaultfs.conflictfix import ConflictResolver
from vaultfs.dirmerge import DirMerger
from vaultfs.entries import Attr, BackingKey, Dir, Entry, backing_key, join_path
from vaultfs.errors import AlreadyExists, IntegrityError, UsageError
from vaultfs.filehandle import FileHandle
from vaultfs.format import keyfile, specials
from vaultfs.format.dirids import ROOT, BoundDirIds
from vaultfs.format.header import Kind
from vaultfs.format.keyfile import Config, KdfParams
from vaultfs.format.keys import VaultKeys, new_master_key
from vaultfs.format.names import NameCipher
from vaultfs.format.recovery import encode as encode_recovery_key
from vaultfs.format.xattrs import XattrCipher
from vaultfs.namespace import Namespace, Owner, give_to
from vaultfs.openfiles import OpenFileTable, open_backing_file
from vaultfs.staging import Staging
from vaultfs.tree import BackingTree
from vaultfs.vaultpaths import PathAPI
from vaultfs.xattrstore import XattrStore

_FILE_KEY_CACHE_SIZE = 4096  # derived once per open of a file not seen lately; ~0.6 MiB at most


def check_init_target(backing_dir: str) -> None:
    """Refuse a file, an existing vault or a non-empty directory as the place for a new vault.

    ``init`` calls it before asking for the password; ``init_vault`` again right before
    writing anything.
    """
    if os.path.exists(backing_dir) and not os.path.isdir(backing_dir):
        raise UsageError(f"{backing_dir} exists and is not a directory")
    if os.path.isdir(backing_dir) and os.listdir(backing_dir):
        what = "already holds a vault" if os.path.exists(keyfile.config_path(backing_dir)) else "is not empty"
        raise AlreadyExists(f"{backing_dir} {what}")


def init_vault(backing_dir: str, password: str, kdf: KdfParams | None = None) -> str:
    """Create a vault in an empty (or new) directory; return the recovery key (shown once)."""
    backing_dir = os.path.abspath(backing_dir)
    check_init_target(backing_dir)
    os.makedirs(backing_dir, exist_ok=True)
    keys = VaultKeys.derive(new_master_key())
    BoundDirIds(keys).create(backing_dir, ROOT, keys.root_dir_id)
    keyfile.write_config(backing_dir, keyfile.new_config(keys, password, kdf or keyfile.calibrate_kdf()))
    return encode_recovery_key(keys.master_key)


@dataclass(frozen=True)
class Found:
    """An existing entry: where it is, its backing lstat and its plaintext attributes."""

    entry: Entry
    st: os.stat_result
    attr: Attr

    @property
    def key(self) -> BackingKey:
        return backing_key(self.st)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class Vault(PathAPI):
    """An unlocked vault."""

    def __init__(self, backing_dir: str, keys: VaultKeys, config: Config, read_only: bool = False) -> None:
        self.backing = os.path.abspath(backing_dir)
        self.read_only = read_only
        self.keys = keys
        self.block_size = config.block_size
        self.names = NameCipher(keys.name_key)
        self.dirids = BoundDirIds(keys)
        self._file_keys: OrderedDict[bytes, bytes] = OrderedDict()
        self.open_files = OpenFileTable(self.file_key, self.block_size)
        self.tree = BackingTree(self.backing, self.names, self.dirids, read_only)
        self.attrs = AttrReader(self.tree, self.file_key, self.block_size)
        try:
            self.ns = Namespace(self.tree, read_only, self.file_key, self.block_size)
            self.conflicts = ConflictResolver(self.tree, self.file_key, self.block_size, read_only)
            if not read_only:  # a writable vault merges a directory's IDs and takes in orphans on sight
                merger = DirMerger(self.tree, self.conflicts)
                self.tree.settle, self.tree.adopt = merger.settle, merger.adopt
            self.staging = Staging(self.ns, self.open_files)
            self.xattrs = XattrStore(self.tree, XattrCipher(keys.master_key))
            self.tree.root.dir_ids  # noqa: B018 - read (and, writable, tidy) the root's ID now: a wrong root fails here
        except BaseException:
            self.tree.close()
            raise

    @classmethod
    def unlock(cls, backing_dir: str, password: str, read_only: bool = False) -> Vault:
        keys, config = keyfile.unlock(backing_dir, password)
        return cls(backing_dir, keys, config, read_only)

    @classmethod
    def unlock_with_master_key(cls, backing_dir: str, master_key: bytes, read_only: bool = False) -> Vault:
        config = keyfile.load_config(backing_dir)
        keys = VaultKeys.derive(master_key)
        config.verify(keys)
        return cls(backing_dir, keys, config, read_only)

    def close(self) -> None:
        self.open_files.close_all()
        self.tree.close()

    def file_key(self, file_id: bytes) -> bytes:
        key = self._file_keys.get(file_id)
        if key is None:
            key = self.keys.file_key(file_id)
            self._file_keys[file_id] = key
            if len(self._file_keys) > _FILE_KEY_CACHE_SIZE:
                self._file_keys.popitem(last=False)
        return key

    @property
    def root(self) -> Dir:
        return self.tree.root

    # ------------------------------------------------------------ attributes

    def _attr(self, st: os.stat_result, fd: int, entry: Entry) -> Attr:
        return self.attrs.of(st, fd, entry)

    def _found(self, fd: int, entry: Entry, st: os.stat_result) -> Found:
        return Found(entry, st, self._attr(st, fd, entry))

    # ------------------------------------------------------------ by (directory, name)

    def lookup(self, directory: Dir, name: str) -> Found:
        with self.tree.dir_fd(directory) as fd:
            entry, st = self.tree.locate(directory, name, fd)
            if st is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            return self._found(fd, entry, st)

    def child_dir(self, found: Found) -> Dir:
        """The Dir of a directory entry found by ``lookup`` or ``listdir_at``."""
        if not found.is_dir:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), found.entry.name)
        return self.tree.child_dir(found.entry.parent, found.entry, found.st)

    def listdir_at(self, directory: Dir) -> list[Found]:
        """Every visible entry: conflict copies and duplicate names resolved (writable) or shown under their
        conflict names (read-only).  An entry whose header cannot be read is hidden and reported."""
        with self.tree.dir_fd(directory) as fd:
            scan = self.tree.scan(directory, fd)
            listed = scan.entries + self.conflicts.show(directory, fd, scan)
            found = []
            for item in listed:
                try:
                    found.append(self._found(fd, item.entry, item.st))
                except (IntegrityError, OSError) as exc:
                    self.tree.report_once(item.entry.path, exc.strerror or str(exc))
        return found

    def readlink_at(self, directory: Dir, name: str) -> str:
        with self.tree.dir_fd(directory) as fd:
            entry, st = self.tree.locate(directory, name, fd)
            if st is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            if not entry.special:
                raise OSError(errno.EINVAL, "not a symlink", name)
            with self.attrs.special_fd(fd, entry) as special_fd:
                special = specials.read(special_fd, self.file_key, join_path(directory.label, name), self.block_size)
        if special.kind != Kind.SYMLINK:
            raise OSError(errno.EINVAL, "not a symlink", name)
        return special.target.decode("utf-8", "surrogateescape")

    def open_at(self, directory: Dir, name: str, flags: int) -> FileHandle:
        accmode = flags & os.O_ACCMODE
        if accmode != os.O_RDONLY or flags & os.O_TRUNC:
            self.ns.writable()
        with self.tree.dir_fd(directory) as fd:
            entry, st = self.tree.locate(directory, name, fd)
            if st is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), name)
            if entry.special:  # the kernel opens FIFOs and devices itself and follows symlinks
                kind = self.attrs.special_kind(fd, entry, st)[0]
                raise OSError(errno.ELOOP if kind == Kind.SYMLINK else errno.ENXIO, "not a regular file", name)
            new_fd, writable = open_backing_file(fd, entry.backing_name.entry, accmode != os.O_RDONLY)
        label = join_path(directory.label, name)  # errors and logs name the plaintext path
        opened = self.open_files.acquire(new_fd, writable, label)
        handle = FileHandle(self.open_files, opened, flags, label)
        if flags & os.O_TRUNC and accmode != os.O_RDONLY:
            try:
                handle.truncate(0)
            except BaseException:
                handle.close()
                raise
        return handle

    def reopen(self, key: BackingKey, flags: int) -> FileHandle | None:
        """Another handle on a file that is open already (reachable though all its names are gone)."""
        opened = self.open_files.get(key)
        if opened is None or (flags & os.O_ACCMODE != os.O_RDONLY and not opened.writable):
            return None
        opened.refs += 1
        return FileHandle(self.open_files, opened, flags & ~os.O_TRUNC, opened.content.label)

    def create_at(self, directory: Dir, name: str, mode: int, flags: int = os.O_RDWR,
                  owner: Owner | None = None) -> tuple[FileHandle, Found]:
        self.ns.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry, st = self.tree.locate(directory, name, fd)
            if st is not None:
                if flags & os.O_EXCL:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), name)
                handle = self.open_at(directory, name, flags & ~os.O_CREAT)
                return handle, self._found(fd, entry, handle.stat())
            target = entry.backing_name.entry
            self.tree.write_sidecar(fd, entry.backing_name)
            new_fd = backing.open_file_at(fd, target, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o7777)
            try:
                os.fchmod(new_fd, mode & 0o7777)  # exactly as asked: the caller's umask was applied already
                give_to(fd, target, owner)
                opened = self.open_files.acquire(new_fd, True, join_path(directory.label, name), new_file=True)
            except BaseException:
                os.unlink(target, dir_fd=fd)
                self.tree.remove_sidecar(fd, entry.backing_name)
                raise
            handle = FileHandle(self.open_files, opened, flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL),
                                opened.content.label)
            return handle, self._found(fd, entry, handle.stat())

    def _made(self, made: tuple[Entry, os.stat_result]) -> Found:
        entry, st = made
        with self.tree.dir_fd(entry.parent) as fd:
            return self._found(fd, entry, st)

    def mkdir_at(self, directory: Dir, name: str, mode: int, owner: Owner | None = None) -> Found:
        return self._made(self.ns.mkdir(directory, name, mode, owner))

    def mknod_at(self, directory: Dir, name: str, mode: int, rdev: int = 0, owner: Owner | None = None) -> Found:
        if stat.S_IFMT(mode) in (0, stat.S_IFREG):
            handle, found = self.create_at(directory, name, mode, os.O_WRONLY | os.O_EXCL, owner)
            handle.close()
            return found
        return self._made(self.ns.mknod(directory, name, mode, rdev, owner))

    def symlink_at(self, directory: Dir, name: str, target: str, owner: Owner | None = None) -> Found:
        return self._made(self.ns.symlink(directory, name, target, owner))

    def link_at(self, src_dir: Dir, src_name: str, directory: Dir, name: str) -> Found:
        return self._made(self.ns.link(src_dir, src_name, directory, name))

    def unlink_at(self, directory: Dir, name: str) -> os.stat_result:
        return self.ns.unlink(directory, name)

    def rmdir_at(self, directory: Dir, name: str) -> None:
        self.ns.rmdir(directory, name)

    def rename_at(self, old_dir: Dir, old: str, new_dir: Dir, new: str, flags: int = 0) -> os.stat_result | None:
        return self.ns.rename(old_dir, old, new_dir, new, flags)

    def setattr_at(self, directory: Dir | None, name: str, *, mode: int | None = None, uid: int = -1,
                   gid: int = -1, atime_ns: int | None = None, mtime_ns: int | None = None) -> None:
        """chmod / chown / utimens of an entry without following it (the root when directory is None)."""
        self.ns.writable()
        with self.tree.dir_fd(directory or self.root) as fd:
            target = name if directory is not None else "."
            if directory is not None:
                entry, st = self.tree.locate(directory, name, fd)
                if st is None:
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
                target = entry.backing_name.entry
                if mode is not None and entry.special and self.attrs.special_kind(fd, entry, st)[0] == Kind.SYMLINK:
                    raise OSError(errno.EOPNOTSUPP, "a symlink's mode cannot be changed", name)
            if uid != -1 or gid != -1:
                os.chown(target, uid, gid, dir_fd=fd, follow_symlinks=False)
            if mode is not None:
                backing.chmod_at(fd, target, mode)
            if atime_ns is not None or mtime_ns is not None:
                current = os.stat(target, dir_fd=fd, follow_symlinks=False)
                times = (current.st_atime_ns if atime_ns is None else atime_ns,
                         current.st_mtime_ns if mtime_ns is None else mtime_ns)
                os.utime(target, ns=times, dir_fd=fd, follow_symlinks=False)

    def truncate_at(self, directory: Dir, name: str, size: int) -> None:
        handle = self.open_at(directory, name, os.O_WRONLY)
        try:
            handle.truncate(size)
        finally:
            handle.close()

    def open_attr(self, key: BackingKey) -> Attr | None:
        """Attributes of a file that is open (its names may all be gone), or None if it is not."""
        opened = self.open_files.get(key)
        if opened is None:
            return None
        with opened.lock.shared():
            return Attr.from_stat(os.fstat(opened.fd), opened.content.size)

    def setattr_open(self, key: BackingKey, *, size: int | None = None, mode: int | None = None, uid: int = -1,
                     gid: int = -1, atime_ns: int | None = None, mtime_ns: int | None = None) -> bool:
        """Change an open file through its fd (no name involved); False if it is not open (writable for size)."""
        opened = self.open_files.get(key)
        if opened is None or (size is not None and not opened.writable):
            return False
        self.ns.writable()
        with opened.lock.exclusive():
            if size is not None:
                opened.content.truncate(size)
            if uid != -1 or gid != -1:
                os.chown(opened.fd, uid, gid)
            if mode is not None:
                os.chmod(opened.fd, mode & 0o7777)
            if atime_ns is not None or mtime_ns is not None:
                current = os.fstat(opened.fd)
                os.utime(opened.fd, ns=(current.st_atime_ns if atime_ns is None else atime_ns,
                                        current.st_mtime_ns if mtime_ns is None else mtime_ns))
        return True

    @contextlib.contextmanager
    def _xattr_fd(self, directory: Dir | None, name: str, key: BackingKey | None) -> Iterator[int]:
        """The fd to reach an entry's attributes: an open file's own fd if it is open, else the entry's."""
        opened = self.open_files.get(key) if key is not None else None
        if opened is not None:
            yield opened.fd
            return
        if directory is None and name != ".":
            raise OSError(errno.ENOENT, "the file is gone")
        with self.xattrs.entry_fd(directory, name) as fd:
            yield fd

    def getxattr_at(self, directory: Dir | None, name: str, xname: bytes, key: BackingKey | None = None) -> bytes:
        self.xattrs.check(xname, setting=False)
        with self._xattr_fd(directory, name, key) as fd:
            return self.xattrs.get(fd, xname)

    def setxattr_at(self, directory: Dir | None, name: str, xname: bytes, value: bytes,
                    key: BackingKey | None = None) -> None:
        self.xattrs.check(xname, setting=True)
        self.ns.writable()
        with self._xattr_fd(directory, name, key) as fd:
            self.xattrs.set(fd, xname, value)

    def listxattr_at(self, directory: Dir | None, name: str, key: BackingKey | None = None) -> list[bytes]:
        try:
            with self._xattr_fd(directory, name, key) as fd:
                return self.xattrs.list(fd)
        except PermissionError:  # symlinks and special files carry none
            return []

    def removexattr_at(self, directory: Dir | None, name: str, xname: bytes, key: BackingKey | None = None) -> None:
        self.xattrs.check(xname, setting=False)
        self.ns.writable()
        with self._xattr_fd(directory, name, key) as fd:
            self.xattrs.remove(fd, xname)

    def dir_attr(self, directory: Dir) -> Attr:
        with self.tree.dir_fd(directory) as fd:
            st = os.fstat(fd)
        return Attr.from_stat(st, st.st_size)

    def access_at(self, directory: Dir | None, name: str, mode: int) -> bool:
        """access(2) as the user the vault runs as: the backing entry carries the plaintext mode and owner."""
        with self.tree.dir_fd(directory or self.root) as fd:
            target = "."
            if directory is not None:
                entry, st = self.tree.locate(directory, name, fd)
                if st is None:
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
                target = entry.backing_name.entry
            return mode == os.F_OK or os.access(target, mode, dir_fd=fd, follow_symlinks=False)

    def statfs(self) -> dict[str, int]:
        """The backing filesystem's space and inode counts; names up to 255 bytes (not the backing's limit)."""
        with self.tree.dir_fd(self.root) as fd:
            st = os.fstatvfs(fd)
        return {
            "f_bsize": st.f_bsize, "f_frsize": st.f_frsize, "f_blocks": st.f_blocks, "f_bfree": st.f_bfree,
            "f_bavail": st.f_bavail, "f_files": st.f_files, "f_ffree": st.f_ffree, "f_favail": st.f_favail,
            "f_namemax": 255,
        }

    def fsyncdir_at(self, directory: Dir) -> None:
        with self.tree.dir_fd(directory) as fd:
            os.fsync(fd)
