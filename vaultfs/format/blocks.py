"""Pure plaintext <-> ciphertext offset and size arithmetic, and block AADs (no I/O, no crypto).

A file is a 40-byte header followed by blocks; each stored block is
nonce(12) ‖ ciphertext(≤ block_size) ‖ tag(16), and every file has at least one
block (the last one, possibly empty).  The sizes are the same in formats v1 and v2; the
block AAD differs (v2 adds the start of the run of holes before the block).  See
docs/format.md "File contents".
"""

from __future__ import annotations

import struct

HEADER_SIZE = 40
BLOCK_OVERHEAD = 28  # 12-byte nonce + 16-byte GCM tag
DEFAULT_BLOCK_SIZE = 4096


def block_count(plain_size: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Number of stored blocks for a plaintext size: an empty file still has one (empty) block."""
    return max(1, -(-plain_size // block_size))


def cipher_size(plain_size: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Backing file size of a plaintext size: 40 + P + 28 * max(1, ceil(P / B))."""
    if plain_size < 0:
        raise ValueError("negative size")
    return HEADER_SIZE + plain_size + BLOCK_OVERHEAD * block_count(plain_size, block_size)


def plain_size(cipher_size_: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int | None:
    """Plaintext size of a backing file size, or None when no plaintext size maps to it.

    Any size that ``cipher_size`` cannot produce means the file was truncated or padded.
    """
    body = cipher_size_ - HEADER_SIZE
    if body < BLOCK_OVERHEAD:
        return None
    stored_block = block_size + BLOCK_OVERHEAD
    blocks = -(-body // stored_block)
    size = body - BLOCK_OVERHEAD * blocks
    if size < 0 or block_count(size, block_size) != blocks:
        return None
    return size


def block_offset(index: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Offset in the backing file where stored block ``index`` starts."""
    return HEADER_SIZE + index * (block_size + BLOCK_OVERHEAD)


def block_plain_length(index: int, plain_size_: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Plaintext length of block ``index`` in a file of ``plain_size_`` bytes (0 past the end)."""
    start = index * block_size
    return max(0, min(block_size, plain_size_ - start))


def block_aad(header: bytes, index: int, is_last: bool) -> bytes:
    """v1 AAD of a block: header ‖ u64 big-endian block index ‖ is_last byte."""
    return header + index.to_bytes(8, "big") + (b"\x01" if is_last else b"\x00")


_INDEX_FLAG = struct.Struct(">QB")
_INDEX_FLAG_RUN = struct.Struct(">QBQ")


def block_aads(header: bytes, first: int, last: int, final: int) -> list[bytes]:
    """v1 AADs of blocks first..last (inclusive) of a file whose last block is ``final``."""
    pack = _INDEX_FLAG.pack
    return [header + pack(i, i == final) for i in range(first, last + 1)]


def block_aad_v2(header_aad: bytes, index: int, is_last: bool, run_start: int) -> bytes:
    """v2 AAD: header (flags zeroed) ‖ u64be(index) ‖ is_last ‖ u64be(run_start).

    ``run_start`` is the index of the first block of the run of holes right before this
    block, or the block's own index when the block before it holds data (or it is block 0).
    """
    if not 0 <= run_start <= index:
        raise ValueError("run_start must be between 0 and the block index")
    return header_aad + _INDEX_FLAG_RUN.pack(index, is_last, run_start)


def block_aads_v2(header_aad: bytes, first: int, last: int, final: int,
                  first_run_start: int | None = None) -> list[bytes]:
    """v2 AADs of the consecutive data blocks first..last; only ``first`` may follow holes."""
    pack = _INDEX_FLAG_RUN.pack
    aads = [header_aad + pack(i, i == final, i) for i in range(first, last + 1)]
    if first_run_start is not None and first_run_start != first:
        aads[0] = block_aad_v2(header_aad, first, first == final, first_run_start)
    return aads


def range_lengths(first: int, last: int, end: int, block_size: int = DEFAULT_BLOCK_SIZE) -> list[int]:
    """Plaintext lengths of blocks first..last when the data ends at ``end`` (inside block ``last``)."""
    lengths = [block_size] * (last - first + 1)
    lengths[-1] = end - last * block_size
    return lengths
