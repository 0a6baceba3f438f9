"""Decoding the entries of one backing directory with the format layer alone.

For ``vaultfs upgrade`` (which walks the backing tree below the Vault) and for any other
tool that must read names without a Vault: which backing entries are vaultfs entries,
what their plaintext names are under the directory's ID(s), which are sync clients'
conflict copies and of what.  Long names read their ``.vfn`` sidecar (a conflict copy's
own sidecar copy first, since the client copied it too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vaultfs.format.conflicts import ConflictCopy, parse_copy
from vaultfs.format.dirids import read_small
from vaultfs.format.names import (
    MAX_BACKING_NAME,
    MAX_SIDECAR_BYTES,
    SHORT_SUFFIX,
    SIDECAR_SUFFIX,
    NameCipher,
    parse_entry,
)


@dataclass(frozen=True)
class DecodedEntry:
    backing: str  # the backing entry's name as found
    name: str  # plaintext name (str with surrogateescape: exact bytes)
    parent_id: bytes  # the directory ID under which the name decrypted
    special: bool  # .vfx / .vxl
    long: bool  # stored as <digest>.vfl/.vxl with a sidecar
    copy: ConflictCopy | None  # set when the entry is a sync client's copy of ``copy.original``

    @property
    def name_bytes(self) -> bytes:
        return self.name.encode("utf-8", "surrogateescape")


def _sidecar_text(names: NameCipher, dir_fd: int, digest: str, sidecar: str) -> str | None:
    try:
        text = read_small(dir_fd, sidecar, MAX_SIDECAR_BYTES).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    if not names.sidecar_matches(digest, text) or len(text) + len(SHORT_SUFFIX) <= MAX_BACKING_NAME:
        return None  # a wrong sidecar, or a short name stored in the long form
    return text


def read_sidecar(names: NameCipher, dir_fd: int, digest: str, sidecar: str | None = None) -> str | None:
    """The long name encoding ``<digest>.vfn`` (``sidecar`` first, if given) holds, if it hashes to ``digest``.

    Without a good ``<digest>.vfn``, a sync client's conflict copy of it will do (two
    devices that wrote the same long name wrote the same sidecar, and the client kept
    both as copies): the content is checked against the digest either way.
    """
    plain = digest + SIDECAR_SUFFIX
    for name in (sidecar, plain) if sidecar and sidecar != plain else (plain,):
        text = _sidecar_text(names, dir_fd, digest, name)
        if text is not None:
            return text
    try:
        present = sorted(os.listdir(dir_fd))
    except OSError:
        return None
    for name in present:
        if name.startswith(digest) and name != plain:
            copy = parse_copy(name)
            if copy is not None and copy.original == plain:
                text = _sidecar_text(names, dir_fd, digest, name)
                if text is not None:
                    return text
    return None


def is_sidecar(backing_name: str) -> bool:
    """A ``.vfn`` sidecar or a sync client's copy of one: never an entry of its own."""
    if backing_name.endswith(SIDECAR_SUFFIX):
        return True
    if SIDECAR_SUFFIX not in backing_name:
        return False  # the cheap test first: listings ask this of every name
    copy = parse_copy(backing_name)
    return copy is not None and copy.original.endswith(SIDECAR_SUFFIX)


def decode(names: NameCipher, dir_fd: int, dir_ids: tuple[bytes, ...], backing_name: str) -> DecodedEntry | None:
    """The plaintext name of a backing entry (or of the original a conflict copy is of), else None."""
    copy = None
    form = parse_entry(backing_name)
    if form is None:
        copy = parse_copy(backing_name)
        form = parse_entry(copy.original) if copy is not None else None
        if form is None:
            return None
    if form.long:
        # the client may have copied the sidecar too: "<digest> (1).vfn"
        sidecar = copy.apply(form.stem + SIDECAR_SUFFIX) if copy is not None else None
        encoded = read_sidecar(names, dir_fd, form.stem, sidecar)
        if encoded is None:
            return None
    else:
        encoded = form.stem
    for dir_id in dir_ids:
        name = names.decrypt_encoded(encoded, dir_id)
        if name is not None:
            return DecodedEntry(backing_name, name, dir_id, form.special, form.long, copy)
    return None
