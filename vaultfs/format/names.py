"""Plaintext name <-> backing name within one directory (docs/format.md, "Names").

AES-SIV with the parent's directory ID as associated data: deterministic inside a
directory (a lookup is one encryption), unlinkable across directories, authenticated.
base32 survives case-folding sync targets; the suffix keeps sync clients' conflict
suffixes recognisable and says what the entry is without decrypting: ``.vfs`` a file or
directory, ``.vfx`` a special entry (symlink, FIFO, socket, device) stored as a file.
Names whose encoding would pass 220 characters are stored as ``<hash>.vfl`` (``.vxl``
for a special) with the full encoding in a ``<hash>.vfn`` sidecar.

A name is the exact byte string the application gave (format v2): no Unicode
normalisation, so an NFD name from rsync comes back as NFD and two names that differ
only in normalisation are two files.  The API keeps ``str`` names decoded with
``surrogateescape``, which is lossless for any bytes.
"""

from __future__ import annotations

import errno
import re
from collections import OrderedDict
from dataclasses import dataclass

from vaultfs import crypto

SHORT_SUFFIX = ".vfs"
LONG_SUFFIX = ".vfl"
SPECIAL_SUFFIX = ".vfx"
LONG_SPECIAL_SUFFIX = ".vxl"
SIDECAR_SUFFIX = ".vfn"
ENTRY_SUFFIXES = (SHORT_SUFFIX, LONG_SUFFIX, SPECIAL_SUFFIX, LONG_SPECIAL_SUFFIX)
RESERVED_PREFIX = "vaultfs."
MAX_BACKING_NAME = 220
MAX_NAME_BYTES = 255
MAX_SIDECAR_BYTES = 1024
SYMLINK_AD = b"vaultfs/v1/symlink"
_CACHE_SIZE = 4096  # per direction; a walk of 100,000 names cycles through any size, a hot set fits


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]  # 10 bits -> 2 symbols
_AS_BASE32_DIGITS = str.maketrans(_ALPHABET, "0123456789abcdefghijklmnopqrstuv")  # for int(..., 32)
_BASE32_TEXT = re.compile("[a-z2-7]+")


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding.

    The bits go through one big integer, 10 at a time (base64.b32encode is a Python loop
    over 5-byte groups in 3.11: 15 us for a name, which every lookup of a new name paid).
    """
    if not data:
        return ""
    bits = len(data) * 8
    symbols = -(-bits // 5)
    total = symbols * 5
    value = int.from_bytes(data, "big") << (total - bits)
    head = _ALPHABET[value >> (total - 5)] if symbols % 2 else ""
    start = total - (15 if symbols % 2 else 10)
    return head + "".join([_PAIRS[(value >> shift) & 1023] for shift in range(start, -1, -10)])


def b32decode(text: str) -> bytes | None:
    """Decode canonical lowercase unpadded base32, or None for anything else.

    Canonical: a length some byte string encodes to, and zero padding bits (so decoding
    and encoding again gives ``text`` back).
    """
    if not text or not _BASE32_TEXT.fullmatch(text):
        return None
    bits = len(text) * 5
    size = bits // 8
    padding = bits - size * 8
    if padding >= 5:  # one symbol too many for any byte count
        return None
    value = int(text.translate(_AS_BASE32_DIGITS), 32)
    if value & ((1 << padding) - 1):
        return None
    return (value >> padding).to_bytes(size, "big")


def pad16(data: bytes) -> bytes:
    k = 16 - len(data) % 16
    return data + bytes([k]) * k


def unpad16(data: bytes) -> bytes | None:
    if not data or len(data) % 16:
        return None
    k = data[-1]
    if not 1 <= k <= 16 or data[-k:] != bytes([k]) * k:
        return None
    return data[:-k]


def name_bytes(name: str) -> bytes:
    """Validate a plaintext name and return its exact bytes (ENAMETOOLONG past 255 bytes).

    No normalisation: the bytes are what the application passed to open(2), recovered
    losslessly from the ``surrogateescape`` str.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise OSError(errno.EINVAL, f"invalid file name {name!r}") from None
    if not valid_name_bytes(raw):
        if len(raw) > MAX_NAME_BYTES:
            raise OSError(errno.ENAMETOOLONG, "file name longer than 255 bytes")
        raise OSError(errno.EINVAL, f"invalid file name {name!r}")
    return raw


def valid_name_bytes(raw: bytes) -> bool:
    """1 to 255 bytes, neither ``.`` nor ``..``, no ``/`` and no NUL."""
    return 0 < len(raw) <= MAX_NAME_BYTES and raw not in (b".", b"..") and b"/" not in raw and b"\0" not in raw


def _valid_decoded(raw: bytes) -> str | None:
    return raw.decode("utf-8", "surrogateescape") if valid_name_bytes(raw) else None


@dataclass(frozen=True)
class EntryName:
    """What a backing entry's name says without decrypting anything."""

    stem: str  # the base32 encoding (short form) or the digest naming the sidecar (long form)
    long: bool
    special: bool


_SUFFIX_FORMS = {SHORT_SUFFIX: (False, False), LONG_SUFFIX: (True, False),
                 SPECIAL_SUFFIX: (False, True), LONG_SPECIAL_SUFFIX: (True, True)}


def parse_entry(backing_name: str) -> EntryName | None:
    """Split ``<e>.vfs``, ``<h>.vfl``, ``<e>.vfx``, ``<h>.vxl``; None for anything else.

    Only the form is checked (lowercase base32 stem, length limits); whether the name
    decrypts is the cipher's business.
    """
    form = _SUFFIX_FORMS.get(backing_name[-4:])
    stem = backing_name[:-4]
    if form is None or not stem or len(backing_name) > MAX_BACKING_NAME or not _BASE32_CHARS.issuperset(stem):
        return None
    if form[0] and len(stem) != _DIGEST_CHARS:
        return None
    return EntryName(stem, *form)


@dataclass(frozen=True)
class BackingName:
    """Where an entry lives in its backing directory."""

    entry: str  # the backing entry's name: <e>.vfs or <h>.vfl
    sidecar: str | None = None  # for long names: <h>.vfn
    encoded: str = ""  # the full base32 encoding, the sidecar's content for long names
    copy_of_special: bool | None = None  # a sync client's copy (its suffix is not at the end): its form

    @property
    def special(self) -> bool:
        """A special entry's form (``.vfx``/``.vxl``): a symlink, FIFO, socket or device stored as a file."""
        if self.copy_of_special is not None:
            return self.copy_of_special
        return self.entry.endswith((SPECIAL_SUFFIX, LONG_SPECIAL_SUFFIX))

    def as_special(self, special: bool = True) -> BackingName:
        """The same name in the special (or the file/directory) form: only the suffix differs."""
        if self.special == special:
            return self
        swap = {SHORT_SUFFIX: SPECIAL_SUFFIX, LONG_SUFFIX: LONG_SPECIAL_SUFFIX} if special else \
            {SPECIAL_SUFFIX: SHORT_SUFFIX, LONG_SPECIAL_SUFFIX: LONG_SUFFIX}
        return BackingName(self.entry[:-4] + swap[self.entry[-4:]], self.sidecar, self.encoded)


_BASE32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_DIGEST_CHARS = 52  # base32 of a SHA-256 digest


def is_reserved(backing_entry: str) -> bool:
    """``vaultfs.*`` and sync-client copies of it (``vaultfs (1).dirid``): never an encrypted name."""
    stem = RESERVED_PREFIX[:-1]
    return backing_entry.startswith(stem) and (
        len(backing_entry) == len(stem) or backing_entry[len(stem)] not in _BASE32_CHARS)


class NameCipher:
    """Encrypts and decrypts names with one vault's name key; caches both directions."""

    def __init__(self, name_key: bytes) -> None:
        self._siv = crypto.Siv(name_key)
        self._encrypt_cache: OrderedDict[tuple[bytes, str], BackingName] = OrderedDict()
        self._decrypt_cache: OrderedDict[tuple[bytes, str], str] = OrderedDict()

    @staticmethod
    def _remember(cache: OrderedDict, key: tuple, value: object) -> None:
        cache[key] = value
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    def encrypt(self, name: str, dir_id: bytes, special: bool = False) -> BackingName:
        """Backing name of ``name`` in directory ``dir_id``: ``.vfs``/``.vfl``, or ``.vfx``/``.vxl``
        for a special entry (symlink, FIFO, socket, device stored as a file).

        One SIV encryption per (directory, name), cached: both forms share it (a lookup
        tries both), only the suffix differs.
        """
        key = (dir_id, name)
        result = self._encrypt_cache.get(key)
        if result is None:
            encoded = b32encode(self._siv.seal(pad16(name_bytes(name)), [dir_id]))
            if len(encoded) + len(SHORT_SUFFIX) <= MAX_BACKING_NAME:
                result = BackingName(encoded + SHORT_SUFFIX, None, encoded)
            else:
                digest = b32encode(crypto.sha256(encoded.encode("ascii")))
                result = BackingName(digest + LONG_SUFFIX, digest + SIDECAR_SUFFIX, encoded)
            self._remember(self._encrypt_cache, key, result)
        return result.as_special() if special else result

    def decrypt_encoded(self, encoded: str, dir_id: bytes) -> str | None:
        """Plaintext name of a base32 encoding in directory ``dir_id``, or None if it is not one."""
        cached = self._decrypt_cache.get((dir_id, encoded))
        if cached is not None:
            return cached
        sealed = b32decode(encoded)
        if sealed is None or len(sealed) < 32:
            return None
        try:
            padded = self._siv.open(sealed, [dir_id])
        except crypto.AuthenticationFailed:
            return None
        raw = unpad16(padded)
        name = None if raw is None else _valid_decoded(raw)
        if name is not None:
            self._remember(self._decrypt_cache, (dir_id, encoded), name)
        return name

    @staticmethod
    def sidecar_matches(digest: str, encoded: str) -> bool:
        return b32encode(crypto.sha256(encoded.encode("ascii"))) == digest

    # Format v1 stored a symlink as a backing symlink with a SIV-encrypted target; v2 stores it
    # as a ``.vfx`` file (format/specials.py).  Only ``vaultfs upgrade`` still reads the v1 form.

    def decrypt_symlink(self, encoded: str) -> str | None:
        """A format-v1 backing symlink's target (upgrade), or None if it does not decrypt."""
        sealed = b32decode(encoded)
        if sealed is None or len(sealed) < 32:
            return None
        try:
            raw = unpad16(self._siv.open(sealed, [SYMLINK_AD]))
        except crypto.AuthenticationFailed:
            return None
        return None if raw is None else raw.decode("utf-8", "surrogateescape")
