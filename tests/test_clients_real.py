"""Real, unmodified clients on a mount: SQLite, git, tar, cp -a.

After each workload the backing dir is scanned: none of the plaintext names or
contents that were written may appear in any backing name, file or symlink target.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.mounting import Vault, have, scan_backing, tree_strings

ROWS = 50_000


def make_tree(root: Path) -> None:
    """A small tree with unicode names, symlinks, hard links, an empty file and dir."""
    (root / "Media" / "Images").mkdir(parents=True)
    (root / "Media" / "Voice Notes ✓").mkdir(parents=True)
    (root / "empty dir").mkdir()
    for i in range(40):
        data = (f"attachment-{i}-payload " * (i * 37 + 3)).encode()
        (root / "Media" / "Images" / f"IMG-2024-{i:04d}.jpg").write_bytes(data)
    (root / "Media" / "Voice Notes ✓" / "PTT-unicode-näme.opus").write_bytes(os.urandom(200_000))
    (root / "empty-file.txt").write_bytes(b"")
    (root / "notes-plaintext.txt").write_text("meet at the secret-rendezvous-point at dawn\n" * 50)
    os.symlink("Media/Images/IMG-2024-0001.jpg", root / "latest-image-link")
    os.symlink("does-not-exist-dangling", root / "dangling-link")
    os.link(root / "notes-plaintext.txt", root / "notes-hardlink.txt")
    os.chmod(root / "notes-plaintext.txt", 0o640)


def diff(a: Path, b: Path) -> None:
    result = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def assert_no_plaintext(vault: Vault, needles) -> None:
    hits = scan_backing(vault.backing, needles)
    assert not hits, hits[:10]


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite_50000_rows_survive_remount(mounted_vault: Vault, journal: str) -> None:
    db = mounted_vault.mnt / "msgstore.db"
    con = sqlite3.connect(db)
    try:
        assert con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
        con.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, chat TEXT, body TEXT, ts INTEGER)")
        con.execute("CREATE INDEX by_chat ON messages(chat, ts)")
        for start in range(0, ROWS, 5000):
            with con:
                con.executemany(
                    "INSERT INTO messages (chat, body, ts) VALUES (?, ?, ?)",
                    ((f"chat-{i % 97}", f"confidential-message-body-{i:06d}", i) for i in range(start, start + 5000)),
                )
        with con:
            con.execute("UPDATE messages SET body = body || '-edited' WHERE id % 10 = 0")
            con.execute("DELETE FROM messages WHERE id % 13 = 0")
        expected = con.execute("SELECT count(*), sum(length(body)) FROM messages").fetchone()
    finally:
        con.close()
    mounted_vault.remount()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*), sum(length(body)) FROM messages").fetchone() == expected
        assert con.execute("SELECT body FROM messages WHERE id = 20").fetchone()[0] == (
            "confidential-message-body-000019-edited"
        )
    finally:
        con.close()
    assert_no_plaintext(mounted_vault, [b"confidential-message-body", b"msgstore", b"chat-42", b"SQLite format"])


@pytest.mark.skipif(not have("git"), reason="git not installed")
def test_git_init_commit_fsck(mounted_vault: Vault, tmp_path: Path) -> None:
    repo = mounted_vault.mnt / "repo"
    make_tree(tmp_path / "src")
    subprocess.run(["cp", "-a", str(tmp_path / "src"), str(repo)], check=True)
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@e", "HOME": str(tmp_path)}  # fmt: skip

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              env=git_env).stdout  # fmt: skip

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "first commit with secret-commit-message")
    (repo / "notes-plaintext.txt").write_text("changed\n")
    git("commit", "-q", "-am", "second")
    git("gc", "-q")
    git("fsck", "--full", "--strict")
    assert "secret-commit-message" in git("log", "--format=%s")
    assert git("status", "--porcelain") == ""
    assert_no_plaintext(mounted_vault, [b"secret-commit-message", b"IMG-2024-0001", b"refs/heads", b"HEAD"])


def test_tar_extract_and_cp_a_then_diff(mounted_vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="src")
    dest = mounted_vault.mnt / "untarred"
    dest.mkdir()
    subprocess.run(["tar", "-xpf", str(archive), "-C", str(dest)], check=True)
    diff(src, dest / "src")
    subprocess.run(["cp", "-a", str(src), str(mounted_vault.mnt / "copied")], check=True)
    diff(src, mounted_vault.mnt / "copied")
    copied = mounted_vault.mnt / "copied"
    assert os.stat(copied / "notes-plaintext.txt").st_ino == os.stat(copied / "notes-hardlink.txt").st_ino
    assert os.readlink(copied / "latest-image-link") == "Media/Images/IMG-2024-0001.jpg"
    # and back out again, through a remount
    mounted_vault.remount()
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(copied), str(out)], check=True)
    diff(src, out)
    assert_no_plaintext(mounted_vault, tree_strings(src) | {b"secret-rendezvous-point", b"Media/Images"})
