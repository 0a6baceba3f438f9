"""An unlocked vault as a Python API: every operation a filesystem needs, without FUSE.

Plaintext paths are absolute strings ("/" is the root).  Every failure is an
``OSError`` with the errno that rename(2), open(2) and friends would give; anything
that fails authentication is ``IntegrityError`` (EIO).  ``fs.py`` is a thin adapter
over this class; ``export``, ``import`` and the tests use it directly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict

from vaultfs import backing
from vaultfs.conflictfix import ConflictResolver
from vaultfs.entries import Attr, Dir, Entry, split_path
from vaultfs.errors import AlreadyExists, IntegrityError, UsageError
from vaultfs.filehandle import FileHandle
from vaultfs.format import blocks, keyfile
from vaultfs.format.dirids import DirIds
from vaultfs.format.keyfile import Config, KdfParams
from vaultfs.format.keys import VaultKeys, new_master_key
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
from vaultfs.format.recovery import encode as encode_recovery_key
from vaultfs.namespace import NamespaceOps
from vaultfs.openfiles import OpenFileTable
from vaultfs.staging import StagingOps

log = logging.getLogger("vaultfs")

_DIR_CACHE_SIZE = 4096
_FILE_KEY_CACHE_SIZE = 16384  # 32-byte keys: ~2 MiB at most; a backup of a few thousand media files stays cached


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
    DirIds(keys).create(backing_dir, keys.root_dir_id)
    keyfile.write_config(backing_dir, keyfile.new_config(keys, password, kdf or keyfile.calibrate_kdf()))
    return encode_recovery_key(keys.master_key)


class Vault(NamespaceOps, StagingOps):
    """An unlocked vault. Namespace changes live in namespace.py, staged writes in staging.py."""

    def __init__(self, backing_dir: str, keys: VaultKeys, config: Config, read_only: bool = False) -> None:
        self.backing = os.path.abspath(backing_dir)
        self.read_only = read_only
        self.keys = keys
        self.block_size = config.block_size
        self.names = NameCipher(keys.name_key)
        self.dirids = DirIds(keys)
        self._file_keys: OrderedDict[bytes, bytes] = OrderedDict()
        self.open_files = OpenFileTable(self._file_key, self.block_size)
        self._ns_lock = threading.RLock()  # makes check-then-act metadata operations atomic
        self._dir_cache: OrderedDict[str, Dir] = OrderedDict()
        self._reported: set[str] = set()
        root_ids = self.dirids.read_all(self.backing, "/")
        if keys.root_dir_id not in root_ids:
            raise IntegrityError("/: the root directory ID does not belong to this vault")
        self._root = Dir(self.backing, root_ids)
        self._virtual: dict[tuple[str, str], str] = {}  # read-only views of conflict copies
        self.conflicts = ConflictResolver(self)

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

    # ------------------------------------------------------------ internals

    def _file_key(self, file_id: bytes) -> bytes:
        key = self._file_keys.get(file_id)
        if key is None:
            key = self.keys.file_key(file_id)
            self._file_keys[file_id] = key
            if len(self._file_keys) > _FILE_KEY_CACHE_SIZE:
                self._file_keys.popitem(last=False)
        return key

    def _writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "the vault is mounted read-only")

    def _report_once(self, backing_path: str, why: str) -> None:
        if backing_path not in self._reported:
            self._reported.add(backing_path)
            log.warning("hidden invalid entry %s: %s", backing_path, why)

    def _dir(self, path: str) -> Dir:
        parts = split_path(path)
        key = "/" + "/".join(parts)
        cached = self._dir_cache.get(key)
        if cached is not None:
            return cached
        current = self._root
        for depth, part in enumerate(parts):
            entry = self._child(current, part)
            try:
                st = os.lstat(entry.path)
            except FileNotFoundError:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            label = "/" + "/".join(parts[: depth + 1])
            current = Dir(entry.path, self.dirids.read_all(entry.path, label))
        self._dir_cache[key] = current
        if len(self._dir_cache) > _DIR_CACHE_SIZE:
            self._dir_cache.popitem(last=False)
        return current

    def _forget_dirs(self) -> None:
        self._dir_cache.clear()

    def _child(self, parent: Dir, name: str) -> Entry:
        entry = Entry(parent, name, self.names.encrypt(name, parent.dir_id))
        if len(parent.dir_ids) == 1 and not self._virtual:
            return entry
        if os.path.lexists(entry.path):
            return entry
        for other_id in parent.dir_ids[1:]:
            candidate = Entry(parent, name, self.names.encrypt(name, other_id))
            if os.path.lexists(candidate.path):
                return candidate
        virtual = self._virtual.get((parent.backing, name))
        return Entry(parent, name, BackingName(virtual)) if virtual else entry

    def _entry(self, path: str) -> Entry:
        parts = split_path(path)
        if not parts:
            raise OSError(errno.EBUSY, "operation not allowed on the vault root")
        return self._child(self._dir("/" + "/".join(parts[:-1])), parts[-1])

    def _lstat(self, entry: Entry) -> os.stat_result:
        try:
            return os.lstat(entry.path)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT)) from None

    def _exists(self, entry: Entry) -> bool:
        return os.path.lexists(entry.path)

    def _attr(self, st: os.stat_result, backing_path: str) -> Attr:
        if stat.S_ISREG(st.st_mode):
            size = blocks.plain_size(st.st_size, self.block_size)
            if size is None:
                self._report_once(backing_path, "size fits no plaintext size (truncated file)")
                size = 0
        elif stat.S_ISLNK(st.st_mode):
            target = self.names.decrypt_symlink(os.readlink(backing_path))
            size = 0 if target is None else len(target.encode("utf-8", "surrogateescape"))
        else:
            size = st.st_size
        return Attr.from_stat(st, size)

    def _write_sidecar(self, entry: Entry) -> None:
        sidecar = entry.sidecar_path
        if sidecar is None:
            return
        data = entry.backing_name.encoded.encode("ascii")
        try:
            backing.write_new_file(sidecar, data, 0o644)
        except FileExistsError:
            if backing.read_bounded(sidecar, MAX_SIDECAR_BYTES) != data:
                backing.atomic_replace(sidecar, data, 0o644)

    def _remove_sidecar(self, entry: Entry) -> None:
        if entry.sidecar_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.sidecar_path)

    def read_sidecar(self, directory: Dir, digest: str, stem: str | None = None) -> str | None:
        """The full encoding a ``<digest>.vfl`` entry stands for, or None if its sidecar is bad."""
        try:
            text = backing.read_bounded(os.path.join(directory.backing, (stem or digest) + SIDECAR_SUFFIX),
                                        MAX_SIDECAR_BYTES).decode("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        return text if self.names.sidecar_matches(digest, text) else None

    def decode_name(self, directory: Dir, backing_entry: str) -> str | None:
        """Plaintext name of a ``.vfs``/``.vfl`` backing entry under any of the directory's IDs."""
        if backing_entry.endswith(SHORT_SUFFIX):
            encoded = backing_entry[: -len(SHORT_SUFFIX)]
            if len(backing_entry) > MAX_BACKING_NAME:
                return None
        elif backing_entry.endswith(LONG_SUFFIX):
            encoded = self.read_sidecar(directory, backing_entry[: -len(LONG_SUFFIX)])
            if encoded is None or len(encoded) + len(SHORT_SUFFIX) <= MAX_BACKING_NAME:
                return None  # missing sidecar, or a short name stored in the long form
        else:
            return None
        for dir_id in directory.dir_ids:
            name = self.names.decrypt_encoded(encoded, dir_id)
            if name is not None:
                return name
        return None

    def scan(self, directory: Dir) -> list[tuple[str, str]]:
        """(plaintext name, backing path) of every visible entry; conflict copies resolved.

        Reserved entries and sidecars are skipped; entries that do not decrypt here are
        hidden and reported once.
        """
        result: list[tuple[str, str]] = []
        copies: list[str] = []
        with os.scandir(directory.backing) as entries:
            for item in entries:
                if is_reserved(item.name) or item.name.endswith(SIDECAR_SUFFIX):
                    continue
                name = self.decode_name(directory, item.name)
                if name is not None:
                    result.append((name, item.path))
                elif self.conflicts.is_copy(item.name):
                    copies.append(item.name)
                else:
                    self._report_once(item.path, "name does not decrypt in this directory")
        for copy in sorted(copies):
            resolved = self.conflicts.resolve(directory, copy)
            if resolved is not None:
                result.append(resolved)
        return result

    # ------------------------------------------------------------ queries

    def getattr(self, path: str) -> Attr:
        if not split_path(path):
            return self._attr(os.lstat(self.backing), self.backing)
        entry = self._entry(path)
        return self._attr(self._lstat(entry), entry.path)

    def listdir(self, path: str) -> list[tuple[str, Attr]]:
        result = []
        for name, backing_path in self.scan(self._dir(path)):
            try:
                result.append((name, self._attr(os.lstat(backing_path), backing_path)))
            except FileNotFoundError:
                continue  # removed while listing
        return result

    def readlink(self, path: str) -> str:
        entry = self._entry(path)
        try:
            encoded = os.readlink(entry.path)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
        target = self.names.decrypt_symlink(encoded)
        if target is None:
            raise IntegrityError(f"{path}: symlink target")
        return target

    def statfs(self) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {
            "f_bsize": st.f_bsize, "f_frsize": st.f_frsize, "f_blocks": st.f_blocks, "f_bfree": st.f_bfree,
            "f_bavail": st.f_bavail, "f_files": st.f_files, "f_ffree": st.f_ffree, "f_favail": st.f_favail,
            "f_namemax": 255,
        }

    # ------------------------------------------------------------ files

    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> FileHandle:
        self._writable()
        with self._ns_lock:
            entry = self._entry(path)
            if self._exists(entry):
                if flags & os.O_EXCL:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
                return self.open(path, flags & ~os.O_CREAT)
            self._write_sidecar(entry)
            fd = os.open(entry.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode & 0o7777)
            try:
                opened = self.open_files.acquire(entry.path, path, True, new_file=True, fd=fd)
            except BaseException:
                os.unlink(entry.path)
                self._remove_sidecar(entry)
                raise
        return FileHandle(self.open_files, opened, flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL), path)

    def open(self, path: str, flags: int) -> FileHandle:
        accmode = flags & os.O_ACCMODE
        if accmode != os.O_RDONLY or flags & os.O_TRUNC:
            self._writable()
        if flags & os.O_CREAT:
            return self.create(path, 0o666, flags)
        entry = self._entry(path)
        st = self._lstat(entry)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.ELOOP if stat.S_ISLNK(st.st_mode) else errno.ENXIO, "not a regular file", path)
        opened = self.open_files.acquire(entry.path, path, accmode != os.O_RDONLY)
        handle = FileHandle(self.open_files, opened, flags, path)
        if flags & os.O_TRUNC and accmode != os.O_RDONLY:
            try:
                handle.truncate(0)
            except BaseException:
                handle.close()
                raise
        return handle

    def truncate(self, path: str, size: int) -> None:
        handle = self.open(path, os.O_WRONLY)
        try:
            handle.truncate(size)
        finally:
            handle.close()

    def mknod(self, path: str, mode: int, dev: int = 0) -> None:
        self._writable()
        kind = stat.S_IFMT(mode)
        if kind in (0, stat.S_IFREG):
            self.create(path, mode, os.O_WRONLY | os.O_EXCL).close()
            return
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK):
            raise OSError(errno.EPERM, "device nodes are not supported", path)
        with self._ns_lock:
            entry = self._entry(path)
            if self._exists(entry):
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            self._write_sidecar(entry)
            os.mknod(entry.path, mode)

    # ------------------------------------------------------------ metadata

    def _backing_path(self, path: str) -> str:
        if not split_path(path):
            return self.backing
        entry = self._entry(path)
        self._lstat(entry)
        return entry.path

    def chmod(self, path: str, mode: int) -> None:
        self._writable()
        os.chmod(self._backing_path(path), mode & 0o7777)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._writable()
        os.chown(self._backing_path(path), uid, gid, follow_symlinks=False)

    def utime(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        self._writable()
        target = self._backing_path(path)
        if atime_ns is None and mtime_ns is None:
            os.utime(target, follow_symlinks=False)
            return
        if atime_ns is None or mtime_ns is None:
            now = time.time_ns()
            atime_ns = now if atime_ns is None else atime_ns
            mtime_ns = now if mtime_ns is None else mtime_ns
        os.utime(target, ns=(atime_ns, mtime_ns), follow_symlinks=False)

    def access(self, path: str, mode: int) -> None:
        """access(2) for the mounting user: the backing entry carries the same mode and owner.

        Only meaningful when the caller is the user the vault runs as, which is the case
        without --allow-other (with it, the kernel checks modes itself).
        """
        target = self._backing_path(path)
        if mode != os.F_OK and not os.access(target, mode, follow_symlinks=False):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)

    def fsyncdir(self, path: str) -> None:
        backing.fsync_dir(self._dir(path).backing)
