"""Directory IDs: 16 random bytes per directory, sealed in its ``vaultfs.dirid`` file.

The ID is the associated data of every name in the directory. Sealing it with AES-GCM
under a key derived from the master key means nobody without the key can plant a
chosen ID (the gocryptfs audit's diriv finding).

Format v2 (``BoundDirIds``) also binds each sealed ID to its place: the parent's ID and
the directory's own name bytes are in the associated data, so an authentic
``vaultfs.dirid`` copied into another directory (as a "conflict copy", say) is not valid
there, and the root accepts only the ID derived from the master key.  The file holds one
or more such records, which makes a rename crash-safe (bind to [old place, new place],
rename, bind to [new place]) and lets two devices that created the same directory both
keep their IDs.  Format-v1 records (one ID, no place) are only opened, by ``recover`` and
by ``vaultfs upgrade``, which rebinds every one of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.errors import IntegrityError, WrongRecoveryKey
from vaultfs.format.conflicts import is_dirid_copy
from vaultfs.format.keys import DIR_ID_SIZE, VaultKeys

DIRID_NAME = "vaultfs.dirid"
DIRID_AAD = b"vaultfs/v1/dir-id"
DIRID_V2_LABEL = b"vaultfs/v2/dir-id"
SEALED_SIZE = 12 + DIR_ID_SIZE + 16
MAX_RECORDS = 16
ROOT_PARENT_ID = bytes(DIR_ID_SIZE)


# ---------------------------------------------------------------- format v2: IDs bound to their place

@dataclass(frozen=True)
class Place:
    """Where a directory lives: its parent's ID and its own name's exact bytes."""

    parent_id: bytes
    name: bytes

    @classmethod
    def of(cls, parent_id: bytes, name: str) -> Place:
        return cls(parent_id, name.encode("utf-8", "surrogateescape"))


ROOT = Place(ROOT_PARENT_ID, b"")


def record_aad(place: Place) -> bytes:
    """``"vaultfs/v2/dir-id" ‖ parent ID (16) ‖ name``: unambiguous, the first two have fixed lengths."""
    if len(place.parent_id) != DIR_ID_SIZE:
        raise ValueError("a parent ID is 16 bytes")
    return DIRID_V2_LABEL + place.parent_id + place.name


def split_records(data: bytes) -> list[bytes] | None:
    """The sealed records of a v2 ``vaultfs.dirid``: 1 to 16 records of 44 bytes, else None."""
    if not data or len(data) % SEALED_SIZE or len(data) > MAX_RECORDS * SEALED_SIZE:
        return None
    return [data[i : i + SEALED_SIZE] for i in range(0, len(data), SEALED_SIZE)]


@dataclass(frozen=True)
class Stray:
    """A record (or a whole file) in ``vaultfs.dirid`` or one of its copies that is not valid here."""

    file: str
    record: int | None  # None: the file itself is unreadable or malformed
    reason: str


@dataclass
class BoundIds:
    """The IDs valid at one place: the primary (the first valid record of ``vaultfs.dirid``) first."""

    ids: tuple[bytes, ...]
    strays: list[Stray] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)  # conflict copies of vaultfs.dirid in the directory
    place: Place | None = None  # where the IDs are valid
    files: list[str] = field(default_factory=list)  # vaultfs.dirid (if present) and its copies, as read
    records: dict[bytes, bytes] = field(default_factory=dict)  # ID -> the first record (sealed bytes) holding it

    @property
    def primary(self) -> bytes:
        return self.ids[0]

    @property
    def settled(self) -> bool:
        """One ID and nothing invalid: nothing for a writer to merge or drop.

        Conflict copies of ``vaultfs.dirid`` that all hold that one ID are left alone: two
        devices that each rewrote them would only make the sync client copy them again.
        """
        return len(self.ids) == 1 and not self.strays


@contextlib.contextmanager
def open_dir(directory: int | str) -> Iterator[int]:
    """A directory fd for ``directory``: the fd itself, or one opened (and closed) for a path."""
    if isinstance(directory, int):
        yield directory
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def read_small(dir_fd: int, name: str, limit: int) -> bytes:
    """Read a small regular file in a directory fd (no symlink, no FIFO: the backing dir is untrusted)."""
    return backing.read_bounded(name, limit, dir_fd=dir_fd)


def replace_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``name`` atomically in a directory fd: temp file O_EXCL, fsync, rename, fsync dir."""
    tmp = name + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # a leftover of a crash: never the live file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        backing.pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def dirid_files(dir_fd: int) -> list[str]:
    """``vaultfs.dirid`` (if present) first, then its sync-conflict copies in name order."""
    names = os.listdir(dir_fd)
    copies = sorted(name for name in names if is_dirid_copy(name, DIRID_NAME))
    return ([DIRID_NAME] if DIRID_NAME in names else []) + copies


class BoundDirIds:
    """Format v2 directory IDs: seal, open and read records bound to a place; bind atomically."""

    def __init__(self, keys: VaultKeys) -> None:
        self._gcm = crypto.Gcm(keys.dir_id_key)
        self._root_id = keys.root_dir_id

    def seal(self, dir_id: bytes, place: Place) -> bytes:
        if len(dir_id) != DIR_ID_SIZE:
            raise ValueError("a directory ID is 16 bytes")
        return self._gcm.seal(dir_id, record_aad(place))

    def open(self, record: bytes, place: Place) -> bytes | None:
        """The ID a record holds if it is valid at ``place``, else None."""
        try:
            dir_id = self._gcm.open(record, record_aad(place))
        except crypto.AuthenticationFailed:
            return None
        return dir_id if len(dir_id) == DIR_ID_SIZE else None

    def open_v1(self, record: bytes) -> bytes | None:
        """The ID of a format-v1 record (upgrade), else None."""
        try:
            dir_id = self._gcm.open(record, DIRID_AAD)
        except crypto.AuthenticationFailed:
            return None
        return dir_id if len(dir_id) == DIR_ID_SIZE else None

    def read_at(self, directory: int | str, place: Place | Sequence[Place], label: str) -> BoundIds:
        """Every ID valid at ``place``, from ``vaultfs.dirid`` and its conflict copies.

        Two devices that created the same directory leave two files with one ID each:
        both are IDs of this directory.  Anything not valid here (bound to another place,
        forged, the stale half of an interrupted rename, a v1 record) is listed in
        ``strays`` and ignored.  At the root only the derived root ID is valid.  Given
        several candidate places (a name that decrypts under more than one of the parent's
        IDs), the first one where some ID is valid wins.  Raises IntegrityError when no ID
        is valid here.
        """
        places = [place] if isinstance(place, Place) else list(place)
        malformed: list[Stray] = []
        with open_dir(directory) as dir_fd:
            files = dirid_files(dir_fd)
            loaded = [(name, self._records(dir_fd, name, malformed)) for name in files]
        copies = [name for name in files if name != DIRID_NAME]
        strays: list[Stray] = []
        for candidate in places:
            bound = self._valid_at(loaded, candidate)
            if bound.ids:
                bound.strays[:0] = malformed
                bound.copies = copies
                bound.files = files
                return bound
            strays = bound.strays
        strays = malformed + strays
        detail = "; ".join(f"{s.file}: {s.reason}" for s in strays[:3]) or f"no {DIRID_NAME}"
        raise IntegrityError(f"{label}: no directory ID valid here ({detail})")

    def _valid_at(self, loaded: list[tuple[str, list[tuple[int, bytes]]]], place: Place) -> BoundIds:
        ids: list[bytes] = []
        strays: list[Stray] = []
        records: dict[bytes, bytes] = {}
        for name, file_records in loaded:
            for index, record in file_records:
                dir_id = self.open(record, place)
                if dir_id is None:
                    why = "a format-v1 record" if self.open_v1(record) is not None else \
                        "not valid here (bound to another place, or damaged)"
                    strays.append(Stray(name, index, why))
                elif place == ROOT and dir_id != self._root_id:
                    strays.append(Stray(name, index, "not the root's ID"))
                elif dir_id not in ids:
                    ids.append(dir_id)
                    records[dir_id] = record
        return BoundIds(tuple(ids), strays, place=place, records=records)

    def _records(self, dir_fd: int, name: str, strays: list[Stray]) -> list[tuple[int, bytes]]:
        try:
            data = read_small(dir_fd, name, MAX_RECORDS * SEALED_SIZE)
        except OSError as exc:
            strays.append(Stray(name, None, exc.strerror or str(exc)))
            return []
        records = split_records(data)
        if records is None:
            strays.append(Stray(name, None, f"{len(data)} bytes is not 1 to {MAX_RECORDS} records of {SEALED_SIZE}"))
            return []
        return list(enumerate(records))

    def create(self, directory: int | str, place: Place, dir_id: bytes | None = None) -> bytes:
        """Write the first ``vaultfs.dirid`` of a new directory (O_EXCL); a random ID unless given."""
        dir_id = dir_id if dir_id is not None else crypto.random_bytes(DIR_ID_SIZE)
        with open_dir(directory) as dir_fd:
            fd = os.open(DIRID_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
            try:
                backing.pwrite_all(fd, self.seal(dir_id, place), 0)
            except BaseException:
                os.close(fd)
                os.unlink(DIRID_NAME, dir_fd=dir_fd)
                raise
            os.close(fd)
        return dir_id

    def bind(self, directory: int | str, dir_ids: Sequence[bytes], places: Sequence[Place],
             name: str = DIRID_NAME) -> None:
        """Replace ``vaultfs.dirid`` atomically with a record for every (ID, place) pair.

        A rename is ``bind(d, ids, [old, new])``, the rename itself, ``bind(d, ids, [new])``:
        a crash at any point leaves the directory valid where it is.
        """
        records = [self.seal(dir_id, place) for place in places for dir_id in dir_ids]
        if not 1 <= len(records) <= MAX_RECORDS:
            raise ValueError(f"1 to {MAX_RECORDS} records")
        with open_dir(directory) as dir_fd:
            replace_file(dir_fd, name, b"".join(records))


    def keep(self, directory: int | str, records: Sequence[bytes]) -> None:
        """Replace ``vaultfs.dirid`` atomically with records that are already sealed (a merge, a clean-up).

        Re-using the sealed bytes (instead of sealing anew, with a new nonce) makes two
        devices that tidy up the same directory write the same file.
        """
        if not 1 <= len(records) <= MAX_RECORDS:
            raise ValueError(f"1 to {MAX_RECORDS} records")
        with open_dir(directory) as dir_fd:
            replace_file(dir_fd, DIRID_NAME, b"".join(records))


def root_version(keys: VaultKeys, backing_dir: str) -> int:
    """The format version the root's ``vaultfs.dirid`` was sealed for (recover --rebuild-config).

    WrongRecoveryKey when neither a v2 nor a v1 record of the derived root ID opens with
    ``keys``: the key belongs to another vault.
    """
    bound = BoundDirIds(keys)
    try:
        with open_dir(backing_dir) as dir_fd:
            records = split_records(read_small(dir_fd, DIRID_NAME, MAX_RECORDS * SEALED_SIZE)) or []
    except OSError:
        records = []
    for record in records:
        if bound.open(record, ROOT) == keys.root_dir_id:
            return 2
    for record in records:
        if bound.open_v1(record) == keys.root_dir_id:
            return 1
    raise WrongRecoveryKey("it does not open this vault's root directory ID")
