"""Sync clients' conflict copies: recognise them in the backing dir, name them for people.

When two devices change the same file before syncing, the client keeps both and renames
one, each client in its own words.  On a backing entry ``<e>.vfs`` that gives:

- Google Drive: ``<e> (1).vfs``; shown words ``(conflict 1)``.
- Dropbox: ``<e> (conflicted copy 2026-12-01).vfs``, ``<e> (Alice's conflicted copy
  2026-12-01).vfs``, ``<e> (Case Conflict).vfs``, ``<e> (Selective Sync Conflict).vfs``;
  verbatim.
- Nextcloud, ownCloud: ``<e> (conflicted copy 2026-12-01 101500).vfs``; old ownCloud
  ``<e>_conflict-20261201-101500.vfs``; verbatim.
- iCloud Drive: ``<e> 2.vfs``; ``(conflict 2)``.
- OneDrive: ``<e>-LAPTOP.vfs``; ``(conflict LAPTOP)``.
- rclone bisync 1.58-1.65: ``<e>.vfs..path1``, ``<e>.vfs..path2``; ``(conflict path1)``.
- rclone bisync >= 1.66: ``<e>.vfs.conflict1`` (``--conflict-loser num``, the default),
  ``<e>.vfs.path1`` (``pathname``), ``<e>.vfs.<suffix>N`` (``--conflict-suffix``, which
  must say "conflict" or "path" to be recognised), ``<e>.conflict1.vfs``
  (``--suffix-keep-extension``); ``(conflict 1)``, ``(conflict path1)``, ``(conflict <suffix>N)``.
- Syncthing: ``<e>.sync-conflict-20261201-101500-MFZWI3D.vfs``; verbatim.
- Seafile: ``<e> (SFConflict alice@example.com 2026-12-01-10-15-00).vfs``; verbatim.

Clients may stack them (rclone: ``x.path1.path1``; Drive: ``x (1) (1)``), so a suffix is
a sequence of such markers.  The *shown name* of a copy is the plaintext name with the
markers inserted before its extension (``msgstore (conflicted copy 2026-12-01).db``,
``msgstore.sync-conflict-20261201-101500-MFZWI3D.db``, ``msgstore (conflict path1).db``):
the client's own words where they say what happened (device, date), ``(conflict …)``
around the ones that alone would read like an ordinary name (`` (1)``, `` 2``, ``-HOST``,
``.path1``).  Every shown form contains "onflict", which is what
:func:`parse_shown_name` recognises (``vaultfs conflicts``).  Pure string logic: the
vault decides what to do with a copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from vaultfs.format.names import ENTRY_SUFFIXES, MAX_NAME_BYTES, SIDECAR_SUFFIX

DIRID_NAME = "vaultfs.dirid"
# vaultfs's own words, where no client's are at hand: a name found twice in one directory
# (two devices made it, or the same name as a file and as a symlink), and an entry moved
# into a directory that already had one of that name (docs/format.md sections 5 and 9).
DUPLICATE_WORDS = " (conflict duplicate)"
MOVED_WORDS = " (conflict moved)"


@dataclass(frozen=True)
class Marker:
    """One conflict marker a client added: its raw text and the words shown to people."""

    client: str
    raw: str  # exactly what the client inserted or appended
    shown: str  # what the shown plaintext name carries, e.g. " (conflict 1)"
    after_extension: bool  # rclone appends after the extension; the others insert before it


@dataclass(frozen=True)
class ConflictCopy:
    """A backing name that is a sync client's copy of ``original``."""

    original: str  # the canonical backing name, e.g. <e>.vfs or vaultfs.dirid
    markers: tuple[Marker, ...]

    @property
    def suffix(self) -> str:
        """Everything the clients added, in order (before-extension part, then after-extension part)."""
        return "".join(m.raw for m in self.markers if not m.after_extension) + \
            "".join(m.raw for m in self.markers if m.after_extension)

    def apply(self, backing_name: str) -> str:
        """The same client's copy of another name with the same kind of extension (a ``.vfn`` sidecar)."""
        stem, dot, ext = backing_name.rpartition(".")
        before = "".join(m.raw for m in self.markers if not m.after_extension)
        after = "".join(m.raw for m in self.markers if m.after_extension)
        return f"{stem}{before}{dot}{ext}{after}"

    @property
    def words(self) -> str:
        """The shown markers, joined: what ``shown_name`` inserts before the extension."""
        return "".join(m.shown for m in self.markers)


def _wrapped(text: str) -> str:
    return f" (conflict {text})"


# (client, pattern, shown) for markers inserted between the stem and the extension, tried
# in this order; ``shown`` maps the match to the words of the shown name.  The rclone row
# is bisync with --suffix-keep-extension (``<e>.conflict1.vfs``).
_BEFORE: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    ("google-drive", re.compile(r" \((\d+)\)"), lambda m: _wrapped(m.group(1))),
    ("dropbox", re.compile(r" \((?:[^()/]*'s )?conflicted copy(?: [^()/]*)?\)"), lambda m: m.group(0)),
    ("dropbox", re.compile(r" \((?:Case|Selective Sync) Conflict(?: \d+)?\)"), lambda m: m.group(0)),
    ("owncloud", re.compile(r"_conflict-\d{8}-\d{6}"), lambda m: m.group(0)),
    ("seafile", re.compile(r" \(SFConflict [^()/]+\)"), lambda m: m.group(0)),
    ("syncthing", re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Z2-7]{7}"), lambda m: m.group(0)),
    ("rclone", re.compile(r"\.\.?(?:(path[12])|conflict(\d+))"), lambda m: _wrapped(m.group(1) or m.group(2))),
    ("icloud", re.compile(r" (\d+)"), lambda m: _wrapped(m.group(1))),
    ("onedrive", re.compile(r"-([A-Za-z0-9][A-Za-z0-9_-]*)"), lambda m: _wrapped(m.group(1))),
)
# Markers appended after the extension: rclone bisync only.  ``..path1`` (before 1.66),
# ``.path1`` (pathname), ``.conflict1`` (num) and ``.<custom suffix>N``; a custom suffix
# must say "conflict" or "path" to be recognised, so that nothing else a client or a
# user may leave there (``.partial``, ``.tmp``) is ever taken for a conflict copy.
_AFTER: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    ("rclone", re.compile(r"\.\.?(?:(path[12])|conflict(\d+))(?![A-Za-z0-9_-])"),
     lambda m: _wrapped(m.group(1) or m.group(2))),
    ("rclone", re.compile(r"\.([A-Za-z0-9_-]*(?:conflict|path)\d*)"), lambda m: _wrapped(m.group(1))),
)


def _markers(text: str, table: tuple, after: bool) -> tuple[Marker, ...] | None:
    """Split ``text`` into one or more markers of ``table``, left to right; None if it is anything else."""
    found: list[Marker] = []
    pos = 0
    while pos < len(text):
        for client, pattern, shown in table:
            match = pattern.match(text, pos)
            if match is not None and match.end() > pos:
                found.append(Marker(client, match.group(0), shown(match), after))
                pos = match.end()
                break
        else:
            return None
    return tuple(found)


_STEM = re.compile(r"[a-z2-7]+")
_KNOWN_EXTENSIONS = (*ENTRY_SUFFIXES, SIDECAR_SUFFIX)


def parse_copy(backing_name: str) -> ConflictCopy | None:
    """The conflict copy a backing name is, if it is one of an entry, a sidecar or ``vaultfs.dirid``.

    ``<stem><before>.<ext><after>`` where ``<stem>`` is lowercase base32 (or ``vaultfs``
    with the extension ``.dirid``), ``<ext>`` one of vaultfs's extensions, and at least one
    of ``<before>`` and ``<after>`` a sequence of conflict markers.
    """
    for ext in (*_KNOWN_EXTENSIONS, ".dirid"):
        index = backing_name.find(ext)
        while index > 0:
            found = _split_at(backing_name, index, ext)
            if found is not None:
                return found
            index = backing_name.find(ext, index + 1)
    return None


def _split_at(backing_name: str, index: int, ext: str) -> ConflictCopy | None:
    head, after = backing_name[:index], backing_name[index + len(ext):]
    if ext == ".dirid":
        if not head.startswith("vaultfs"):
            return None
        stem, before = "vaultfs", head[len("vaultfs"):]
    else:
        match = _STEM.match(head)
        if match is None:
            return None
        stem, before = head[: match.end()], head[match.end():]
    if not before and not after:
        return None
    first = _markers(before, _BEFORE, False) if before else ()
    second = _markers(after, _AFTER, True) if after else ()
    if first is None or second is None:
        return None
    return ConflictCopy(stem + ext, first + second)


def is_dirid_copy(backing_name: str, dirid_name: str = DIRID_NAME) -> bool:
    """``vaultfs (1).dirid``, ``vaultfs.dirid..path1``, ``vaultfs.sync-conflict-….dirid`` ...: ID copies."""
    if not backing_name.startswith(dirid_name.split(".")[0]):
        return False  # the cheap test first: listings ask this of every name
    copy = parse_copy(backing_name)
    return copy is not None and copy.original == dirid_name


# ---------------------------------------------------------------- shown names

def _split_extension(name: str) -> tuple[str, str]:
    """``msgstore.db`` -> (``msgstore``, ``.db``); dotfiles and names without a dot keep it all in the stem."""
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot:
        return name, ""
    return stem, dot + ext


def _fit(stem: str, tail: str) -> str:
    """Shorten ``stem`` (never ``tail``, unless it alone is too long) until the name fits 255 bytes."""
    raw_tail = tail.encode("utf-8", "surrogateescape")
    if len(raw_tail) >= MAX_NAME_BYTES:
        raw_tail = raw_tail[len(raw_tail) - MAX_NAME_BYTES + 1:]
        tail = raw_tail.decode("utf-8", "surrogateescape")
    budget = MAX_NAME_BYTES - len(raw_tail)
    raw = stem.encode("utf-8", "surrogateescape")[:budget]
    # cut on a character boundary: a cut UTF-8 sequence decodes to escapes, which are kept as bytes
    return raw.decode("utf-8", "surrogateescape") + tail


def shown_name(name: str, words: str, taken: Callable[[str], bool] = lambda _: False) -> str:
    """The name a conflict copy of ``name`` is shown under: ``<stem><words>[ N]<ext>``.

    ``words`` is :attr:`ConflictCopy.words`.  When that name is ``taken``, `` 2``, `` 3``
    ... is added after the words: deterministic, so two readers of the same directory
    agree.  The stem is shortened when needed to stay within 255 bytes.
    """
    stem, ext = _split_extension(name)
    number = 1
    while True:
        tail = words + (f" {number}" if number > 1 else "") + ext
        candidate = _fit(stem, tail)
        if not taken(candidate):
            return candidate
        number += 1


_SHOWN = re.compile(
    r"(?P<words>(?:"
    r" \(conflict [^()/]+\)"
    r"| \((?:[^()/]*'s )?conflicted copy(?: [^()/]*)?\)"
    r"| \((?:Case|Selective Sync) Conflict(?: \d+)?\)"
    r"| \(SFConflict [^()/]+\)"
    r"|_conflict-\d{8}-\d{6}"
    r"|\.sync-conflict-\d{8}-\d{6}-[A-Z2-7]{7}"
    r")+)(?P<number> \d+)?(?P<ext>\.[^.]*)?$")


@dataclass(frozen=True)
class ShownConflict:
    """A plaintext name that :func:`shown_name` made: the original's name and the client's words."""

    original: str
    words: str


_CLIENT_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r" \(conflict duplicate\)"), "vaultfs: the same name twice (two devices made it)"),
    (re.compile(r" \(conflict moved\)"), "vaultfs: written on another device while its directory moved"),
    (re.compile(r" \(conflict path[12]\)"), "rclone bisync"),
    (re.compile(r" \(conflict [^()/]*(?:conflict|path)[^()/]*\)"), "rclone bisync"),
    (re.compile(r" \(conflict \d+\)"), "Google Drive, iCloud or rclone bisync"),
    (re.compile(r" \(conflict [^()/]+\)"), "OneDrive"),
    (re.compile(r" \((?:Case|Selective Sync) Conflict"), "Dropbox"),
    (re.compile(r" \((?:[^()/]*'s )?conflicted copy"), "Dropbox, Nextcloud or ownCloud"),
    (re.compile(r"_conflict-\d{8}-\d{6}"), "ownCloud"),
    (re.compile(r" \(SFConflict "), "Seafile"),
    (re.compile(r"\.sync-conflict-"), "Syncthing"),
)


def client_of(words: str) -> str:
    """Which sync client (or vaultfs itself) the first words of a shown name come from, as far as they say."""
    for pattern, client in _CLIENT_WORDS:
        if pattern.match(words):
            return client
    return "a sync client"


def parse_shown_name(name: str) -> ShownConflict | None:
    """Recognise a conflict copy's shown name (for ``vaultfs conflicts``); None for any other name."""
    for match in _SHOWN.finditer(name):
        stem = name[: match.start()]
        if stem and match.end() == len(name):
            return ShownConflict(stem + (match.group("ext") or ""), match.group("words"))
    return None
