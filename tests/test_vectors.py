"""The committed vector vaults keep their recorded trees (borg test_format_is_stable).

Format v1: version-2 readers refuse it with the upgrade hint; after `vaultfs upgrade` (the real CLI)
both vaultfs's format layer and the independent decrypter read back every file, the symlink and every
name.  Format v2 (written by the version-2 Vault): the Vault, the CLI's export, vaultfs's format layer
and the independent decrypter all read it to its recorded tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests import format_walk
from tests import independent_decrypter as idec
from tests.conftest import run_cli, write_passfile
from tests.mounting import vaultfs_mounts
from vaultfs.errors import NeedsUpgrade
from vaultfs.format import recovery
from vaultfs.vault import Vault

VECTORS = Path(__file__).resolve().parent / "vectors"
DESCRIPTION = json.loads((VECTORS / "v1.json").read_text(encoding="utf-8"))
V2 = json.loads((VECTORS / "v2.json").read_text(encoding="utf-8"))


def as_tree(entries: dict[str, idec.Entry]) -> dict[str, dict[str, object]]:
    """The shape of v1.json: type, and size and sha256 of files, target of symlinks."""
    tree: dict[str, dict[str, object]] = {}
    for path, entry in entries.items():
        if entry.kind == "file":
            assert entry.content is not None
            tree[path] = {"type": "file", "size": len(entry.content),
                          "sha256": hashlib.sha256(entry.content).hexdigest()}
        elif entry.kind == "symlink":
            tree[path] = {"type": "symlink", "target": entry.target}
        elif entry.kind in ("chardev", "blockdev"):
            tree[path] = {"type": entry.kind, "rdev": entry.rdev}
        else:
            tree[path] = {"type": entry.kind}
    return tree


@pytest.fixture
def vector_copy(tmp_path: Path) -> Path:
    """A writable copy, so no test can change the committed vectors."""
    target = tmp_path / "v1"
    shutil.copytree(VECTORS / "v1", target, symlinks=True)
    return target


def test_a_version_1_vault_is_refused_with_the_upgrade_hint(vector_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(NeedsUpgrade, match="vaultfs upgrade"):
        Vault.unlock(str(vector_copy), DESCRIPTION["password"], read_only=True)
    with pytest.raises(NeedsUpgrade):
        Vault.unlock_with_master_key(str(vector_copy), recovery.decode(DESCRIPTION["recovery_key"]))
    passfile = write_passfile(tmp_path / "pw", DESCRIPTION["password"])
    (tmp_path / "mnt").mkdir()
    for args in (["ls", str(vector_copy)], ["export", str(vector_copy), str(tmp_path / "out")],
                 ["fsck", str(vector_copy)], ["mount", str(vector_copy), str(tmp_path / "mnt")]):
        result = run_cli(*args, "--passfile", str(passfile))
        assert result.returncode == 20, (args, result.stderr)
        assert f"vaultfs upgrade {vector_copy}" in result.stderr and "Traceback" not in result.stderr
    assert not any((tmp_path / "mnt").iterdir()) and str(tmp_path) not in " ".join(vaultfs_mounts())
    info = run_cli("info", str(vector_copy))
    assert info.returncode == 0 and "version 1 (run `vaultfs upgrade`" in info.stdout


def test_the_vector_vault_upgrades_and_reads_back_its_tree(vector_copy: Path, tmp_path: Path) -> None:
    passfile = write_passfile(tmp_path / "pw", DESCRIPTION["password"])
    result = run_cli("upgrade", str(vector_copy), "--passfile", str(passfile))
    assert result.returncode == 0, result.stderr
    assert "upgraded" in result.stdout and "1 symlinks" in result.stdout
    keys = format_walk.unlock(vector_copy, DESCRIPTION["password"])
    assert as_tree(format_walk.walk_v2(vector_copy, keys)) == DESCRIPTION["tree"]
    assert as_tree(idec.open_vault(vector_copy, password=DESCRIPTION["password"]).walk()) == DESCRIPTION["tree"]
    by_key = idec.open_vault(vector_copy, recovery_key=DESCRIPTION["recovery_key"])
    assert as_tree(by_key.walk()) == DESCRIPTION["tree"]
    assert not [p for p in vector_copy.rglob("*") if p.is_symlink()], "the symlink became a .vfx file"
    for read_only in (True, False):  # and the version-2 Vault reads what upgrade wrote
        vault = Vault.unlock(str(vector_copy), DESCRIPTION["password"], read_only=read_only)
        try:
            assert vault_tree(vault) == DESCRIPTION["tree"]
        finally:
            vault.close()
    again = run_cli("upgrade", str(vector_copy), "--passfile", str(passfile))
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_vector_tree_covers_the_format(vector_copy: Path) -> None:
    tree = DESCRIPTION["tree"]
    kinds = {entry["type"] for entry in tree.values()}
    assert kinds == {"file", "dir", "symlink"}
    sizes = {entry["size"] for entry in tree.values() if entry["type"] == "file"}
    assert {0, 4096} <= sizes
    assert any(len(path.rsplit("/", 1)[1].encode()) > 111 for path in tree)  # a long name
    assert list(vector_copy.rglob("*.vfl")) and list(vector_copy.rglob("*.vfn"))
    assert json.loads((vector_copy / "vaultfs.conf").read_text())["version"] == 1


# ---------------------------------------------------------------- format version 2


def vault_tree(vault: Vault, top: str = "/") -> dict[str, dict[str, object]]:
    """The v2.json shape of a tree read through the Vault API."""
    tree: dict[str, dict[str, object]] = {}
    for name, attr in vault.listdir(top):
        path = top.rstrip("/") + "/" + name
        if stat.S_ISDIR(attr.st_mode):
            tree[path] = {"type": "dir"}
            tree.update(vault_tree(vault, path))
        elif stat.S_ISLNK(attr.st_mode):
            tree[path] = {"type": "symlink", "target": vault.readlink(path)}
        elif stat.S_ISFIFO(attr.st_mode):
            tree[path] = {"type": "fifo"}
        elif stat.S_ISCHR(attr.st_mode):
            tree[path] = {"type": "chardev", "rdev": attr.st_rdev}
        else:
            handle = vault.open(path, os.O_RDONLY)
            data = handle.read(0, handle.size)
            handle.close()
            tree[path] = {"type": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return tree


def test_the_version_2_vectors_read_back_with_every_reader(tmp_path: Path) -> None:
    copy = tmp_path / "v2"
    shutil.copytree(VECTORS / "v2", copy)
    expected = V2["tree"]
    vault = Vault.unlock(str(copy), V2["password"], read_only=True)
    try:
        assert vault_tree(vault) == expected
    finally:
        vault.close()
    assert as_tree(format_walk.walk_v2(copy, format_walk.unlock(copy, V2["password"]))) == expected
    assert as_tree(idec.open_vault(copy, password=V2["password"]).walk()) == expected
    assert as_tree(idec.open_vault(copy, recovery_key=V2["recovery_key"]).walk()) == expected
    passfile = write_passfile(tmp_path / "pw", V2["password"])
    checked = run_cli("fsck", str(copy), "--passfile", str(passfile))
    assert checked.returncode == 0 and "0 problem(s)" in checked.stdout, checked.stdout + checked.stderr


def test_version_2_vector_tree_covers_the_format() -> None:
    tree = V2["tree"]
    assert {entry["type"] for entry in tree.values()} == {"file", "dir", "symlink", "fifo", "chardev"}
    assert any(len(path.rsplit("/", 1)[1].encode()) > 111 for path in tree)  # a long name
    assert "/chats/Résumé café.txt" in tree and "/chats/Re\u0301sume\u0301 cafe\u0301.txt" in tree  # NFC, NFD
    sparse = sorted(VECTORS.joinpath("v2").glob("*.vfs"), key=lambda p: p.stat().st_size)[-1].read_bytes()
    assert sparse[7] == 1 and sparse.count(bytes(4124)) > 100, "a sparse file, with holes as zeros"
    assert not [p for p in VECTORS.joinpath("v2").rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())]
    assert json.loads((VECTORS / "v2" / "vaultfs.conf").read_text())["version"] == 2
