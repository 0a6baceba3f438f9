"""Random-access reads, writes, truncates and reopens agree with a bytearray model."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSWORD, read_file, write_file
from vaultfs.format import blocks
from vaultfs.format.keyfile import TEST_KDF
from vaultfs.vault import Vault, init_vault

BOUNDARY_OFFSETS = st.sampled_from([0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 12288, 20000])
OFFSETS = st.one_of(BOUNDARY_OFFSETS, st.integers(0, 24576))
SIZES = st.one_of(st.sampled_from([0, 1, 4095, 4096, 4097, 8192]), st.integers(0, 9000))

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), OFFSETS, SIZES, st.integers(0, 255)),
        st.tuples(st.just("truncate"), OFFSETS),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("read"), OFFSETS, SIZES),
    ),
    max_size=25,
)


def apply_write(model: bytearray, offset: int, data: bytes) -> None:
    if offset > len(model):
        model.extend(bytes(offset - len(model)))
    model[offset : offset + len(data)] = data


def apply_truncate(model: bytearray, size: int) -> None:
    if size < len(model):
        del model[size:]
    else:
        model.extend(bytes(size - len(model)))


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory):
    backing = tmp_path_factory.mktemp("model") / "backing"
    init_vault(str(backing), PASSWORD, TEST_KDF)
    vault = Vault.unlock(str(backing), PASSWORD)
    yield vault
    vault.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_random_operations_match_a_bytearray_model(shared_vault: Vault, operations: list[tuple]) -> None:
    model = bytearray()
    handle = shared_vault.create("/model", 0o644, os.O_RDWR | os.O_TRUNC)
    try:
        for op in operations:
            if op[0] == "write":
                _, offset, size, seed = op
                data = bytes((seed + i) % 256 for i in range(size))
                assert handle.write(offset, data) == size
                if size:
                    apply_write(model, offset, data)
            elif op[0] == "truncate":
                handle.truncate(op[1])
                apply_truncate(model, op[1])
            elif op[0] == "reopen":
                handle.close()
                handle = shared_vault.open("/model", os.O_RDWR)
            else:
                _, offset, size = op
                assert handle.read(offset, size) == bytes(model[offset : offset + size])
            assert handle.size == len(model)
            assert shared_vault.getattr("/model").st_size == len(model)
        assert handle.read(0, len(model) + 10) == bytes(model)
        backing_size = os.fstat(handle._file.fd).st_size
        assert backing_size == blocks.cipher_size(len(model))
    finally:
        handle.close()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, (1 << 20) + 1])
def test_files_of_edge_sizes_round_trip(vault: Vault, size: int) -> None:
    data = os.urandom(size)
    write_file(vault, "/f", data)
    assert vault.getattr("/f").st_size == size
    assert read_file(vault, "/f") == data
    handle = vault.open("/f", os.O_RDONLY)
    try:
        # reads that straddle every block boundary
        for offset in range(0, size, 4093):
            assert handle.read(offset, 5000) == data[offset : offset + 5000]
    finally:
        handle.close()


def test_write_far_beyond_eof_fills_with_zeros(vault: Vault) -> None:
    handle = vault.create("/sparse", 0o644, os.O_RDWR)
    handle.write(3 * (1 << 20) + 5, b"tail")
    assert handle.size == 3 * (1 << 20) + 9
    assert handle.read(0, 3 * (1 << 20) + 5) == bytes(3 * (1 << 20) + 5)
    assert handle.read(3 * (1 << 20) + 5, 10) == b"tail"
    handle.close()


def test_truncate_to_zero_gives_a_new_file_id(vault: Vault, vault_dir) -> None:
    write_file(vault, "/t", b"x" * 5000)
    (path,) = [p for p in vault_dir.path.iterdir() if p.suffix == ".vfs"]
    before = path.read_bytes()[8:40]
    handle = vault.open("/t", os.O_RDWR | os.O_TRUNC)
    handle.close()
    after = path.read_bytes()[8:40]
    assert before != after and path.stat().st_size == 68


def test_two_handles_share_one_view(vault: Vault) -> None:
    first = vault.create("/shared", 0o644, os.O_RDWR)
    second = vault.open("/shared", os.O_RDWR)
    first.write(0, b"a" * 5000)
    assert second.size == 5000
    second.write(4000, b"b" * 2000)
    assert first.read(0, 7000) == b"a" * 4000 + b"b" * 2000
    appender = vault.open("/shared", os.O_WRONLY | os.O_APPEND)
    appender.write(0, b"END")
    assert first.read(5997, 10) == b"bbbEND"
    for h in (first, second, appender):
        h.close()


def test_concurrent_writers_to_one_file_never_corrupt_a_block(vault: Vault) -> None:
    import threading

    handles = [vault.create("/conc", 0o644, os.O_RDWR) if i == 0 else vault.open("/conc", os.O_RDWR)
               for i in range(4)]

    def writer(n: int) -> None:
        for round_ in range(40):
            # each thread owns bytes n, n+4, n+8 ... : partial-block RMW of the same blocks
            offset = (round_ * 997 * 4 + n) % 20000
            handles[n].write(offset - offset % 4 + n, bytes([n + 1]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = handles[0].read(0, 30000)
    for index, value in enumerate(data):
        assert value in (0, index % 4 + 1)
    for round_ in range(40):
        for n in range(4):
            offset = (round_ * 997 * 4 + n) % 20000
            assert data[offset - offset % 4 + n] == n + 1
    for h in handles:
        h.close()
