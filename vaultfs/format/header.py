"""The 40-byte header of a content file: format v1 (``VFS1``) and v2 (``VFS2``).

v2: ``"VFS2" ‖ suite ‖ log2(block size) ‖ kind ‖ flags ‖ file ID(32)``.  The kind says
what the file stores (a regular file's bytes, or a symlink target, a FIFO, a socket, a
device number: docs/format.md "Special entries"), so that ``stat`` learns it from these
40 bytes without decrypting.  Flags bit 0 says "may contain holes"; it is a hint that
makes dense files skip every hole check, and it is left out of authentication (the
header in the block AAD has the flags byte zeroed) so that a file can become sparse
without re-sealing every block.  Flipping it gains nothing: a hole is accepted only when
the next data block's AAD says a run of holes precedes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

HEADER_SIZE = 40
MAGIC_V1 = b"VFS1"
MAGIC_V2 = b"VFS2"
SUITE_AES_GCM = 1
FLAGS_OFFSET = 7
FLAG_HOLES = 0x01
FILE_ID_OFFSET = 8


class Kind(IntEnum):
    """What a v2 content file stores (header byte 6)."""

    REGULAR = 1
    SYMLINK = 2
    FIFO = 3
    SOCKET = 4
    CHAR_DEVICE = 5
    BLOCK_DEVICE = 6


@dataclass(frozen=True)
class Header:
    raw: bytes
    layout: int  # 1 (VFS1) or 2 (VFS2)
    kind: Kind
    flags: int

    @property
    def file_id(self) -> bytes:
        return self.raw[FILE_ID_OFFSET:]

    @property
    def sparse(self) -> bool:
        return bool(self.flags & FLAG_HOLES)

    @property
    def aad(self) -> bytes:
        """The header as blocks authenticate it: v1 whole; v2 with the flags byte zeroed."""
        if self.layout == 1:
            return self.raw
        return self.raw[:FLAGS_OFFSET] + b"\0" + self.raw[FILE_ID_OFFSET:]

    def with_flags(self, flags: int) -> Header:
        raw = self.raw[:FLAGS_OFFSET] + bytes([flags]) + self.raw[FILE_ID_OFFSET:]
        return Header(raw, self.layout, self.kind, flags)


def log2_block(block_size: int) -> int:
    return block_size.bit_length() - 1


def build(file_id: bytes, block_size: int, layout: int = 2, kind: Kind = Kind.REGULAR, flags: int = 0) -> Header:
    """A fresh header (v1 takes neither kind nor flags)."""
    if layout == 1:
        if kind != Kind.REGULAR or flags:
            raise ValueError("format v1 headers store regular files only")
        raw = MAGIC_V1 + bytes([SUITE_AES_GCM, log2_block(block_size), 0, 0]) + file_id
    else:
        raw = MAGIC_V2 + bytes([SUITE_AES_GCM, log2_block(block_size), kind, flags]) + file_id
    return Header(raw, layout, kind, flags)


def parse(raw: bytes, block_size: int, layout: int | None = None) -> Header:
    """Parse a header; ``layout`` (1 or 2) makes the other one an error.  ValueError says what is wrong."""
    if len(raw) != HEADER_SIZE:
        raise ValueError("short header")
    magic = raw[:4]
    if magic == MAGIC_V1:
        found = 1
    elif magic == MAGIC_V2:
        found = 2
    else:
        raise ValueError("bad magic")
    if layout is not None and found != layout:
        raise ValueError(f"a format-v{found} file where v{layout} is expected")
    if raw[4] != SUITE_AES_GCM:
        raise ValueError(f"unknown suite {raw[4]}")
    if raw[5] != log2_block(block_size):
        raise ValueError("block size differs from the config")
    if found == 1:
        if raw[6:8] != b"\0\0":
            raise ValueError("reserved header bytes are not zero")
        return Header(bytes(raw), 1, Kind.REGULAR, 0)
    try:
        kind = Kind(raw[6])
    except ValueError:
        raise ValueError(f"unknown kind {raw[6]}") from None
    flags = raw[FLAGS_OFFSET]
    if flags & ~FLAG_HOLES:
        raise ValueError(f"unknown header flags 0x{flags:02x}")
    return Header(bytes(raw), 2, kind, flags)
