"""Holes in format-v2 files: reading them as verified zeros, keeping run starts right, punching.

A hole block is a stored block of zero bytes (never the last block).  It reads as zeros
only because the first data block after it authenticates with ``run_start`` equal to the
first index of the run of zero blocks right before it (docs/format.md "Holes").  So a
data block that an attacker (or a broken disk) zeroed is still detected: the block after
it was sealed with a later run start.  The writer keeps that invariant: a write into a
hole re-seals the next data block with its new run start, a punch re-seals it with the
start of the grown run, and before a run start is sealed into a block, the run it covers
is verified, so an attacker's zeroing can never be laundered into an authentic hole.

A mixin of ``content.EncryptedFile`` (which has the fd, the key and the block layout):
the dense path there never calls into here.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vaultfs import backing
from vaultfs.format import blocks, holes
from vaultfs.format import header as hdr

if TYPE_CHECKING:
    from vaultfs.format.content import EncryptedFile


class SparseBlocks:
    """Hole handling of ``EncryptedFile``; ``self._runs`` caches verified runs (data block -> run start)."""

    def _observed_run_start(self: EncryptedFile, index: int) -> int:
        """First index of the run of zero blocks right before ``index`` (``index`` if there is none)."""
        if not self.sparse:
            return index
        cached = self._runs.get(index)
        if cached is not None:
            return cached
        return holes.run_start(self.fd, self._geometry, index)

    def _decrypt_data_block(self: EncryptedFile, index: int, run_start: int) -> bytes:
        """Decrypt one data block with a given run start (verifying the run before it); cache the run."""
        final = self._last_index(self.size)
        length = blocks.block_plain_length(index, self.size, self._bs)
        lengths = [length]
        stored = self._read_stored(index, index, lengths)
        plain = bytearray(length)
        self._open_blocks(stored, index, index, final, lengths, memoryview(plain), run_start)
        self._runs[index] = run_start
        return bytes(plain)

    def _verify_hole(self: EncryptedFile, zero_index: int) -> tuple[int, int]:
        """Prove that zero block ``zero_index`` is a hole: the next data block's AAD must say so.

        Returns (next data block, start of the run).  IntegrityError when it does not hold:
        a data block was zeroed, or the next block fails for its own reasons.
        """
        final = self._last_index(self.size)
        data_index = holes.first_data_block(self.fd, self._geometry, zero_index + 1, final)
        if data_index not in self._runs:
            self._decrypt_data_block(data_index, self._observed_run_start(data_index))
        return data_index, self._runs[data_index]

    def _checked_run_start(self: EncryptedFile, index: int) -> int:
        """The run start to seal into block ``index``, after verifying the run of holes it covers."""
        run = self._observed_run_start(index)
        if run < index:
            self._verify_hole(index - 1)
        return run

    def _decrypt_sparse(self: EncryptedFile, stored: memoryview, first: int, last: int, final: int,
                        lengths: list[int], plain: bytearray) -> None:
        """``_decrypt_range`` of a sparse file: zero blocks stay zeros once verified, data blocks decrypt."""
        bs, size_of, zero = self._bs, self._stored, self._geometry.zero

        def is_zero(k: int) -> bool:
            return k != final and stored[(k - first) * size_of : (k - first + 1) * size_of] == zero

        out = memoryview(plain)
        index = first
        zero_from: int | None = None  # start of the zero run inside the range that precedes `index`
        while index <= last:
            if is_zero(index):
                zero_from = index if zero_from is None else zero_from
                if index == last:
                    self._verify_hole(index)  # the data block that vouches for it lies past the range
                index += 1
                continue
            end = index
            while end < last and not is_zero(end + 1):
                end += 1
            if zero_from is not None and zero_from > first:
                run = zero_from
            else:
                run = self._observed_run_start(first) if index == first or zero_from == first else index
            pos = index - first
            self._open_blocks(stored[pos * size_of :], index, end, final, lengths[pos : end - first + 1],
                              out[pos * bs :], run)
            if run < index:
                self._runs[index] = run
            zero_from = None
            index = end + 1

    def _plan_reseal_after(self: EncryptedFile, last: int, old_last: int) -> tuple[int, bytes, int] | None:
        """Before writing data into blocks ..last of a sparse file: the next data block's new run start.

        Returns (index, plaintext, new run start) of the block to re-seal after the write,
        or None when its run start does not change.  Decrypting it with the old run start
        verifies the holes the write leaves in front of it.
        """
        data_index = holes.first_data_block(self.fd, self._geometry, last + 1, old_last)
        old_run = self._observed_run_start(data_index)
        new_run = last + 1 if data_index > last + 1 else data_index
        if old_run == new_run:
            return None
        return data_index, self._decrypt_data_block(data_index, old_run), new_run

    def punch_hole(self: EncryptedFile, offset: int, length: int) -> None:
        """fallocate(PUNCH_HOLE): ``[offset, offset + length)`` reads as zeros, the size stays.

        Whole blocks (never the last one) become holes, which costs one re-sealed block;
        partial edge blocks get encrypted zeros.  The block after the punched run is
        re-sealed first, then the blocks are zeroed from the end backwards, so that a
        crash in between leaves what ``fsck`` recognises as an interrupted write
        (docs/format.md "Crash windows").
        """
        if offset < 0 or length < 0:
            raise OSError(errno.EINVAL, "negative offset or length")
        end = min(self.size, offset + length)
        if offset >= end:
            return
        bs = self._bs
        first_whole = -(-offset // bs)
        last_whole = min(end // bs - 1, self._last_index(self.size) - 1)
        if first_whole > last_whole:
            self._write_range(offset, bytes(end - offset))
            return
        if offset < first_whole * bs:
            self._write_range(offset, bytes(first_whole * bs - offset))
        if (last_whole + 1) * bs < end:
            self._write_range((last_whole + 1) * bs, bytes(end - (last_whole + 1) * bs))
        self._punch_blocks(first_whole, last_whole)

    def _punch_blocks(self: EncryptedFile, first: int, last: int) -> None:
        if not self.sparse:
            self._set_flags(self._header.flags | hdr.FLAG_HOLES)
        final = self._last_index(self.size)
        data_index = holes.first_data_block(self.fd, self._geometry, last + 1, final)
        old_run = self._observed_run_start(data_index)
        plain = self._decrypt_data_block(data_index, old_run)
        new_run = self._checked_run_start(first)
        bs = self._bs
        if new_run != old_run:
            backing.pwrite_all(self.fd, self._seal(data_index, plain, data_index == final, new_run),
                               blocks.block_offset(data_index, bs))
        start = blocks.block_offset(first, bs)
        holes.punch(self.fd, start, blocks.block_offset(last + 1, bs) - start)
        self._runs.clear()
