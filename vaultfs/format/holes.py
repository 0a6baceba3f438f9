"""Finding runs of hole blocks in a sparse v2 file, fast where the filesystem has holes.

A hole block is a stored block whose bytes are all zero: a filesystem hole, or real
zeros that a sync client wrote when it uploaded and downloaded the hole.  The reader
needs two things: the first data block at or after an index (it authenticates the run
before it), and the last data block before an index (the run's start goes into the next
data block's AAD).  ``lseek(SEEK_DATA)`` skips filesystem holes in O(1) forwards and, by
bisection, in O(log n) backwards; what remains is read in bounded chunks and compared
with zeros.  On a filesystem without SEEK_DATA every byte counts as data, and the same
code just reads.  Memory is bounded by ``CHUNK_BLOCKS`` stored blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from vaultfs.format.blocks import BLOCK_OVERHEAD, HEADER_SIZE

CHUNK_BLOCKS = 64
_PAGE = 4096


class Geometry:
    """Where stored blocks lie in a backing file of block size ``block_size``."""

    __slots__ = ("stored", "zero")

    def __init__(self, block_size: int) -> None:
        self.stored = block_size + BLOCK_OVERHEAD
        self.zero = bytes(self.stored)

    def offset(self, index: int) -> int:
        return HEADER_SIZE + index * self.stored

    def index_of(self, offset: int) -> int:
        """The block containing byte ``offset`` (0 for offsets inside the header)."""
        return max(0, (offset - HEADER_SIZE) // self.stored)


def next_data_offset(fd: int, offset: int) -> int:
    """SEEK_DATA: the first offset >= ``offset`` in a data extent; a huge number past the end.

    Filesystems without SEEK_DATA report everything as data (``offset`` itself).
    """
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return 1 << 62
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return offset
        raise


def data_end_before(fd: int, offset: int) -> int:
    """An offset ``e <= offset`` with no data in ``[e, offset)`` per SEEK_DATA, data just below ``e``.

    ``0`` when there is no data before ``offset`` at all.  Bisection on SEEK_DATA: a few
    dozen calls for a terabyte hole, one when data lies right below ``offset``.
    """
    if offset <= 0:
        return 0
    if next_data_offset(fd, max(0, offset - _PAGE)) < offset:
        return offset
    if next_data_offset(fd, 0) >= offset:
        return 0
    low, high = 0, offset  # data in [low, offset), none in [high, offset)
    while high - low > _PAGE:
        middle = (low + high) // 2
        if next_data_offset(fd, middle) < offset:
            low = middle
        else:
            high = middle
    return high


def _read_blocks(fd: int, geometry: Geometry, first: int, end: int) -> memoryview:
    want = (end - first) * geometry.stored
    data = os.pread(fd, want, geometry.offset(first))
    if len(data) < want:  # a short file: what is missing reads as zeros, the size check rejects it elsewhere
        data += bytes(want - len(data))
    return memoryview(data)


def first_data_block(fd: int, geometry: Geometry, start: int, final: int) -> int:
    """The first block in ``[start, final]`` that is not all zeros; ``final`` when all before it are.

    The final block is never a hole, so it is returned unread.
    """
    index = start
    while index < final:
        data_at = next_data_offset(fd, geometry.offset(index))
        if data_at >= geometry.offset(final):
            return final
        index = max(index, geometry.index_of(data_at))
        end = min(final, index + CHUNK_BLOCKS)
        chunk = _read_blocks(fd, geometry, index, end)
        stored = geometry.stored
        for n in range(end - index):
            if chunk[n * stored : (n + 1) * stored] != geometry.zero:
                return index + n
        index = end
    return final


def last_data_block_before(fd: int, geometry: Geometry, index: int) -> int | None:
    """The last block before ``index`` that is not all zeros, or None when all of them are."""
    high = index  # blocks >= high are known zeros (or not asked about)
    while high > 0:
        data_end = data_end_before(fd, geometry.offset(high))
        if data_end <= HEADER_SIZE:
            return None
        high = min(high, geometry.index_of(data_end - 1) + 1)
        low = max(0, high - CHUNK_BLOCKS)
        chunk = _read_blocks(fd, geometry, low, high)
        stored = geometry.stored
        for n in range(high - low - 1, -1, -1):
            if chunk[n * stored : (n + 1) * stored] != geometry.zero:
                return low + n
        high = low
    return None


def run_start(fd: int, geometry: Geometry, index: int) -> int:
    """Index of the first block of the run of zero blocks right before ``index`` (``index`` if none)."""
    if index == 0:
        return 0
    before = _read_blocks(fd, geometry, index - 1, index)
    if before != geometry.zero:
        return index
    last = last_data_block_before(fd, geometry, index - 1)
    return 0 if last is None else last + 1


def punch(fd: int, offset: int, length: int) -> None:
    """Make ``[offset, offset + length)`` read as zeros: a filesystem hole where possible.

    fallocate(PUNCH_HOLE | KEEP_SIZE); where that is unsupported, zeros are written from
    the end backwards in bounded chunks (a crash then leaves the zeroed part at the end,
    which is what docs/format.md's crash analysis assumes).
    """
    if length <= 0:
        return
    if _punch_hole(fd, offset, length):
        return
    chunk = bytes(1 << 20)
    end = offset + length
    while end > offset:
        start = max(offset, end - len(chunk))
        os.pwrite(fd, chunk[: end - start], start)
        end = start


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    if _fallocate is None:
        return False
    if _fallocate(fd, _PUNCH_HOLE_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))
