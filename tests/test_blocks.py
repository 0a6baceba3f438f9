"""The pure size and offset arithmetic and block AADs (gocryptfs offsets_test.go style), and headers."""

from __future__ import annotations

import pytest

from vaultfs.format import blocks, header


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


def test_v2_aad_layout_and_run_start_bounds() -> None:
    header_aad = bytes(range(40))
    aad = blocks.block_aad_v2(header_aad, 5, True, 2)
    assert aad == header_aad + (5).to_bytes(8, "big") + b"\x01" + (2).to_bytes(8, "big")
    assert len(aad) == 40 + 17
    assert blocks.block_aads_v2(header_aad, 3, 6, 6) == [blocks.block_aad_v2(header_aad, i, i == 6, i)
                                                         for i in range(3, 7)]
    after_holes = blocks.block_aads_v2(header_aad, 3, 4, 9, first_run_start=1)
    assert after_holes == [blocks.block_aad_v2(header_aad, 3, False, 1), blocks.block_aad_v2(header_aad, 4, False, 4)]
    for bad in (-1, 6):
        with pytest.raises(ValueError):
            blocks.block_aad_v2(header_aad, 5, False, bad)


def test_headers_of_both_versions_parse_strictly() -> None:
    file_id = bytes(range(32))
    v1 = header.build(file_id, 4096, layout=1)
    assert v1.raw == b"VFS1\x01\x0c\x00\x00" + file_id and v1.aad == v1.raw
    v2 = header.build(file_id, 4096, layout=2, kind=header.Kind.SYMLINK, flags=header.FLAG_HOLES)
    assert v2.raw == b"VFS2\x01\x0c\x02\x01" + file_id
    assert v2.aad == b"VFS2\x01\x0c\x02\x00" + file_id, "the flags byte is not authenticated"
    assert header.parse(v2.raw, 4096) == v2 and header.parse(v1.raw, 4096, layout=1) == v1
    broken = [(v1.raw, "v1"), (b"VFS3" + v2.raw[4:], "magic"), (v2.raw[:39], "short"),
              (v2.raw[:6] + b"\x00" + v2.raw[7:], "kind"), (v2.raw[:6] + b"\x07" + v2.raw[7:], "kind"),
              (v2.raw[:7] + b"\x02" + v2.raw[8:], "flags"), (v2.raw[:5] + b"\x0d" + v2.raw[6:], "block size"),
              (v2.raw[:4] + b"\x02" + v2.raw[5:], "suite")]
    for raw, message in broken:
        with pytest.raises(ValueError, match=message):
            header.parse(raw, 4096, layout=2)
    with pytest.raises(ValueError, match="reserved"):
        header.parse(v1.raw[:6] + b"\x01\x00" + v1.raw[8:], 4096)
