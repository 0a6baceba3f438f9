"""Whole-file verification for fsck: every header, block tag and the is_last structure.

Unlike ``EncryptedFile``, which refuses a damaged file, this walks all of it and says
what is wrong where, and tells a torn append (the last block authentic but still marked
"not last", left by a crash between the two steps of an extending write) from tampering.
Streams the file in bounded chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.format import blocks
from vaultfs.format.content import parse_header

CHUNK_BLOCKS = 256


@dataclass
class FileCheck:
    plain_size: int | None = None
    fatal: str | None = None  # header or size: the blocks cannot even be located
    bad_blocks: list[int] = field(default_factory=list)
    torn_append: bool = False
    last_index: int = 0

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.bad_blocks and not self.torn_append


def check_file(fd: int, key_for: Callable[[bytes], bytes], block_size: int,
               on_bytes: Callable[[int], None] | None = None) -> FileCheck:
    result = FileCheck()
    header = os.pread(fd, blocks.HEADER_SIZE, 0)
    try:
        file_id = parse_header(header, block_size)
    except ValueError as exc:
        result.fatal = f"header: {exc}"
        return result
    size = blocks.plain_size(os.fstat(fd).st_size, block_size)
    if size is None:
        result.fatal = "the file size fits no plaintext size (truncated or padded)"
        return result
    result.plain_size = size
    gcm = crypto.Gcm(key_for(file_id))
    count = blocks.block_count(size, block_size)
    result.last_index = count - 1
    stored = block_size + blocks.BLOCK_OVERHEAD
    for first in range(0, count, CHUNK_BLOCKS):
        last = min(count, first + CHUNK_BLOCKS) - 1
        data = os.pread(fd, (last - first + 1) * stored, blocks.block_offset(first, block_size))
        for index in range(first, last + 1):
            chunk = data[(index - first) * stored : (index - first + 1) * stored]
            is_last = index == count - 1
            try:
                gcm.open(chunk, blocks.block_aad(header, index, is_last))
            except crypto.AuthenticationFailed:
                if is_last and _opens(gcm, chunk, blocks.block_aad(header, index, False)):
                    result.torn_append = True
                else:
                    result.bad_blocks.append(index)
        if on_bytes is not None:
            on_bytes(len(data))
    return result


def _opens(gcm: crypto.Gcm, sealed: bytes, aad: bytes) -> bool:
    try:
        gcm.open(sealed, aad)
    except crypto.AuthenticationFailed:
        return False
    return True


def repair_torn_append(fd: int, key_for: Callable[[bytes], bytes], block_size: int) -> None:
    """Re-mark the last block, authentic as 'not last', as the last one (an explicit fsck --repair)."""
    header = os.pread(fd, blocks.HEADER_SIZE, 0)
    gcm = crypto.Gcm(key_for(parse_header(header, block_size)))
    size = blocks.plain_size(os.fstat(fd).st_size, block_size)
    assert size is not None
    index = blocks.block_count(size, block_size) - 1
    offset = blocks.block_offset(index, block_size)
    sealed = os.pread(fd, blocks.block_plain_length(index, size, block_size) + blocks.BLOCK_OVERHEAD, offset)
    plain = gcm.open(sealed, blocks.block_aad(header, index, False))
    backing.pwrite_all(fd, gcm.seal(plain, blocks.block_aad(header, index, True)), offset)
    os.fsync(fd)
