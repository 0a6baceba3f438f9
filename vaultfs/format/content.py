"""One encrypted file: its header and random-access block encryption (docs/format.md "File contents").

``EncryptedFile`` turns plaintext reads, writes and truncates at any offset into whole-
block ciphertext I/O on one backing fd: one pread per request (plus at most two for
partial head and tail blocks of a write), one pwrite per request.  It is not thread-safe
on its own; ``openfiles.OpenFile`` serialises access with one lock per backing inode.
Memory is bounded by the request size, never by the file size.

It reads and writes format version 2 (``VFS2``: kinds, and sparse files whose extension
costs O(1) ciphertext while a zeroed data block is still detected; the hole logic is in
``sparse.SparseBlocks``).  A ``VFS1`` file is an integrity error: only ``vaultfs upgrade``
reads those (format/convert.py), and nothing writes them any more.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from vaultfs import backing, crypto
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks, holes
from vaultfs.format import header as hdr
from vaultfs.format.header import Header, Kind
from vaultfs.format.keys import FILE_ID_SIZE
from vaultfs.format.sparse import SparseBlocks

LAYOUT = 2  # the only content format written and read here (VFS2)

_scratch = threading.local()  # per thread: buffers reused by every request (see _buffer)


def _buffer(name: str, size: int) -> memoryview:
    """A reusable buffer of at least ``size`` bytes, one per thread and purpose.

    A 1 MiB request used to allocate its ciphertext fresh each time; freshly mapped memory
    costs a page fault per 4 KiB (a quarter of a dense read's time). Reused buffers are
    touched once. Valid until the next call for the same purpose on this thread.
    """
    buf = getattr(_scratch, name, None)
    if buf is None or len(buf) < size:
        buf = bytearray(max(size, 1 << 16))
        setattr(_scratch, name, buf)
    return memoryview(buf)[:size]


def empty_file(key_for: Callable[[bytes], bytes], block_size: int, kind: Kind) -> bytes:
    """Header and one empty last block under a new random file ID: an empty file."""
    header = hdr.build(crypto.random_bytes(FILE_ID_SIZE), block_size, LAYOUT, kind)
    return header.raw + crypto.Gcm(key_for(header.file_id)).seal(b"", blocks.block_aad_v2(header.aad, 0, True, 0))


class EncryptedFile(SparseBlocks):
    """Plaintext view of one backing file through an open fd.

    ``key_for`` maps a file ID to its per-file key (the vault caches derivations).
    ``label`` names the file in errors and logs (a plaintext path where known).
    """

    def __init__(self, fd: int, key_for: Callable[[bytes], bytes], label: str,
                 block_size: int = blocks.DEFAULT_BLOCK_SIZE, *, layout: int = LAYOUT,
                 kind: Kind = Kind.REGULAR) -> None:
        if layout != LAYOUT:
            raise ValueError("only format-v2 contents are read and written (vaultfs upgrade converts v1)")
        self.fd = fd
        self.label = label
        self.layout = layout
        self._key_for = key_for
        self._bs = block_size
        self._geometry = holes.Geometry(block_size)
        self._stored = self._geometry.stored
        self._runs: dict[int, int] = {}
        raw = os.pread(fd, blocks.HEADER_SIZE, 0)
        try:
            header = hdr.parse(raw, block_size, layout)
        except ValueError as exc:
            raise IntegrityError(f"{label}: header: {exc}") from None
        if header.kind != kind:
            raise IntegrityError(f"{label}: header: kind {header.kind.name} where {kind.name} is expected")
        size = blocks.plain_size(os.fstat(fd).st_size, block_size)
        if size is None:
            raise IntegrityError(f"{label}: backing size fits no plaintext size (truncated?)")
        self._set_header(header)
        self.size = size
        # Authenticate the last block now: a file cut at a block boundary has a plausible
        # size, and an empty-looking one would otherwise read as b"" without any check.
        self._decrypt_block(self._last_index(size))

    @classmethod
    def initialize(cls, fd: int, key_for: Callable[[bytes], bytes], label: str,
                   block_size: int = blocks.DEFAULT_BLOCK_SIZE, *, layout: int = LAYOUT,
                   kind: Kind = Kind.REGULAR) -> EncryptedFile:
        """Write a fresh empty file (header + one empty last block) into ``fd`` and open it."""
        cls._write_empty(fd, key_for, block_size, kind)
        return cls(fd, key_for, label, block_size, layout=layout, kind=kind)

    @staticmethod
    def _write_empty(fd: int, key_for: Callable[[bytes], bytes], block_size: int,
                     kind: Kind = Kind.REGULAR) -> None:
        data = empty_file(key_for, block_size, kind)
        backing.pwrite_all(fd, data, 0)
        os.ftruncate(fd, len(data))

    @property
    def block_size(self) -> int:
        """Plaintext bytes per block (the offset math of callers that reserve space needs it)."""
        return self._bs

    def _set_header(self, header: Header) -> None:
        self._header = header
        self._header_aad = header.aad
        self._gcm = crypto.Gcm(self._key_for(header.file_id))
        self._runs.clear()

    @property
    def header(self) -> Header:
        return self._header

    @property
    def sparse(self) -> bool:
        """Whether holes may occur (flag bit 0); dense files pay nothing for holes."""
        return self._header.sparse

    def _set_flags(self, flags: int) -> None:
        """Rewrite the (unauthenticated) flags byte: setting "may contain holes" needs no re-sealing."""
        backing.pwrite_all(self.fd, bytes([flags]), hdr.FLAGS_OFFSET)
        self._header = self._header.with_flags(flags)

    # ------------------------------------------------------------ block primitives

    def _last_index(self, size: int) -> int:
        return blocks.block_count(size, self._bs) - 1

    def _aad(self, index: int, is_last: bool, run_start: int | None = None) -> bytes:
        return blocks.block_aad_v2(self._header_aad, index, is_last, index if run_start is None else run_start)

    def _aads(self, first: int, last: int, final: int, run_start: int | None = None) -> list[bytes]:
        return blocks.block_aads_v2(self._header_aad, first, last, final, run_start)

    def _seal(self, index: int, plaintext: bytes | memoryview, is_last: bool, run_start: int | None = None) -> bytes:
        return self._gcm.seal(plaintext, self._aad(index, is_last, run_start))

    def _open_blocks(self, stored: memoryview, first: int, last: int, final: int, lengths: list[int],
                     out: memoryview, run_start: int | None = None) -> None:
        """Decrypt the consecutive data blocks first..last from ``stored`` into ``out``."""
        try:
            self._gcm.open_blocks(stored, self._stored, lengths, self._aads(first, last, final, run_start), out,
                                  self._bs)
        except crypto.AuthenticationFailed as exc:
            raise IntegrityError(f"{self.label}: block {first + exc.args[1]} failed authentication") from None

    def _read_stored(self, first: int, last: int, lengths: list[int], reuse: bool = False) -> memoryview:
        """The stored blocks first..last; with ``reuse``, in this thread's read buffer (no nested reads)."""
        want = (last - first) * self._stored + lengths[-1] + blocks.BLOCK_OVERHEAD
        offset = blocks.block_offset(first, self._bs)
        if reuse:
            buffer = _buffer("stored", want)
            got = os.preadv(self.fd, [buffer], offset)
            stored = buffer[:got]
        else:
            stored = memoryview(os.pread(self.fd, want, offset))
        if len(stored) != want:
            raise IntegrityError(f"{self.label}: block {first + len(stored) // self._stored} is truncated")
        return stored

    def _decrypt_range(self, first: int, last: int) -> bytearray:
        """Plaintext of blocks first..last (inclusive) of the current file.

        One pread for the whole range, every block decrypted straight into one output
        buffer by crypto.Gcm.open_blocks: this is the read path's hot spot.  Sparse files
        go through ``SparseBlocks._decrypt_sparse`` (holes read as verified zeros).
        """
        size, bs = self.size, self._bs
        final = self._last_index(size)
        end = min(size, (last + 1) * bs)
        lengths = blocks.range_lengths(first, last, end, bs)
        plain = bytearray(end - first * bs)
        if self.sparse:  # the sparse path reads neighbours while it holds ``stored``: no shared buffer
            self._decrypt_sparse(self._read_stored(first, last, lengths), first, last, final, lengths, plain)
        else:
            self._open_blocks(self._read_stored(first, last, lengths, reuse=True), first, last, final, lengths,
                              memoryview(plain))
        return plain

    def _decrypt_block(self, index: int) -> bytes:
        """One block's plaintext (re-marking, truncating and the open-time check)."""
        return bytes(self._decrypt_range(index, index))

    # ------------------------------------------------------------ plaintext API

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.read_view(offset, size))

    def read_view(self, offset: int, size: int) -> memoryview:
        """Like ``read``, without the final copy: a view of a buffer of its own (the FUSE reply's)."""
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, "negative offset or size")
        end = min(self.size, offset + size)
        if offset >= end:
            return memoryview(b"")
        first, last = offset // self._bs, (end - 1) // self._bs
        plain = self._decrypt_range(first, last)
        skip = offset - first * self._bs
        return memoryview(plain)[skip : skip + end - offset]

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        if offset < 0:
            raise OSError(errno.EINVAL, "negative offset")
        if not data:
            return 0
        self._write_range(offset, memoryview(data).cast("B"))
        return len(data)

    def _write_range(self, offset: int, data: bytes | memoryview) -> None:
        """Write data at ``offset``: read-modify-write of partial edge blocks, one pwrite.

        The new plaintext of the touched blocks is ``data`` itself when the range starts
        on a block boundary and ends at a block boundary or at the (new) end of file;
        otherwise the old head and tail bytes are decrypted and joined around it.  All
        blocks are sealed into one buffer, with nonces from one getrandom call.  In v2,
        ``offset`` may lie past the end: whole blocks in between become holes (no
        ciphertext), the old last block is re-sealed full and not last.
        """
        old_size, bs = self.size, self._bs
        end = offset + len(data)
        new_size = max(old_size, end)
        old_last, new_last = self._last_index(old_size), self._last_index(new_size)
        first, last = offset // bs, (end - 1) // bs
        gap = first > old_last + 1  # whole blocks between the old end and the data: holes
        if gap and not self.sparse:
            self._set_flags(self._header.flags | hdr.FLAG_HOLES)
        sparse = self.sparse
        old_end, new_end = blocks.cipher_size(old_size, bs), blocks.cipher_size(new_size, bs)
        if gap:
            backing.reserve(self.fd, blocks.block_offset(first, bs), new_end - blocks.block_offset(first, bs))
        else:
            backing.reserve(self.fd, old_end, new_end - old_end)  # a full disk fails here, nothing touched
        remarked = new_last != old_last and first > old_last
        old_last_plain = b""
        old_last_run = None
        if remarked:
            # Re-mark the old last block as not last (padded to a full block) before anything follows it.
            old_last_plain = self._decrypt_block(old_last)
            old_last_run = self._observed_run_start(old_last) if sparse else None
        run_start = None
        if sparse:
            run_start = (old_last + 1 if gap else first) if first > old_last else self._checked_run_start(first)
        head = offset - first * bs  # old bytes kept before the range, in block `first`
        block_end = min(new_size, (last + 1) * bs)  # old bytes kept after the range, up to here
        if head or end < block_end:
            edge_first = self._old_block(first, old_size, head) if head else b""
            edge_last = (edge_first if last == first and head else self._old_block(last, old_size, 0)) \
                if end < block_end else b""
            plain = b"".join((memoryview(edge_first)[:head], data,
                              memoryview(edge_last)[end - last * bs : block_end - last * bs]))
        else:
            plain = data
        reseal = self._plan_reseal_after(last, old_last) if sparse and last < old_last else None
        lengths = blocks.range_lengths(first, last, block_end, bs)
        out = _buffer("sealed", block_end - first * bs + blocks.BLOCK_OVERHEAD * len(lengths))
        self._gcm.seal_blocks(crypto.random_bytes(crypto.GCM_NONCE_SIZE * len(lengths)), memoryview(plain).cast("B"),
                              lengths, self._aads(first, last, new_last, run_start), out)
        if remarked:
            full = old_last_plain + bytes(bs - len(old_last_plain))
            backing.pwrite_all(self.fd, self._seal(old_last, full, False, old_last_run),
                               blocks.block_offset(old_last, bs))
        try:
            backing.pwrite_all(self.fd, out, blocks.block_offset(first, bs))
        except OSError:
            if remarked:  # the write only appended: undo it and give the old last block its mark back
                os.ftruncate(self.fd, old_end)
                backing.pwrite_all(self.fd, self._seal(old_last, old_last_plain, True, old_last_run),
                                   blocks.block_offset(old_last, bs))
            raise
        self.size = new_size
        self._runs.clear()
        if reseal is not None:
            index, block_plain, new_run = reseal
            backing.pwrite_all(self.fd, self._seal(index, block_plain, index == new_last, new_run),
                               blocks.block_offset(index, bs))

    def _old_block(self, index: int, old_size: int, at_least: int) -> bytes:
        """Old plaintext of a block about to be partly rewritten; zeros past the old end."""
        if index > self._last_index(old_size):
            return bytes(at_least)
        plain = self._decrypt_block(index)
        return plain + bytes(at_least - len(plain)) if len(plain) < at_least else plain

    def truncate(self, new_size: int) -> None:
        if new_size < 0:
            raise OSError(errno.EINVAL, "negative size")
        bs = self._bs
        if new_size == 0:
            # A new file ID and key: old blocks can never be replayed into the new content.
            self._write_empty(self.fd, self._key_for, bs, self._header.kind)
            raw = os.pread(self.fd, blocks.HEADER_SIZE, 0)
            self._set_header(hdr.parse(raw, bs, self.layout))
            self.size = 0
        elif new_size > self.size:
            # O(1): only the old last block (re-sealed full) and the new last block are written
            new_last = self._last_index(new_size)
            start = new_last * bs if new_last > self._last_index(self.size) + 1 else self.size
            self._write_range(start, bytes(new_size - start))
        elif new_size < self.size:
            index = self._last_index(new_size)
            plain = self._decrypt_block(index)
            run = self._observed_run_start(index) if self.sparse else None
            keep = blocks.block_plain_length(index, new_size, bs)
            backing.pwrite_all(self.fd, self._seal(index, plain[:keep], True, run), blocks.block_offset(index, bs))
            os.ftruncate(self.fd, blocks.cipher_size(new_size, bs))
            self.size = new_size
            self._runs.clear()
