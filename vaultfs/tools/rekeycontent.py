"""One content file re-encrypted under a new master key: the byte-level step of ``vaultfs rekey``.

The new file gets a new random file ID (so a new per-file key) and the old header's kind
and flags; every stored block that authenticates under the old key is re-sealed under
the new one with exactly the associated data it authenticated with.  So the new file is
the old one, block for block:

- holes stay holes: zero blocks of a sparse file are never written (a filesystem hole
  in the new file), and a filesystem hole in the old one is skipped with SEEK_DATA, so a
  10 TiB sparse file costs its data blocks only;
- the states a crash leaves, which ``fsck`` recognises and ``fsck --repair`` finishes,
  stay recognisable: a torn append (the last block sealed "not last"), a torn fill (a
  block sealed with an earlier run start), an interrupted truncate (a block whose prefix
  is an authentic last block);
- damage stays damage, but is not kept: a block (or a whole file whose header or size
  is unreadable) that fails under the old key becomes random bytes of the same length,
  zeros staying zeros.  Its old bytes might still open with the old key (a block moved
  from another file, say), and after a rekey nothing in the folder may.

Memory is bounded by ``CHUNK_BLOCKS`` stored blocks.  Crypto goes through vaultfs.crypto.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.format import blocks, holes
from vaultfs.format import header as hdr
from vaultfs.format.keys import FILE_ID_SIZE
from vaultfs.format.xattrs import BACKING_PREFIX, XattrCipher

CHUNK_BLOCKS = 256
MAX_RUN_CANDIDATES = 1 << 16  # as fsck: a torn fill up to 256 MiB back is recognised
MAX_SEARCHED_BLOCKS = 8  # per file: past that many failing blocks, the rest is damage without a search
_PIECE = 4096

KeyFor = Callable[[bytes], bytes]


@dataclass
class Converted:
    """What one file's conversion found (for the report): everything else was re-sealed as it was."""

    bytes_read: int = 0
    bad_blocks: list[int] = field(default_factory=list)  # failed under the old key: random bytes now
    unreadable: str | None = None  # header or size unreadable: the whole file is random bytes now
    torn_append: bool = False
    torn_fills: int = 0
    truncate_at: int | None = None  # an interrupted truncate found at this block

    @property
    def damaged(self) -> bool:
        return bool(self.bad_blocks or self.unreadable)

    def describe(self) -> str:
        if self.unreadable:
            return f"{self.unreadable}: unreadable under the old key, so its bytes were replaced (it stays unreadable)"
        what = []
        if self.bad_blocks:
            shown = ", ".join(map(str, self.bad_blocks[:8])) + (" ..." if len(self.bad_blocks) > 8 else "")
            what.append(f"block(s) {shown} failed authentication and stay unreadable")
        return "; ".join(what)


def _opens(gcm: crypto.Gcm, sealed: bytes | memoryview, aad: bytes) -> bytes | None:
    try:
        return gcm.open(bytes(sealed), aad)
    except crypto.AuthenticationFailed:
        return None


def _noise(data: bytes | memoryview) -> bytes:
    """Replacement bytes for what cannot be authenticated: zeros stay zeros, anything else random."""
    return bytes(len(data)) if not any(data) else crypto.random_bytes(len(data))


def scrub_range(src: int, dst: int, start: int, end: int, on_bytes: Callable[[int], None] | None = None) -> int:
    """Write noise over ``[start, end)`` of ``dst`` where ``src`` holds anything but zeros; return bytes read.

    Filesystem holes in ``src`` are skipped (SEEK_DATA), all-zero pieces left unwritten.
    """
    read = 0
    offset = start
    while offset < end:
        offset = max(offset, holes.next_data_offset(src, offset))
        if offset >= end:
            break
        length = min(end - offset, CHUNK_BLOCKS * _PIECE)
        data = os.pread(src, length, offset)
        if not data:
            break
        read += len(data)
        for pos in range(0, len(data), _PIECE):
            piece = data[pos : pos + _PIECE]
            if any(piece):
                backing.pwrite_all(dst, _noise(piece), offset + pos)
        if on_bytes is not None:
            on_bytes(len(data))
        offset += len(data)
    return read


class _Reseal:
    """The walk over one file's stored blocks, re-sealing each the way it authenticates.

    Its state mirrors fsck's (format/contentcheck.py): the zero run in front of the
    current block and the most recent run of data blocks, which a torn fill refers to.
    """

    def __init__(self, src: int, dst: int, old: hdr.Header, new: hdr.Header, old_gcm: crypto.Gcm,
                 new_gcm: crypto.Gcm, size: int, block_size: int, result: Converted) -> None:
        self.src, self.dst, self.old, self.new = src, dst, old, new
        self.old_gcm, self.new_gcm = old_gcm, new_gcm
        self.size, self.bs, self.result = size, block_size, result
        self.stored = block_size + blocks.BLOCK_OVERHEAD
        self.final = blocks.block_count(size, block_size) - 1
        self.sparse = old.sparse
        self.zero_start: int | None = None
        self.previous_data = False
        self.run_first = 0
        self.run_first_start = 0
        self.searched = 0
        self.cut_at = 0  # where an interrupted truncate's authentic last block ends

    # ------------------------------------------------------------ the walk

    def run(self, on_bytes: Callable[[int], None] | None) -> None:
        geometry = holes.Geometry(self.bs)
        zero = bytes(self.stored)
        first = 0
        while first <= self.final:
            if self.sparse and first < self.final:  # skip a filesystem hole without reading it
                until = min(self.final, geometry.index_of(holes.next_data_offset(self.src, geometry.offset(first))))
                if until > first:
                    self._zeros(first)
                    first = until
                    continue
            last = min(self.final, first + CHUNK_BLOCKS - 1)
            data = memoryview(os.pread(self.src, (last - first + 1) * self.stored,
                                       blocks.block_offset(first, self.bs)))
            self.result.bytes_read += len(data)
            index = first
            while index <= last and index <= self.final:
                pos = (index - first) * self.stored
                if self._is_hole(data, pos, index, zero):
                    self._zeros(index)
                    index += 1
                    continue
                end = index
                while end < last and end < self.final and not self._is_hole(data, (end + 1 - first) * self.stored,
                                                                           end + 1, zero):
                    end += 1
                self._data_run(data, pos, index, end)
                index = end + 1
            if on_bytes is not None:
                on_bytes(len(data))
            first = last + 1

    def _is_hole(self, data: memoryview, pos: int, index: int, zero: bytes) -> bool:
        return self.sparse and index != self.final and data[pos : pos + self.stored] == zero

    def _zeros(self, index: int) -> None:
        if self.zero_start is None:
            self.zero_start = index
        self.previous_data = False

    def _data(self, index: int, run: int) -> None:
        if not self.previous_data:
            self.run_first, self.run_first_start = index, run
        self.zero_start = None
        self.previous_data = True

    def _length(self, index: int) -> int:
        return blocks.block_plain_length(index, self.size, self.bs)

    # ------------------------------------------------------------ data blocks

    def _data_run(self, data: memoryview, pos: int, first: int, last: int) -> None:
        """Blocks first..last, none of them a hole: one batch when all authenticate as expected."""
        run = first if self.zero_start is None else self.zero_start
        lengths = [self._length(i) for i in range(first, last + 1)]
        stored = data[pos : pos + (last - first) * self.stored + lengths[-1] + blocks.BLOCK_OVERHEAD]
        plain = bytearray(sum(lengths))
        try:
            self.old_gcm.open_blocks(stored, self.stored, lengths,
                                     blocks.block_aads_v2(self.old.aad, first, last, self.final, run),
                                     memoryview(plain), self.bs)
        except crypto.AuthenticationFailed:
            for index in range(first, last + 1):
                start = pos + (index - first) * self.stored
                if index > self.final:
                    break
                self._one(index, data[start : start + self._length(index) + blocks.BLOCK_OVERHEAD])
            return
        out = bytearray(len(stored))
        self.new_gcm.seal_blocks(crypto.random_bytes(crypto.GCM_NONCE_SIZE * len(lengths)), memoryview(plain),
                                 lengths, blocks.block_aads_v2(self.new.aad, first, last, self.final, run),
                                 memoryview(out))
        backing.pwrite_all(self.dst, out, blocks.block_offset(first, self.bs))
        self._data(first, run)

    def _write(self, index: int, plain: bytes, is_last: bool, run_start: int) -> None:
        sealed = self.new_gcm.seal(plain, blocks.block_aad_v2(self.new.aad, index, is_last, run_start))
        backing.pwrite_all(self.dst, sealed, blocks.block_offset(index, self.bs))

    def _aad(self, index: int, is_last: bool, run_start: int) -> bytes:
        return blocks.block_aad_v2(self.old.aad, index, is_last, run_start)

    def _one(self, index: int, sealed: memoryview) -> None:
        """One block that did not authenticate as expected: what fsck would call it, re-sealed as that."""
        run = index if self.zero_start is None else self.zero_start
        is_last = index == self.final
        plain = _opens(self.old_gcm, sealed, self._aad(index, is_last, run))
        if plain is not None:
            self._write(index, plain, is_last, run)
            self._data(index, run)
            return
        if is_last:
            plain = _opens(self.old_gcm, sealed, self._aad(index, False, run))
            if plain is not None:  # a torn append stays one
                self.result.torn_append = True
                self._write(index, plain, False, run)
                self._data(index, run)
                return
        searching = self.searched < MAX_SEARCHED_BLOCKS
        self.searched += 1
        if searching:
            earlier = self._earlier_start(index, sealed, run, is_last)
            if earlier is not None:  # a torn fill stays one: fsck --repair re-seals it later
                start, plain = earlier
                self.result.torn_fills += 1
                self._write(index, plain, is_last, start)
                self._data(index, run)
                return
            if self.result.truncate_at is None and not self.result.bad_blocks and self._truncated(index, sealed, run):
                return
        self.result.bad_blocks.append(index)
        if any(sealed):
            backing.pwrite_all(self.dst, _noise(sealed), blocks.block_offset(index, self.bs))
        self.zero_start = None
        self.previous_data = False

    def _earlier_start(self, index: int, sealed: memoryview, run: int, is_last: bool) -> tuple[int, bytes] | None:
        """A run start below ``run`` that the block authenticates with (fsck's torn fill), and its plaintext."""
        after_data = self.previous_data or self.zero_start is not None
        if not self.sparse or run == 0 or self.run_first >= run or not after_data:
            return None
        candidates = [self.run_first_start, *range(run - 1, max(-1, run - 1 - MAX_RUN_CANDIDATES), -1)]
        for start in candidates:
            if start < run:
                plain = _opens(self.old_gcm, sealed, self._aad(index, is_last, start))
                if plain is not None:
                    return start, plain
        return None

    def _truncated(self, index: int, sealed: memoryview, run: int) -> bool:
        """A block whose prefix opens as the last block (a truncate stopped before cutting the file):
        that prefix is re-sealed, everything after it in the file becomes noise, as fsck would cut it."""
        for length in range(len(sealed) - blocks.BLOCK_OVERHEAD, -1, -1):
            plain = _opens(self.old_gcm, sealed[: length + blocks.BLOCK_OVERHEAD], self._aad(index, True, run))
            if plain is not None:
                self.result.truncate_at = index
                self._write(index, plain, True, run)
                self.final = index  # the walk stops here; the caller scrubs the rest
                self.cut_at = blocks.block_offset(index, self.bs) + length + blocks.BLOCK_OVERHEAD
                return True
        return False


def reencrypt(src: int, dst: int, old_key_for: KeyFor, new_key_for: KeyFor, block_size: int,
              on_bytes: Callable[[int], None] | None = None) -> Converted:
    """Write into the empty file ``dst`` the content file ``src`` (old key) sealed under the new key."""
    result = Converted()
    st = os.fstat(src)
    try:
        old = hdr.parse(os.pread(src, blocks.HEADER_SIZE, 0), block_size, layout=2)
    except ValueError as exc:
        old, why = None, f"header: {exc}"
    size = blocks.plain_size(st.st_size, block_size)
    if old is None or size is None:
        result.unreadable = why if old is None else "its size fits no plaintext size"
        result.bytes_read = scrub_range(src, dst, 0, st.st_size, on_bytes)
        os.ftruncate(dst, st.st_size)
        return result
    new = hdr.build(crypto.random_bytes(FILE_ID_SIZE), block_size, 2, old.kind, old.flags)
    backing.pwrite_all(dst, new.raw, 0)
    walk = _Reseal(src, dst, old, new, crypto.Gcm(old_key_for(old.file_id)), crypto.Gcm(new_key_for(new.file_id)),
                   size, block_size, result)
    walk.run(on_bytes)
    if result.truncate_at is not None:  # what an interrupted truncate was cutting off: noise, same length
        result.bytes_read += scrub_range(src, dst, walk.cut_at, st.st_size, on_bytes)
    os.ftruncate(dst, st.st_size)
    return result


# ---------------------------------------------------------------- extended attributes

def _user_xattrs(fd: int) -> list[str]:
    try:
        return [name for name in os.listxattr(fd) if name.startswith("user.")]
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


def translated_xattr(name: str, value: bytes, old: XattrCipher, new: XattrCipher) -> tuple[str, bytes, bool] | None:
    """The new backing attribute of an old one, and whether its value opened; None to drop it (ours by its
    prefix, but its name does not open under the old key: no reader shows it).

    A value that fails authentication keeps its (translated) name and becomes random bytes of its length.
    """
    plain = old.plain_name(name)
    if plain is None:
        return None
    new_name = new.backing_name(plain)
    try:
        return new_name, new.seal(new_name, old.open(name, value)), True
    except crypto.AuthenticationFailed:
        return new_name, crypto.random_bytes(len(value)), False


def copy_xattrs(src: int, dst: int, old: XattrCipher, new: XattrCipher) -> int:
    """The ``user.*`` attributes of ``src`` onto ``dst``: vaultfs's own re-encrypted, anyone else's as they are.

    Returns how many of vaultfs's own failed authentication (carried over as unreadable).
    """
    failed = 0
    for name in _user_xattrs(src):
        value = os.getxattr(src, name)
        if not name.startswith(BACKING_PREFIX):
            os.setxattr(dst, name, value)
            continue
        moved = translated_xattr(name, value, old, new)
        if moved is not None:
            new_name, new_value, ok = moved
            failed += not ok
            os.setxattr(dst, new_name, new_value)
    return failed


def rekey_xattrs_in_place(fd: int, old: XattrCipher, new: XattrCipher) -> int:
    """A directory's own attributes (it keeps its inode): set the new one, then drop the old one.

    A crash in between leaves both; the next run sets the new one again (same plaintext)
    and drops the old.  Returns how many failed authentication.
    """
    failed = 0
    for name in _user_xattrs(fd):
        if not name.startswith(BACKING_PREFIX) or new.plain_name(name) is not None:
            continue
        moved = translated_xattr(name, os.getxattr(fd, name), old, new)
        if moved is not None:
            new_name, new_value, ok = moved
            failed += not ok
            os.setxattr(fd, new_name, new_value)
        os.removexattr(fd, name)
    return failed
