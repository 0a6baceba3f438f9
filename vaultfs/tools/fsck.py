"""Check (and, on request, safely repair) a whole vault without FUSE.

Walks the backing tree once, streaming: every directory's IDs at its place (docs/format.md
section 5), every name, long-name sidecar, file header, block tag, is_last mark and hole,
every special entry.  Each problem is reported with its plaintext path where it can be
known and its backing path.  ``--repair`` does only what cannot lose data: remove orphan
sidecars and leftover staging files, resolve sync-conflict copies and duplicate names
(under conflict names), merge a directory's several IDs and drop records not valid where
they lie, move a directory without an ID into the directory its names belong to, finish
an interrupted write into a hole or an interrupted truncate.  Re-marking the last block
of a torn append can lose data (the same bytes are a file cut at a block boundary), so
it needs ``--accept-truncated`` as well and says how long the file becomes.  Conflicts
already resolved, waiting for the user, are listed too (``report.conflicts``), but are
not problems.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vaultfs.dirmerge import entries_of, find_owner
from vaultfs.entries import Dir, Entry, join_path
from vaultfs.errors import IntegrityError
from vaultfs.format import contentcheck, listing, specials
from vaultfs.format.conflicts import parse_copy
from vaultfs.format.dirids import DIRID_NAME, BoundIds
from vaultfs.format.header import Kind
from vaultfs.format.names import LONG_SPECIAL_SUFFIX, LONG_SUFFIX, SIDECAR_SUFFIX, is_reserved, parse_entry
from vaultfs.staging import STAGING_PREFIX
from vaultfs.tools.conflicts import Conflict, conflict_of
from vaultfs.tree import foreign_reason, lstat_at, usable
from vaultfs.vault import Vault


@dataclass
class Problem:
    kind: str
    plain_path: str | None
    backing_path: str
    detail: str
    repaired: bool = False

    def line(self, backing_root: str) -> str:
        where = self.plain_path if self.plain_path is not None else "(unknown path)"
        rel = os.path.relpath(self.backing_path, backing_root)
        status = "REPAIRED" if self.repaired else "PROBLEM"
        return f"{status} {self.kind}: {where} [backing: {rel}]: {self.detail}"


@dataclass
class Report:
    directories: int = 0
    files: int = 0
    specials: int = 0  # symlinks, FIFOs, sockets, devices
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]


class Checker:
    def __init__(self, vault: Vault, repair: bool = False, accept_truncated: bool = False,
                 on_problem: Callable[[Problem], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.vault = vault
        self.tree = vault.tree
        self.repair = repair
        self.accept_truncated = accept_truncated
        self.report = Report()
        self._on_problem = on_problem
        self._on_bytes = on_bytes

    def _problem(self, kind: str, plain: str | None, backing_path: str, detail: str,
                 fix: Callable[[], object] | None = None) -> None:
        problem = Problem(kind, plain, backing_path, detail)
        if self.repair and fix is not None:
            fix()
            problem.repaired = True
        self.report.problems.append(problem)
        if self._on_problem is not None:
            self._on_problem(problem)

    def run(self) -> Report:
        stack: list[Dir] = [self.tree.root]
        while stack:
            stack.extend(reversed(self._check_dir(stack.pop())))
        return self.report

    # ------------------------------------------------------------ directories

    def _check_dir(self, directory: Dir) -> list[Dir]:
        """Check one directory; return its subdirectories."""
        self.report.directories += 1
        label = directory.label
        dirid_path = os.path.join(directory.backing, DIRID_NAME)
        try:
            with self.tree.dir_fd(directory) as fd:
                if not self._check_ids(directory, fd, dirid_path):
                    return []
                self._check_names(directory, fd)
                with self.tree.lock:
                    scan = self.tree.scan(directory, fd)
                    for decoded, _ in scan.copies:
                        words = decoded.copy.words.strip() if decoded.copy is not None else ""
                        self._problem("sync-conflict", join_path(label, decoded.name),
                                      os.path.join(directory.backing, decoded.backing),
                                      f"a sync client's conflict copy ({words}); --repair shows it under its "
                                      "conflict name", lambda: None)
                    for decoded, _ in scan.duplicates:
                        self._problem("duplicate", join_path(label, decoded.name),
                                      os.path.join(directory.backing, decoded.backing),
                                      "the name exists twice in this directory (a file and a special entry, or "
                                      "under two directory IDs)", lambda: None)
                    listed = scan.entries + self.vault.conflicts.show(directory, fd, scan)
                children = []
                for item in listed:
                    child = self._check_entry(directory, fd, item.entry, item.st)
                    if child is not None:
                        children.append(child)
                return children
        except FileNotFoundError:
            return []  # moved into its owner by a repair, or gone meanwhile
        except IntegrityError as exc:
            self._problem("dir-id", label, dirid_path, f"{exc.strerror}; the names inside cannot be checked")
            return []

    def _check_ids(self, directory: Dir, fd: int, dirid_path: str) -> bool:
        """Report what is wrong with the directory's IDs (and, repairing, let the vault settle them)."""
        label = directory.label
        try:
            bound = self.vault.dirids.read_at(fd, self.tree.places(directory), label)
        except IntegrityError as exc:
            self._orphan(directory, fd, dirid_path, exc)
            return False
        problems = self._id_problems(directory, bound, dirid_path)
        if problems and self.repair:
            directory.dir_ids = None
            directory.dir_ids  # noqa: B018 - the writable vault merges and drops as it reads them again
        for kind, path, detail in problems:
            self._problem(kind, label, path, detail, lambda: None)
        return True

    def _id_problems(self, directory: Dir, bound: BoundIds, dirid_path: str) -> list[tuple[str, str, str]]:
        found = []
        if len(bound.ids) > 1:
            found.append(("dir-ids", dirid_path, f"{len(bound.ids)} directory IDs valid here (two devices made this "
                          "directory before syncing; --repair merges them into one)"))
        for stray in bound.strays:
            record = "the file" if stray.record is None else f"record {stray.record}"
            found.append(("dir-id-record", os.path.join(directory.backing, stray.file),
                          f"{record} is not valid here: {stray.reason} (ignored; --repair drops it)"))
        return found

    def _orphan(self, directory: Dir, fd: int, dirid_path: str, exc: IntegrityError) -> None:
        """A directory without a valid ID: whose names are they?"""
        label = directory.label
        if not entries_of(fd):
            self._problem("dir-id", label, dirid_path, "an empty directory without a directory ID (an interrupted "
                          "mkdir, or what a sync client left of a directory moved elsewhere); --repair removes it",
                          lambda: self._reload(directory))
            return
        owner = find_owner(self.tree, directory, fd)
        if owner is None:
            self._problem("dir-id", label, dirid_path, f"{exc.strerror}; its names belong to no directory of the "
                          "vault, so they cannot be checked")
            return
        self._problem("dir-id", label, dirid_path,
                      f"no directory ID valid here, but its names belong to {owner[0].label} (the directory was moved "
                      "or renamed on another device while this one wrote into it); --repair moves them there",
                      lambda: self._reload(directory))

    def _reload(self, directory: Dir) -> None:
        directory.dir_ids = None
        with contextlib.suppress(FileNotFoundError):
            directory.dir_ids  # noqa: B018 - a writable vault adopts (or removes) it as it reads the IDs

    def _check_names(self, directory: Dir, fd: int) -> None:
        """Backing names that are not entries: staging leftovers, orphan sidecars, foreign and undecryptable ones."""
        names = sorted(os.listdir(fd))
        present = set(names)
        for name in names:
            path = os.path.join(directory.backing, name)
            if name.startswith(STAGING_PREFIX):
                self._problem("staging-leftover", None, path, "unfinished import or write staging file",
                              lambda n=name: os.unlink(n, dir_fd=fd))
            elif is_reserved(name):
                continue
            elif listing.is_sidecar(name):
                self._check_sidecar(fd, name, path, present)
            else:
                self._check_name(directory, fd, name, path)

    def _check_name(self, directory: Dir, fd: int, name: str, path: str) -> None:
        copy = parse_copy(name)
        form = parse_entry(copy.original if copy is not None else name)
        st = lstat_at(fd, name)
        if st is None:
            return
        if not usable(st, form is not None and form.special):
            decoded = self.tree.decode(directory, name, fd)
            where = join_path(directory.label, decoded.name) if decoded is not None else None
            self._problem("foreign-entry", where, path, f"{foreign_reason(st)} (hidden; never followed or opened)")
        elif form is None:
            self._problem("foreign-entry", None, path, "not a vaultfs name (hidden)")
        elif self.tree.decode(directory, name, fd) is None:
            if form.long and listing.read_sidecar(self.tree.names, fd, form.stem) is None:
                self._problem("long-name-sidecar", None, path, "the .vfn sidecar is missing or does not match")
            else:
                self._problem("name", None, path, "the name does not decrypt in this directory")

    def _check_sidecar(self, fd: int, name: str, path: str, present: set[str]) -> None:
        copy = parse_copy(name)
        stem = (copy.original if copy is not None else name)[: -len(SIDECAR_SUFFIX)]
        users = (stem + LONG_SUFFIX, stem + LONG_SPECIAL_SUFFIX)
        if any(user in present for user in users):
            return
        if any((c := parse_copy(other)) is not None and c.original in users for other in present):
            return  # a conflict copy's sidecar: handled with the copy
        self._problem("orphan-sidecar", None, path, "long-name sidecar without its entry",
                      lambda: os.unlink(name, dir_fd=fd))

    # ------------------------------------------------------------ entries

    def _check_entry(self, directory: Dir, fd: int, entry: Entry, st: os.stat_result) -> Dir | None:
        plain = join_path(directory.label, entry.name)
        conflict = conflict_of(plain, entry.name)
        if conflict is not None:
            self.report.conflicts.append(conflict)
        if stat.S_ISDIR(st.st_mode):
            return self.tree.child_dir(directory, entry, st)
        path = os.path.join(directory.backing, entry.backing_name.entry)
        if entry.special:
            self._check_special(fd, entry, plain, path, st)
        else:
            self._check_file(fd, entry, plain, path)
        return None

    @contextlib.contextmanager
    def _open(self, fd: int, entry: Entry, flags: int = os.O_RDONLY) -> Iterator[int]:
        opened = os.open(entry.backing_name.entry, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        try:
            yield opened
        finally:
            os.close(opened)

    def _check_special(self, fd: int, entry: Entry, plain: str, path: str, st: os.stat_result) -> None:
        self.report.specials += 1
        try:
            with self._open(fd, entry) as special_fd:
                specials.read(special_fd, self.vault.file_key, plain, self.vault.block_size)
        except IntegrityError as exc:
            self._problem("special", plain, path, exc.strerror or "the special entry failed authentication")
        self._count_bytes(st.st_size)

    def _check_file(self, fd: int, entry: Entry, plain: str, path: str) -> None:
        self.report.files += 1
        vault = self.vault
        with self._open(fd, entry) as file_fd:
            result = contentcheck.check_file(file_fd, vault.file_key, vault.block_size, self._count_bytes, layout=2)
        if result.fatal:
            self._problem("file", plain, path, result.fatal)
            return
        if result.kind != Kind.REGULAR:
            self._problem("file", plain, path, f"a {result.kind.name.lower()} under a file's name")
            return
        if result.bad_blocks:
            shown = ", ".join(str(i) for i in result.bad_blocks[:8])
            more = "" if len(result.bad_blocks) <= 8 else f" and {len(result.bad_blocks) - 8} more"
            hint = " (the last one: truncated or tampered)" if result.bad_blocks[-1] == result.last_index else ""
            self._problem("block", plain, path, f"block(s) {shown}{more} fail authentication{hint}")
        for index, sealed_start in result.torn_fills:
            def reseal(w: int, i: int = index, s: int = sealed_start) -> None:
                contentcheck.repair_torn_fill(w, vault.file_key, vault.block_size, i, s)

            self._problem("torn-fill", plain, path,
                          f"block {index} still names the hole run that began at block {sealed_start}: a write into a "
                          "hole (or a hole punch) was interrupted; --repair re-seals it, keeping the data written",
                          lambda r=reseal: self._rewrite(fd, entry, r))
        if result.truncated_at is not None:
            index, length = result.truncated_at
            self._problem("interrupted-truncate", plain, path,
                          f"a truncate stopped after writing its new last block ({index}); --repair finishes it",
                          lambda: self._rewrite(fd, entry, lambda w: contentcheck.repair_interrupted_truncate(
                              w, vault.block_size, index, length)))
        if result.torn_append and not result.bad_blocks:
            self._torn_append(fd, entry, plain, path, result.plain_size or 0)
        elif result.torn_append:
            self._problem("torn-append", plain, path, "the last block is not marked last (not repaired: "
                          "other blocks are damaged too)")

    def _rewrite(self, fd: int, entry: Entry, action: Callable[[int], None]) -> None:
        with self._open(fd, entry, os.O_RDWR) as rw:
            action(rw)

    def _torn_append(self, fd: int, entry: Entry, plain: str, path: str, size: int) -> None:
        """The last block is authentic but marked 'not last': a torn append, or a cut at a block boundary.

        The two leave the same bytes, so re-marking is accepting the file at ``size``
        bytes: after a torn append only the data being appended is lost (it was never
        complete); after a cut, everything that followed, of a length nothing records.
        """
        vault = self.vault

        def fix() -> None:
            self._rewrite(fd, entry, lambda rw: contentcheck.repair_torn_append(rw, vault.file_key, vault.block_size))

        cause = ("the last block is authentic but not marked last (a crash during an append, or the file was cut "
                 "at a block boundary: the two look the same)")
        if self.accept_truncated:
            self._problem("torn-append", plain, path,
                          f"{cause}: accepted at {size:,} bytes; lost: an unknown number of bytes after byte "
                          f"{size:,} (after a crash, the data being appended; after a cut, whatever followed)", fix)
        else:
            self._problem("torn-append", plain, path,
                          f"{cause}; it reads as EIO; `fsck --repair --accept-truncated` accepts it at {size:,} "
                          "bytes and loses whatever followed")

    def _count_bytes(self, count: int) -> None:
        self.report.bytes_checked += count
        if self._on_bytes is not None:
            self._on_bytes(count)

