"""One directory's ID files during a rekey: which record is old, which new, adding and dropping them.

A directory's ``vaultfs.dirid`` (and each sync client's copy of it) holds sealed records
(docs/format.md section 5).  During a rekey a record is *old* (valid at the directory's
old place under the old key), *new* (valid at its new place under the new key) or a
*stray* (neither: bound elsewhere, damaged).  A directory first gets, next to each old
record, a record of the new ID at the new place (``bind_new``), and when all its entries
are converted keeps only its new records (``drop_old``): each an atomic file replacement,
each recognisable as done by reading the file again.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from vaultfs.errors import UsageError
from vaultfs.format.dirids import (
    MAX_RECORDS,
    ROOT,
    SEALED_SIZE,
    BoundDirIds,
    Place,
    dirid_files,
    read_small,
    replace_file,
    split_records,
)
from vaultfs.format.keys import VaultKeys
from vaultfs.tools.rekeystate import new_dir_id


@dataclass
class Record:
    sealed: bytes
    kind: str  # "old", "new" or "stray"
    dir_id: bytes | None


@dataclass
class IdFile:
    name: str  # vaultfs.dirid or a conflict copy of it
    raw: bytes
    records: list[Record]


def ids_of(files: list[IdFile], kind: str) -> tuple[bytes, ...]:
    """The distinct IDs of one kind of record, in file order (``vaultfs.dirid`` first: its first is primary)."""
    found: list[bytes] = []
    for file in files:
        for record in file.records:
            if record.kind == kind and record.dir_id is not None and record.dir_id not in found:
                found.append(record.dir_id)
    return tuple(found)


class DirRecords:
    def __init__(self, old: VaultKeys, new: VaultKeys) -> None:
        self.old, self.new = old, new
        self.old_ids, self.new_ids = BoundDirIds(old), BoundDirIds(new)

    def read(self, fd: int, old_place: Place | None, new_place: Place) -> list[IdFile]:
        """Each ID file of the directory with its records sorted out; a file that cannot be read or is not
        an ID file at all is left out (and alone)."""
        files = []
        for name in dirid_files(fd):
            try:
                raw = read_small(fd, name, MAX_RECORDS * SEALED_SIZE)
            except OSError:
                continue
            records = split_records(raw)
            if records is not None:
                files.append(IdFile(name, raw, [self._record(sealed, old_place, new_place) for sealed in records]))
        return files

    def _record(self, sealed: bytes, old_place: Place | None, new_place: Place) -> Record:
        if old_place is not None:
            dir_id = self.old_ids.open(sealed, old_place)
            if dir_id is not None and (old_place != ROOT or dir_id == self.old.root_dir_id):
                return Record(sealed, "old", dir_id)
        dir_id = self.new_ids.open(sealed, new_place)
        if dir_id is not None and (new_place != ROOT or dir_id == self.new.root_dir_id):
            return Record(sealed, "new", dir_id)
        return Record(sealed, "stray", None)

    def bind_new(self, fd: int, files: list[IdFile], new_place: Place) -> None:
        """Next to each file's old records, a record of each one's new ID at the new place (kept if there)."""
        for file in files:
            old = [r for r in file.records if r.kind == "old"]
            if not old:
                continue
            have = {r.dir_id: r.sealed for r in file.records if r.kind == "new"}
            wanted: list[bytes] = []
            for dir_id in dict.fromkeys(r.dir_id for r in old if r.dir_id is not None):
                new_id = new_dir_id(self.old, self.new, dir_id)
                wanted.append(have.get(new_id) or self.new_ids.seal(new_id, new_place))
            data = b"".join([r.sealed for r in old] + wanted)
            if len(data) > MAX_RECORDS * SEALED_SIZE:
                raise UsageError(f"{file.name} holds {len(old)} records of one directory: too many to rekey "
                                 "(`vaultfs fsck --repair` merges them)")
            if data != file.raw:
                replace_file(fd, file.name, data, _mode(fd, file.name))

    def drop_old(self, fd: int, old_place: Place, new_place: Place) -> None:
        """Only the new records stay (a file left with none goes, strays with the old ones)."""
        for file in self.read(fd, old_place, new_place):
            kept = b"".join(r.sealed for r in file.records if r.kind == "new")
            if kept == file.raw:
                continue
            if kept:
                replace_file(fd, file.name, kept, _mode(fd, file.name))
            else:
                os.unlink(file.name, dir_fd=fd)


def _mode(fd: int, name: str) -> int:
    return stat.S_IMODE(os.lstat(name, dir_fd=fd).st_mode)
