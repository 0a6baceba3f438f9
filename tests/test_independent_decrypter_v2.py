"""Format version 2 read by two independent readers: tests/independent_decrypter.py (pycryptodome, the
spec alone) and vaultfs's format layer, on vaults the spec writer (tests/spec_writer.py, `cryptography`)
wrote, and on contents vaultfs wrote.  Then the attacks of issue 10 against the cloud copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests import format_walk
from tests import independent_decrypter as idec
from tests import spec_writer as sw
from vaultfs.format.content import EncryptedFile
from vaultfs.format.keys import VaultKeys

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "vérsion twö"
NFD = unicodedata.normalize("NFD", "Résumé café.docx")
NFC = unicodedata.normalize("NFC", "Résumé café.docx")
SPARSE = b"head" + bytes(20 * 4096) + b"tail" + bytes(3 * 4096 + 5)
TREE: dict[str, idec.Entry] = {
    "/A": idec.Entry("dir"),
    "/A/msgstore.db": idec.Entry("file", content=os.urandom(9000)),
    "/A/note.txt": idec.Entry("file", content=b"A's note"),
    "/B": idec.Entry("dir"),
    "/B/note.txt": idec.Entry("file", content=b"B's note"),
    "/B/sub": idec.Entry("dir"),
    "/B/sub/deep.txt": idec.Entry("file", content=b"deep"),
    "/" + NFD: idec.Entry("file", content=b"written from a Mac"),
    "/" + NFC: idec.Entry("file", content=b"written on Linux"),
    "/\udcff\udcfe raw bytes": idec.Entry("file", content=b"not UTF-8"),
    "/" + "é" * 127 + "x": idec.Entry("file", content=b"255 bytes of name"),
    "/sparse.db": idec.Entry("file", content=SPARSE),
    "/empty": idec.Entry("file", content=b""),
    "/link": idec.Entry("symlink", target="A/msgstore.db"),
    "/long-link": idec.Entry("symlink", target="/" + "t" * 4094),
    "/" + "s" * 200: idec.Entry("symlink", target="long-name symlink"),
    "/pipe": idec.Entry("fifo", mode=0o600),
    "/socket": idec.Entry("socket", mode=0o644),
    "/null": idec.Entry("chardev", rdev=os.makedev(1, 3), mode=0o666),
    "/disk": idec.Entry("blockdev", rdev=os.makedev(8, 1), mode=0o660),
    "/shared": idec.Entry("dir"),
    "/shared/from-a": idec.Entry("file", content=b"a"),
    "/shared/from-b": idec.Entry("file", content=b"b"),
    "/A/msgstore (conflicted copy 2026-12-01 laptop).db": idec.Entry("file", content=b"laptop's"),
    "/link (conflict path1)": idec.Entry("symlink", target="A/note.txt"),
}
EXTRAS = sw.Extras(
    sparse=frozenset({"/sparse.db"}),
    extra_ids={"/shared": "vaultfs.dirid.conflict1"},
    under_second=frozenset({"/shared/from-b"}),
    copies={"/A/msgstore (conflicted copy 2026-12-01 laptop).db": ("/A/msgstore.db",
                                                                    " (conflicted copy 2026-12-01 laptop)")},
)


def without(tree: dict[str, idec.Entry], *paths: str) -> dict[str, idec.Entry]:
    return {p: e for p, e in tree.items() if p not in paths}


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sw.WKeys]:
    backing = tmp_path_factory.mktemp("v2") / "vault"
    keys = sw.write_vault(backing, without(TREE, "/link (conflict path1)"), PASSWORD, version=2, extras=EXTRAS)
    link = sw.backing_path(backing, keys, "/link", 2)  # rclone bisync's copy of a .vfx: after the extension
    conflict = link.with_name(link.name + "..path1")
    conflict.write_bytes(sw.w_file_v2(keys.kc, b"A/note.txt", kind="symlink"))
    return backing, keys


@pytest.fixture
def v2_copy(v2: tuple[Path, sw.WKeys], tmp_path: Path) -> tuple[Path, sw.WKeys]:
    return sw.copy_vault(v2[0], tmp_path / "vault"), v2[1]


def both_readers(backing: Path, strict: bool = True) -> tuple[dict, dict]:
    independent = idec.open_vault(backing, password=PASSWORD)
    mine = format_walk.walk_v2(backing, format_walk.unlock(backing, PASSWORD))
    return sw.summary(independent.walk(strict=strict)), sw.summary(mine)


def test_both_readers_read_the_spec_writers_vault(v2: tuple[Path, sw.WKeys]) -> None:
    independent, mine = both_readers(v2[0])
    assert independent == sw.summary(TREE) == mine
    walked = idec.open_vault(v2[0], password=PASSWORD).walk()
    assert walked["/null"].rdev == os.makedev(1, 3) and walked["/disk"].rdev == os.makedev(8, 1)
    assert walked["/pipe"].mode == 0o600 and walked["/link"].mode == 0o777
    assert [p for p in v2[0].rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())] == []
    sparse = sw.backing_path(v2[0], v2[1], "/sparse.db", 2).read_bytes()  # holes as real zeros, as a client
    assert sparse[7] == 1 and sparse[40 + 4124 : 40 + 19 * 4124] == bytes(18 * 4124)  # leaves them


def test_the_decrypters_cli_prints_every_kind(v2: tuple[Path, sw.WKeys], tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "independent_decrypter.py"), str(v2[0]),
                           "--password-file", str(tmp_path / "pw")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for line in ("fifo    /pipe", "socket  /socket", "symlink /link -> A/msgstore.db",
                 f"chardev /null  rdev={os.makedev(1, 3)}",
                 "file    /A/msgstore (conflicted copy 2026-12-01 laptop).db"):
        assert line in done.stdout


def test_contents_vaultfs_writes_with_holes_are_read_by_the_independent_decrypter(tmp_path: Path) -> None:
    keys = VaultKeys.derive(os.urandom(32))
    path = tmp_path / "f.vfs"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    content = EncryptedFile.initialize(fd, keys.file_key, "f", layout=2)
    model = bytearray()
    for offset, data in ((0, b"start"), (50 * 4096 + 3, b"after a hole"), (10 * 4096, b"into the hole"),
                         (200 * 4096, b"far")):
        content.write(offset, data)
        model.extend(bytes(max(0, offset - len(model))))
        model[offset : offset + len(data)] = data
    content.truncate(300 * 4096 + 1)
    content.punch_hole(4096, 8 * 4096)
    model.extend(bytes(300 * 4096 + 1 - len(model)))
    model[4096 : 9 * 4096] = bytes(8 * 4096)
    os.close(fd)
    independent_keys = idec.Keys.derive(keys.master_key)
    assert idec.decrypt_content_v2(path.read_bytes(), independent_keys) == ("file", bytes(model))
    data = bytearray(path.read_bytes())
    data[40 + 10 * (4096 + 28) : 40 + 11 * (4096 + 28)] = bytes(4096 + 28)  # zero the block written into the hole
    with pytest.raises(idec.IntegrityError):
        idec.decrypt_content_v2(bytes(data), independent_keys)


# ---------------------------------------------------------------- the attacks of issue 10


def test_an_id_copied_into_another_directory_as_a_conflict_copy_is_not_accepted(
        v2_copy: tuple[Path, sw.WKeys]) -> None:
    """The attacker copies A's vaultfs.dirid into B as "vaultfs (1).dirid" and moves A's msgstore.db into B."""
    backing, keys = v2_copy
    a, b = sw.backing_path(backing, keys, "/A", 2), sw.backing_path(backing, keys, "/B", 2)
    (b / "vaultfs (1).dirid").write_bytes((a / "vaultfs.dirid").read_bytes())
    moved = sw.backing_path(backing, keys, "/A/msgstore.db", 2)
    os.rename(moved, b / moved.name)
    with pytest.raises(idec.IntegrityError):
        idec.open_vault(backing, password=PASSWORD).walk()
    lenient = idec.open_vault(backing, password=PASSWORD)
    tree = lenient.walk(strict=False)
    assert "/B/msgstore.db" not in tree and tree["/B/note.txt"].content == b"B's note"
    assert any("not valid at this place" in p for p in lenient.problems)
    mine = format_walk.walk_v2(backing, format_walk.unlock(backing, PASSWORD))
    assert "/B/msgstore.db" not in mine and mine["/B/note.txt"].content == b"B's note"


def test_a_directory_moved_or_swapped_elsewhere_is_not_accepted(v2_copy: tuple[Path, sw.WKeys]) -> None:
    backing, keys = v2_copy
    a, sub = sw.backing_path(backing, keys, "/A", 2), sw.backing_path(backing, keys, "/B/sub", 2)
    os.rename(a, backing / "tmp")
    os.rename(sub, a)
    os.rename(backing / "tmp", sub)
    with pytest.raises(idec.IntegrityError, match="no directory ID valid"):
        idec.open_vault(backing, password=PASSWORD).walk()


def test_the_root_accepts_no_other_id(v2_copy: tuple[Path, sw.WKeys]) -> None:
    backing, keys = v2_copy
    b = sw.backing_path(backing, keys, "/B", 2)
    (backing / "vaultfs (1).dirid").write_bytes((b / "vaultfs.dirid").read_bytes())  # B's ID, bound to B
    (backing / "vaultfs.dirid.conflict1").write_bytes(sw.w_dirid_v2(keys.kd, os.urandom(16), bytes(16), b""))
    reader = idec.open_vault(backing, password=PASSWORD)
    with pytest.raises(idec.IntegrityError, match="root"):
        reader.walk()
    assert both_readers(backing, strict=False) == (sw.summary(TREE), sw.summary(TREE))
    os.unlink(backing / "vaultfs.dirid")
    with pytest.raises(Exception, match="no directory ID valid"):
        format_walk.walk_v2(backing, format_walk.unlock(backing, PASSWORD))


def test_a_zeroed_data_block_of_a_sparse_file_is_detected(v2_copy: tuple[Path, sw.WKeys]) -> None:
    backing, keys = v2_copy
    sparse = sw.backing_path(backing, keys, "/sparse.db", 2)
    data = bytearray(sparse.read_bytes())
    assert b"tail" not in data and data[40 + 20 * 4124 : 40 + 21 * 4124] != bytes(4124)
    data[40 + 20 * 4124 : 40 + 21 * 4124] = bytes(4124)  # block 20 holds "tail", between two runs of holes
    sparse.write_bytes(bytes(data))
    with pytest.raises(idec.IntegrityError):
        idec.open_vault(backing, password=PASSWORD).walk()
    with pytest.raises(OSError):
        format_walk.walk_v2(backing, format_walk.unlock(backing, PASSWORD))


def test_an_interrupted_fill_is_named_as_such(tmp_path: Path) -> None:
    keys = sw.WKeys(os.urandom(32))
    before = sw.w_file_v2(keys.kc, b"x" * 4096 + bytes(3 * 4096) + b"y", sparse=True)
    header, kf = before[:40], sw.w_hkdf(keys.kc, before[8:40], b"vaultfs/v1/file-key", 32)
    header_aad = header[:7] + b"\x00" + header[8:]
    filled = sw.w_seal(kf, b"z" * 4096, header_aad + (2).to_bytes(8, "big") + b"\x00" + (1).to_bytes(8, "big"))
    crashed = before[: 40 + 2 * 4124] + filled + before[40 + 3 * 4124:]  # block 4 still says the run began at 1
    with pytest.raises(idec.InterruptedFill):
        idec.decrypt_content_v2(crashed, idec.Keys.derive(keys.mk))


def test_a_special_entry_under_a_file_name_and_the_reverse_are_refused(v2_copy: tuple[Path, sw.WKeys]) -> None:
    backing, keys = v2_copy
    link = sw.backing_path(backing, keys, "/link", 2)
    os.rename(link, link.with_suffix(".vfs"))
    with pytest.raises(idec.IntegrityError, match="symlink under a file name"):
        idec.open_vault(backing, password=PASSWORD).walk()


def test_a_backing_symlink_in_a_version_2_vault_is_refused(v2_copy: tuple[Path, sw.WKeys]) -> None:
    backing, keys = v2_copy
    name, _ = sw.w_name(keys.kn, keys.root_id, "planted", 2)
    os.symlink("/etc/passwd", backing / name)
    with pytest.raises(idec.IntegrityError, match="only regular files and directories"):
        idec.open_vault(backing, password=PASSWORD).walk()
