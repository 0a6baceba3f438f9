"""``vaultfs upgrade BACKING``: convert a format-v1 vault to version 2 in place.

Works below the Vault, on the backing tree with the format layer, one directory at a
time from the root:

1. its ``vaultfs.dirid`` and conflict copies: every v1 record becomes a v2 record bound
   to the directory's place (parent ID, name bytes), one atomic file replacement each;
2. every ``VFS1`` file is rewritten as ``VFS2`` into a staging file, fsynced, given the
   old mode, owner and times, and renamed over the old one;
3. every backing symlink, FIFO, socket or device node becomes a ``.vfx``/``.vxl`` file
   (staged, renamed into place, then the old entry removed);
4. once the whole tree is done, ``vaultfs.conf`` is rewritten with version 2: last, so
   that a vault whose upgrade stopped half-way still says version 1 and mounts nowhere.

Kill it at any point and run it again: every step is atomic and recognisable as done
(a v2 record opens at its place, a file starts with ``VFS2``, a special has its ``.vfx``
name), and staging leftovers are removed or reused.  Hard links stay linked: the new
inode of a multiply linked entry is kept under a reserved name in the root
(``vaultfs.upgrade-<inode>-…``) until every name points to it, so a second run links the
remaining names to the same inode.  Names are not re-encrypted (a v1 name decrypts to
NFC bytes, which are a valid v2 name).  Damage is carried over, never repaired or hidden:
a damaged block stays damaged at the same index, a torn append stays one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultfs import backing
from vaultfs.entries import join_path
from vaultfs.errors import IntegrityError, UsageError
from vaultfs.format import convert, keyfile, listing, specials
from vaultfs.format.dirids import (
    MAX_RECORDS,
    ROOT,
    SEALED_SIZE,
    BoundDirIds,
    Place,
    dirid_files,
    open_dir,
    read_small,
    replace_file,
    split_records,
)
from vaultfs.format.header import MAGIC_V1, MAGIC_V2, Kind
from vaultfs.format.keyfile import Config
from vaultfs.format.keys import VaultKeys
from vaultfs.format.names import (
    LONG_SPECIAL_SUFFIX,
    RESERVED_PREFIX,
    SPECIAL_SUFFIX,
    NameCipher,
    parse_entry,
)
from vaultfs.tools.upgradeaux import check_not_mounted, copy_user_xattrs, planned_bytes  # noqa: F401 (re-exported)

STAGE = "vaultfs.upgrade-stage"  # per directory: the entry being converted
LINK_STAGE = "vaultfs.upgrade-link"  # per directory: a new name of a shared inode, before its rename
SHARED_PREFIX = "vaultfs.upgrade-shared-"  # root: the new inode of a hard-linked entry
SYMLINK_MODE = 0o644  # a symlink's own mode means nothing; its .vfx file need not be writable by all

Step = Callable[[str, str], None]


class _Unconvertible(Exception):
    """The entry cannot be converted (already reported): its staging file is dropped."""


@dataclass
class UpgradeReport:
    directories: int = 0
    dirids_rebound: int = 0
    files_converted: int = 0
    specials_converted: int = 0
    bytes_converted: int = 0
    carried_damage: list[str] = field(default_factory=list)  # converted; damaged blocks carried over as damaged
    left: list[str] = field(default_factory=list)  # could not be converted (unreadable): left as they were
    multi_id: list[str] = field(default_factory=list)  # directories with more than one directory ID


class Upgrader:
    def __init__(self, backing_dir: str, keys: VaultKeys, config: Config, on_step: Step | None = None,
                 on_bytes: Callable[[int], None] | None = None,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.root = os.path.abspath(backing_dir)
        self.keys = keys
        self.config = config
        self.block_size = config.block_size
        self.names = NameCipher(keys.name_key)
        self.dirids = BoundDirIds(keys)
        self.report = UpgradeReport()
        self._on_step = on_step
        self._on_bytes = on_bytes
        self._on_problem = on_problem
        self._file_keys: dict[bytes, bytes] = {}

    def _key_for(self, file_id: bytes) -> bytes:
        key = self._file_keys.get(file_id)
        if key is None:
            if len(self._file_keys) > 4096:
                self._file_keys.clear()
            key = self._file_keys[file_id] = self.keys.file_key(file_id)
        return key

    def _step(self, kind: str, path: str) -> None:
        if self._on_step is not None:
            self._on_step(kind, path)

    def _left(self, label: str, why: str) -> None:
        line = f"{label}: {why}; left as it was"
        self.report.left.append(line)
        if self._on_problem is not None:
            self._on_problem(line)

    # ------------------------------------------------------------ the walk

    def run(self) -> UpgradeReport:
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root_times = os.fstat(root_fd)
        try:
            try:
                fcntl.flock(root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another `vaultfs upgrade` is running on {self.root}") from None
            stack: list[tuple[str, Place, str]] = [(self.root, ROOT, "/")]
            while stack:
                path, place, label = stack.pop()
                stack.extend(reversed(self._directory(path, place, label)))
            for name in os.listdir(root_fd):
                if name.startswith(SHARED_PREFIX):  # every name of a shared inode is converted by now
                    os.unlink(name, dir_fd=root_fd)
            os.fsync(root_fd)
            signed = Config(self.config.vault_id, self.config.slots, self.config.block_size,
                            keyfile.FORMAT_VERSION).signed(self.keys)
            keyfile.write_config(self.root, signed)
            os.utime(root_fd, ns=(root_times.st_atime_ns, root_times.st_mtime_ns))
            self._step("config", keyfile.config_path(self.root))
        finally:
            os.close(root_fd)
        return self.report

    def _directory(self, path: str, place: Place, label: str) -> list[tuple[str, Place, str]]:
        self.report.directories += 1
        times = os.lstat(path)
        children: list[tuple[str, Place, str]] = []
        with open_dir(path) as dir_fd:
            ids = self._rebind(dir_fd, path, place, label)
            if ids is None:
                return []
            names = sorted(os.listdir(dir_fd))
            for name in (STAGE, LINK_STAGE):
                if name in names:
                    os.unlink(name, dir_fd=dir_fd)  # a crash left it; its entry is still the old one
            for name in names:
                if name.startswith(RESERVED_PREFIX):
                    continue
                entry = listing.decode(self.names, dir_fd, ids, name)
                if entry is None:
                    continue  # sidecars, foreign files, names that do not decrypt here: not vaultfs's to convert
                child = join_path(label, entry.name)
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    children.append((os.path.join(path, name), Place(entry.parent_id, entry.name_bytes), child))
                elif entry.special:
                    continue  # a .vfx/.vxl: converted by an earlier run
                elif stat.S_ISREG(st.st_mode):
                    self._file(dir_fd, path, name, st, child)
                else:
                    self._special(dir_fd, path, name, entry, st, child)
            os.fsync(dir_fd)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns), follow_symlinks=False)
        return children

    def _rebind(self, dir_fd: int, path: str, place: Place, label: str) -> tuple[bytes, ...] | None:
        """Rewrite every v1 record of the directory's ID files as a v2 record bound to ``place``."""
        ids: list[bytes] = []
        for name in dirid_files(dir_fd):
            try:
                records = split_records(read_small(dir_fd, name, MAX_RECORDS * SEALED_SIZE))
            except OSError as exc:
                self._left(f"{label} ({name})", exc.strerror or str(exc))
                continue
            if records is None:
                self._left(f"{label} ({name})", "not a directory ID file")
                continue
            new, changed = [], False
            for record in records:
                dir_id = self.dirids.open(record, place)
                if dir_id is None:
                    dir_id = self.dirids.open_v1(record)
                    if dir_id is not None and (place != ROOT or dir_id == self.keys.root_dir_id):
                        record, changed = self.dirids.seal(dir_id, place), True
                    else:
                        dir_id = None  # neither: kept as it is, v2 readers report it
                new.append(record)
                if dir_id is not None and dir_id not in ids:
                    ids.append(dir_id)
            if changed:
                replace_file(dir_fd, name, b"".join(new))
                self.report.dirids_rebound += 1
                self._step("dirid", os.path.join(path, name))
        if place == ROOT and self.keys.root_dir_id not in ids:
            raise IntegrityError("/: the root directory ID does not open with this vault's key")
        if not ids:
            self._left(label, "no authentic directory ID, so its entries cannot be named")
            return None
        if len(ids) > 1:
            self.report.multi_id.append(label)
        return tuple(ids)

    # ------------------------------------------------------------ files

    def _file(self, dir_fd: int, path: str, name: str, st: os.stat_result, label: str) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            head = os.pread(fd, 40, 0)
            if head[:4] == MAGIC_V2:
                return  # converted by an earlier run
            if head[:4] != MAGIC_V1 or len(head) != 40:
                self._left(label, "its header is not a format-v1 header")
                return
            shared = f"{SHARED_PREFIX}{st.st_ino}-{st.st_mtime_ns}-{head[8:16].hex()}"
            try:
                if st.st_nlink == 1 and not os.path.lexists(os.path.join(self.root, shared)):
                    with self._staged(dir_fd, STAGE, st, st.st_mode & 0o7777, fd) as out:
                        self._convert(fd, out, label)
                    os.rename(STAGE, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                else:
                    self._make_shared(shared, st, st.st_mode & 0o7777, lambda out: self._convert(fd, out, label), fd)
                    self._link_shared(dir_fd, shared, name, name, st)
            except _Unconvertible:
                return
        finally:
            os.close(fd)
        self.report.files_converted += 1
        self._step("file", os.path.join(path, name))

    def _convert(self, src: int, dst: int, label: str) -> None:
        try:
            result = convert.convert_file(src, dst, self._key_for, self.block_size, self._count)
        except ValueError as exc:
            self._left(label, str(exc))
            raise _Unconvertible() from None
        if result.bad_blocks or result.torn_append:
            what = [f"damaged block(s) {', '.join(map(str, result.bad_blocks[:8]))}"] if result.bad_blocks else []
            what += ["a torn append (the last block is not marked last)"] if result.torn_append else []
            line = f"{label}: converted with {' and '.join(what)} carried over (`vaultfs fsck` reports it)"
            self.report.carried_damage.append(line)
            if self._on_problem is not None:
                self._on_problem(line)

    def _make_shared(self, shared: str, st: os.stat_result, mode: int, fill: Callable[[int], None],
                     xattrs_from: int | None = None) -> None:
        """Create the root's shared new inode of a hard-linked entry, unless an earlier run did."""
        if os.path.lexists(os.path.join(self.root, shared)):
            return
        with open_dir(self.root) as root_fd:
            with self._staged(root_fd, shared + ".tmp", st, mode, xattrs_from) as out:
                fill(out)
            os.rename(shared + ".tmp", shared, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        self._step("shared", os.path.join(self.root, shared))

    def _count(self, count: int) -> None:
        self.report.bytes_converted += count
        if self._on_bytes is not None:
            self._on_bytes(count)

    @contextlib.contextmanager
    def _staged(self, dir_fd: int, name: str, st: os.stat_result, mode: int, xattrs_from: int | None = None):
        """A new file ``name`` in ``dir_fd``; on success it carries ``st``'s owner and times (and the
        ``user.*`` extended attributes of ``xattrs_from``, encrypted values that do not depend on the
        inode) and is fsynced."""
        with backing.rewritten_at(dir_fd, name, st, mode) as fd:
            yield fd
            if xattrs_from is not None:
                copy_user_xattrs(xattrs_from, fd)

    def _link_shared(self, dir_fd: int, shared: str, old_name: str, new_name: str, st: os.stat_result) -> None:
        """Give the shared new inode the name ``new_name``, replacing ``old_name``; drop it after the last one."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(LINK_STAGE, dir_fd=dir_fd)
        with open_dir(self.root) as root_fd:
            os.link(shared, LINK_STAGE, src_dir_fd=root_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.rename(LINK_STAGE, new_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            with contextlib.suppress(FileNotFoundError):  # rename(2) does nothing when both are links of one file
                os.unlink(LINK_STAGE, dir_fd=dir_fd)
            if old_name != new_name:
                os.unlink(old_name, dir_fd=dir_fd)
            if st.st_nlink == 1:  # that was the old inode's last name
                os.unlink(shared, dir_fd=root_fd)

    # ------------------------------------------------------------ specials

    def _special(self, dir_fd: int, path: str, name: str, entry: listing.DecodedEntry, st: os.stat_result,
                 label: str) -> None:
        try:
            kind = specials.kind_of_mode(st.st_mode)
        except ValueError:
            self._left(label, f"unknown file type 0o{stat.S_IFMT(st.st_mode):o}")
            return
        if kind == Kind.SYMLINK:
            target = self.names.decrypt_symlink(os.readlink(name, dir_fd=dir_fd))
            if target is None:
                self._left(label, "its symlink target does not decrypt")
                return
            payload = specials.payload_for(kind, target.encode("utf-8", "surrogateescape"))
            mode = SYMLINK_MODE
        else:
            payload = specials.payload_for(kind, rdev=st.st_rdev)
            mode = st.st_mode & 0o7777
        new_name = self._special_name(entry)
        shared = f"{SHARED_PREFIX}{st.st_ino}-{st.st_mtime_ns}-{kind.name.lower()}"
        if st.st_nlink == 1 and not os.path.lexists(os.path.join(self.root, shared)):
            with self._staged(dir_fd, STAGE, st, mode) as out:
                specials.write(out, self._key_for, kind, payload, self.block_size)
            os.rename(STAGE, new_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.unlink(name, dir_fd=dir_fd)
        else:
            self._make_shared(shared, st, mode, lambda out: specials.write(out, self._key_for, kind, payload,
                                                                            self.block_size))
            self._link_shared(dir_fd, shared, name, new_name, st)
        self.report.specials_converted += 1
        self._step("special", os.path.join(path, new_name))

    @staticmethod
    def _special_name(entry: listing.DecodedEntry) -> str:
        """``<e>.vfs`` -> ``<e>.vfx``, ``<h>.vfl`` -> ``<h>.vxl``; a conflict copy keeps the client's suffix."""
        original = entry.copy.original if entry.copy is not None else entry.backing
        form = parse_entry(original)
        assert form is not None
        base = form.stem + (LONG_SPECIAL_SUFFIX if form.long else SPECIAL_SUFFIX)
        return entry.copy.apply(base) if entry.copy is not None else base


def upgrade(backing_dir: str, keys: VaultKeys, config: Config, on_step: Step | None = None,
            on_bytes: Callable[[int], None] | None = None,
            on_problem: Callable[[str], None] | None = None) -> UpgradeReport:
    """Convert the v1 vault in ``backing_dir`` (unlocked with ``keys``; ``config`` its v1 config) to v2."""
    if config.version != keyfile.UPGRADABLE_VERSION:
        raise UsageError(f"{backing_dir} has format version {config.version}, not {keyfile.UPGRADABLE_VERSION}")
    check_not_mounted(backing_dir)
    try:
        return Upgrader(backing_dir, keys, config, on_step, on_bytes, on_problem).run()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, "the disk is full; free some space and run `vaultfs upgrade` again") from None
        raise
