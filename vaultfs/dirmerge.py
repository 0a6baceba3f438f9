"""A directory with several IDs merged into one; a directory with none taken in by its owner.

docs/format.md section 5.  Both are what a *writable* vault (a mount, ``fsck --repair``)
does when it reads a directory's IDs; a read-only one only reads.

**Merge.**  Two devices that created the same directory before syncing each sealed an
ID; the sync client keeps both files, so both IDs are valid there and names under both
show.  ``settle`` re-encrypts every name under the primary ID (a directory among them is
rebound: bind to both places, rename, bind to the new one), a name the primary already
has becomes ``<name> (conflict duplicate)`` (or goes, if its plaintext is the same),
and only then drops the other IDs' records and files.  Each step is atomic and either
done or not, so a merge killed anywhere is finished by the next reader.

**Adoption.**  Device A renames /X to /Y while device B writes /X/new.txt; after a sync
the old place comes back holding B's file and no ``vaultfs.dirid`` (it moved with the
directory).  A directory without a valid ID whose names decrypt under the ID of a
directory elsewhere is moved into that directory, entry by entry (a name it already has
becomes ``<name> (conflict moved)``), and then removed; an empty one is simply removed
(an interrupted mkdir, or what a sync client left of a moved directory).  Names that
decrypt nowhere stay, and the directory stays an integrity error.  Everything is logged,
and the FUSE layer is told which names appeared (``ConflictResolver.changed``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator

from vaultfs.conflictfix import ConflictResolver
from vaultfs.entries import Dir, Entry
from vaultfs.errors import IntegrityError
from vaultfs.format import listing
from vaultfs.format.conflicts import DUPLICATE_WORDS, MOVED_WORDS, shown_name
from vaultfs.format.dirids import DIRID_NAME, MAX_RECORDS, SEALED_SIZE, BoundIds, Place, read_small
from vaultfs.format.listing import DecodedEntry
from vaultfs.format.names import BackingName, is_reserved
from vaultfs.namespace import child_fd, move_entry
from vaultfs.tree import BackingTree, entry_of, lstat_at, usable

log = logging.getLogger("vaultfs")
_SAMPLE = 16  # entries of an orphan tried against each directory's IDs


def entries_of(fd: int) -> list[str]:
    """The backing names of a directory that may be vault entries (not reserved, not sidecars)."""
    return sorted(name for name in os.listdir(fd) if not is_reserved(name) and not listing.is_sidecar(name))


def find_owner(tree: BackingTree, orphan: Dir, fd: int) -> tuple[Dir, bytes] | None:
    """The directory (and its ID) under whose ID the orphan's names decrypt, or None.

    Directories whose IDs are in memory are tried first; then every directory of the
    vault, each at its place (an ID counts only where it is valid).
    """
    sample = entries_of(fd)[:_SAMPLE]

    def matches(ids: tuple[bytes, ...]) -> bytes | None:
        for item in sample:
            decoded = listing.decode(tree.names, fd, ids, item)
            if decoded is not None:
                return decoded.parent_id
        return None

    if not sample:
        return None
    for known in tree.known_dirs():
        if known is not orphan and known.ids_loaded:
            hit = matches(known.dir_ids)
            if hit is not None:
                return known, hit
    for directory, ids in _walk(tree, orphan):
        hit = matches(ids)
        if hit is not None:
            return directory, hit
    return None


def _walk(tree: BackingTree, skip: Dir) -> Iterator[tuple[Dir, tuple[bytes, ...]]]:
    """Every directory of the vault with the IDs valid at its place, read without merging anything."""
    stack: list[tuple[Dir, tuple[bytes, ...]]] = [(tree.root, tree.root.dir_ids)]
    while stack:
        directory, ids = stack.pop()
        yield directory, ids
        with tree.dir_fd(directory) as fd:
            with os.scandir(fd) as items:
                subdirs = sorted(item.name for item in items if item.is_dir(follow_symlinks=False))
            for name in subdirs:
                decoded = None if is_reserved(name) else listing.decode(tree.names, fd, ids, name)
                st = lstat_at(fd, name)
                if decoded is None or decoded.special or st is None or (st.st_dev, st.st_ino) == skip.key:
                    continue
                child = tree.child_dir(directory, entry_of(directory, decoded), st)
                if child.ids_loaded:
                    stack.append((child, child.dir_ids))
                    continue
                try:
                    with child_fd(fd, name) as sub:
                        bound = tree.dirids.read_at(sub, Place(decoded.parent_id, decoded.name_bytes), child.label)
                except (IntegrityError, OSError):
                    continue  # another orphan, or gone meanwhile
                stack.append((child, bound.ids))


class DirMerger:
    def __init__(self, tree: BackingTree, conflicts: ConflictResolver) -> None:
        self._tree = tree
        self._conflicts = conflicts
        self._homeless: dict[tuple[int, int], list[str]] = {}  # orphans whose names matched nothing, as they were

    # ------------------------------------------------------------ several IDs

    def settle(self, directory: Dir, fd: int, bound: BoundIds) -> tuple[bytes, ...]:
        """Merge the IDs into the primary, drop what is not valid here; return the one ID left."""
        primary = bound.primary
        if len(bound.ids) > 1:
            moved = self._merge(directory, fd, bound)
            log.warning("%s: merged %d directory IDs into one (two devices made this directory; %d names "
                        "re-encrypted)", directory.label, len(bound.ids), moved)
        elif bound.strays:
            log.warning("%s: dropped %d directory ID record(s) not valid here", directory.label, len(bound.strays))
        record = bound.records[primary]
        try:
            current = read_small(fd, DIRID_NAME, MAX_RECORDS * SEALED_SIZE)
        except OSError:
            current = None
        if current != record:
            self._tree.dirids.keep(fd, [record])  # the sealed bytes re-used: two devices write the same file
        for name in bound.copies:  # last: until here, every ID is still valid
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a directory planted under such a name is not ours to delete
                log.warning("%s: cannot remove %s (%s)", directory.label, name, exc.strerror)
        return (primary,)

    def _merge(self, directory: Dir, fd: int, bound: BoundIds) -> int:
        primary, others = bound.primary, bound.ids[1:]
        moved = 0
        for item in entries_of(fd):
            decoded = listing.decode(self._tree.names, fd, others, item)
            st = lstat_at(fd, item)
            if decoded is None or st is None or not usable(st, decoded.special):
                continue
            self._place(directory, fd, decoded, st, fd, directory, primary, DUPLICATE_WORDS)
            moved += 1
        return moved

    def _place(self, source: Dir, src_fd: int, decoded: DecodedEntry, st: os.stat_result, dst_fd: int,
               target_dir: Dir, dir_id: bytes, words: str) -> None:
        """Move one entry to its name under ``dir_id`` in ``target_dir``; a name taken there is a conflict
        (or, with the same plaintext as the entry there, the moved one goes)."""
        tree = self._tree
        name = decoded.name
        old_place = Place.of(decoded.parent_id, name)
        encrypted = tree.names.encrypt(name, dir_id, decoded.special)
        target = Entry(target_dir, name, encrypted, dir_id)
        if decoded.copy is not None:  # still a sync client's copy: it keeps the client's words, under the new ID
            target = Entry(target_dir, name, BackingName(decoded.copy.apply(encrypted.entry), encrypted.sidecar,
                                                         encrypted.encoded), dir_id)
            free = lstat_at(dst_fd, target.backing_name.entry) is None
            words = decoded.copy.words
        else:
            existing = lstat_at(dst_fd, encrypted.entry)
            free = existing is None and lstat_at(dst_fd, encrypted.as_special(not decoded.special).entry) is None
            if existing is not None and self._conflicts.identical(dst_fd, encrypted.entry, src_fd, decoded.backing,
                                                                  decoded.special):
                os.unlink(decoded.backing, dir_fd=src_fd)
                self._conflicts.drop_sidecars(src_fd, decoded)
                log.warning("%s: removed %s, identical to %r in %s", source.label, decoded.backing, name,
                            target_dir.label)
                return
        if not free:
            def taken(candidate: str) -> bool:
                plain = tree.names.encrypt(candidate, dir_id)
                return any(lstat_at(dst_fd, form.entry) is not None for form in (plain, plain.as_special()))

            new_name = shown_name(name, words, taken)
            target = Entry(target_dir, new_name, tree.names.encrypt(new_name, dir_id, decoded.special), dir_id)
            log.warning("%s: %r shown as %r in %s (the name was taken)", source.label, name, new_name,
                        target_dir.label)
        move_entry(tree, src_fd, decoded.backing, st, old_place, dst_fd, target)
        self._conflicts.drop_sidecars(src_fd, decoded)
        self._conflicts.changed(target_dir, target.name)

    # ------------------------------------------------------------ no ID

    def adopt(self, orphan: Dir, fd: int) -> tuple[bytes, ...]:
        """Take in a directory that has no valid ID; FileNotFoundError once it is gone, IntegrityError if it stays."""
        tree = self._tree
        assert orphan.parent is not None
        items = entries_of(fd)
        if not items:
            self._remove(orphan, fd)
            log.warning("%s: removed an empty directory without a directory ID (an interrupted mkdir, or what a "
                        "sync client left of a directory moved elsewhere)", orphan.label)
            raise FileNotFoundError(errno.ENOENT, "an empty directory without an ID was removed", orphan.label)
        found = None if self._homeless.get(orphan.key) == items else find_owner(tree, orphan, fd)
        if found is None:  # searched once per state of the directory, not on every lookup in it
            self._homeless[orphan.key] = items
            raise IntegrityError(f"{orphan.label}: no directory ID valid here, and its names belong to no "
                                 "directory of the vault")
        owner, owner_id = found
        moved = self._move_all(orphan, fd, owner, (owner_id,))
        left = entries_of(fd)
        log.warning("%s: had no directory ID; its %d entries belong to %s (moved or renamed on another device) "
                    "and were moved there%s", orphan.label, moved, owner.label,
                    f"; {len(left)} that decrypt nowhere stay" if left else "")
        if left:
            raise IntegrityError(f"{orphan.label}: no directory ID valid here ({len(left)} entries decrypt nowhere)")
        self._remove(orphan, fd)
        raise FileNotFoundError(errno.ENOENT, f"moved into {owner.label}", orphan.label)

    def _move_all(self, source: Dir, src_fd: int, owner: Dir, ids: tuple[bytes, ...]) -> int:
        tree = self._tree
        moved = 0
        with tree.dir_fd(owner) as dst_fd:
            for item in entries_of(src_fd):
                decoded = listing.decode(tree.names, src_fd, ids, item)
                st = lstat_at(src_fd, item)
                if decoded is None or st is None or not usable(st, decoded.special):
                    continue
                if decoded.copy is None and self._merge_into(src_fd, decoded, st, owner, dst_fd):
                    moved += 1
                    continue
                self._place(source, src_fd, decoded, st, dst_fd, owner, decoded.parent_id, MOVED_WORDS)
                moved += 1
        return moved

    def _merge_into(self, src_fd: int, decoded: DecodedEntry, st: os.stat_result, owner: Dir, dst_fd: int) -> bool:
        """A directory the owner has too, and which has no ID of its own: adopt its entries into the owner's."""
        tree = self._tree
        existing, existing_st = tree.locate(owner, decoded.name, dst_fd)
        if existing_st is None or not stat.S_ISDIR(existing_st.st_mode) or not stat.S_ISDIR(st.st_mode):
            return False
        with child_fd(src_fd, decoded.backing) as sub:
            try:
                tree.dirids.read_at(sub, Place(decoded.parent_id, decoded.name_bytes), decoded.name)
                return False  # it has an ID of its own: two directories, shown as a conflict
            except IntegrityError:
                pass
            child = tree.child_dir(owner, existing, existing_st)
            self._move_all(child, sub, child, child.dir_ids)
            if entries_of(sub):
                return True  # what decrypts nowhere stays where it was
            for name in os.listdir(sub):
                os.unlink(name, dir_fd=sub)
        os.rmdir(decoded.backing, dir_fd=src_fd)
        return True

    def _remove(self, orphan: Dir, fd: int) -> None:
        """Remove an orphan directory that holds nothing but vaultfs's own files; tell the FUSE layer."""
        assert orphan.parent is not None
        for name in os.listdir(fd):
            if is_reserved(name) or listing.is_sidecar(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
        parent = orphan.parent
        with self._tree.dir_fd(parent) as parent_fd, contextlib.suppress(OSError):
            os.rmdir(orphan.backing_name, dir_fd=parent_fd)
        self._tree.removed(orphan.key)
        self._conflicts.changed(parent, os.path.basename(orphan.label) or orphan.name)

