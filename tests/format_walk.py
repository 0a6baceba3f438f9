"""Read a whole version-2 vault with vaultfs's format layer alone (no Vault), for tests.

Until the Vault itself reads version 2, this is how the tests read back what ``vaultfs upgrade`` and
the spec writer produce with vaultfs's own code: ``listing.decode`` for names (conflict copies under
their shown names), ``BoundDirIds.read_at`` for directory IDs at their place, ``EncryptedFile`` with
layout 2 for contents (holes included), ``specials.read`` for symlinks, FIFOs, sockets and devices.
The result uses the independent decrypter's ``Entry``, so the two readers' trees compare directly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests import independent_decrypter as idec
from vaultfs.format import keyfile, listing, specials
from vaultfs.format.conflicts import shown_name
from vaultfs.format.content import EncryptedFile
from vaultfs.format.dirids import ROOT, BoundDirIds, Place
from vaultfs.format.header import Kind
from vaultfs.format.keys import VaultKeys
from vaultfs.format.names import NameCipher

_KIND_NAMES = {Kind.SYMLINK: "symlink", Kind.FIFO: "fifo", Kind.SOCKET: "socket", Kind.CHAR_DEVICE: "chardev",
               Kind.BLOCK_DEVICE: "blockdev"}


def unlock(backing: Path, password: str) -> VaultKeys:
    keys, config = keyfile.unlock(str(backing), password)
    assert config.version == 2
    return keys


def walk_v2(backing: Path, keys: VaultKeys) -> dict[str, idec.Entry]:
    names, dirids = NameCipher(keys.name_key), BoundDirIds(keys)
    out: dict[str, idec.Entry] = {}
    stack = [(str(backing), ROOT, "")]
    while stack:
        path, place, prefix = stack.pop()
        bound = dirids.read_at(path, place, prefix or "/")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            decoded = [d for n in sorted(os.listdir(fd)) if (d := listing.decode(names, fd, bound.ids, n))]
        finally:
            os.close(fd)
        here = {d.name for d in decoded if d.copy is None}
        for entry in sorted(decoded, key=lambda d: d.copy is not None):
            shown = entry.name
            if entry.copy is not None:
                shown = shown_name(entry.name, entry.copy.words, here.__contains__)
                here.add(shown)
            child, backing_child = f"{prefix}/{shown}", os.path.join(path, entry.backing)
            st = os.lstat(backing_child)
            if stat.S_ISDIR(st.st_mode):
                out[child] = idec.Entry("dir", mode=stat.S_IMODE(st.st_mode))
                stack.append((backing_child, Place(entry.parent_id, entry.name_bytes), child))
                continue
            assert stat.S_ISREG(st.st_mode), backing_child
            fd = os.open(backing_child, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                if entry.special:
                    special = specials.read(fd, keys.file_key, child)
                    target = special.payload.decode("utf-8", "surrogateescape") if special.kind == Kind.SYMLINK \
                        else None
                    out[child] = idec.Entry(_KIND_NAMES[special.kind], target=target, rdev=special.rdev,
                                            mode=stat.S_IMODE(st.st_mode))
                else:
                    content = EncryptedFile(fd, keys.file_key, child, layout=2)
                    out[child] = idec.Entry("file", content=content.read(0, content.size),
                                            mode=stat.S_IMODE(st.st_mode))
            finally:
                os.close(fd)
    return out
