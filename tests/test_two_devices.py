"""Two devices on one cloud folder, synced by a real sync client: rclone bisync (issue 10 item 6).

Device A and device B each have a backing dir that ``rclone bisync`` (Debian's rclone 1.60: the first
run is ``--resync``; conflicts become ``..path1``/``..path2``) keeps in step with a third folder, the
cloud.  Through real FUSE mounts, before they sync: both edit the same file; both create the same new
directory with different files in it; A renames a directory while B writes into it (a new file, and
an edit of one that was there); A deletes a file that B edits.  After the sync both devices mount and
see the same tree with every version (the other version of a conflict under the client's words),
nothing is lost, ``fsck`` is clean on each and lists exactly the conflicts waiting, and an ``export``
on a third machine from the cloud folder alone shows the same tree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.mounting import PASSWORD, Vault, mounted, vaultfs

pytestmark = [pytest.mark.mount, pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")]


class Devices:
    """Two devices' vaults (same vault, own backing dirs) and the cloud folder they sync with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cloud = root / "cloud"
        self.a = Vault.create(root / "a")  # A made the vault; B gets it from the cloud
        self.b = Vault(root / "b" / "cloud", root / "b" / "mnt", root / "b" / "pass", root / "b" / "daemon.log")
        self.b.mnt.mkdir(parents=True)
        self.b.passfile.write_text(PASSWORD + "\n")
        self.cloud.mkdir()
        self.b.backing.mkdir()

    def bisync(self, device: Vault, *extra: str) -> None:
        workdir = device.backing.parent / "bisync"
        result = subprocess.run(["rclone", "bisync", str(device.backing), str(self.cloud), "--workdir", str(workdir),
                                 "--force", "--config", "/dev/null", "-v", *extra],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr

    def sync(self) -> None:
        """A with the cloud, B with the cloud, A again: afterwards all three folders hold the same."""
        for device in (self.a, self.b, self.a):
            self.bisync(device)


def tree(root: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """A plaintext tree as (kind, content or target) by relative path."""
    found: dict[str, tuple[str, bytes | str | None]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("symlink", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", None)
        else:
            found[rel] = ("file", path.read_bytes())
    return found


def fsck(vault: Vault) -> subprocess.CompletedProcess[str]:
    return vaultfs("fsck", str(vault.backing), "--passfile", str(vault.passfile), check=False)


def test_two_devices_with_rclone_bisync_see_every_version_and_lose_nothing(tmp_path: Path) -> None:
    devices = Devices(tmp_path)
    a, b = devices.a, devices.b
    with mounted(a):
        (a.mnt / "chats").mkdir()
        (a.mnt / "chats" / "msgstore.db").write_bytes(b"the database, as both devices had it")
        (a.mnt / "X").mkdir()
        (a.mnt / "X" / "old.txt").write_text("old, before anything happened")
        (a.mnt / "notes.txt").write_text("notes")
        os.symlink("chats/msgstore.db", a.mnt / "latest")
    devices.bisync(a, "--resync")
    devices.bisync(b, "--resync")
    assert tree(b.backing) == tree(a.backing), "B has the vault now"

    with mounted(a):  # before anyone syncs again
        (a.mnt / "chats" / "msgstore.db").write_bytes(b"A's version of the database")
        (a.mnt / "shared").mkdir()
        (a.mnt / "shared" / "from-a.txt").write_text("made on A")
        os.rename(a.mnt / "X", a.mnt / "Y")
        os.unlink(a.mnt / "notes.txt")
    with mounted(b):
        (b.mnt / "chats" / "msgstore.db").write_bytes(b"B's version of the database, longer")
        (b.mnt / "shared").mkdir()
        (b.mnt / "shared" / "from-b.txt").write_text("made on B")
        (b.mnt / "X" / "new.txt").write_text("written on B into X")
        (b.mnt / "X" / "old.txt").write_text("old, edited on B")
        (b.mnt / "notes.txt").write_text("notes, edited on B")
    devices.sync()
    assert not [p for p in devices.cloud.rglob("*") if not (p.is_file() or p.is_dir()) or p.is_symlink()]

    expected = {
        "chats": ("dir", None),
        "chats/msgstore.db": ("file", b"B's version of the database, longer"),  # bisync's ..path1: B's
        "chats/msgstore (conflict path2).db": ("file", b"A's version of the database"),
        "latest": ("symlink", "chats/msgstore.db"),
        "notes.txt": ("file", b"notes, edited on B"),
        "shared": ("dir", None),
        "shared/from-a.txt": ("file", b"made on A"),
        "shared/from-b.txt": ("file", b"made on B"),
        "Y": ("dir", None),
        "Y/old.txt": ("file", b"old, before anything happened"),
        "Y/old (conflict moved).txt": ("file", b"old, edited on B"),
        "Y/new.txt": ("file", b"written on B into X"),
    }
    views = {}
    for device in (a, b):
        with mounted(device):
            with contextlib.suppress(FileNotFoundError):  # the old place came back holding only B's
                os.listdir(device.mnt / "X")  # writes: taken in by /Y as it is read
            views[device.backing] = tree(device.mnt)
        assert views[device.backing] == expected, device.backing
        log = device.logfile.read_text()
        assert "merged 2 directory IDs" in log and "/X: had no directory ID" in log and "Traceback" not in log
        assert not [line for line in device.log_problems() if "WARNING" not in line]
        device.logfile.write_text("")
        checked = fsck(device)
        assert checked.returncode == 0 and "0 problem(s)" in checked.stdout, checked.stdout + checked.stderr
        assert "2 sync conflict(s) waiting" in checked.stdout
        for line in ("/chats/msgstore (conflict path2).db: a version of /chats/msgstore.db",
                     "/Y/old (conflict moved).txt: a version of /Y/old.txt"):
            assert line in checked.stdout, checked.stdout

    devices.sync()  # what the devices' mounts resolved goes to the cloud as well
    third = tmp_path / "third"
    shutil.copytree(devices.cloud, third / "cloud")  # a new machine: the cloud folder and the password only
    (third / "pass").write_text(PASSWORD + "\n")
    vaultfs("export", str(third / "cloud"), str(third / "restored"), "--passfile", str(third / "pass"))
    assert tree(third / "restored") == expected
    with mounted(a):  # and the devices still agree after the second round
        assert tree(a.mnt) == expected
    a.logfile.write_text("")
