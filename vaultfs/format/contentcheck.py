"""Whole-file verification for fsck: every header, block tag, is_last mark and (v2) every hole.

Unlike ``EncryptedFile``, which refuses a damaged file, this walks all of it and says
what is wrong where, and tells the marks a crash leaves from tampering:

- a *torn append*: the last block authentic but still marked "not last", left by a crash
  between the two steps of an extending write (the same bytes as a cut at a block
  boundary: accepting it is the user's decision);
- a *torn fill* (v2): a data block after a run of holes that authenticates only with an
  earlier run start, with authentic data blocks in between: a write into a hole (or a
  hole punch) stopped before it re-sealed that block.  Only a crash or a single-block
  rollback, which the format admits it cannot detect, produces this; zeroing data blocks
  produces the opposite (a run start *later* than the zeros), which is reported as damage;
- an *interrupted truncate*: a block whose first bytes are an authentic block marked last
  (the new last block was written, the file not yet cut after it).  Searched for once per
  file, at the first block that fails: up to one decryption per possible length.

Streams the file in bounded chunks.  Layout 1 or 2 is read from the header's magic.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.format import blocks, holes
from vaultfs.format import header as hdr
from vaultfs.format.header import Header, Kind

CHUNK_BLOCKS = 256
MAX_RUN_CANDIDATES = 1 << 16  # blocks: a punch of up to 256 MiB stopped half-way is recognised


@dataclass
class FileCheck:
    plain_size: int | None = None
    fatal: str | None = None  # header or size: the blocks cannot even be located
    bad_blocks: list[int] = field(default_factory=list)
    torn_append: bool = False
    last_index: int = 0
    layout: int = 0
    kind: Kind = Kind.REGULAR
    holes: int = 0  # hole blocks vouched for by the data block after them
    torn_fills: list[tuple[int, int]] = field(default_factory=list)  # (block, the run start it was sealed with)
    truncated_at: tuple[int, int] | None = None  # (block, plaintext length) where a truncate stopped

    @property
    def ok(self) -> bool:
        return (self.fatal is None and not self.bad_blocks and not self.torn_append and not self.torn_fills
                and self.truncated_at is None)


def _aad(header: Header, index: int, is_last: bool, run_start: int) -> bytes:
    if header.layout == 1:
        return blocks.block_aad(header.aad, index, is_last)
    return blocks.block_aad_v2(header.aad, index, is_last, run_start)


def _opens(gcm: crypto.Gcm, sealed: bytes | memoryview, aad: bytes) -> bool:
    try:
        gcm.open(bytes(sealed), aad)
    except crypto.AuthenticationFailed:
        return False
    return True


class _Walk:
    """The state of one pass over the blocks: the current zero run and the last data run."""

    def __init__(self, header: Header, gcm: crypto.Gcm, final: int, result: FileCheck) -> None:
        self.header, self.gcm, self.final, self.result = header, gcm, final, result
        self.zero_start: int | None = None
        self.run_first = 0  # first block of the most recent run of data blocks
        self.run_first_start = 0  # the run start that block was sealed with
        self.previous_data = False

    def zeros(self, first: int) -> None:
        """Blocks from ``first`` on lie in a filesystem hole (all zeros) up to the next call."""
        if self.zero_start is None:
            self.zero_start = first
        self.previous_data = False

    def block(self, index: int, sealed: memoryview, is_zero: bool) -> None:
        if is_zero:
            if self.zero_start is None:
                self.zero_start = index
            self.previous_data = False
            return
        run = index if self.zero_start is None else self.zero_start
        is_last = index == self.final
        if _opens(self.gcm, sealed, _aad(self.header, index, is_last, run)):
            self._data(index, run)
            return
        if is_last and _opens(self.gcm, sealed, _aad(self.header, index, False, run)):
            self.result.torn_append = True
            self._data(index, run)
            return
        earlier = self._earlier_start(index, sealed, run, is_last)
        if earlier is not None:
            self.result.torn_fills.append((index, earlier))
            self._data(index, run)
            return
        if self.result.truncated_at is None and not self.result.bad_blocks:
            length = self._truncated_length(index, sealed, run)
            if length is not None:
                self.result.truncated_at = (index, length)
                self.final = index  # nothing after it counts: the truncate was cutting it off
                return
        self.result.bad_blocks.append(index)
        self.zero_start = None
        self.previous_data = False

    def _data(self, index: int, run: int) -> None:
        if self.zero_start is not None:
            self.result.holes += index - self.zero_start
        if not self.previous_data:
            self.run_first, self.run_first_start = index, run
        self.zero_start = None
        self.previous_data = True

    def _truncated_length(self, index: int, sealed: memoryview, run: int) -> int | None:
        """The plaintext length at which the block's prefix opens as the last block, if one does."""
        for length in range(len(sealed) - blocks.BLOCK_OVERHEAD, -1, -1):
            if _opens(self.gcm, sealed[: length + blocks.BLOCK_OVERHEAD], _aad(self.header, index, True, run)):
                return length
        return None

    def _earlier_start(self, index: int, sealed: memoryview, run: int, is_last: bool) -> int | None:
        """A run start below ``run`` that the block authenticates with, if data blocks lie in between.

        The start the most recent data run itself follows is tried first (a write into a hole
        stopped), then every index below ``run`` (a punch stopped after re-sealing this block,
        whose range may span several data runs), up to ``MAX_RUN_CANDIDATES`` of them.
        """
        if self.header.layout != 2 or run == 0 or not (self.previous_data or self.zero_start is not None):
            return None
        if self.run_first >= run:  # no data block before the zeros in front of this block
            return None
        candidates = [self.run_first_start, *range(run - 1, max(-1, run - 1 - MAX_RUN_CANDIDATES), -1)]
        for start in candidates:
            if start < run and _opens(self.gcm, sealed, _aad(self.header, index, is_last, start)):
                return start
        return None


def check_file(fd: int, key_for: Callable[[bytes], bytes], block_size: int,
               on_bytes: Callable[[int], None] | None = None, layout: int | None = None) -> FileCheck:
    """Check every block of a content file; ``layout`` (1 or 2) makes the other one fatal."""
    result = FileCheck()
    try:
        header = hdr.parse(os.pread(fd, blocks.HEADER_SIZE, 0), block_size, layout)
    except ValueError as exc:
        result.fatal = f"header: {exc}"
        return result
    result.layout, result.kind = header.layout, header.kind
    size = blocks.plain_size(os.fstat(fd).st_size, block_size)
    if size is None:
        result.fatal = "the file size fits no plaintext size (truncated or padded)"
        return result
    result.plain_size = size
    count = blocks.block_count(size, block_size)
    result.last_index = count - 1
    walk = _Walk(header, crypto.Gcm(key_for(header.file_id)), count - 1, result)
    stored = block_size + blocks.BLOCK_OVERHEAD
    zero = bytes(stored)
    sparse = header.layout == 2 and header.sparse
    geometry = holes.Geometry(block_size)
    first = 0
    while first < count and first <= walk.final:
        if sparse and first < count - 1:  # skip a filesystem hole without reading it: a 10 TiB hole is one call
            in_hole_until = min(count - 1, geometry.index_of(holes.next_data_offset(fd, geometry.offset(first))))
            if in_hole_until > first:
                walk.zeros(first)
                first = in_hole_until
                continue
        last = min(count, first + CHUNK_BLOCKS) - 1
        data = memoryview(os.pread(fd, (last - first + 1) * stored, blocks.block_offset(first, block_size)))
        for index in range(first, last + 1):
            if index > walk.final:
                break
            chunk = data[(index - first) * stored : (index - first + 1) * stored]
            walk.block(index, chunk, sparse and index != count - 1 and chunk == zero)
        if on_bytes is not None:
            on_bytes(len(data))
        first = last + 1
    return result


def _open_header(fd: int, key_for: Callable[[bytes], bytes], block_size: int) -> tuple[Header, crypto.Gcm, int]:
    header = hdr.parse(os.pread(fd, blocks.HEADER_SIZE, 0), block_size)
    size = blocks.plain_size(os.fstat(fd).st_size, block_size)
    assert size is not None
    return header, crypto.Gcm(key_for(header.file_id)), size


def _reseal(fd: int, key_for: Callable[[bytes], bytes], block_size: int, index: int,
            old: tuple[bool, int], new: tuple[bool, int]) -> None:
    header, gcm, size = _open_header(fd, key_for, block_size)
    offset = blocks.block_offset(index, block_size)
    sealed = os.pread(fd, blocks.block_plain_length(index, size, block_size) + blocks.BLOCK_OVERHEAD, offset)
    plain = gcm.open(sealed, _aad(header, index, *old))
    backing.pwrite_all(fd, gcm.seal(plain, _aad(header, index, *new)), offset)
    os.fsync(fd)


def _observed_start(fd: int, header: Header, block_size: int, index: int) -> int:
    if header.layout != 2 or not header.sparse:
        return index
    return holes.run_start(fd, holes.Geometry(block_size), index)


def repair_torn_append(fd: int, key_for: Callable[[bytes], bytes], block_size: int) -> None:
    """Re-mark the last block, authentic as 'not last', as the last one (an explicit fsck --repair)."""
    header, _, size = _open_header(fd, key_for, block_size)
    index = blocks.block_count(size, block_size) - 1
    run = _observed_start(fd, header, block_size, index)
    _reseal(fd, key_for, block_size, index, (False, run), (True, run))


def repair_torn_fill(fd: int, key_for: Callable[[bytes], bytes], block_size: int, index: int,
                     sealed_start: int) -> None:
    """Re-seal a block left with its old run start by an interrupted write into a hole (fsck --repair).

    The data blocks written before the crash are authentic and stay; the block gets the
    run start that the zero blocks in front of it now have.
    """
    header, _, size = _open_header(fd, key_for, block_size)
    is_last = index == blocks.block_count(size, block_size) - 1
    run = _observed_start(fd, header, block_size, index)
    _reseal(fd, key_for, block_size, index, (is_last, sealed_start), (is_last, run))


def repair_interrupted_truncate(fd: int, block_size: int, index: int, length: int) -> None:
    """Finish a truncate that wrote its new last block but did not cut the file after it (fsck --repair)."""
    os.ftruncate(fd, blocks.block_offset(index, block_size) + length + blocks.BLOCK_OVERHEAD)
    os.fsync(fd)
