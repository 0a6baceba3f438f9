"""Recognising the conflict copies that cloud-sync clients make of backing entries.

When two machines change the same file before syncing, the client keeps both and renames
one: ``x (1).vfs`` (Google Drive), ``x (conflicted copy 2026-11-28).vfs`` and
``x (Case Conflict).vfs`` (Dropbox), ``x-HOSTNAME.vfs`` (OneDrive), ``x 2.vfs``
(iCloud), ``x (conflicted copy 2026-11-28 101500).vfs`` (Nextcloud/ownCloud).  An
encrypted stem is lowercase base32, so whatever follows it up to the suffix is the
client's addition.  Pure string logic: the vault decides what to do with a copy.
"""

from __future__ import annotations

import re

from vaultfs.format.names import LONG_SUFFIX, SHORT_SUFFIX

_STEM = re.compile(r"[a-z2-7]+")
_CONFLICT_SUFFIXES = (
    re.compile(r" \(\d+\)"),  # Google Drive
    re.compile(r" \((?:[^()]*'s )?conflicted copy(?: [^()]*)?\)"),  # Dropbox, Nextcloud, ownCloud
    re.compile(r" \(Case Conflict(?: \d+)?\)"),  # Dropbox
    re.compile(r" \d+"),  # iCloud
    re.compile(r"-[A-Za-z0-9][A-Za-z0-9_.-]*"),  # OneDrive: -HOSTNAME
)


def is_conflict_suffix(text: str) -> bool:
    return any(pattern.fullmatch(text) for pattern in _CONFLICT_SUFFIXES)


def split_conflict(backing_name: str) -> tuple[str, str] | None:
    """For a conflict copy ``<stem><suffix>.vfs|.vfl`` return (``<stem>.vfs|.vfl``, suffix), else None."""
    for ext in (SHORT_SUFFIX, LONG_SUFFIX):
        if backing_name.endswith(ext):
            body = backing_name[: -len(ext)]
            match = _STEM.match(body)
            if match is None or match.end() == len(body):
                return None
            suffix = body[match.end() :]
            return (body[: match.end()] + ext, suffix) if is_conflict_suffix(suffix) else None
    return None


def is_dirid_copy(backing_name: str, dirid_name: str = "vaultfs.dirid") -> bool:
    """``vaultfs (1).dirid``, ``vaultfs 2.dirid``, ``vaultfs-HOST.dirid`` ...: copies of a directory ID."""
    stem, dot, ext = dirid_name.partition(".")
    if backing_name == dirid_name or not backing_name.startswith(stem) or not backing_name.endswith(dot + ext):
        return False
    return is_conflict_suffix(backing_name[len(stem) : -len(dot + ext)])


def conflict_name(name: str, number: int) -> str:
    """``msgstore.db`` -> ``msgstore (conflict 1).db``; dotfiles and extensionless names get it at the end."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    marker = f" (conflict {number})"
    tail = dot + ext
    budget = 255 - len(marker.encode()) - len(tail.encode())
    while len(stem.encode("utf-8", "surrogateescape")) > budget:
        stem = stem[:-1]
    return stem + marker + tail
