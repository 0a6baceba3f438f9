#!/usr/bin/env python3
"""A stand-in for the messaging app: it keeps its data in APP_DIR/live and backs it up.

The backup is written with ordinary file I/O into BACKUP_DIR, exactly as such apps do
into a plain folder: the message database through SQLite's own backup API (page
writes, journal, fsync) and the media tree with plain open/write/close.  The app
writes the same backup into APP_DIR/copy as its own reference copy.  Nothing here
knows about vaultfs.

    demo_app.py APP_DIR BACKUP_DIR [--messages N] [--media N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
from pathlib import Path

PHRASES = [
    "Meet me at the old lighthouse at midnight",
    "The spare key is under the blue flowerpot",
    "Bank PIN reminder: ask Grandma, not me",
    "Happy birthday! The surprise party is on Saturday",
    "Did you get the documents from the notary?",
]


def make_app_data(app: Path, messages: int, media: int, rng: random.Random) -> None:
    """The app's own data: a message database and a Media/ tree of 10 KiB..2 MiB files."""
    app.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(app / "msgstore.db")
    with con:
        con.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, chat TEXT, body TEXT, ts INTEGER)")
        con.executemany(
            "INSERT INTO messages (chat, body, ts) VALUES (?, ?, ?)",
            ((f"chat-{i % 7}", f"{rng.choice(PHRASES)} (#{i})", 1_700_000_000 + i) for i in range(messages)),
        )
    con.close()
    kinds = [("Images", "IMG", ".jpg"), ("Video", "VID", ".mp4"), ("Voice Notes", "PTT", ".opus")]
    for i in range(media):
        folder, prefix, ext = kinds[i % len(kinds)]
        path = app / "Media" / folder / f"{prefix}-20240101-WA{i:04d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(10 * 1024, 2 * 1024 * 1024)))


def back_up(app: Path, backup: Path) -> None:
    """The nightly backup, written into the backup folder with ordinary file I/O."""
    src = sqlite3.connect(app / "msgstore.db")
    dst = sqlite3.connect(backup / "msgstore.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    for path in sorted((app / "Media").rglob("*")):
        target = backup / path.relative_to(app)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout, 256 * 1024)
            fout.flush()
            os.fsync(fout.fileno())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("app", type=Path)
    ap.add_argument("backup", type=Path)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--media", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2024)
    a = ap.parse_args()
    make_app_data(a.app / "live", a.messages, a.media, random.Random(a.seed))
    (a.app / "copy").mkdir()
    back_up(a.app / "live", a.app / "copy")
    back_up(a.app / "live", a.backup)
    total = sum(p.stat().st_size for p in a.backup.rglob("*") if p.is_file())
    print(f"app: backed up {a.messages} messages and {a.media} media files ({total / 2**20:.1f} MiB) to {a.backup}")


if __name__ == "__main__":
    main()
