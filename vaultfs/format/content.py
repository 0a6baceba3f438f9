"""One encrypted file: its header and random-access block encryption (docs/format.md section 8).

``EncryptedFile`` turns plaintext reads, writes and truncates at any offset into whole-
block ciphertext I/O on one backing fd: one pread per request (plus at most two for
partial head and tail blocks of a write), one pwrite per request.  It is not thread-safe
on its own; ``openfiles.OpenFile`` serialises access with one lock per backing inode.
Memory is bounded by the request size, never by the file size.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from vaultfs import backing, crypto
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks
from vaultfs.format.keys import FILE_ID_SIZE

MAGIC = b"VFS1"
SUITE_AES_GCM = 1
ZERO_FILL_CHUNK = 1 << 20


def build_header(file_id: bytes, block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> bytes:
    return MAGIC + bytes([SUITE_AES_GCM, block_size.bit_length() - 1, 0, 0]) + file_id


def parse_header(header: bytes, block_size: int) -> bytes:
    """Return the file ID of a header, or raise ValueError naming what is wrong."""
    if len(header) != blocks.HEADER_SIZE:
        raise ValueError("short header")
    if header[:4] != MAGIC:
        raise ValueError("bad magic")
    if header[4] != SUITE_AES_GCM:
        raise ValueError(f"unknown suite {header[4]}")
    if header[5] != block_size.bit_length() - 1:
        raise ValueError("block size differs from the config")
    if header[6:8] != b"\0\0":
        raise ValueError("reserved header bytes are not zero")
    return header[8:]


class EncryptedFile:
    """Plaintext view of one backing file through an open fd.

    ``key_for`` maps a file ID to its per-file key (the vault caches derivations).
    ``label`` names the file in errors and logs (a plaintext path where known).
    """

    def __init__(self, fd: int, key_for: Callable[[bytes], bytes], label: str,
                 block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> None:
        self.fd = fd
        self.label = label
        self._key_for = key_for
        self._bs = block_size
        self._stored = block_size + blocks.BLOCK_OVERHEAD
        header = os.pread(fd, blocks.HEADER_SIZE, 0)
        try:
            file_id = parse_header(header, block_size)
        except ValueError as exc:
            raise IntegrityError(f"{label}: header: {exc}") from None
        size = blocks.plain_size(os.fstat(fd).st_size, block_size)
        if size is None:
            raise IntegrityError(f"{label}: backing size fits no plaintext size (truncated?)")
        self._set_header(header, file_id)
        self.size = size
        # Authenticate the last block now: a file cut at a block boundary has a plausible
        # size, and an empty-looking one would otherwise read as b"" without any check.
        final = self._last_index(size)
        self._decrypt_block(final)

    @classmethod
    def initialize(cls, fd: int, key_for: Callable[[bytes], bytes], label: str,
                   block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> EncryptedFile:
        """Write a fresh empty file (header + one empty last block) into ``fd`` and open it."""
        cls._write_empty(fd, key_for, block_size)
        return cls(fd, key_for, label, block_size)

    @staticmethod
    def _write_empty(fd: int, key_for: Callable[[bytes], bytes], block_size: int) -> None:
        file_id = crypto.random_bytes(FILE_ID_SIZE)
        header = build_header(file_id, block_size)
        block = crypto.Gcm(key_for(file_id)).seal(b"", blocks.block_aad(header, 0, True))
        backing.pwrite_all(fd, header + block, 0)
        os.ftruncate(fd, blocks.HEADER_SIZE + len(block))

    @property
    def block_size(self) -> int:
        """Plaintext bytes per block (the offset math of callers that reserve space needs it)."""
        return self._bs

    def _set_header(self, header: bytes, file_id: bytes) -> None:
        self._header = header
        self._gcm = crypto.Gcm(self._key_for(file_id))

    # ------------------------------------------------------------ block primitives

    def _last_index(self, size: int) -> int:
        return blocks.block_count(size, self._bs) - 1

    def _seal(self, index: int, plaintext: bytes, is_last: bool) -> bytes:
        return self._gcm.seal(plaintext, blocks.block_aad(self._header, index, is_last))

    def _decrypt_range(self, first: int, last: int) -> bytearray:
        """Plaintext of blocks first..last (inclusive) of the current file.

        One pread for the whole range, every block decrypted straight into one output
        buffer by crypto.Gcm.open_blocks: this is the read path's hot spot.
        """
        size, bs, stored_size = self.size, self._bs, self._stored
        final = self._last_index(size)
        end = min(size, (last + 1) * bs)
        lengths = blocks.range_lengths(first, last, end, bs)
        want = (last - first) * stored_size + lengths[-1] + blocks.BLOCK_OVERHEAD
        stored = memoryview(os.pread(self.fd, want, blocks.block_offset(first, bs)))
        if len(stored) != want:
            raise IntegrityError(f"{self.label}: block {first + len(stored) // stored_size} is truncated")
        plain = bytearray(end - first * bs)
        try:
            self._gcm.open_blocks(stored, stored_size, lengths, blocks.block_aads(self._header, first, last, final),
                                  memoryview(plain), bs)
        except crypto.AuthenticationFailed as exc:
            raise IntegrityError(f"{self.label}: block {first + exc.args[1]} failed authentication") from None
        return plain

    def _decrypt_block(self, index: int) -> bytes:
        """One block's plaintext (re-marking, truncating and the open-time check)."""
        return bytes(self._decrypt_range(index, index))

    # ------------------------------------------------------------ plaintext API

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, "negative offset or size")
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        first, last = offset // self._bs, (end - 1) // self._bs
        plain = self._decrypt_range(first, last)
        skip = offset - first * self._bs
        return bytes(memoryview(plain)[skip : skip + end - offset])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        if offset < 0:
            raise OSError(errno.EINVAL, "negative offset")
        if not data:
            return 0
        while self.size < offset:  # no holes: fill the gap with encrypted zeros, in bounded chunks
            self._write_range(self.size, bytes(min(ZERO_FILL_CHUNK, offset - self.size)))
        self._write_range(offset, memoryview(data).cast("B"))
        return len(data)

    def _write_range(self, offset: int, data: bytes | memoryview) -> None:
        """Write data at offset <= size: read-modify-write of partial edge blocks, one pwrite.

        The new plaintext of the touched blocks is ``data`` itself when the range starts
        on a block boundary and ends at a block boundary or at the (new) end of file;
        otherwise the old head and tail bytes are decrypted and joined around it.  All
        blocks are sealed into one buffer, with nonces from one getrandom call.
        """
        old_size, bs = self.size, self._bs
        end = offset + len(data)
        new_size = max(old_size, end)
        old_last, new_last = self._last_index(old_size), self._last_index(new_size)
        first, last = offset // bs, (end - 1) // bs
        old_end, new_end = blocks.cipher_size(old_size, bs), blocks.cipher_size(new_size, bs)
        backing.reserve(self.fd, old_end, new_end - old_end)  # a full disk fails here, nothing touched
        remarked = new_last != old_last and first > old_last
        if remarked:
            # Re-mark the old last block as not last before anything is appended after it.
            old_last_plain = self._decrypt_block(old_last)
            backing.pwrite_all(self.fd, self._seal(old_last, old_last_plain, False), blocks.block_offset(old_last, bs))
        head = offset - first * bs  # old bytes kept before the range, in block `first`
        block_end = min(new_size, (last + 1) * bs)  # old bytes kept after the range, up to here
        if head or end < block_end:
            edge_first = self._decrypt_range(first, first) if head else b""
            edge_last = (edge_first if last == first and head else self._decrypt_range(last, last)) \
                if end < block_end else b""
            plain = b"".join((memoryview(edge_first)[:head], data,
                              memoryview(edge_last)[end - last * bs : block_end - last * bs]))
        else:
            plain = data
        lengths = blocks.range_lengths(first, last, block_end, bs)
        out = bytearray(block_end - first * bs + blocks.BLOCK_OVERHEAD * len(lengths))
        self._gcm.seal_blocks(crypto.random_bytes(crypto.GCM_NONCE_SIZE * len(lengths)), memoryview(plain).cast("B"),
                              lengths, blocks.block_aads(self._header, first, last, new_last), memoryview(out))
        try:
            backing.pwrite_all(self.fd, out, blocks.block_offset(first, bs))
        except OSError:
            if remarked:  # the write only appended: undo it and give the old last block its mark back
                os.ftruncate(self.fd, old_end)
                backing.pwrite_all(self.fd, self._seal(old_last, old_last_plain, True),
                                   blocks.block_offset(old_last, bs))
            raise
        self.size = new_size

    def truncate(self, new_size: int) -> None:
        if new_size < 0:
            raise OSError(errno.EINVAL, "negative size")
        if new_size == 0:
            # A new file ID and key: old blocks can never be replayed into the new content.
            self._write_empty(self.fd, self._key_for, self._bs)
            header = os.pread(self.fd, blocks.HEADER_SIZE, 0)
            self._set_header(header, header[8:])
            self.size = 0
        elif new_size > self.size:
            while self.size < new_size:
                self._write_range(self.size, bytes(min(ZERO_FILL_CHUNK, new_size - self.size)))
        elif new_size < self.size:
            index = self._last_index(new_size)
            plain = self._decrypt_block(index)
            keep = blocks.block_plain_length(index, new_size, self._bs)
            backing.pwrite_all(self.fd, self._seal(index, plain[:keep], True), blocks.block_offset(index, self._bs))
            os.ftruncate(self.fd, blocks.cipher_size(new_size, self._bs))
            self.size = new_size
