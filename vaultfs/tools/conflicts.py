"""``vaultfs conflicts BACKING``: the sync conflicts still waiting for the user.

When two devices change the same entry before syncing, the vault shows the other
version next to the original under a *shown name* that keeps the client's words
(docs/format.md section 9): ``msgstore (conflicted copy 2026-12-01 laptop).db``,
``notes (conflict path1).txt``, ``photo (conflict duplicate).jpg``.  Such an entry waits
until the user keeps one version (deletes or renames the other).  This lists them from
a read-only walk (copies a sync client left and nobody resolved yet are shown under the
same names), with the client the words come from and the original they are a version
of.  ``fsck`` prints the same list as a section of its report.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass

from vaultfs.entries import Dir, join_path
from vaultfs.errors import IntegrityError
from vaultfs.format.conflicts import client_of, parse_shown_name
from vaultfs.vault import Vault


@dataclass(frozen=True)
class Conflict:
    path: str  # the conflict version's plaintext path
    original: str  # the plaintext path of the entry it is a version of
    client: str  # whose words the name carries

    def line(self, original_exists: bool = True) -> str:
        gone = "" if original_exists else " (which no longer exists)"
        return f"{self.path}: a version of {self.original}{gone}, named by {self.client}"


def conflict_of(path: str, name: str) -> Conflict | None:
    """The conflict an entry at ``path`` (named ``name``) is, if its name is a conflict's shown name."""
    shown = parse_shown_name(name)
    if shown is None:
        return None
    parent = path[: len(path) - len(name)].rstrip("/") or "/"
    return Conflict(path, join_path(parent, shown.original), client_of(shown.words))


def find_conflicts(vault: Vault) -> Iterator[tuple[Conflict, bool]]:
    """Every conflict waiting in the vault, and whether its original still exists; depth first, by name."""
    stack: list[Dir] = [vault.root]
    while stack:
        directory = stack.pop()
        try:
            listing = sorted(vault.listdir_at(directory), key=lambda found: found.entry.name)
        except (IntegrityError, FileNotFoundError):
            continue  # a damaged directory: fsck reports it
        names = {found.entry.name for found in listing}
        subdirs = []
        for found in listing:
            path = join_path(directory.label, found.entry.name)
            conflict = conflict_of(path, found.entry.name)
            if conflict is not None:
                yield conflict, conflict.original.rsplit("/", 1)[-1] in names
            if stat.S_ISDIR(found.st.st_mode):
                subdirs.append(vault.child_dir(found))
        stack.extend(reversed(subdirs))
