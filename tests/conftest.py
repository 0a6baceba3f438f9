"""Shared fixtures: vaults with cheap KDF parameters, the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vaultfs.format.keyfile import TEST_KDF
from vaultfs.vault import Vault, init_vault

REPO = Path(__file__).resolve().parent.parent
VAULTFS_BIN = str(Path(sys.executable).with_name("vaultfs"))
PASSWORD = "test password ünïcode"


@dataclass
class VaultDir:
    """A freshly initialised backing directory and its secrets."""

    path: Path
    password: str
    recovery_key: str
    passfile: Path

    def unlock(self, **kwargs: object) -> Vault:
        return Vault.unlock(str(self.path), self.password, **kwargs)


# Verbs that set a password take these to stay cheap (see tests/mounting.py WEAK_KDF).
WEAK_KDF = ["--kdf-memory-kib", "1024", "--kdf-time", "1", "--kdf-parallelism", "1", "--insecure-kdf-for-tests"]


def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: the venv first on PATH; no password, no switch in it."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_cli(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``vaultfs`` console script; never raises on a non-zero exit."""
    return subprocess.run([VAULTFS_BIN, *args], input=input, capture_output=True, text=True,
                          env=cli_env(), timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


def without_test_kdf_warning(stderr: str | bytes) -> str:
    """stderr minus the one-line warning every unlock of a test vault prints (cheap KDF on purpose)."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    return "".join(line for line in text.splitlines(keepends=True) if "test-only argon2id parameters" not in line)


def write_passfile(path: Path, password: str) -> Path:
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def vault_dir(tmp_path: Path) -> VaultDir:
    backing = tmp_path / "backing"
    key = init_vault(str(backing), PASSWORD, TEST_KDF)
    return VaultDir(backing, PASSWORD, key, write_passfile(tmp_path / "passfile", PASSWORD))


@pytest.fixture
def vault(vault_dir: VaultDir) -> Iterator[Vault]:
    opened = vault_dir.unlock()
    try:
        yield opened
    finally:
        opened.close()


def write_file(vault: Vault, path: str, data: bytes, mode: int = 0o644) -> None:
    handle = vault.create(path, mode, os.O_RDWR | os.O_TRUNC)
    try:
        handle.write(0, data)
    finally:
        handle.close()


def read_file(vault: Vault, path: str) -> bytes:
    handle = vault.open(path, os.O_RDONLY)
    try:
        return handle.read(0, handle.size)
    finally:
        handle.close()


def backing_files(root: Path) -> list[Path]:
    """Every regular file under a backing dir except the vault's own metadata."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                  and not p.name.startswith("vaultfs."))


# ---- mounted tests (fs.py / mount.py): real CLI, real FUSE mounts ---------------------
# Helpers live in tests/mounting.py; every fixture here unmounts in a finally.
import uuid as _uuid  # noqa: E402

from tests.mounting import WEAK_KDF as _WEAK_KDF  # noqa: E402
from tests.mounting import Vault as _MountVault  # noqa: E402
from tests.mounting import force_unmount as _force_unmount  # noqa: E402
from tests.mounting import mounted as _mounted  # noqa: E402
from tests.mounting import release_seals as _release_seals  # noqa: E402
from tests.mounting import vaultfs as _vaultfs  # noqa: E402
from tests.mounting import vaultfs_mounts as _vaultfs_mounts  # noqa: E402


@pytest.fixture(autouse=True)
def unseal_mountpoints():
    """Locked mountpoints are immutable (for root): release them so pytest can delete its temp dirs."""
    yield
    _release_seals()


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_behind(tmp_path_factory):
    """Fail the run if any test leaves a vaultfs FUSE mount behind (and clean it up)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    left = [m for m in _vaultfs_mounts() if m.startswith(base)]
    for mountpoint in left:
        _force_unmount(mountpoint)
    _release_seals(everything=True)
    assert not left, f"FUSE mounts left behind: {left}"


@pytest.fixture(scope="session")
def shared_mount(tmp_path_factory):
    """One vault mounted for the whole session; tests use their own subdirectory of it."""
    vault = _MountVault.create(tmp_path_factory.mktemp("shared"))
    with _mounted(vault):
        yield vault
    assert not vault.log_problems(), vault.log_problems()


@pytest.fixture
def mnt(shared_mount):
    """A fresh, empty directory inside the shared mount."""
    path = shared_mount.mnt / f"t-{_uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


@pytest.fixture
def new_vault(tmp_path):
    """A freshly initialised vault (cheap KDF), not mounted."""
    return _MountVault.create(tmp_path / "v")


@pytest.fixture
def mounted_vault(new_vault):
    """A fresh vault of its own, mounted for one test; always unmounted afterwards."""
    with _mounted(new_vault):
        yield new_vault


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, for the tests that fill a disk; unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def small_vault(small_disk: Path, tmp_path: Path) -> _MountVault:
    """A vault whose backing directory lives on ``small_disk``: the full-disk tests fill it."""
    root = tmp_path / "v"
    root.mkdir()
    vault = _MountVault(small_disk / "cloud", root / "mnt", root / "pass", root / "daemon.log")
    vault.passfile.write_text("small disk password\n")
    vault.mnt.mkdir()
    _vaultfs("init", str(vault.backing), "--passfile", str(vault.passfile), *_WEAK_KDF)
    return vault


@pytest.fixture
def public_vault():
    """A vault whose mountpoint other users can reach (pytest's tmp dirs are 0700)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="vaultfs-public-"))
    try:
        root.chmod(0o755)
        yield _MountVault.create(root)
    finally:
        _force_unmount(root / "mnt")
        from tests.mounting import release_seals

        release_seals()  # the locked mountpoint is immutable
        shutil.rmtree(root)
