"""Format-v2 contents: sparse files whose holes cost nothing, while zeroed data blocks are still detected.

Drives ``EncryptedFile(layout=2)`` on real backing files: a model test against a bytearray, O(1)
extension to 10 TiB, every kind of zeroing an attacker could do, a sync client's real zeros, hole
punching, and a kill at every write of every extending or hole-filling operation, after which
``contentcheck`` tells the crash from tampering and its repair gives back a consistent file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import crash_points
from vaultfs import backing
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks, contentcheck, holes
from vaultfs.format.content import EncryptedFile
from vaultfs.format.keys import VaultKeys

B = 4096
STORED = B + 28
KEYS = VaultKeys.derive(bytes(range(32)))
KEY_FOR = KEYS.file_key


def block_at(index: int) -> int:
    return blocks.block_offset(index)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "file.vfs"


def new_file(path: Path) -> tuple[int, EncryptedFile]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    return fd, EncryptedFile.initialize(fd, KEY_FOR, "f", layout=2)


def reopen(path: Path) -> EncryptedFile:
    fd = os.open(path, os.O_RDWR)
    return EncryptedFile(fd, KEY_FOR, "f", layout=2)


def read_all(path: Path) -> bytes:
    content = reopen(path)
    try:
        return content.read(0, content.size)
    finally:
        os.close(content.fd)


def check(path: Path) -> contentcheck.FileCheck:
    fd = os.open(path, os.O_RDONLY)
    try:
        return contentcheck.check_file(fd, KEY_FOR, B)
    finally:
        os.close(fd)


def sparse_file(path: Path, layout: list[bytes | None]) -> bytes:
    """A file of whole blocks: bytes = a data block written, None = a hole left by extension."""
    fd, content = new_file(path)
    model = bytearray()
    for index, block in enumerate(layout):
        if block is not None:
            content.write(index * B, block)
            model[len(model):] = bytes(index * B - len(model))
            model[index * B : index * B + B] = block
    if layout[-1] is None:
        content.truncate(len(layout) * B)
        model.extend(bytes(len(layout) * B - len(model)))
    os.close(fd)
    return bytes(model)


def data(seed: int, size: int = B) -> bytes:
    return bytes((seed * 7 + i) % 251 + 1 for i in range(size))  # never a zero byte: never mistaken for a hole


# ---------------------------------------------------------------- the model

OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 48 * B), st.integers(1, 3 * B), st.integers(0, 200)),
    st.tuples(st.just("truncate"), st.integers(0, 48 * B)),
    st.tuples(st.just("punch"), st.integers(0, 48 * B), st.integers(0, 12 * B)),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("read"), st.integers(0, 50 * B), st.integers(0, 6 * B)),
), max_size=20)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_operations_with_holes_match_a_bytearray_model(tmp_path: Path, ops: list[tuple]) -> None:
    path = tmp_path / "model.vfs"
    fd, content = new_file(path)
    model = bytearray()
    try:
        for op in ops:
            if op[0] == "write":
                _, offset, size, seed = op
                payload = data(seed, size)
                content.write(offset, payload)
                model.extend(bytes(max(0, offset - len(model))))
                model[offset : offset + size] = payload
            elif op[0] == "truncate":
                content.truncate(op[1])
                del model[op[1]:]
                model.extend(bytes(op[1] - len(model)))
            elif op[0] == "punch":
                _, offset, length = op
                content.punch_hole(offset, length)
                end = min(len(model), offset + length)
                if offset < end:
                    model[offset:end] = bytes(end - offset)
            elif op[0] == "reopen":
                os.close(fd)
                content = reopen(path)
                fd = content.fd
            else:
                _, offset, size = op
                assert content.read(offset, size) == bytes(model[offset : offset + size])
            assert content.size == len(model)
            assert os.fstat(fd).st_size == blocks.cipher_size(len(model))
        assert content.read(0, len(model) + 1) == bytes(model)
    finally:
        os.close(fd)
    result = check(path)
    assert result.ok, result
    assert read_all(path) == bytes(model)


# ---------------------------------------------------------------- O(1) growth

def test_truncate_to_10_tib_writes_two_blocks_and_reads_zeros(path: Path) -> None:
    fd, content = new_file(path)
    content.write(0, b"chat history")
    size = 10 << 40
    content.truncate(size)
    st_ = os.fstat(fd)
    assert content.size == size and st_.st_size == blocks.cipher_size(size)
    assert st_.st_blocks * 512 < 1 << 20, "the backing stays small on disk"
    assert content.read(0, 20) == b"chat history" + bytes(8)
    assert content.read(5 << 40, 4096) == bytes(4096)
    assert content.read(size - 10, 100) == bytes(10)
    content.write(7 << 40, b"in the middle")
    assert content.read((7 << 40) - 3, 20) == bytes(3) + b"in the middle" + bytes(4)
    os.close(fd)
    content = reopen(path)
    assert content.read(0, 12) == b"chat history" and content.read(7 << 40, 13) == b"in the middle"
    assert content.read(3 << 40, 10) == bytes(10)
    os.close(content.fd)
    assert os.stat(path).st_blocks * 512 < 1 << 20
    result = check(path)  # fsck skips the filesystem's holes: it reads a few blocks, not 10 TiB of zeros
    assert result.ok and result.holes > (9 << 40) // B


def test_a_write_far_past_the_end_leaves_a_hole(path: Path) -> None:
    fd, content = new_file(path)
    content.write(0, data(1, 100))
    content.write(1 << 30, b"tail")
    assert content.read(0, 100) == data(1, 100) and content.read(100, 4000) == bytes(4000)
    assert content.read(1 << 30, 10) == b"tail"
    assert os.fstat(fd).st_blocks * 512 < 1 << 20
    assert content.header.sparse
    os.close(fd)
    assert check(path).ok and check(path).holes > 200_000


def test_a_dense_file_pays_nothing_and_stays_dense(path: Path) -> None:
    fd, content = new_file(path)
    for offset in range(0, 10 * B, 3000):
        content.write(offset, data(offset, 3000))
    content.truncate(11 * B + 5)  # less than a whole block of gap after the last block: encrypted zeros
    assert not content.header.sparse
    os.close(fd)
    assert check(path).ok and check(path).holes == 0


# ---------------------------------------------------------------- what an attacker cannot do

LAYOUT = [data(0), data(1), None, None, None, data(5), data(6), None, data(8)]


def zero_block(path: Path, index: int) -> None:
    with open(path, "r+b") as f:
        f.seek(block_at(index))
        f.write(bytes(STORED))


@pytest.mark.parametrize("index", [0, 1, 5, 6, 8])
def test_zeroing_any_data_block_of_a_sparse_file_is_detected(path: Path, index: int) -> None:
    model = sparse_file(path, LAYOUT)
    assert read_all(path) == model
    zero_block(path, index)
    with pytest.raises(IntegrityError):
        read_all(path)
    result = check(path)
    assert result.bad_blocks and not result.torn_fills and not result.torn_append


def test_zeroing_a_data_block_is_detected_by_a_read_of_the_neighbouring_hole(path: Path) -> None:
    sparse_file(path, LAYOUT)
    zero_block(path, 1)  # the data block right before the hole [2, 5)
    content = reopen(path)
    with pytest.raises(IntegrityError):
        content.read(3 * B, 10)  # a hole: block 5 now sees a run starting at 1, but was sealed with 2
    with pytest.raises(IntegrityError):
        content.read(B, 10)
    assert content.read(0, 10) == data(0)[:10]
    os.close(content.fd)


def test_flipping_the_holes_flag_gains_nothing_and_other_flag_bits_are_refused(path: Path) -> None:
    fd, content = new_file(path)
    for index in range(4):
        content.write(index * B, data(index))
    os.close(fd)
    zero_block(path, 1)
    with pytest.raises(IntegrityError):
        read_all(path)
    with open(path, "r+b") as f:
        f.seek(7)
        f.write(b"\x01")  # "may contain holes": the zeroed block is still not vouched for
    with pytest.raises(IntegrityError):
        read_all(path)
    for bits in (0x02, 0x80):
        with open(path, "r+b") as f:
            f.seek(7)
            f.write(bytes([bits]))
        with pytest.raises(IntegrityError, match="flags"):
            reopen(path)


def test_the_last_block_is_never_a_hole(path: Path) -> None:
    sparse_file(path, [data(0), None, None, data(3)])
    zero_block(path, 3)
    with pytest.raises(IntegrityError):
        reopen(path)


def test_moving_a_hole_run_by_swapping_blocks_is_detected(path: Path) -> None:
    sparse_file(path, [data(0), None, data(2), data(3)])
    with open(path, "r+b") as f:
        f.seek(block_at(1))
        hole_and_data = f.read(2 * STORED)
        f.seek(block_at(1))
        f.write(hole_and_data[STORED:] + hole_and_data[:STORED])  # data block 2 moved to 1, the hole to 2
    with pytest.raises(IntegrityError):
        read_all(path)


def test_a_sync_clients_real_zeros_read_like_filesystem_holes(path: Path, tmp_path: Path) -> None:
    model = sparse_file(path, LAYOUT + [None] * 300 + [data(9)])
    assert os.stat(path).st_blocks * 512 < 300 * STORED
    dense = tmp_path / "downloaded.vfs"
    dense.write_bytes(path.read_bytes())  # what a client that uploads holes as zeros gives back
    with open(dense, "r+b") as f:
        f.seek(block_at(100))
        f.write(bytes(STORED * 10))  # and written, not a hole, for sure
        os.fsync(f.fileno())
    assert os.stat(dense).st_blocks * 512 > 300 * STORED
    assert read_all(dense) == model
    content = reopen(dense)
    assert content.read(150 * B, 10) == bytes(10)
    os.close(content.fd)


# ---------------------------------------------------------------- holes filled and punched

def test_a_write_into_a_hole_reseals_the_next_data_block(path: Path) -> None:
    model = bytearray(sparse_file(path, LAYOUT))
    content = reopen(path)
    content.write(3 * B + 10, b"filled")
    model[3 * B + 10 : 3 * B + 16] = b"filled"
    os.close(content.fd)
    assert read_all(path) == model
    result = check(path)
    assert result.ok and result.holes == 2 + 1  # blocks 2 and 4, and 7


def test_punch_hole_frees_blocks_reads_zeros_and_keeps_the_size(path: Path) -> None:
    fd, content = new_file(path)
    payload = data(3, 64 * B)
    content.write(0, payload)
    os.fsync(fd)
    before = os.fstat(fd).st_blocks
    content.punch_hole(B + 100, 40 * B)
    model = bytearray(payload)
    model[B + 100 : 41 * B + 100] = bytes(40 * B)
    assert content.size == len(payload) and content.read(0, len(model)) == model
    os.fsync(fd)
    assert os.fstat(fd).st_blocks < before - 30 * 8
    assert content.header.sparse
    content.punch_hole(60 * B, 10 * B)  # up to and past the end: the last block gets encrypted zeros
    model[60 * B:] = bytes(4 * B)
    assert content.read(0, len(model)) == model
    os.close(fd)
    assert check(path).ok and read_all(path) == model


# ---------------------------------------------------------------- a kill at every write

# what an operation on one file writes with
WRITES = ((backing, "pwrite_all"), (holes, "punch"), (os, "ftruncate"))


OPERATIONS: dict[str, Callable[[EncryptedFile], None]] = {
    "extend-by-truncate": lambda f: f.truncate(40 * B + 7),
    "write-past-the-end": lambda f: f.write(30 * B + 1, data(7, 2 * B)),
    "write-into-a-hole": lambda f: f.write(3 * B, data(8, B + 9)),
    "fill-a-whole-hole": lambda f: f.write(2 * B, data(9, 3 * B)),
    "punch-data": lambda f: f.punch_hole(0, 2 * B),
    "punch-across-a-hole": lambda f: f.punch_hole(B, 6 * B),
    "truncate-into-a-hole": lambda f: f.truncate(3 * B + 5),
    "append": lambda f: f.write(9 * B, data(10, 100)),
}


def _run_killed(path: Path, operation: Callable[[EncryptedFile], None], stop_at: int | None) -> list[str]:
    """Run ``operation`` in a child that dies at write number ``stop_at``; return the writes it made."""
    done = crash_points.run_until(lambda: operation(reopen(path)), WRITES, stop_at)
    return done[0] if done else []


def _repair(path: Path) -> contentcheck.FileCheck:
    result = check(path)
    fd = os.open(path, os.O_RDWR)
    try:
        for index, sealed_start in result.torn_fills:
            contentcheck.repair_torn_fill(fd, KEY_FOR, B, index, sealed_start)
        if result.torn_append:
            contentcheck.repair_torn_append(fd, KEY_FOR, B)
        if result.truncated_at is not None:
            contentcheck.repair_interrupted_truncate(fd, B, *result.truncated_at)
    finally:
        os.close(fd)
    return result


def _expected(path: Path, operation: Callable[[EncryptedFile], None], tmp: Path) -> bytes:
    scratch = tmp / "expected.vfs"
    scratch.write_bytes(path.read_bytes())
    content = reopen(scratch)
    operation(content)
    os.close(content.fd)
    return read_all(scratch)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_a_kill_at_any_write_is_recognised_and_repaired(tmp_path: Path, name: str) -> None:
    """Never damage: after a kill at write N, fsck finds nothing, a torn append, an interrupted write into
    a hole or an interrupted truncate, and its repair leaves the old content, the new one, or the new one
    cut at a block boundary (a torn extension)."""
    operation = OPERATIONS[name]
    original = tmp_path / "original.vfs"
    old = sparse_file(original, LAYOUT)
    new = _expected(original, operation, tmp_path)
    writes = _run_killed(_copy(original, tmp_path / "full.vfs"), operation, None)
    assert writes, "the operation writes something"
    for stop_at in range(len(writes) + 1):
        path = _copy(original, tmp_path / f"killed-{stop_at}.vfs")
        _run_killed(path, operation, stop_at)
        found = _repair(path)
        assert not found.bad_blocks and found.fatal is None, (name, stop_at, found)
        result = read_all(path)
        assert result in (old, new) or (new.startswith(result) and len(result) % B == 0
                                        and result[: len(old)] == old[: len(result)]), (name, stop_at, found)
        assert check(path).ok


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst
