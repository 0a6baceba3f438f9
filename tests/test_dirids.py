"""Format-v2 directory IDs: valid only at the place (parent ID, name bytes) they were sealed for.

The attacks of issue 10 (a sealed ID copied into another directory as a conflict copy, another ID
planted at the root) fail; a rename is crash-safe with two records; two devices' IDs for one place
are both valid; v1 records and malformed files are listed, never used.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from tests.spec_writer import WKeys, w_seal
from vaultfs.errors import IntegrityError, WrongRecoveryKey
from vaultfs.format.dirids import (
    DIRID_NAME,
    MAX_RECORDS,
    ROOT,
    BoundDirIds,
    Place,
    record_aad,
    root_version,
)
from vaultfs.format.keys import VaultKeys

KEYS = VaultKeys.derive(bytes(range(32)))


def v1_record(dir_id: bytes) -> bytes:
    """A format-v1 record (docs/format.md section 13), sealed by the spec writer."""
    return w_seal(WKeys(bytes(range(32))).kd, dir_id, b"vaultfs/v1/dir-id")
PARENT = bytes(range(16))


@pytest.fixture
def dirids() -> BoundDirIds:
    return BoundDirIds(KEYS)


def make_dir(path: Path) -> Path:
    path.mkdir()
    return path


def test_an_id_is_valid_only_at_its_place(tmp_path: Path, dirids: BoundDirIds) -> None:
    a, b = make_dir(tmp_path / "a"), make_dir(tmp_path / "b")
    place_a, place_b = Place.of(PARENT, "A"), Place.of(PARENT, "B")
    id_a = dirids.create(str(a), place_a)
    id_b = dirids.create(str(b), place_b)
    assert dirids.read_at(str(a), place_a, "/A").ids == (id_a,)
    (b / DIRID_NAME).write_bytes((a / DIRID_NAME).read_bytes())  # A's file copied into B
    with pytest.raises(IntegrityError, match="no directory ID valid here"):
        dirids.read_at(str(b), place_b, "/B")
    dirids.create(str(make_dir(tmp_path / "c")), place_b, id_b)
    (tmp_path / "c" / "vaultfs (1).dirid").write_bytes((a / DIRID_NAME).read_bytes())  # as a "conflict copy"
    bound = dirids.read_at(str(tmp_path / "c"), place_b, "/B")
    assert bound.ids == (id_b,) and bound.copies == ["vaultfs (1).dirid"]
    assert [(s.file, s.record) for s in bound.strays] == [("vaultfs (1).dirid", 0)]


def test_the_name_is_bound_as_exact_bytes(tmp_path: Path, dirids: BoundDirIds) -> None:
    d = make_dir(tmp_path / "d")
    dirids.create(str(d), Place.of(PARENT, unicodedata.normalize("NFC", "café")))
    with pytest.raises(IntegrityError):
        dirids.read_at(str(d), Place.of(PARENT, unicodedata.normalize("NFD", "café")), "/café")
    with pytest.raises(IntegrityError):
        dirids.read_at(str(d), Place.of(bytes(16), "café"), "/café")


def test_the_root_accepts_only_the_derived_root_id(tmp_path: Path, dirids: BoundDirIds) -> None:
    root = make_dir(tmp_path / "root")
    dirids.create(str(root), ROOT, KEYS.root_dir_id)
    assert dirids.read_at(str(root), ROOT, "/").ids == (KEYS.root_dir_id,)
    (root / "vaultfs (1).dirid").write_bytes(dirids.seal(os.urandom(16), ROOT))  # a key holder's other ID
    bound = dirids.read_at(str(root), ROOT, "/")
    assert bound.ids == (KEYS.root_dir_id,) and bound.strays[0].reason == "not the root's ID"
    (root / DIRID_NAME).unlink()
    with pytest.raises(IntegrityError):
        dirids.read_at(str(root), ROOT, "/")


def test_a_rename_in_three_steps_is_valid_at_every_step(tmp_path: Path, dirids: BoundDirIds) -> None:
    old_place, new_place = Place.of(PARENT, "old"), Place.of(os.urandom(16), "new")
    d = make_dir(tmp_path / "old")
    dir_id = dirids.create(str(d), old_place)
    dirids.bind(str(d), [dir_id], [old_place, new_place])  # 1
    assert dirids.read_at(str(d), old_place, "/old").ids == (dir_id,)
    assert dirids.read_at(str(d), new_place, "/new").ids == (dir_id,)
    os.rename(d, tmp_path / "new")  # 2
    d = tmp_path / "new"
    bound = dirids.read_at(str(d), new_place, "/new")
    assert bound.ids == (dir_id,) and len(bound.strays) == 1  # the old half: ignored, listed
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dirids.bind(fd, [dir_id], [new_place])  # 3, through a directory fd
        assert dirids.read_at(fd, new_place, "/new").strays == []
    finally:
        os.close(fd)
    assert sorted(os.listdir(d)) == [DIRID_NAME], "no temporary file is left"
    with pytest.raises(ValueError):
        dirids.bind(str(d), [dir_id] * (MAX_RECORDS + 1), [new_place])


def test_two_devices_ids_for_one_place_are_both_valid(tmp_path: Path, dirids: BoundDirIds) -> None:
    place = Place.of(PARENT, "shared")
    d = make_dir(tmp_path / "shared")
    first = dirids.create(str(d), place)
    second, third = os.urandom(16), os.urandom(16)
    (d / "vaultfs.dirid..path1").write_bytes(dirids.seal(second, place))
    (d / "vaultfs.sync-conflict-20261201-101500-MFZWI3D.dirid").write_bytes(dirids.seal(third, place))
    bound = dirids.read_at(str(d), place, "/shared")
    assert bound.primary == first and set(bound.ids) == {first, second, third} and not bound.strays


def test_v1_records_and_malformed_files_are_listed_not_used(tmp_path: Path, dirids: BoundDirIds) -> None:
    place = Place.of(PARENT, "d")
    d = make_dir(tmp_path / "d")
    (d / DIRID_NAME).write_bytes(v1_record(os.urandom(16)))
    with pytest.raises(IntegrityError, match="format-v1"):
        dirids.read_at(str(d), place, "/d")
    good = dirids.seal(os.urandom(16), place)
    for data in (b"", good + b"x", good * (MAX_RECORDS + 1)):
        (d / DIRID_NAME).write_bytes(data)
        with pytest.raises(IntegrityError, match="records|larger than"):
            dirids.read_at(str(d), place, "/d")
    (d / DIRID_NAME).write_bytes(good * MAX_RECORDS)
    assert len(dirids.read_at(str(d), place, "/d").ids) == 1


def test_the_associated_data_is_unambiguous() -> None:
    assert record_aad(Place(bytes(16), b"ab")) == b"vaultfs/v2/dir-id" + bytes(16) + b"ab"
    with pytest.raises(ValueError):
        record_aad(Place(b"short", b"x"))
    assert record_aad(Place(bytes(16), b"")) != record_aad(Place(bytes(15) + b"\x01", b""))


def test_root_version_tells_v1_from_v2_and_refuses_another_key(tmp_path: Path, dirids: BoundDirIds) -> None:
    v2, v1 = make_dir(tmp_path / "v2"), make_dir(tmp_path / "v1")
    dirids.create(str(v2), ROOT, KEYS.root_dir_id)
    (v1 / DIRID_NAME).write_bytes(v1_record(KEYS.root_dir_id))
    assert root_version(KEYS, str(v2)) == 2 and root_version(KEYS, str(v1)) == 1
    with pytest.raises(WrongRecoveryKey):
        root_version(VaultKeys.derive(os.urandom(32)), str(v2))


def test_a_fifo_or_symlink_in_place_of_the_id_file_is_refused_without_blocking(tmp_path: Path,
                                                                             dirids: BoundDirIds) -> None:
    place = Place.of(PARENT, "d")
    d = make_dir(tmp_path / "d")
    os.mkfifo(d / DIRID_NAME)
    with pytest.raises(IntegrityError, match="FIFO"):
        dirids.read_at(str(d), place, "/d")
    (d / DIRID_NAME).unlink()
    real = tmp_path / "elsewhere"
    real.write_bytes(dirids.seal(os.urandom(16), place))
    os.symlink(real, d / DIRID_NAME)
    with pytest.raises(IntegrityError):
        dirids.read_at(str(d), place, "/d")
