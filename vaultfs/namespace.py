"""Namespace changes on the backing tree: mkdir, rmdir, unlink, rename, link, symlink, mknod.

Each takes plaintext (directory, name) pairs, works through directory fds (nothing is
followed), holds the tree's lock so that every check-then-act step is atomic with
respect to the vault's other operations, and returns the backing lstat of what it made,
which is what a FUSE reply needs.  Errnos are those of rename(2), mkdir(2) and friends.
New entries get the caller's owner when the daemon runs as root (``Owner``), and a
setgid directory passes its group on, as the kernel does for a local filesystem.

Format v2 (docs/format.md): a new directory's ``vaultfs.dirid`` is bound to its place
(parent ID, name), and a directory rename rebinds it crash-safely (bind to both places,
rename, bind to the new one); a symlink, FIFO, socket or device is a ``.vfx`` file, so
the backing dir only ever holds regular files and directories.  An entry keeps its form
(``.vfs`` or ``.vfx``) when renamed, so a rename onto a name of the other form removes
that entry after the rename.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vaultfs import backing, crypto
from vaultfs.backing import TEMP_PREFIX
from vaultfs.entries import Dir, Entry
from vaultfs.errors import IntegrityError
from vaultfs.format import specials
from vaultfs.format.conflicts import is_dirid_copy
from vaultfs.format.dirids import DIRID_NAME, Place
from vaultfs.format.header import Kind
from vaultfs.tree import BackingTree, lstat_at

log = logging.getLogger("vaultfs")
SYMLINK_MODE = 0o644  # a symlink's own permission bits mean nothing; its file need not be writable by all


@dataclass(frozen=True)
class Owner:
    """Who asked for a new entry (the FUSE request's uid/gid)."""

    uid: int
    gid: int


def _err(code: int, what: str) -> OSError:
    return OSError(code, os.strerror(code), what)


def give_to(dir_fd: int, name: str, owner: Owner | None) -> None:
    """chown a new entry to its creator (only a root daemon can, and only then is it needed).

    In a setgid directory the backing filesystem already gave the entry the directory's
    group, which is what POSIX wants, so only the uid changes there.
    """
    if owner is None or os.geteuid() != 0:
        return
    gid = -1 if os.fstat(dir_fd).st_mode & stat.S_ISGID else owner.gid
    os.chown(name, owner.uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def is_dirid_file(name: str) -> bool:
    """``vaultfs.dirid``, its sync-conflict copies and a temporary file a crash left."""
    return name in (DIRID_NAME, DIRID_NAME + ".tmp") or is_dirid_copy(name)


@contextlib.contextmanager
def child_fd(dir_fd: int, name: str) -> Iterator[int]:
    """A backing subdirectory opened without following a link."""
    fd = backing.open_file_at(dir_fd, name, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def _ids_of(tree: BackingTree, fd: int, st: os.stat_result, place: Place, label: str) -> tuple[bytes, ...]:
    known = tree.known_dir((st.st_dev, st.st_ino))
    if known is not None and known.ids_loaded:
        return known.dir_ids
    try:
        return tree.dirids.read_at(fd, place, label).ids
    except IntegrityError as exc:
        log.warning("%s: moved without rebinding its directory ID (%s)", label, exc.strerror)
        return ()


@contextlib.contextmanager
def rebinding(tree: BackingTree, fd: int, name: str, st: os.stat_result, old_place: Place,
              new_place: Place, label: str) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Move a backing entry with ``move(rename)``; a directory's IDs are rebound around the rename.

    docs/format.md section 5: bind to [old place, new place], rename, bind to [new place];
    a crash at any point leaves the directory valid where it is.  Its conflict copies of
    ``vaultfs.dirid`` are bound to the old place only, and go last.
    """
    if not stat.S_ISDIR(st.st_mode) or old_place == new_place:
        yield lambda rename: rename()
        return
    with child_fd(fd, name) as moving:
        ids = _ids_of(tree, moving, st, old_place, label)
        if ids:
            tree.dirids.bind(moving, ids, [old_place, new_place])

        def move(rename: Callable[[], None]) -> None:
            rename()
            if ids:
                tree.dirids.bind(moving, ids, [new_place])
                for other in os.listdir(moving):
                    if is_dirid_copy(other):
                        os.unlink(other, dir_fd=moving)

        yield move


def move_entry(tree: BackingTree, src_fd: int, src_name: str, st: os.stat_result, old_place: Place, dst_fd: int,
               target: Entry) -> None:
    """Rename a backing entry to ``target`` (never replacing one), rebinding a directory; keep its Dir along."""
    assert target.dir_id is not None
    tree.write_sidecar(dst_fd, target.backing_name)
    with rebinding(tree, src_fd, src_name, st, old_place, Place.of(target.dir_id, target.name),
                   os.path.join(target.parent.backing, src_name)) as move:
        move(lambda: backing.rename_at(src_fd, src_name, dst_fd, target.backing_name.entry, backing.RENAME_NOREPLACE))
    if stat.S_ISDIR(st.st_mode):
        known = tree.known_dir((st.st_dev, st.st_ino))
        if known is not None:
            tree.moved(known, target.parent, target)


class Namespace:
    def __init__(self, tree: BackingTree, read_only: bool, key_for: Callable[[bytes], bytes],
                 block_size: int) -> None:
        self.tree = tree
        self.read_only = read_only
        self._key_for = key_for
        self._block_size = block_size

    def writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "the vault is mounted read-only")

    def _new_entry(self, fd: int, directory: Dir, name: str, special: bool = False) -> Entry:
        entry, st = self.tree.locate(directory, name, fd)
        if st is not None:
            raise _err(errno.EEXIST, name)
        if special:
            entry = Entry(directory, name, entry.backing_name.as_special(), entry.dir_id)
        self.tree.write_sidecar(fd, entry.backing_name)
        return entry

    def _made(self, fd: int, entry: Entry) -> tuple[Entry, os.stat_result]:
        st = lstat_at(fd, entry.backing_name.entry)
        if st is None:
            raise _err(errno.ENOENT, entry.name)  # removed by someone else in between
        return entry, st

    def mkdir(self, directory: Dir, name: str, mode: int, owner: Owner | None = None) -> tuple[Entry, os.stat_result]:
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry = self._new_entry(fd, directory, name)
            target = entry.backing_name.entry
            os.mkdir(target, 0o700, dir_fd=fd)  # private until its ID is in place
            try:
                with child_fd(fd, target) as new_fd:
                    assert entry.dir_id is not None
                    self.tree.dirids.create(new_fd, Place.of(entry.dir_id, name))
                give_to(fd, target, owner)
                sgid = os.fstat(fd).st_mode & stat.S_ISGID  # a setgid directory's subdirectories stay setgid
                backing.chmod_at(fd, target, (mode & 0o7777) | sgid)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(target, DIRID_NAME), dir_fd=fd)
                with contextlib.suppress(OSError):
                    os.rmdir(target, dir_fd=fd)
                raise
            return self._made(fd, entry)

    def _existing(self, fd: int, directory: Dir, name: str) -> tuple[Entry, os.stat_result]:
        entry, st = self.tree.locate(directory, name, fd)
        if st is None:
            raise _err(errno.ENOENT, name)
        return entry, st

    def _remove_dir(self, dir_fd: int, target: str, what: str) -> None:
        """rmdir of a backing directory that holds nothing but its directory ID files."""
        with child_fd(dir_fd, target) as fd:
            with os.scandir(fd) as entries:
                names = [item.name for item in entries]
            if not all(is_dirid_file(name) for name in names):
                raise _err(errno.ENOTEMPTY, what)
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
        os.rmdir(target, dir_fd=dir_fd)

    def rmdir(self, directory: Dir, name: str) -> None:
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry, st = self._existing(fd, directory, name)
            if not stat.S_ISDIR(st.st_mode):
                raise _err(errno.ENOTDIR, name)
            self._remove_dir(fd, entry.backing_name.entry, name)
            self.tree.remove_sidecar(fd, entry.backing_name)
            self.tree.removed((st.st_dev, st.st_ino))

    def unlink(self, directory: Dir, name: str) -> os.stat_result:
        """Remove a name at once (an open file lives on through its fd); return what it was."""
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry, st = self._existing(fd, directory, name)
            if stat.S_ISDIR(st.st_mode):
                raise _err(errno.EISDIR, name)
            os.unlink(entry.backing_name.entry, dir_fd=fd)
            self.tree.remove_sidecar(fd, entry.backing_name)
            return st

    # ------------------------------------------------------------ rename

    def rename(self, old_dir: Dir, old: str, new_dir: Dir, new: str, flags: int = 0) -> os.stat_result | None:
        """rename(2) semantics, plus RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2).

        Returns the lstat of the entry that was replaced (None if none): the caller may
        still hold it open.
        """
        self.writable()
        if flags & ~(backing.RENAME_NOREPLACE | backing.RENAME_EXCHANGE) or flags == 3:
            raise OSError(errno.EINVAL, "invalid rename flags")
        with self.tree.lock, self.tree.dir_fd(old_dir) as src_fd, self.tree.dir_fd(new_dir) as dst_fd:
            src, src_st = self._existing(src_fd, old_dir, old)
            dst, dst_st = self.tree.locate(new_dir, new, dst_fd)
            if old_dir is new_dir and src.backing_name.entry == dst.backing_name.entry:
                return None
            if flags & backing.RENAME_EXCHANGE:
                if dst_st is None:
                    raise _err(errno.ENOENT, new)
                self._exchange(src_fd, src, src_st, dst_fd, dst, dst_st)
                return None
            if dst_st is not None:
                if flags & backing.RENAME_NOREPLACE:
                    raise _err(errno.EEXIST, new)
                src_is_dir, dst_is_dir = stat.S_ISDIR(src_st.st_mode), stat.S_ISDIR(dst_st.st_mode)
                if src_is_dir and not dst_is_dir:
                    raise _err(errno.ENOTDIR, new)
                if dst_is_dir and not src_is_dir:
                    raise _err(errno.EISDIR, new)
                if dst_is_dir:
                    if self._inside(new_dir, src_st):
                        raise OSError(errno.EINVAL, "cannot move a directory into itself", new)
                    self._remove_dir(dst_fd, dst.backing_name.entry, new)
                    self.tree.removed((dst_st.st_dev, dst_st.st_ino))
            elif stat.S_ISDIR(src_st.st_mode) and self._inside(new_dir, src_st):
                raise OSError(errno.EINVAL, "cannot move a directory into itself", new)
            target = self._target(new_dir, new, src.special)
            self.tree.write_sidecar(dst_fd, target.backing_name)
            with self._rebinding(src_fd, src, src_st, target) as move:
                move(lambda: backing.rename_at(src_fd, src.backing_name.entry, dst_fd, target.backing_name.entry))
            if dst_st is not None and dst.backing_name.entry != target.backing_name.entry \
                    and not stat.S_ISDIR(dst_st.st_mode):
                # the replaced entry had the other form (or an older ID): it goes after the rename
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dst.backing_name.entry, dir_fd=dst_fd)
                self.tree.remove_sidecar(dst_fd, dst.backing_name)
            self.tree.remove_sidecar(src_fd, src.backing_name)
            self._moved([(src_st, new_dir, target)])
            return dst_st

    def _target(self, directory: Dir, name: str, special: bool) -> Entry:
        """The entry an existing entry of that form becomes under ``name``: the directory's primary ID."""
        return Entry(directory, name, self.tree.names.encrypt(name, directory.dir_id, special=special),
                     directory.dir_id)

    def _exchange(self, src_fd: int, src: Entry, src_st: os.stat_result, dst_fd: int, dst: Entry,
                  dst_st: os.stat_result) -> None:
        """RENAME_EXCHANGE: one backing exchange when both have the same form, else two renames.

        Two entries of different forms (a file and a symlink) cannot trade backing names:
        each moves to its own form of the other's name (a crash in between shows the second
        name twice, nothing is lost).
        """
        if src.special == dst.special:
            new_src = Entry(dst.parent, dst.name, dst.backing_name, dst.dir_id)
            new_dst = Entry(src.parent, src.name, src.backing_name, src.dir_id)
            with self._rebinding(src_fd, src, src_st, new_src) as move_src, \
                    self._rebinding(dst_fd, dst, dst_st, new_dst) as move_dst:
                move_src(lambda: backing.rename_at(src_fd, src.backing_name.entry, dst_fd, dst.backing_name.entry,
                                                   backing.RENAME_EXCHANGE))
                move_dst(lambda: None)
        else:
            new_src = self._target(dst.parent, dst.name, src.special)
            new_dst = self._target(src.parent, src.name, dst.special)
            self.tree.write_sidecar(dst_fd, new_src.backing_name)
            self.tree.write_sidecar(src_fd, new_dst.backing_name)
            with self._rebinding(src_fd, src, src_st, new_src) as move:
                move(lambda: backing.rename_at(src_fd, src.backing_name.entry, dst_fd, new_src.backing_name.entry,
                                               backing.RENAME_NOREPLACE))
            with self._rebinding(dst_fd, dst, dst_st, new_dst) as move:
                move(lambda: backing.rename_at(dst_fd, dst.backing_name.entry, src_fd, new_dst.backing_name.entry,
                                               backing.RENAME_NOREPLACE))
            self.tree.remove_sidecar(src_fd, src.backing_name)
            self.tree.remove_sidecar(dst_fd, dst.backing_name)
        self._moved([(src_st, dst.parent, new_src), (dst_st, src.parent, new_dst)])

    @contextlib.contextmanager
    def _rebinding(self, fd: int, entry: Entry, st: os.stat_result,
                   target: Entry) -> Iterator[Callable[[Callable[[], None]], None]]:
        old_place = Place.of(entry.dir_id or entry.parent.dir_id, entry.place_name)
        assert target.dir_id is not None
        with rebinding(self.tree, fd, entry.backing_name.entry, st, old_place,
                       Place.of(target.dir_id, target.name), entry.path) as move:
            yield move

    def _inside(self, directory: Dir, moved: os.stat_result) -> bool:
        """Is ``directory`` the moved directory or below it?"""
        node: Dir | None = directory
        while node is not None:
            if node.key == (moved.st_dev, moved.st_ino):
                return True
            node = node.parent
        return False

    def _moved(self, moves: list[tuple[os.stat_result, Dir, Entry]]) -> None:
        """Keep the Dir objects of renamed (or exchanged) directories at their new places."""
        for st, parent, entry in moves:
            if stat.S_ISDIR(st.st_mode):
                known = self.tree.known_dir((st.st_dev, st.st_ino))
                if known is not None:
                    self.tree.moved(known, parent, entry)
        self.tree.forget()

    # ------------------------------------------------------------ links and special entries

    def link(self, src_dir: Dir, src_name: str, new_dir: Dir, new: str) -> tuple[Entry, os.stat_result]:
        self.writable()
        with self.tree.lock, self.tree.dir_fd(src_dir) as src_fd, self.tree.dir_fd(new_dir) as dst_fd:
            src, st = self._existing(src_fd, src_dir, src_name)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EPERM, "hard links to directories are not allowed", src_name)
            entry = self._new_entry(dst_fd, new_dir, new, special=src.special)
            os.link(src.backing_name.entry, entry.backing_name.entry, src_dir_fd=src_fd, dst_dir_fd=dst_fd,
                    follow_symlinks=False)
            return self._made(dst_fd, entry)

    def symlink(self, directory: Dir, name: str, target: str,
                owner: Owner | None = None) -> tuple[Entry, os.stat_result]:
        payload = specials.payload_for(Kind.SYMLINK, target.encode("utf-8", "surrogateescape"))
        return self._special(directory, name, Kind.SYMLINK, payload, SYMLINK_MODE, owner)

    def mknod(self, directory: Dir, name: str, mode: int, rdev: int = 0,
              owner: Owner | None = None) -> tuple[Entry, os.stat_result]:
        """FIFOs, sockets and device nodes, stored as ``.vfx`` files; regular files are the Vault's create."""
        try:
            kind = specials.kind_of_mode(mode)
        except ValueError:
            raise OSError(errno.EINVAL, "mknod of an unknown file type", name) from None
        if kind == Kind.SYMLINK:
            raise OSError(errno.EINVAL, "mknod of a symlink", name)
        return self._special(directory, name, kind, specials.payload_for(kind, rdev=rdev), mode & 0o7777, owner)

    def _special(self, directory: Dir, name: str, kind: Kind, payload: bytes, mode: int,
                 owner: Owner | None) -> tuple[Entry, os.stat_result]:
        """Write a special entry under a hidden name, then give it its name in one step (never half-written)."""
        self.writable()
        with self.tree.lock, self.tree.dir_fd(directory) as fd:
            entry = self._new_entry(fd, directory, name, special=True)
            staged = TEMP_PREFIX + crypto.random_bytes(8).hex()
            new_fd = backing.open_file_at(fd, staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    specials.write(new_fd, self._key_for, kind, payload, self._block_size)
                    os.fchmod(new_fd, mode)
                finally:
                    os.close(new_fd)
                give_to(fd, staged, owner)
                backing.rename_at(fd, staged, fd, entry.backing_name.entry, backing.RENAME_NOREPLACE)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(staged, dir_fd=fd)
                raise
            return self._made(fd, entry)
