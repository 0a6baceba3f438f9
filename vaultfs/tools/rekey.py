"""``vaultfs rekey BACKING``: a new master key, and the whole vault re-encrypted under it, in place.

``passwd`` re-wraps the same master key, so an old ``vaultfs.conf`` (a cloud keeps old
versions) and the old password keep opening everything.  A rekey replaces the key:
every name, directory ID, content, special entry and extended attribute is written
anew under a new master key, and at the end nothing in the folder opens with the old
one.  docs/format.md section 15 is the normative description; in short:

- The new key is written first, as the *pending config* ``vaultfs.rekey`` (its slot
  under the new password): from then on every other reader refuses the vault, and a
  run killed anywhere is finished by running ``vaultfs rekey`` again.
- Then one directory at a time, depth first, in place (the backing dir is a sync
  folder's root: it cannot be swapped for a copy).  A directory gets a record of its
  new ID at its new place next to its old ones, is renamed to its new name, has its
  entries converted, and only then loses its old records.  A file is written anew into
  a staging file (new file ID, blocks re-sealed, holes left holes, mode, owner, times
  and attributes), renamed to its new name, and only then is the old name removed, so
  every file's contents open with one of the two keys at every moment.  Every step is
  atomic and recognisable as done: a new name that decrypts under the new key is done.
- Hard links stay links: the new inode of a multiply linked entry waits in the root
  (``vaultfs.rekey-link-…``) until every name of the old inode points to it.
- The switch-over is one rename of the pending config over ``vaultfs.conf``, after
  every other copy of a config for the old key is gone.

Only one file at a time is written twice (hard-linked files until all their names are
done), so a rekey needs the free space of its largest file, not of a second vault.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultfs import backing
from vaultfs.backing import TEMP_PREFIX
from vaultfs.entries import join_path
from vaultfs.format import listing
from vaultfs.format.conflicts import parse_copy
from vaultfs.format.dirids import DIRID_NAME, ROOT, Place, read_small
from vaultfs.format.keys import VaultKeys
from vaultfs.format.names import MAX_BACKING_NAME, MAX_SIDECAR_BYTES, SHORT_SUFFIX, NameCipher, is_reserved
from vaultfs.format.xattrs import XattrCipher
from vaultfs.tools import rekeystate
from vaultfs.tools.rekeycontent import copy_xattrs, reencrypt, rekey_xattrs_in_place
from vaultfs.tools.rekeydirs import DirRecords, ids_of

STAGE = TEMP_PREFIX + "rekey"  # per directory: the new file being written (a staging name: never listed, never synced)
LINK_PREFIX = "vaultfs.rekey-link-"  # root: the new inode of a hard-linked entry, until the run ends
_KEY_CACHE = 4096


@dataclass
class RekeyReport:
    directories: int = 0
    files: int = 0
    specials: int = 0
    bytes_read: int = 0
    damaged: list[str] = field(default_factory=list)  # unreadable before, unreadable (and not old-key) after
    repairable: list[str] = field(default_factory=list)  # a crash's marks, carried over for fsck --repair
    left: list[str] = field(default_factory=list)  # not vaultfs entries of their directory: left as they were


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class _DirIds:
    """One directory's IDs under both keys, and how they map."""

    old: tuple[bytes, ...]
    new: tuple[bytes, ...]
    to_new: dict[bytes, bytes]
    to_old: dict[bytes, bytes]


class _KeyCache:
    """Per-file keys of one master key, derived once per file ID (each costs an HKDF)."""

    def __init__(self, keys: VaultKeys) -> None:
        self._keys = keys
        self._cache: dict[bytes, bytes] = {}

    def __call__(self, file_id: bytes) -> bytes:
        key = self._cache.get(file_id)
        if key is None:
            if len(self._cache) >= _KEY_CACHE:
                self._cache.clear()
            key = self._cache[file_id] = self._keys.file_key(file_id)
        return key


class Rekeyer:
    """Converts the tree below ``root_fd`` from the ``old`` master key to the ``new`` one (resumable)."""

    def __init__(self, root_fd: int, old: VaultKeys, new: VaultKeys, block_size: int,
                 on_bytes: Callable[[int], None] | None = None, on_problem: Callable[[str], None] | None = None,
                 on_file: Callable[[], None] | None = None) -> None:
        self.root_fd = root_fd
        self.old, self.new = old, new
        self.block_size = block_size
        self.old_names, self.new_names = NameCipher(old.name_key), NameCipher(new.name_key)
        self.records = DirRecords(old, new)
        self.old_xattrs, self.new_xattrs = XattrCipher(old.master_key), XattrCipher(new.master_key)
        self.old_key, self.new_key = _KeyCache(old), _KeyCache(new)
        self.report = RekeyReport()
        self._on_bytes, self._on_problem, self._on_file = on_bytes, on_problem, on_file

    def _problem(self, bucket: list[str], line: str) -> None:
        bucket.append(line)
        if self._on_problem is not None:
            self._on_problem(line)

    def _count(self, count: int) -> None:
        self.report.bytes_read += count
        if self._on_bytes is not None:
            self._on_bytes(count)

    def run(self) -> RekeyReport:
        self._directory(self.root_fd, ROOT, ROOT, "/")
        for name in os.listdir(self.root_fd):  # every name of every linked inode has its new one by now
            if name.startswith(LINK_PREFIX):
                os.unlink(name, dir_fd=self.root_fd)
        os.fsync(self.root_fd)
        return self.report

    # ------------------------------------------------------------ directories

    def _directory(self, fd: int, old_place: Place | None, new_place: Place, label: str) -> None:
        """Convert one directory (its entries, recursively); nothing to do once its old records are gone."""
        files = self.records.read(fd, old_place, new_place)
        old_ids = ids_of(files, "old")
        if not old_ids:
            if not ids_of(files, "new"):  # no ID at all: hidden by every reader, before and after
                self._remove_leftovers(fd, sorted(os.listdir(fd)))
                if self._has_entries(fd):
                    self._problem(self.report.left, f"{label}: no directory ID valid here under either key; "
                                                     "its entries were left as they were")
            return
        assert old_place is not None  # old records are only found at a known old place
        self.report.directories += 1
        self.records.bind_new(fd, files, new_place)
        new_ids = ids_of(self.records.read(fd, old_place, new_place), "new")
        to_new = {dir_id: rekeystate.new_dir_id(self.old, self.new, dir_id) for dir_id in old_ids}
        failed = rekey_xattrs_in_place(fd, self.old_xattrs, self.new_xattrs)
        if failed:
            self._problem(self.report.damaged, f"{label}: {failed} extended attribute(s) failed authentication "
                                               "and stay unreadable")
        names = sorted(os.listdir(fd))
        self._remove_leftovers(fd, names)
        self._sidecars(fd, names, old_ids, new_ids, to_new, remove=False)
        ids = _DirIds(old_ids, new_ids, to_new, {new: old for old, new in to_new.items()})
        for name in names:
            if not (is_reserved(name) or listing.is_sidecar(name)):
                self._entry(fd, name, ids, label)
        self._sidecars(fd, sorted(os.listdir(fd)), old_ids, new_ids, to_new, remove=True)
        self.records.drop_old(fd, old_place, new_place)
        os.fsync(fd)

    @staticmethod
    def _remove_leftovers(fd: int, names: list[str]) -> None:
        """Staging files of a crashed writer (or run) and a crashed ID file replacement: old-key bytes."""
        for name in names:
            if name.startswith(TEMP_PREFIX) or name == DIRID_NAME + ".tmp":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)

    @staticmethod
    def _has_entries(fd: int) -> bool:
        return any(not (is_reserved(name) or listing.is_sidecar(name)) for name in os.listdir(fd))

    def _child(self, fd: int, name: str, old_place: Place | None, new_place: Place, label: str,
               rename_to: str | None = None) -> None:
        """A subdirectory: its times kept on it, renamed to its new name (first time), converted, times back."""
        child = rekeystate.open_dir(fd, name)
        try:
            if rename_to is not None:
                rekeystate.remember_times(child)
                os.rename(name, rename_to, src_dir_fd=fd, dst_dir_fd=fd)
            self._directory(child, old_place, new_place, label)
            rekeystate.restore_times(child)
        finally:
            os.close(child)

    # ------------------------------------------------------------ long-name sidecars

    def _sidecar_text(self, fd: int, name: str) -> str | None:
        copy = parse_copy(name)
        digest = (copy.original if copy is not None else name)[:-4]
        try:
            text = read_small(fd, name, MAX_SIDECAR_BYTES).decode("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        if not NameCipher.sidecar_matches(digest, text) or len(text) + len(SHORT_SUFFIX) <= MAX_BACKING_NAME:
            return None
        return text

    def _sidecars(self, fd: int, names: list[str], old_ids: tuple[bytes, ...], new_ids: tuple[bytes, ...],
                  to_new: dict[bytes, bytes], remove: bool) -> None:
        """Before the entries: each old ``.vfn`` (and a client's copy of one) gets its new counterpart;
        after them (``remove``), the old ones go."""
        for name in names:
            if not listing.is_sidecar(name):
                continue
            text = self._sidecar_text(fd, name)
            if text is None or any(self.new_names.decrypt_encoded(text, n) for n in new_ids):
                continue
            for dir_id in old_ids:
                plain = self.old_names.decrypt_encoded(text, dir_id)
                if plain is not None:
                    break
            else:
                continue
            if remove:
                os.unlink(name, dir_fd=fd)
                continue
            encoded = self.new_names.encrypt(plain, to_new[dir_id])
            if encoded.sidecar is None:
                continue
            copy = parse_copy(name)
            target = copy.apply(encoded.sidecar) if copy is not None else encoded.sidecar
            data = encoded.encoded.encode("ascii")
            with contextlib.suppress(OSError):
                if read_small(fd, target, MAX_SIDECAR_BYTES) == data:
                    continue
            backing.replace_file_at(fd, target, data, 0o644)

    # ------------------------------------------------------------ entries

    def _entry(self, fd: int, name: str, ids: _DirIds, label: str) -> None:
        done = listing.decode(self.new_names, fd, ids.new, name)
        if done is not None:  # converted by this run or an earlier one; a directory may be half done
            st = os.lstat(name, dir_fd=fd)
            if stat.S_ISDIR(st.st_mode) and not done.special:
                parent = ids.to_old.get(done.parent_id)  # none left: the directory is done, and all below it
                old_place = Place(parent, done.name_bytes) if parent is not None else None
                self._child(fd, name, old_place, Place(done.parent_id, done.name_bytes), join_path(label, done.name))
            return
        entry = listing.decode(self.old_names, fd, ids.old, name)
        if entry is None:
            self._problem(self.report.left, f"{join_path(label, name)} (a backing name): decrypts in this "
                                            "directory under neither key; left as it was")
            return
        new_parent = ids.to_new[entry.parent_id]
        base = self.new_names.encrypt(entry.name, new_parent, entry.special).entry
        target = entry.copy.apply(base) if entry.copy is not None else base
        child_label = join_path(label, entry.name) + (" (a sync client's copy)" if entry.copy is not None else "")
        st = os.lstat(name, dir_fd=fd)
        if _exists(fd, target):
            if stat.S_ISDIR(st.st_mode):
                self._problem(self.report.left, f"{child_label}: a directory under both its old and its new name; "
                                                "the old one was left as it was")
                return
            os.unlink(name, dir_fd=fd)  # its new file was complete before it got the new name
            return
        if stat.S_ISDIR(st.st_mode) and not entry.special:
            self._child(fd, name, Place(entry.parent_id, entry.name_bytes), Place(new_parent, entry.name_bytes),
                        child_label, rename_to=target)
        elif stat.S_ISREG(st.st_mode):
            self._file(fd, name, target, st, entry.special, child_label)
        else:  # foreign (a symlink, FIFO ... or a directory under a special's name): renamed, never followed
            os.rename(name, target, src_dir_fd=fd, dst_dir_fd=fd)

    def _file(self, fd: int, name: str, target: str, st: os.stat_result, special: bool, label: str) -> None:
        try:  # reading moves no atime: a run killed after it would otherwise keep the moved one
            src = backing.open_file_at(fd, name, os.O_RDONLY | os.O_NOATIME)
        except PermissionError:  # O_NOATIME needs the owner (or CAP_FOWNER)
            src = backing.open_file_at(fd, name, os.O_RDONLY)
        try:
            head = os.pread(src, 40, 0)
            shared = f"{LINK_PREFIX}{st.st_ino}-{st.st_mtime_ns}-{head[8:16].hex()}"
            if st.st_nlink > 1 or _exists(self.root_fd, shared):
                if not _exists(self.root_fd, shared):
                    self._staged(self.root_fd, shared + ".tmp", src, st, label)
                    os.rename(shared + ".tmp", shared, src_dir_fd=self.root_fd, dst_dir_fd=self.root_fd)
                os.link(shared, target, src_dir_fd=self.root_fd, dst_dir_fd=fd, follow_symlinks=False)
            else:
                self._staged(fd, STAGE, src, st, label)
                os.rename(STAGE, target, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            os.close(src)
        os.unlink(name, dir_fd=fd)
        if special:
            self.report.specials += 1
        else:
            self.report.files += 1
        if self._on_file is not None:
            self._on_file()

    def _staged(self, dir_fd: int, name: str, src: int, st: os.stat_result, label: str) -> None:
        """The new file under ``name``: contents and attributes re-encrypted, owner, mode and times as before."""
        with backing.rewritten_at(dir_fd, name, st, stat.S_IMODE(st.st_mode)) as out:
            result = reencrypt(src, out, self.old_key, self.new_key, self.block_size, self._count)
            failed = copy_xattrs(src, out, self.old_xattrs, self.new_xattrs)
        if result.damaged:
            self._problem(self.report.damaged, f"{label}: {result.describe()}")
        if failed:
            self._problem(self.report.damaged, f"{label}: {failed} extended attribute(s) failed authentication "
                                               "and stay unreadable")
        marks = (["a torn append"] if result.torn_append else []) + \
            ([f"{result.torn_fills} interrupted write(s) into holes"] if result.torn_fills else []) + \
            ([f"an interrupted truncate at block {result.truncate_at}"] if result.truncate_at is not None else [])
        if marks:
            self._problem(self.report.repairable, f"{label}: {' and '.join(marks)} carried over "
                                                  "(`vaultfs fsck` reports it, `fsck --repair` finishes it)")


def rekey(root_fd: int, old: VaultKeys, new: VaultKeys, block_size: int,
          before_switch: Callable[[RekeyReport], None] | None = None,
          on_bytes: Callable[[int], None] | None = None, on_problem: Callable[[str], None] | None = None,
          on_file: Callable[[], None] | None = None) -> RekeyReport:
    """Convert the tree, then switch ``vaultfs.conf`` to the pending config (``before_switch`` runs first:
    the CLI shows the new recovery key there, so that no run can switch without showing it)."""
    try:
        report = Rekeyer(root_fd, old, new, block_size, on_bytes, on_problem, on_file).run()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # the staging file is gone again; every finished step stays
            raise OSError(errno.ENOSPC, "the disk is full; free some space and run `vaultfs rekey` again with the "
                                        "same passwords: it goes on where it stopped") from None
        raise
    if before_switch is not None:
        before_switch(report)
    rekeystate.commit(root_fd, old.vault_id)
    rekeystate.restore_times(root_fd)  # the root's: the switch itself changed its mtime
    return report
