"""The committed format-v1 vault keeps decrypting to its recorded tree (borg test_format_is_stable)."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest

from tests.conftest import read_file
from vaultfs.format import recovery
from vaultfs.vault import Vault

VECTORS = Path(__file__).resolve().parent / "vectors"
DESCRIPTION = json.loads((VECTORS / "v1.json").read_text(encoding="utf-8"))


def walk(vault: Vault, path: str = "/") -> dict[str, dict[str, object]]:
    tree: dict[str, dict[str, object]] = {}
    for name, attr in vault.listdir(path):
        child = path.rstrip("/") + "/" + name
        if stat.S_ISDIR(attr.st_mode):
            tree[child] = {"type": "dir"}
            tree.update(walk(vault, child))
        elif stat.S_ISLNK(attr.st_mode):
            tree[child] = {"type": "symlink", "target": vault.readlink(child)}
        else:
            data = read_file(vault, child)
            assert attr.st_size == len(data)
            tree[child] = {"type": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return tree


@pytest.fixture
def vector_copy(tmp_path: Path) -> Path:
    """A writable copy, so no test can change the committed vectors."""
    target = tmp_path / "v1"
    shutil.copytree(VECTORS / "v1", target, symlinks=True)
    return target


def test_vector_vault_opens_with_its_password(vector_copy: Path) -> None:
    vault = Vault.unlock(str(vector_copy), DESCRIPTION["password"], read_only=True)
    assert walk(vault) == DESCRIPTION["tree"]
    vault.close()


def test_vector_vault_opens_with_its_recovery_key(vector_copy: Path) -> None:
    master_key = recovery.decode(DESCRIPTION["recovery_key"])
    vault = Vault.unlock_with_master_key(str(vector_copy), master_key, read_only=True)
    assert walk(vault) == DESCRIPTION["tree"]
    vault.close()


def test_vector_tree_covers_the_format(vector_copy: Path) -> None:
    tree = DESCRIPTION["tree"]
    kinds = {entry["type"] for entry in tree.values()}
    assert kinds == {"file", "dir", "symlink"}
    sizes = {entry["size"] for entry in tree.values() if entry["type"] == "file"}
    assert {0, 4096} <= sizes
    assert any(len(path.rsplit("/", 1)[1].encode()) > 111 for path in tree)  # a long name
    assert list(vector_copy.rglob("*.vfl")) and list(vector_copy.rglob("*.vfn"))
