"""What the vault does with a sync client's conflict copy, and with a name found twice.

docs/format.md section 9, on first sight in a writable vault: a copy whose original is
gone takes its place; a copy with the same plaintext as the original is removed; any
other copy is renamed to the encryption of its *shown name*, the original's name with
the client's own words in it (``msgstore (conflicted copy 2026-12-01 laptop).db``,
``msgstore (conflict path1).db``), so that it shows up next to the original, readable,
and can be opened, renamed or deleted like any file.  A directory's copy is rebound to
its new name.  A name found twice (a file and a symlink of one name, or one name under
two IDs of a directory) is decided the same way, in the words ``(conflict duplicate)``.
A read-only vault (export, ls, a read-only mount) shows the same result without touching
the backing directory: the copy under the original's name, the identical copy hidden,
the others under their shown names, so that every reader of one folder sees the same
tree.  Every action is logged.  Built on the backing tree: it never calls into the Vault.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable

from vaultfs.entries import Dir, Entry
from vaultfs.errors import IntegrityError
from vaultfs.format import specials
from vaultfs.format.conflicts import DUPLICATE_WORDS, shown_name
from vaultfs.format.content import EncryptedFile
from vaultfs.format.dirids import Place
from vaultfs.format.listing import DecodedEntry
from vaultfs.format.names import SIDECAR_SUFFIX
from vaultfs.namespace import move_entry
from vaultfs.openfiles import open_noatime
from vaultfs.tree import BackingTree, Listed, Scan, entry_of, lstat_at

log = logging.getLogger("vaultfs")
_COMPARE_CHUNK = 1 << 20
_SAME_CACHE_SIZE = 1024


class ConflictResolver:
    def __init__(self, tree: BackingTree, key_for: Callable[[bytes], bytes], block_size: int,
                 read_only: bool) -> None:
        self._tree = tree
        self._key_for = key_for
        self._block_size = block_size
        self._read_only = read_only
        self._same_cache: dict[tuple[int, ...], bool] = {}
        self._told: set[str] = set()
        # Told (directory, plaintext name) when a resolution makes a name appear, so a FUSE
        # layer can drop the kernel's cached "no such entry" for it.
        self.on_change: Callable[[Dir, str], None] | None = None

    def changed(self, directory: Dir, name: str) -> None:
        if self.on_change is not None:
            self.on_change(directory, name)

    # ------------------------------------------------------------ a listing's copies and duplicates

    def show(self, directory: Dir, fd: int, scan: Scan) -> list[Listed]:
        """The entries the copies and duplicates of a listing add to it (resolved first, if writable)."""
        if not scan.copies and not scan.duplicates:
            return []
        shown = {item.entry.name: item for item in scan.entries}
        decisions = [(decoded, st, decoded.copy.words) for decoded, st in scan.copies if decoded.copy is not None]
        decisions += [(decoded, st, DUPLICATE_WORDS) for decoded, st in scan.duplicates]
        # a writer decides under the tree's lock: two listings of one directory (worker threads on a
        # slow backing dir) must not both rename the same copy
        with self._tree.lock if not self._read_only else contextlib.nullcontext():
            return self._show(directory, fd, decisions, shown)

    def _show(self, directory: Dir, fd: int, decisions: list[tuple[DecodedEntry, os.stat_result, str]],
              shown: dict[str, Listed]) -> list[Listed]:
        extra: list[Listed] = []
        for decoded, st, words in decisions:
            if lstat_at(fd, decoded.backing) is None:
                continue  # decided meanwhile
            try:
                listed = self._decide(directory, fd, decoded, st, words, shown)
            except OSError as exc:
                log.warning("conflict: cannot resolve %s (%s); shown read-only",
                            os.path.join(directory.backing, decoded.backing), exc.strerror or exc)
                listed = self._virtual(directory, decoded, st, words, shown)
            if listed is not None:
                shown[listed.entry.name] = listed
                extra.append(listed)
        return extra

    def _decide(self, directory: Dir, fd: int, decoded: DecodedEntry, st: os.stat_result, words: str,
                shown: dict[str, Listed]) -> Listed | None:
        name = decoded.name
        where = os.path.join(directory.backing, decoded.backing)
        first = shown.get(name)
        if first is None and decoded.copy is not None:  # the original is gone: the copy takes its name
            if self._read_only:
                return self._as(directory, decoded, st, name)
            target = Entry(directory, name, self._tree.names.encrypt(name, decoded.parent_id, decoded.special),
                           decoded.parent_id)
            with self._tree.lock:
                move_entry(self._tree, fd, decoded.backing, st, Place.of(decoded.parent_id, name), fd, target)
                self.drop_sidecars(fd, decoded)
            log.warning("sync conflict: %s restored as %r (its original was gone)", where, name)
            self.changed(directory, name)
            return self._listed(fd, target)
        if first is not None and self._same(fd, first, decoded, st):
            if not self._read_only:
                with self._tree.lock:
                    os.unlink(decoded.backing, dir_fd=fd)
                    self.drop_sidecars(fd, decoded)
                log.warning("conflict: removed %s, identical to %r", where, name)
            return None
        if self._read_only:
            return self._virtual(directory, decoded, st, words, shown)
        with self._tree.lock:
            new_name = shown_name(name, words, lambda n: n in shown or self._tree.exists(directory, n, fd))
            target = Entry(directory, new_name,
                           self._tree.names.encrypt(new_name, directory.dir_id, decoded.special), directory.dir_id)
            move_entry(self._tree, fd, decoded.backing, st, Place.of(decoded.parent_id, name), fd, target)
            self.drop_sidecars(fd, decoded)
        log.warning("conflict: %s shown as %r next to %r", where, new_name, name)
        self.changed(directory, new_name)
        return self._listed(fd, target)

    def _virtual(self, directory: Dir, decoded: DecodedEntry, st: os.stat_result, words: str,
                 shown: dict[str, Listed]) -> Listed:
        """Shown under its conflict name without renaming anything (read-only); said once."""
        listed = self._as(directory, decoded, st, shown_name(decoded.name, words, shown.__contains__))
        where = os.path.join(directory.backing, decoded.backing)
        if where not in self._told:
            self._told.add(where)
            log.warning("conflict: %s shown as %r next to %r (read-only: not renamed)", where, listed.entry.name,
                        decoded.name)
        return listed

    def _as(self, directory: Dir, decoded: DecodedEntry, st: os.stat_result, name: str) -> Listed:
        found = entry_of(directory, decoded)
        entry = Entry(directory, name, found.backing_name, found.dir_id,
                      None if name == decoded.name else decoded.name)
        self._tree.set_virtual(entry)
        return Listed(entry, st)

    @staticmethod
    def _listed(fd: int, target: Entry) -> Listed | None:
        st = lstat_at(fd, target.backing_name.entry)
        return None if st is None else Listed(target, st)

    def drop_sidecars(self, fd: int, decoded: DecodedEntry) -> None:
        """The sidecars a moved long-name entry leaves: the client's copy of it, and an unused original."""
        if not decoded.long:
            return
        form = decoded.copy.original if decoded.copy is not None else decoded.backing
        stem = form[:-4]
        if decoded.copy is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(decoded.copy.apply(stem + SIDECAR_SUFFIX), dir_fd=fd)
        in_use = any(name.startswith(stem) and not name.endswith(SIDECAR_SUFFIX) for name in os.listdir(fd))
        if not in_use:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stem + SIDECAR_SUFFIX, dir_fd=fd)

    # ------------------------------------------------------------ identical copies

    def _same(self, fd: int, first: Listed, decoded: DecodedEntry, st: os.stat_result) -> bool:
        if stat.S_ISDIR(st.st_mode) or stat.S_ISDIR(first.st.st_mode) or first.entry.special != decoded.special:
            return False
        a, b = first.st, st
        key = (a.st_ino, a.st_mtime_ns, a.st_ctime_ns, a.st_size, b.st_ino, b.st_mtime_ns, b.st_ctime_ns, b.st_size)
        known = self._same_cache.get(key)
        if known is None:
            known = self.identical(fd, first.entry.backing_name.entry, fd, decoded.backing, decoded.special)
            if len(self._same_cache) > _SAME_CACHE_SIZE:
                self._same_cache.clear()
            self._same_cache[key] = known
        return known

    def identical(self, first_dir: int, first: str, second_dir: int, second: str, special: bool) -> bool:
        """Same plaintext (ciphertexts always differ: random nonces); a special entry: same kind and payload."""
        fds: list[int] = []
        try:
            for dir_fd, name in ((first_dir, first), (second_dir, second)):
                fds.append(open_noatime(dir_fd, name, os.O_RDONLY))
            sts = [os.fstat(each) for each in fds]
            if not all(stat.S_ISREG(s.st_mode) for s in sts) or sts[0].st_size != sts[1].st_size:
                return False
            if special:
                a, b = (specials.read(each, self._key_for, name, self._block_size) for each, name in zip(
                    fds, (first, second), strict=True))
                return a == b
            files = [EncryptedFile(each, self._key_for, name, self._block_size, layout=2)
                     for each, name in zip(fds, (first, second), strict=True)]
            offset = 0
            while offset < files[0].size:
                if files[0].read(offset, _COMPARE_CHUNK) != files[1].read(offset, _COMPARE_CHUNK):
                    return False
                offset += _COMPARE_CHUNK
            return True
        except (IntegrityError, OSError):
            return False
        finally:
            for each in fds:
                os.close(each)
