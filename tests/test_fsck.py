"""fsck finds every planted fault with its path, is clean on an untouched vault, repairs only safe things."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import VaultDir, read_file, run_cli, write_file
from vaultfs.format import blocks
from vaultfs.vault import Vault


def backing_of(vault: Vault, path: str) -> Path:
    return Path(vault.locate(path).path)


@pytest.fixture
def populated(vault_dir: VaultDir) -> VaultDir:
    vault = vault_dir.unlock()
    vault.mkdir("/chats", 0o755)
    vault.mkdir("/chats/media", 0o755)
    write_file(vault, "/chats/msgstore.db", os.urandom(3 * 4096 + 100))
    write_file(vault, "/chats/media/photo.jpg", os.urandom(9000))
    write_file(vault, "/chats/media/" + "long" * 40 + ".jpg", os.urandom(5000))
    write_file(vault, "/empty", b"")
    vault.symlink("chats/msgstore.db", "/latest")
    vault.close()
    return vault_dir


def fsck(vault_dir: VaultDir, *extra: str):
    return run_cli("fsck", str(vault_dir.path), "--passfile", str(vault_dir.passfile), *extra)


def test_clean_vault_is_clean(populated: VaultDir) -> None:
    result = fsck(populated)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout
    assert re.search(r"checked 3 directories, 4 files", result.stdout)


def plant(vault_dir: VaultDir, fault: str) -> str:
    """Plant one fault; return the plaintext path (or marker) fsck must name."""
    vault = vault_dir.unlock()
    try:
        if fault == "flipped-byte":
            path = backing_of(vault, "/chats/msgstore.db")
            raw = bytearray(path.read_bytes())
            raw[40 + 4124 + 100] ^= 1
            path.write_bytes(raw)
            return "block /chats/msgstore.db"
        if fault == "truncated":
            path = backing_of(vault, "/chats/media/photo.jpg")
            os.truncate(path, path.stat().st_size - 10)  # a plausible size: the last block no longer authenticates
            return "block /chats/media/photo.jpg"
        if fault == "swapped-blocks":
            path = backing_of(vault, "/chats/msgstore.db")
            raw = bytearray(path.read_bytes())
            a, b = raw[40:4164], raw[4164:8288]
            raw[40:4164], raw[4164:8288] = b, a
            path.write_bytes(raw)
            return "block /chats/msgstore.db"
        if fault == "torn-append":
            handle = vault.open("/chats/media/photo.jpg", os.O_RDWR)
            content = handle._file.content
            last = blocks.block_count(content.size) - 1
            plain = content._decrypt_block(last)
            os.pwrite(content.fd, content._seal(last, plain, False), blocks.block_offset(last))
            handle.close()
            return "torn-append /chats/media/photo.jpg"
        if fault == "deleted-dirid":
            (backing_of(vault, "/chats/media") / "vaultfs.dirid").unlink()
            return "dir-id /chats/media"
        if fault == "replaced-dirid":
            media = backing_of(vault, "/chats/media")
            (media / "vaultfs.dirid").write_bytes(os.urandom(44))
            return "dir-id /chats/media"
        if fault == "broken-sidecar":
            (sidecar,) = backing_of(vault, "/chats/media").glob("*.vfn")
            sidecar.write_text("nonsense")
            return "long-name-sidecar"
        if fault == "edited-config":
            config = vault_dir.path / "vaultfs.conf"
            document = json.loads(config.read_text())
            document["name_encoding"] = "AES-SIV+base32"
            document["mac"] = "ab" * 32
            config.write_text(json.dumps(document))
            return "config"
        raise AssertionError(fault)
    finally:
        vault.close()


@pytest.mark.parametrize("fault", ["flipped-byte", "truncated", "swapped-blocks", "torn-append", "deleted-dirid",
                                   "replaced-dirid", "broken-sidecar", "edited-config"])
def test_each_planted_fault_is_found_with_its_path(populated: VaultDir, fault: str) -> None:
    expected = plant(populated, fault)
    result = fsck(populated)
    assert result.returncode == 12, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
                if line.startswith("PROBLEM")]
    assert len(problems) == 1, problems
    kind, _, path = expected.partition(" ")
    assert problems[0].startswith(f"PROBLEM {kind}:"), problems
    assert path in problems[0]
    assert "[backing: " in problems[0]
    assert "1 problem(s), 0 repaired, 1 remaining" in result.stdout


def test_repair_accepting_truncation_fixes_torn_append_and_orphan_sidecar_and_nothing_else(populated: VaultDir) -> None:
    plant(populated, "torn-append")
    plant(populated, "flipped-byte")
    media = populated.path
    orphan = next(populated.path.rglob("*.vfn")).with_name("a" * 52 + ".vfn")
    orphan.write_text("orphan")
    before = {p: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    result = fsck(populated, "--repair", "--accept-truncated")
    assert result.returncode == 12, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "REPAIRED torn-append: /chats/media/photo.jpg" in output
    assert "REPAIRED orphan-sidecar" in output
    assert "PROBLEM block: /chats/msgstore.db" in output
    after = {p: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    changed = {p for p in before if before[p] != after.get(p)}
    assert {p.name for p in changed} == {backing_of_name(populated, "/chats/media/photo.jpg"), orphan.name}
    assert not orphan.exists()
    vault = populated.unlock()
    assert len(read_file(vault, "/chats/media/photo.jpg")) == 9000
    vault.close()
    again = fsck(populated)
    assert "1 problem(s)" in again.stdout and "PROBLEM block" in again.stdout + again.stderr


def backing_of_name(vault_dir: VaultDir, path: str) -> str:
    vault = vault_dir.unlock()
    try:
        return backing_of(vault, path).name
    finally:
        vault.close()


def test_staging_leftovers_are_reported_and_removed(populated: VaultDir) -> None:
    vault = populated.unlock()
    handle, staged = vault.create_staged("/chats/partial", 0o644)
    handle.write(0, b"half")
    handle.close()
    assert "partial" not in [n for n, _ in vault.listdir("/chats")]
    vault.close()
    result = fsck(populated, "--repair")
    assert "REPAIRED staging-leftover" in result.stdout + result.stderr
    assert result.returncode == 0
    assert not os.path.exists(staged.path)
