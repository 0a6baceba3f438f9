"""Symlinks, FIFOs, sockets and device nodes stored as regular encrypted files (format v2).

Sync clients drop or follow symlinks and carry no FIFOs, sockets or device nodes, so in
format v2 the backing dir holds only regular files and directories.  A special entry is
a content file named ``<e>.vfx`` (``<h>.vxl`` for a long name) whose header says its kind
and whose plaintext is its payload: a symlink's target (1 to 4095 bytes, no NUL), a
device's number (u64 big-endian), nothing for a FIFO or a socket.  It is sealed like any
file (random file ID and nonces), so equal targets give unrelated ciphertext.

``stat`` reads only the 40-byte header (``peek_kind``): the kind gives the file type and
the backing size gives the size (a symlink's size is its target's length) without
decrypting.  The one exception is a device's ``st_rdev``, which is in the payload.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from vaultfs import backing, crypto
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks
from vaultfs.format import header as hdr
from vaultfs.format.header import Kind
from vaultfs.format.keys import FILE_ID_SIZE

MAX_TARGET_BYTES = 4095  # PATH_MAX - 1
DEVICE_PAYLOAD = 8

_FILE_TYPE = {
    Kind.SYMLINK: stat.S_IFLNK, Kind.FIFO: stat.S_IFIFO, Kind.SOCKET: stat.S_IFSOCK,
    Kind.CHAR_DEVICE: stat.S_IFCHR, Kind.BLOCK_DEVICE: stat.S_IFBLK,
}
_KIND_OF_TYPE = {file_type: kind for kind, file_type in _FILE_TYPE.items()}


@dataclass(frozen=True)
class Special:
    kind: Kind
    payload: bytes

    @property
    def target(self) -> bytes:
        """A symlink's target bytes."""
        if self.kind != Kind.SYMLINK:
            raise ValueError("not a symlink")
        return self.payload

    @property
    def rdev(self) -> int:
        """A device's number (st_rdev); 0 for the other kinds."""
        if self.kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE):
            return int.from_bytes(self.payload, "big")
        return 0


def kind_of_mode(mode: int) -> Kind:
    """The kind that stores an entry of st_mode ``mode`` (ValueError for files and directories)."""
    try:
        return _KIND_OF_TYPE[stat.S_IFMT(mode)]
    except KeyError:
        raise ValueError(f"no special kind for mode 0o{mode:o}") from None


def file_type(kind: Kind) -> int:
    """S_IFLNK, S_IFIFO ... of a special kind."""
    return _FILE_TYPE[kind]


def payload_for(kind: Kind, target: bytes | None = None, rdev: int = 0) -> bytes:
    """Validate and encode a payload: a symlink target, a device number, or nothing."""
    if kind == Kind.SYMLINK:
        if target is None or not 1 <= len(target) <= MAX_TARGET_BYTES or b"\0" in target:
            if target is not None and len(target) > MAX_TARGET_BYTES:
                raise OSError(errno.ENAMETOOLONG, "symlink target longer than 4095 bytes")
            raise OSError(errno.EINVAL, "invalid symlink target")
        return target
    if kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE):
        return rdev.to_bytes(DEVICE_PAYLOAD, "big")
    if kind in (Kind.FIFO, Kind.SOCKET):
        return b""
    raise ValueError(f"{kind!r} is not a special kind")


def _check_payload(kind: Kind, payload: bytes) -> bool:
    if kind == Kind.SYMLINK:
        return 1 <= len(payload) <= MAX_TARGET_BYTES and b"\0" not in payload
    if kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE):
        return len(payload) == DEVICE_PAYLOAD
    return kind in (Kind.FIFO, Kind.SOCKET) and not payload


def encode(key_for: Callable[[bytes], bytes], kind: Kind, payload: bytes,
           block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> bytes:
    """The whole backing file of a special: v2 header (kind, no flags) and one last block."""
    if not _check_payload(kind, payload):
        raise ValueError(f"invalid payload for {kind.name}")
    header = hdr.build(crypto.random_bytes(FILE_ID_SIZE), block_size, 2, kind)
    sealed = crypto.Gcm(key_for(header.file_id)).seal(payload, blocks.block_aad_v2(header.aad, 0, True, 0))
    return header.raw + sealed


def write(fd: int, key_for: Callable[[bytes], bytes], kind: Kind, payload: bytes,
          block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> None:
    """Write a special into an open (new or truncated) regular file."""
    data = encode(key_for, kind, payload, block_size)
    backing.pwrite_all(fd, data, 0)
    os.ftruncate(fd, len(data))


def peek_kind(fd: int, label: str, block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> Kind:
    """The kind in a ``.vfx`` file's header, read without decrypting (for stat)."""
    try:
        header = hdr.parse(os.pread(fd, blocks.HEADER_SIZE, 0), block_size, 2)
    except ValueError as exc:
        raise IntegrityError(f"{label}: header: {exc}") from None
    if header.kind == Kind.REGULAR or header.flags:
        raise IntegrityError(f"{label}: header: not a special entry's header")
    return header.kind


def stat_size(kind: Kind, backing_size: int, block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> int:
    """st_size of a special from its backing size: a symlink's target length, 0 for the others."""
    if kind != Kind.SYMLINK:
        return 0
    size = blocks.plain_size(backing_size, block_size)
    return 0 if size is None else size


def read(fd: int, key_for: Callable[[bytes], bytes], label: str,
         block_size: int = blocks.DEFAULT_BLOCK_SIZE) -> Special:
    """Decrypt and check a special entry: one authentic last block whose payload fits the kind."""
    kind = peek_kind(fd, label, block_size)
    header = hdr.parse(os.pread(fd, blocks.HEADER_SIZE, 0), block_size, 2)
    size = os.fstat(fd).st_size
    limit = blocks.HEADER_SIZE + MAX_TARGET_BYTES + blocks.BLOCK_OVERHEAD
    if size > limit:
        raise IntegrityError(f"{label}: a special entry of {size} bytes")
    sealed = os.pread(fd, size - blocks.HEADER_SIZE, blocks.HEADER_SIZE)
    try:
        payload = crypto.Gcm(key_for(header.file_id)).open(sealed, blocks.block_aad_v2(header.aad, 0, True, 0))
    except crypto.AuthenticationFailed:
        raise IntegrityError(f"{label}: the special entry failed authentication") from None
    if not _check_payload(kind, payload):
        raise IntegrityError(f"{label}: a {kind.name} with a payload of {len(payload)} bytes")
    return Special(kind, payload)
