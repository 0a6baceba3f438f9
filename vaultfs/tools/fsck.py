"""Check (and, on request, safely repair) a whole vault without FUSE.

Walks the backing tree once, streaming: every directory ID, every name, every long-name
sidecar, every file header, block tag and is_last mark, every symlink target.  Each
problem is reported with its plaintext path where it can be known and its backing path.
``--repair`` does only what cannot lose data: remove orphan sidecars and leftover
staging files, resolve sync-conflict copies.  Re-marking the last block of a torn
append can lose data (the same bytes are a file cut at a block boundary), so it needs
``--accept-truncated`` as well and says how long the file becomes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vaultfs.entries import Dir, backing_key, join_path
from vaultfs.errors import IntegrityError
from vaultfs.format import contentcheck
from vaultfs.format.conflicts import split_conflict
from vaultfs.format.dirids import DIRID_NAME
from vaultfs.format.names import LONG_SUFFIX, SHORT_SUFFIX, SIDECAR_SUFFIX, is_reserved
from vaultfs.staging import STAGING_PREFIX
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
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]


class Checker:
    def __init__(self, vault: Vault, repair: bool = False, accept_truncated: bool = False,
                 on_problem: Callable[[Problem], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.vault = vault
        self.repair = repair
        self.accept_truncated = accept_truncated
        self.report = Report()
        self._on_problem = on_problem
        self._on_bytes = on_bytes

    def _problem(self, kind: str, plain: str | None, backing_path: str, detail: str,
                 fix: Callable[[], None] | None = None) -> None:
        problem = Problem(kind, plain, backing_path, detail)
        if self.repair and fix is not None:
            fix()
            problem.repaired = True
        self.report.problems.append(problem)
        if self._on_problem is not None:
            self._on_problem(problem)

    def run(self) -> Report:
        stack: list[tuple[str, Dir | None, str]] = [("/", None, "")]
        while stack:
            stack.extend(self._check_dir(*stack.pop()))
        return self.report

    def _check_dir(self, plain: str, parent: Dir | None, entry_name: str) -> Iterator[tuple[str, Dir, str]]:
        """Check one directory (the root when ``parent`` is None); yield its subdirectories."""
        self.report.directories += 1
        backing_dir = self.vault.backing if parent is None else os.path.join(parent.backing, entry_name)
        try:
            ids = self.vault.dirids.read_all(backing_dir, plain)
        except IntegrityError as exc:
            self._problem("dir-id", plain, os.path.join(backing_dir, DIRID_NAME),
                          f"{exc.strerror}; the names inside cannot be checked")
            return
        if plain == "/" and self.vault.keys.root_dir_id not in ids:
            self._problem("dir-id", plain, os.path.join(backing_dir, DIRID_NAME), "not the root's ID")
            return
        directory = Dir(parent, entry_name, ids, backing_key(os.lstat(backing_dir)), plain, self.vault.backing)
        with os.scandir(backing_dir) as scan:
            names = sorted(item.name for item in scan)
        present = set(names)
        for backing_name in names:
            path = os.path.join(backing_dir, backing_name)
            if backing_name.startswith(STAGING_PREFIX):
                self._problem("staging-leftover", None, path, "unfinished import or write staging file",
                              lambda p=path: os.unlink(p))
            elif is_reserved(backing_name):
                continue
            elif backing_name.endswith(SIDECAR_SUFFIX):
                self._check_sidecar(plain, directory, backing_name, present)
            elif backing_name.endswith((SHORT_SUFFIX, LONG_SUFFIX)):
                child = self._check_entry(plain, directory, backing_name)
                if child is not None:
                    yield child
            else:
                self._problem("foreign-entry", None, path, "not a vaultfs name (hidden from the mount)")

    def _check_sidecar(self, plain: str, directory: Dir, backing_name: str, present: set[str]) -> None:
        stem = backing_name[: -len(SIDECAR_SUFFIX)]
        path = os.path.join(directory.backing, backing_name)
        if stem + LONG_SUFFIX in present:
            return  # checked with its entry
        split = split_conflict(stem + LONG_SUFFIX)
        if split is not None and any(n.startswith(split[0][: -len(LONG_SUFFIX)]) for n in present
                                     if n.endswith(LONG_SUFFIX)):
            return  # a conflict copy's sidecar: handled with the copy
        self._problem("orphan-sidecar", None, path, "long-name sidecar without its entry",
                      lambda: os.unlink(path))

    def _check_entry(self, plain: str, directory: Dir, backing_name: str) -> tuple[str, Dir, str] | None:
        path = os.path.join(directory.backing, backing_name)
        name = self.vault.decode_name(directory, backing_name)
        if name is None:
            if self.vault.conflicts.is_copy(backing_name):
                original = self.vault.conflicts.original_name(directory, backing_name)
                where = join_path(plain, original[0]) if original else None
                resolved: list[tuple[str, str, os.stat_result] | None] = []
                self._problem("sync-conflict", where, path, "a sync client's conflict copy",
                              lambda: resolved.append(self.vault.conflicts.resolve(directory, backing_name)))
                if resolved:
                    if resolved[0] is None:
                        return None
                    shown, item, _ = resolved[0]
                    return self._check_node(join_path(plain, shown), directory, item)
                return self._check_node(f"{where} (conflict copy)", directory, backing_name) if where else None
            if backing_name.endswith(LONG_SUFFIX) and self.vault.read_sidecar(
                    directory, backing_name[: -len(LONG_SUFFIX)]) is None:
                self._problem("long-name-sidecar", None, path, "the .vfn sidecar is missing or does not match")
            else:
                self._problem("name", None, path, "the name does not decrypt in this directory")
            return None
        return self._check_node(join_path(plain, name), directory, backing_name)

    def _check_node(self, plain: str, directory: Dir, backing_name: str) -> tuple[str, Dir, str] | None:
        path = os.path.join(directory.backing, backing_name)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            return plain, directory, backing_name
        if stat.S_ISLNK(st.st_mode):
            if self.vault.names.decrypt_symlink(os.readlink(path)) is None:
                self._problem("symlink", plain, path, "the target does not decrypt")
        elif stat.S_ISREG(st.st_mode):
            self._check_file(plain, path)
        elif not (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
            self._problem("file-type", plain, path, "unexpected file type")
        return None

    def _check_file(self, plain: str, path: str) -> None:
        self.report.files += 1
        vault = self.vault
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            result = contentcheck.check_file(fd, vault.file_key, vault.block_size, self._count_bytes)
        finally:
            os.close(fd)
        if result.fatal:
            self._problem("file", plain, path, result.fatal)
        if result.bad_blocks:
            shown = ", ".join(str(i) for i in result.bad_blocks[:8])
            more = "" if len(result.bad_blocks) <= 8 else f" and {len(result.bad_blocks) - 8} more"
            hint = " (the last one: truncated or tampered)" if result.bad_blocks[-1] == result.last_index else ""
            self._problem("block", plain, path, f"block(s) {shown}{more} fail authentication{hint}")
        if result.torn_append and not result.bad_blocks:
            self._torn_append(plain, path, result.plain_size or 0)
        elif result.torn_append:
            self._problem("torn-append", plain, path, "the last block is not marked last (not repaired: "
                          "other blocks are damaged too)")

    def _torn_append(self, plain: str, path: str, size: int) -> None:
        """The last block is authentic but marked 'not last': a torn append, or a cut at a block boundary.

        The two leave the same bytes, so re-marking is accepting the file at ``size``
        bytes: after a torn append only the data being appended is lost (it was never
        complete); after a cut, everything that followed, of a length nothing records.
        """
        vault = self.vault

        def fix() -> None:
            rw = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                contentcheck.repair_torn_append(rw, vault.file_key, vault.block_size)
            finally:
                os.close(rw)

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
