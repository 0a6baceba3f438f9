"""Vaults with a small chat backup in them, and ways to compare them, for the remote tests."""

from __future__ import annotations

import filecmp
import os
import random
import shutil
from pathlib import Path

from tests.conftest import PASSWORD, VaultDir, write_file, write_passfile
from vaultfs.format.keyfile import TEST_KDF
from vaultfs.vault import Vault, init_vault

# Planted in names and contents: none of them may ever reach a server in the clear.
MARKERS = ("PLANTED-NAME-Hochzeitsfotos", "PLANTED-CONTENT-7f3a9c-do-not-leak")


def make_vault(root: Path, seed: int = 1, media: int = 12) -> VaultDir:
    """A vault holding a small chat backup: a database, media files, a long name, markers."""
    root.mkdir(parents=True, exist_ok=True)
    backing = root / "backing"
    key = init_vault(str(backing), PASSWORD, TEST_KDF)
    vault_dir = VaultDir(backing, PASSWORD, key, write_passfile(root / "pass", PASSWORD))
    rng = random.Random(seed)
    vault = vault_dir.unlock()
    try:
        vault.mkdir("/Databases", 0o755)
        vault.mkdir("/Media", 0o755)
        vault.mkdir(f"/Media/{MARKERS[0]}", 0o755)
        write_file(vault, "/Databases/msgstore.db", rng.randbytes(150_000) + MARKERS[1].encode() * 4)
        for n in range(media):
            write_file(vault, f"/Media/{MARKERS[0]}/IMG-{n:04d}.jpg", rng.randbytes(rng.randrange(1, 40_000)))
        write_file(vault, "/Media/" + "long-name-" * 20 + ".txt", MARKERS[1].encode())
        write_file(vault, "/empty.txt", b"")
        vault.symlink("Databases/msgstore.db", "/latest.db")
    finally:
        vault.close()
    return vault_dir


def edit(vault_dir: VaultDir, path: str, data: bytes) -> None:
    vault = vault_dir.unlock()
    try:
        write_file(vault, path, data)
    finally:
        vault.close()


def rewrite_in_place(vault_dir: VaultDir, path: str, offset: int, data: bytes) -> None:
    """What SQLite does every night: pages overwritten, the file keeps its size."""
    vault = vault_dir.unlock()
    try:
        handle = vault.open(path, os.O_RDWR)
        try:
            handle.write(offset, data)
        finally:
            handle.close()
    finally:
        vault.close()


def read(backing: Path, path: str) -> bytes:
    vault = Vault.unlock(str(backing), PASSWORD, read_only=True)
    try:
        handle = vault.open(path, os.O_RDONLY)
        try:
            return handle.read(0, handle.size)
        finally:
            handle.close()
    finally:
        vault.close()


def same_tree(left: Path, right: Path) -> list[str]:
    """Differences between two plain trees, names and bytes (empty: identical)."""
    problems: list[str] = []
    compare = filecmp.dircmp(left, right)

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        problems.extend(f"only in {cmp.left}: {name}" for name in cmp.left_only)
        problems.extend(f"only in {cmp.right}: {name}" for name in cmp.right_only)
        for name in cmp.common_files:
            if (Path(cmp.left) / name).read_bytes() != (Path(cmp.right) / name).read_bytes():
                problems.append(f"differs: {prefix}{name}")
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(compare, "")
    return problems


def leaks(files: dict[str, bytes]) -> list[str]:
    """Planted markers found in a server's stored names or bytes."""
    found = []
    for path, data in files.items():
        for marker in MARKERS:
            if marker in path or marker.encode() in data:
                found.append(f"{marker} in {path}")
    return found


def backing_of(backing: Path, path: str) -> Path:
    """Where the vault path ``path`` lives (or would live) in a backing dir."""
    vault = Vault.unlock(str(backing), PASSWORD, read_only=True)
    try:
        return Path(vault.locate(path).path)
    finally:
        vault.close()


def read_copy(backing: Path, path: str, suffix: str, scratch: Path) -> bytes:
    """The plaintext of the conflict copy ``<backing name of path><suffix>``.

    Format v1 does not show bisync's copies yet (format v2 does): a scratch copy of the
    backing dir with that copy renamed back to the file's own name reads it.
    """
    shutil.copytree(backing, scratch, symlinks=True)
    own = backing_of(scratch, path)
    own.unlink(missing_ok=True)
    os.rename(str(own) + suffix, own)
    try:
        return read(scratch, path)
    finally:
        shutil.rmtree(scratch)
