"""The committed format-v1 vault keeps its recorded tree through `vaultfs upgrade` (borg test_format_is_stable).

Version-2 readers refuse it with the upgrade hint; after `vaultfs upgrade` (the real CLI) both vaultfs's
format layer and the independent decrypter read back every file, the symlink and every name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
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
