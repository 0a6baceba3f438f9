"""Format-v2 special entries: symlinks, FIFOs, sockets and devices as regular encrypted files."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from vaultfs import crypto
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks, specials
from vaultfs.format import header as hdr
from vaultfs.format.header import Kind
from vaultfs.format.keys import VaultKeys

KEYS = VaultKeys.derive(bytes(range(32)))
CASES = [
    (Kind.SYMLINK, specials.payload_for(Kind.SYMLINK, b"../chats/msgstore.db"), stat.S_IFLNK),
    (Kind.FIFO, b"", stat.S_IFIFO),
    (Kind.SOCKET, b"", stat.S_IFSOCK),
    (Kind.CHAR_DEVICE, specials.payload_for(Kind.CHAR_DEVICE, rdev=os.makedev(1, 3)), stat.S_IFCHR),
    (Kind.BLOCK_DEVICE, specials.payload_for(Kind.BLOCK_DEVICE, rdev=os.makedev(8, 1)), stat.S_IFBLK),
]


def write(path: Path, kind: Kind, payload: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        specials.write(fd, KEYS.file_key, kind, payload)
    finally:
        os.close(fd)


def read(path: Path) -> specials.Special:
    fd = os.open(path, os.O_RDONLY)
    try:
        return specials.read(fd, KEYS.file_key, path.name)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("kind", "payload", "file_type"), CASES, ids=[k.name for k, _, _ in CASES])
def test_each_kind_round_trips_and_stat_needs_only_the_header(tmp_path: Path, kind: Kind, payload: bytes,
                                                             file_type: int) -> None:
    path = tmp_path / "x.vfx"
    write(path, kind, payload)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert specials.peek_kind(fd, "x") == kind
    finally:
        os.close(fd)
    assert specials.file_type(kind) == file_type and specials.kind_of_mode(file_type | 0o644) == kind
    size = specials.stat_size(kind, os.path.getsize(path))
    assert size == (len(payload) if kind == Kind.SYMLINK else 0)
    special = read(path)
    assert special.kind == kind and special.payload == payload
    if kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE):
        assert special.rdev == int.from_bytes(payload, "big") != 0
    else:
        assert special.rdev == 0


def test_equal_targets_give_unrelated_ciphertexts(tmp_path: Path) -> None:
    write(tmp_path / "a.vfx", Kind.SYMLINK, b"same target")
    write(tmp_path / "b.vfx", Kind.SYMLINK, b"same target")
    a, b = (tmp_path / "a.vfx").read_bytes(), (tmp_path / "b.vfx").read_bytes()
    assert len(a) == len(b) and a[8:40] != b[8:40] and a[40:] != b[40:]


def test_targets_up_to_path_max_minus_one(tmp_path: Path) -> None:
    write(tmp_path / "long.vfx", Kind.SYMLINK, specials.payload_for(Kind.SYMLINK, b"t" * 4095))
    assert read(tmp_path / "long.vfx").target == b"t" * 4095
    for target, code in ((b"t" * 4096, errno.ENAMETOOLONG), (b"", errno.EINVAL), (b"a\0b", errno.EINVAL)):
        with pytest.raises(OSError) as info:
            specials.payload_for(Kind.SYMLINK, target)
        assert info.value.errno == code
    with pytest.raises(ValueError):
        specials.kind_of_mode(stat.S_IFREG | 0o644)


def test_any_flipped_byte_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "s.vfx"
    write(path, Kind.SYMLINK, b"target")
    original = path.read_bytes()
    for position in range(len(original)):
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        path.write_bytes(bytes(tampered))
        with pytest.raises(IntegrityError):
            read(path)


def _sealed(kind: int, payload: bytes, flags: int = 0, layout: int = 2) -> bytes:
    """A special file sealed by hand, to plant what the writer refuses to write."""
    header = hdr.build(os.urandom(32), 4096, layout, Kind(kind), flags)
    aad = blocks.block_aad_v2(header.aad, 0, True, 0) if layout == 2 else blocks.block_aad(header.aad, 0, True)
    return header.raw + crypto.Gcm(KEYS.file_key(header.file_id)).seal(payload, aad)


@pytest.mark.parametrize("data", [
    _sealed(Kind.REGULAR, b"a regular file's header"),
    _sealed(Kind.SYMLINK, b""),
    _sealed(Kind.SYMLINK, b"a\0b"),
    _sealed(Kind.FIFO, b"payload"),
    _sealed(Kind.CHAR_DEVICE, b"1234567"),
    _sealed(Kind.SYMLINK, b"x", flags=hdr.FLAG_HOLES),
    _sealed(Kind.REGULAR, b"v1", layout=1),
], ids=["regular", "empty-target", "nul-target", "fifo-payload", "short-device", "hole-flag", "v1"])
def test_authentic_but_malformed_specials_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.vfx"
    path.write_bytes(data)
    with pytest.raises(IntegrityError):
        read(path)
