"""Format v1 -> v2 of one content file: the byte-level step of ``vaultfs upgrade``.

The new file gets a fresh file ID and a ``VFS2`` header (kind regular, dense: v1 has no
holes), and every block is re-sealed with the v2 AAD.  Conversion is faithful to damage:
a block that fails authentication in v1 is copied verbatim (it fails in v2 as well, at
the same index, and ``fsck`` reports it there), and a torn append (last block authentic
only as "not last") stays a torn append, which v2's ``fsck --repair`` can still accept.
Nothing unauthentic ever becomes readable, and nothing readable is lost.  Streams the
file in bounded chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.format import blocks
from vaultfs.format import header as hdr
from vaultfs.format.keys import FILE_ID_SIZE

CHUNK_BLOCKS = 256


@dataclass
class Converted:
    plain_size: int
    bad_blocks: list[int] = field(default_factory=list)  # copied verbatim: they fail in v2 as in v1
    torn_append: bool = False  # the last block stays marked "not last"


def convert_file(src_fd: int, dst_fd: int, key_for: Callable[[bytes], bytes], block_size: int,
                 on_bytes: Callable[[int], None] | None = None) -> Converted:
    """Write the VFS2 form of the VFS1 file ``src_fd`` into the empty file ``dst_fd``.

    ValueError (nothing written) when the header or the size cannot be read: such a file
    cannot be converted and is left as it is.
    """
    old = hdr.parse(os.pread(src_fd, blocks.HEADER_SIZE, 0), block_size, layout=1)
    size = blocks.plain_size(os.fstat(src_fd).st_size, block_size)
    if size is None:
        raise ValueError("the file size fits no plaintext size")
    new = hdr.build(crypto.random_bytes(FILE_ID_SIZE), block_size, layout=2)
    old_gcm, new_gcm = crypto.Gcm(key_for(old.file_id)), crypto.Gcm(key_for(new.file_id))
    result = Converted(size)
    final = blocks.block_count(size, block_size) - 1
    stored = block_size + blocks.BLOCK_OVERHEAD
    backing.pwrite_all(dst_fd, new.raw, 0)
    for first in range(0, final + 1, CHUNK_BLOCKS):
        last = min(final, first + CHUNK_BLOCKS - 1)
        lengths = blocks.range_lengths(first, last, min(size, (last + 1) * block_size), block_size)
        data = memoryview(os.pread(src_fd, (last - first) * stored + lengths[-1] + blocks.BLOCK_OVERHEAD,
                                   blocks.block_offset(first, block_size)))
        out = bytearray(len(data))
        plain = bytearray(sum(lengths))
        try:
            old_gcm.open_blocks(data, stored, lengths, blocks.block_aads(old.aad, first, last, final),
                                memoryview(plain), block_size)
        except crypto.AuthenticationFailed:
            _convert_one_by_one(data, out, first, last, final, lengths, stored, old, new, old_gcm, new_gcm, result)
        else:
            new_gcm.seal_blocks(crypto.random_bytes(crypto.GCM_NONCE_SIZE * len(lengths)), memoryview(plain),
                                lengths, blocks.block_aads_v2(new.aad, first, last, final), memoryview(out))
        backing.pwrite_all(dst_fd, out, blocks.block_offset(first, block_size))
        if on_bytes is not None:
            on_bytes(len(data))
    os.ftruncate(dst_fd, blocks.cipher_size(size, block_size))
    return result


def _convert_one_by_one(data: memoryview, out: bytearray, first: int, last: int, final: int, lengths: list[int],
                        stored: int, old: hdr.Header, new: hdr.Header, old_gcm: crypto.Gcm, new_gcm: crypto.Gcm,
                        result: Converted) -> None:
    """The slow path of a chunk with a damaged block: each block on its own, damage carried over."""
    for index in range(first, last + 1):
        pos = (index - first) * stored
        sealed = bytes(data[pos : pos + lengths[index - first] + blocks.BLOCK_OVERHEAD])
        is_last = index == final
        try:
            plain = old_gcm.open(sealed, blocks.block_aad(old.aad, index, is_last))
        except crypto.AuthenticationFailed:
            plain = None
            if is_last:
                try:
                    plain = old_gcm.open(sealed, blocks.block_aad(old.aad, index, False))
                except crypto.AuthenticationFailed:
                    pass
                else:
                    result.torn_append = True
                    is_last = False
        if plain is None:
            result.bad_blocks.append(index)
            out[pos : pos + len(sealed)] = sealed
        else:
            out[pos : pos + len(sealed)] = new_gcm.seal(plain, blocks.block_aad_v2(new.aad, index, is_last, index))
