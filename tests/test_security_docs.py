"""What the docs claim about tampering is what the format does (issue 11, items 7 and 11).

Blocks are bound to their file ID, index and is_last flag only, and an in-place write
keeps the file ID: restoring one block from an older version of the same file, or an
older last block that cuts the file back, authenticates.  The README and docs/format.md
must say so (as gocryptfs and Cryptomator accept it) instead of "any change is detected";
docs/security.md must name tests that exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import REPO, VaultDir, read_file, run_cli
from vaultfs.format import blocks
from vaultfs.vault import Vault

STORED = 4096 + blocks.BLOCK_OVERHEAD
H = blocks.HEADER_SIZE


def backing_file(vault: Vault, path: str) -> Path:
    return Path(vault.locate(path).path)


def write_at(vault: Vault, path: str, offset: int, data: bytes, create: bool = False) -> None:
    handle = vault.create(path, 0o644, os.O_RDWR) if create else vault.open(path, os.O_RDWR)
    try:
        handle.write(offset, data)
    finally:
        handle.close()


def test_an_older_block_of_the_same_file_is_accepted_as_the_docs_say(vault: Vault, vault_dir: VaultDir) -> None:
    old = os.urandom(3 * 4096)
    write_at(vault, "/chat.db", 0, old, create=True)
    path = backing_file(vault, "/chat.db")
    old_raw = path.read_bytes()
    new_block = os.urandom(4096)
    write_at(vault, "/chat.db", 4096, new_block)  # in place: same file ID
    new_raw = path.read_bytes()
    assert new_raw[:H] == old_raw[:H] and new_raw[H + STORED : H + 2 * STORED] != old_raw[H + STORED : H + 2 * STORED]
    path.write_bytes(new_raw[: H + STORED] + old_raw[H + STORED : H + 2 * STORED] + new_raw[H + 2 * STORED :])
    assert read_file(vault, "/chat.db") == old  # the older block reads back: no error
    fsck = run_cli("fsck", str(vault_dir.path), "--passfile", str(vault_dir.passfile))
    assert fsck.returncode == 0 and "0 problem(s)" in fsck.stdout, fsck.stdout


def test_an_older_last_block_cuts_the_file_back_unnoticed(vault: Vault) -> None:
    first = os.urandom(4096 + 100)
    write_at(vault, "/chat.db", 0, first, create=True)
    path = backing_file(vault, "/chat.db")
    old_raw = path.read_bytes()  # block 1 is the last one, 100 bytes
    write_at(vault, "/chat.db", 0, b"N" * 4096)
    write_at(vault, "/chat.db", len(first), os.urandom(3 * 4096))  # appended: block 1 re-marked "not last"
    new_raw = path.read_bytes()
    path.write_bytes(new_raw[: H + STORED] + old_raw[H + STORED :])  # the new block 0, the old last block
    assert read_file(vault, "/chat.db") == b"N" * 4096 + first[4096:]


def text(name: str) -> str:
    return " ".join((REPO / name).read_text(encoding="utf-8").split())


def test_readme_and_format_spec_do_not_claim_more_than_the_format_gives() -> None:
    for name in ("README.md", "docs/format.md"):
        body = text(name)
        assert "any change to the stored data" not in body.lower(), name
        assert "older version of the same file" in body, name
        assert "gocryptfs" in body and "Cryptomator" in body, name
    readme = text("README.md")
    assert "master key" in readme and "rekey" in readme and "version history" in readme


def test_security_doc_names_only_tests_that_exist() -> None:
    body = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/test_\w+\.py)(?:::(\w+))?`", body)
    assert len(named) >= 20, named
    for module, function in named:
        source = (REPO / module).read_text(encoding="utf-8")
        if function:
            assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{module}::{function}"
