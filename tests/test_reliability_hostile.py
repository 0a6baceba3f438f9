"""A hostile backing directory under a live mount: EIO or hidden, logged once, the daemon stays up."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.mounting import Vault, backing_path, mounted
from tests.reliability import daemon_pid
from vaultfs.fuse import state as mountstate

pytestmark = pytest.mark.slow


def test_hostile_entries_through_the_mount(new_vault: Vault, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loot").write_text("outside")
    with mounted(new_vault):
        mnt = new_vault.mnt
        (mnt / "good.txt").write_text("good")
        for name in ("hdr0", "hdr5", "hdr39", "hdr41", "hdr1m", "blocksize", "escape", "fifo"):
            (mnt / name).write_bytes(b"x" * 5000)
        (mnt / "dir").mkdir()
        (mnt / "dir" / "inside").write_text("in")
        (mnt / "nodirid").mkdir()
        (mnt / "nodirid" / "inside").write_text("its name decrypts under no directory once the ID is gone")
        (mnt / ("long" * 40)).write_text("long")
        # vandalise the backing directory behind the daemon's back
        for name, size in (("hdr0", 0), ("hdr5", 5), ("hdr39", 39), ("hdr41", 41), ("hdr1m", 1 << 20)):
            backing_path(new_vault, f"/{name}").write_bytes(os.urandom(size))
        path = backing_path(new_vault, "/blocksize")
        raw = bytearray(path.read_bytes())
        raw[5] = 16
        path.write_bytes(raw)
        path = backing_path(new_vault, "/escape")
        path.unlink()
        path.symlink_to(outside / "loot")
        path = backing_path(new_vault, "/fifo")
        path.unlink()
        os.mkfifo(path)
        (backing_path(new_vault, "/nodirid") / "vaultfs.dirid").unlink()
        moved = backing_path(new_vault, "/dir/inside")
        os.rename(moved, new_vault.backing / moved.name)  # decrypts only in /dir
        (new_vault.backing / "garbage name.vfs").write_text("junk")
        (new_vault.backing / "desktop.ini").write_text("junk")
        (sidecar,) = new_vault.backing.glob("*.vfn")
        with open(sidecar, "r+b") as handle:
            handle.truncate(2 << 30)

        for _ in range(3):
            listing = sorted(os.listdir(mnt))
        assert "good.txt" in listing and "garbage name.vfs" not in listing and "desktop.ini" not in listing
        assert "long" * 40 not in listing
        for name in ("hdr0", "hdr5", "hdr39", "hdr41", "hdr1m", "blocksize"):
            with pytest.raises(OSError) as info:
                (mnt / name).read_bytes()
            assert info.value.errno == errno.EIO, name
        with pytest.raises(OSError) as info:
            os.listdir(mnt / "nodirid")
        assert info.value.errno == errno.EIO
        with pytest.raises(OSError):
            (mnt / "escape").read_text()
        # Format v2 stores FIFOs as .vfx files: a backing FIFO planted under a valid name is
        # foreign, hidden like the planted symlink, never opened.
        assert "fifo" not in listing and "escape" not in listing
        for name in ("fifo", "escape"):
            with pytest.raises(FileNotFoundError):
                os.lstat(mnt / name)
        assert os.listdir(mnt / "dir") == []
        assert (mnt / "good.txt").read_text() == "good"
        assert mountstate.process_start(daemon_pid(mnt)) is not None
        assert (outside / "loot").read_text() == "outside"
    log = new_vault.logfile.read_text()
    assert log.count("garbage name.vfs") == 1 and log.count("desktop.ini") == 1
    assert log.count(moved.name) == 1
    for name in ("fifo", "escape"):  # reported once each, as foreign entries
        assert log.count(backing_path(new_vault, f"/{name}").name) == 1, name
    assert "Traceback" not in log
