"""The pure size and offset arithmetic of format v1 (gocryptfs offsets_test.go style)."""

from __future__ import annotations

from vaultfs.format import blocks


def test_cipher_size_formula_and_inverse_for_every_size_up_to_10000() -> None:
    previous = 0
    for size in range(10001):
        stored = blocks.cipher_size(size)
        assert stored == 40 + size + 28 * max(1, -(-size // 4096))
        assert stored > previous
        assert blocks.plain_size(stored) == size
        previous = stored


def test_sizes_no_plaintext_maps_to_are_rejected() -> None:
    valid = {blocks.cipher_size(size) for size in range(3 * 4096 + 2)}
    for stored in range(0, blocks.cipher_size(3 * 4096 + 1)):
        assert (blocks.plain_size(stored) is not None) == (stored in valid), stored


def test_known_sizes() -> None:
    assert blocks.cipher_size(0) == 68
    assert blocks.cipher_size(4096) == 40 + 4096 + 28
    assert blocks.cipher_size(4097) == 40 + 4097 + 56
    assert blocks.plain_size(67) is None
    assert blocks.plain_size(40 + 4096 + 28 + 1) is None  # a block of 1 byte would need 29 bytes


def test_range_lengths_and_aads_of_a_request() -> None:
    for size in (1, 4095, 4096, 4097, 3 * 4096 + 5):
        last = blocks.block_count(size) - 1
        lengths = blocks.range_lengths(0, last, size)
        assert lengths == [blocks.block_plain_length(i, size) for i in range(last + 1)]
        assert sum(lengths) == size
    header = bytes(40)
    aads = blocks.block_aads(header, 2, 4, 4)
    assert aads == [blocks.block_aad(header, i, i == 4) for i in range(2, 5)]


def test_block_plain_length() -> None:
    assert [blocks.block_plain_length(i, 9000) for i in range(4)] == [4096, 4096, 808, 0]
    assert blocks.block_plain_length(0, 0) == 0
