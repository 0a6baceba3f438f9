"""fsck --repair writes only what it can trust and loses nothing without being told (issue 11)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import VaultDir, read_file, run_cli, write_file
from vaultfs.format import blocks

STORED = 4096 + blocks.BLOCK_OVERHEAD


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``root``: its mode and, for files, its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_mode, path.read_bytes() if path.is_file() else None)
    return found


def fsck(vault_dir: VaultDir, *extra: str):
    return run_cli("fsck", str(vault_dir.path), "--passfile", str(vault_dir.passfile), *extra)


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip() and "below the floor" not in line]


def cut_file(vault_dir: VaultDir, size: int = 20_000, keep_blocks: int = 2) -> tuple[Path, bytes]:
    """A file cut exactly at a block boundary: the bytes a torn append leaves, too."""
    data = os.urandom(size)
    vault = vault_dir.unlock()
    try:
        write_file(vault, "/chat.db", data)
        path = Path(vault.locate("/chat.db").path)
    finally:
        vault.close()
    os.truncate(path, blocks.HEADER_SIZE + keep_blocks * STORED)
    return path, data


def test_repair_refuses_a_vault_whose_config_mac_fails_and_writes_nothing(vault_dir: VaultDir) -> None:
    cut_file(vault_dir)
    vault = vault_dir.unlock()
    try:
        handle, _ = vault.create_staged("/half", 0o644)  # a staging leftover --repair would delete
        handle.write(0, b"half")
        handle.close()
    finally:
        vault.close()
    config = vault_dir.path / "vaultfs.conf"
    document = json.loads(config.read_text())
    document["mac"] = "ab" * 32  # the slot still opens: only the MAC says the config was edited
    config.write_text(json.dumps(document))
    before = snapshot(vault_dir.path)
    result = fsck(vault_dir, "--repair", "--accept-truncated")
    assert result.returncode == 6, (result.stdout, result.stderr)
    (line,) = stderr_lines(result)
    assert "config MAC does not verify" in line and "--repair writes nothing" in line, line
    assert "REPAIRED" not in result.stdout + result.stderr
    assert snapshot(vault_dir.path) == before
    plain = fsck(vault_dir)  # without --repair it still lists what it finds
    assert plain.returncode == 12 and "PROBLEM config" in plain.stdout


def test_repair_alone_leaves_a_file_cut_at_a_block_boundary_as_it_is(vault_dir: VaultDir) -> None:
    path, _ = cut_file(vault_dir)
    before = path.read_bytes()
    result = fsck(vault_dir, "--repair")
    assert result.returncode == 12, (result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert "PROBLEM torn-append: /chat.db" in output and "--accept-truncated" in output and "8,192" in output
    assert path.read_bytes() == before
    vault = vault_dir.unlock()
    try:
        assert vault.getattr("/chat.db").st_size == 8192
        try:
            read_file(vault, "/chat.db")
        except OSError as exc:
            assert exc.errno == 5
        else:
            raise AssertionError("a cut file must read as EIO until accepted")
    finally:
        vault.close()


def test_accept_truncated_says_which_file_and_how_much_is_kept_and_lost(vault_dir: VaultDir) -> None:
    _, data = cut_file(vault_dir)
    result = fsck(vault_dir, "--repair", "--accept-truncated")
    assert result.returncode == 0, (result.stdout, result.stderr)
    (line,) = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("REPAIRED")]
    assert line.startswith("REPAIRED torn-append: /chat.db [backing: ")
    assert "accepted at 8,192 bytes" in line and "lost: an unknown number of bytes after byte 8,192" in line
    assert "cut at a block boundary" in line and "crash during an append" in line
    vault = vault_dir.unlock()
    try:
        assert read_file(vault, "/chat.db") == data[:8192]
    finally:
        vault.close()


def test_accept_truncated_needs_repair(vault_dir: VaultDir) -> None:
    result = fsck(vault_dir, "--accept-truncated")
    assert result.returncode == 2 and "--accept-truncated only works with --repair" in result.stderr
