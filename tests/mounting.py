"""Helpers for the mounted tests: the real CLI in subprocesses, real FUSE mounts.

Every mount made here is unmounted in a ``finally`` (``vaultfs lock``, ``lock
--force`` if something was left open, then ``fusermount3 -uz`` if that failed);
conftest fails the session if a vaultfs FUSE mount is left behind anyway.  A locked
mountpoint is sealed (immutable for root), so every mountpoint made here is released
after the test (``release_seals``), or pytest could not delete its temp dirs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VAULTFS = os.path.join(sys.prefix, "bin", "vaultfs")
PASSWORD = "correct horse battery staple"
# Cheap argon2id for the suite (it mounts hundreds of times), asked for explicitly on the command line:
# the shipped CLI obeys no environment switch for this.
WEAK_KDF = ["--kdf-memory-kib", "1024", "--kdf-time", "1", "--kdf-parallelism", "1", "--insecure-kdf-for-tests"]


def env() -> dict[str, str]:
    """The environment of CLI subprocesses: the test process's own, nothing added."""
    return dict(os.environ)


def vaultfs(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; output captured as text."""
    result = subprocess.run(
        [VAULTFS, *args], capture_output=True, text=True, timeout=timeout, env=env(), check=False, **kw
    )
    if check and result.returncode != 0:
        raise AssertionError(f"vaultfs {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def vaultfs_mounts() -> list[str]:
    """Mountpoints of every vaultfs FUSE mount in this namespace."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "fuse.vaultfs":
                found.append(fields[4].replace("\\040", " "))
    return found


def force_unmount(mountpoint: str | Path) -> None:
    subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, check=False)


_MOUNTPOINTS: list[Path] = []  # every mountpoint a test made; their seals are released after it


def track_mountpoint(mountpoint: Path) -> Path:
    _MOUNTPOINTS.append(mountpoint)
    return mountpoint


def release_seals(everything: bool = False) -> None:
    """Take the seal off every tracked mountpoint that is no longer mounted."""
    from vaultfs.fuse import seal

    for mountpoint in list(_MOUNTPOINTS):
        if str(mountpoint) in vaultfs_mounts() and not everything:
            continue
        if mountpoint.exists():
            seal.release(str(mountpoint))
        _MOUNTPOINTS.remove(mountpoint)


@dataclass
class Vault:
    """One vault on disk: backing dir, mountpoint, password file, daemon log."""

    backing: Path
    mnt: Path
    passfile: Path
    logfile: Path

    def __post_init__(self) -> None:
        track_mountpoint(self.mnt)

    @classmethod
    def create(cls, root: Path) -> Vault:
        root.mkdir(parents=True, exist_ok=True)
        vault = cls(root / "cloud", root / "mnt", root / "pass", root / "daemon.log")
        vault.passfile.write_text(PASSWORD + "\n")
        vault.mnt.mkdir()
        vaultfs("init", str(vault.backing), "--passfile", str(vault.passfile), *WEAK_KDF)
        return vault

    def mount(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return vaultfs(
            "mount", str(self.backing), str(self.mnt), "--passfile", str(self.passfile),
            "--log", str(self.logfile), *extra, check=check,
        )  # fmt: skip

    def mount_at(self, mountpoint: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Mount this vault somewhere else too (the second mount is expected to be refused)."""
        return vaultfs("mount", str(self.backing), str(mountpoint), "--passfile", str(self.passfile),
                       *extra, check=check)

    def lock(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return vaultfs("lock", str(self.mnt), *extra, check=check)

    def remount(self, *extra: str) -> None:
        self.lock()
        self.mount(*extra)

    def is_mounted(self) -> bool:
        return str(self.mnt) in vaultfs_mounts()

    def log_problems(self) -> list[str]:
        """ERROR/CRITICAL records and tracebacks the daemon logged (warnings fail tests)."""
        if not self.logfile.exists():
            return []
        bad = ("ERROR", "CRITICAL", "Traceback", "WARNING")
        return [line for line in self.logfile.read_text().splitlines() if any(b in line for b in bad)]


@contextmanager
def mounted(vault: Vault, *extra: str) -> Iterator[Vault]:
    """Mount, yield, and always unmount (lock; lazy fusermount as the last resort)."""
    vault.mount(*extra)
    try:
        yield vault
    finally:
        try:
            if vault.is_mounted():
                vault.lock(check=False)
            if vault.is_mounted():  # a file left open: cut it off
                vault.lock("--force", check=False)
        finally:
            if vault.is_mounted():
                force_unmount(vault.mnt)


def scan_backing(backing: Path, needles: Iterable[str | bytes]) -> list[str]:
    """Every place in the backing dir where a plaintext name or content shows up."""
    wanted = [n.encode() if isinstance(n, str) else n for n in needles]
    wanted = [n for n in wanted if len(n) >= 4]
    hits = []
    for dirpath, dirnames, filenames in os.walk(backing):
        for name in dirnames + filenames:
            raw = name.encode("utf-8", "surrogateescape")
            hits += [f"name {dirpath}/{name} contains {n!r}" for n in wanted if n in raw]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                data = os.readlink(path).encode("utf-8", "surrogateescape")
            else:
                with open(path, "rb") as f:
                    data = f.read()
            hits += [f"content of {path} contains {n[:40]!r}" for n in wanted if n in data]
    return hits


def tree_strings(root: Path, min_len: int = 8) -> set[bytes]:
    """Names and content samples of a plaintext tree, to look for in the backing dir."""
    found: set[bytes] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if len(name) >= 6:
                found.add(name.encode())
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read(1 << 16)
            # A sample from the middle of each file: long enough to never occur by chance.
            if len(data) >= min_len * 4:
                mid = len(data) // 2
                found.add(data[mid : mid + 32])
    return found


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def backing_path(vault: Vault, path: str) -> Path:
    """The backing entry of a vault path, computed with the Python API beside the daemon."""
    from vaultfs.vault import Vault as ApiVault

    reader = ApiVault.unlock(str(vault.backing), PASSWORD, read_only=True)
    try:
        return Path(reader.locate(path).path)
    finally:
        reader.close()


NOBODY = (65534, 65534)  # an unprivileged uid/gid for tests that act as another user


def as_user(who: tuple[int, int], *cmd: str, groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a command as another uid/gid (setpriv), output captured; never raises on failure."""
    uid, gid = who
    supplementary = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", *supplementary, *cmd],
                          capture_output=True, text=True, check=False)
