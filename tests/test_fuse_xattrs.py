"""Extended attributes through the mount: set/get/list/remove, remount, export/import, nothing readable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.mounting import Vault, mounted, scan_backing, vaultfs

pytestmark = pytest.mark.mount

COLOR = b"user.vaultfs-test.colour"
SECRET_VALUE = b"a value nobody may read in the cloud: lighthouse-7731"


def test_user_xattrs_round_trip_and_stay_encrypted(mounted_vault: Vault, tmp_path: Path) -> None:
    mnt = mounted_vault.mnt
    (mnt / "f").write_text("data")
    (mnt / "d").mkdir()
    for target in (mnt / "f", mnt / "d"):
        os.setxattr(target, COLOR, SECRET_VALUE)
        os.setxattr(target, b"user.empty", b"")
        assert sorted(os.listxattr(target)) == sorted([COLOR.decode(), "user.empty"])
        assert os.getxattr(target, COLOR) == SECRET_VALUE
        assert os.getxattr(target, b"user.empty") == b""
    os.removexattr(mnt / "d", b"user.empty")
    with pytest.raises(OSError) as info:
        os.getxattr(mnt / "d", b"user.empty")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.setxattr(mnt / "f", b"trusted.vaultfs", b"x")
    assert info.value.errno == errno.EOPNOTSUPP
    fd = os.open(mnt / "f", os.O_RDWR)  # through an open file that has lost its name
    os.unlink(mnt / "f")
    os.setxattr(fd, b"user.late", b"still works")
    assert os.getxattr(fd, b"user.late") == b"still works"
    os.close(fd)
    (mnt / "g").write_text("kept")
    os.setxattr(mnt / "g", COLOR, SECRET_VALUE)

    mounted_vault.remount()
    assert os.getxattr(mnt / "g", COLOR) == SECRET_VALUE
    assert os.getxattr(mnt / "d", COLOR) == SECRET_VALUE

    hits = scan_backing(mounted_vault.backing, [SECRET_VALUE, COLOR, b"vaultfs-test", b"lighthouse"])
    for dirpath, dirnames, filenames in os.walk(mounted_vault.backing):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            for attr in os.listxattr(path, follow_symlinks=False):
                raw = attr.encode() + os.getxattr(path, attr, follow_symlinks=False)
                hits += [f"xattr of {path}" for needle in (SECRET_VALUE, COLOR, b"colour") if needle in raw]
    assert hits == []

    mounted_vault.lock()
    out = tmp_path / "restored"
    vaultfs("export", str(mounted_vault.backing), str(out), "--passfile", str(mounted_vault.passfile))
    assert os.getxattr(out / "g", COLOR) == SECRET_VALUE
    assert os.getxattr(out / "d", COLOR) == SECRET_VALUE

    again = Vault.create(tmp_path / "second")
    vaultfs("import", str(again.backing), str(out), "--passfile", str(again.passfile))
    with mounted(again):
        assert os.getxattr(again.mnt / "g", COLOR) == SECRET_VALUE
        assert os.getxattr(again.mnt / "d", COLOR) == SECRET_VALUE
    mounted_vault.mount()  # the fixture locks it


def test_a_tampered_xattr_value_is_eio(mounted_vault: Vault) -> None:
    target = mounted_vault.mnt / "f"
    target.write_text("x")
    os.setxattr(target, COLOR, b"original")
    mounted_vault.lock()
    (entry,) = [p for p in mounted_vault.backing.iterdir() if p.suffix == ".vfs"]
    (stored,) = os.listxattr(entry)
    sealed = bytearray(os.getxattr(entry, stored))
    sealed[-1] ^= 1
    os.setxattr(entry, stored, bytes(sealed))
    mounted_vault.mount()
    with pytest.raises(OSError) as info:
        os.getxattr(target, COLOR)
    assert info.value.errno == errno.EIO
    assert "extended attribute" in mounted_vault.logfile.read_text()
    mounted_vault.logfile.write_text("")  # the EIO was the point: keep the fixture's log check clean


def test_names_outside_user_are_answered_by_the_shim_without_python(mounted_vault: Vault) -> None:
    """The kernel's security.capability probe before each write(2) never reaches a Python handler."""
    mnt = mounted_vault.mnt
    fd = os.open(mnt / "journal", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(50):  # each write(2) probes security.capability first (FUSE has no SB_NOSEC)
            os.write(fd, b"x" * 100)
    finally:
        os.close(fd)
    for name in (b"security.capability", b"trusted.vaultfs", b"system.posix_acl_access"):
        with pytest.raises(OSError) as info:
            os.getxattr(mnt / "journal", name)
        assert info.value.errno == errno.ENODATA, name
    os.setxattr(mnt / "journal", COLOR, SECRET_VALUE)  # user.* still goes to the vault
    assert os.getxattr(mnt / "journal", COLOR) == SECRET_VALUE
    mounted_vault.lock()
    served = [line for line in mounted_vault.logfile.read_text().splitlines() if "served " in line]
    assert len(served) == 1, served
    counts = dict((name, int(n)) for name, n in
                  (part.rsplit(" ", 1) for part in served[0].split("(", 1)[1].rstrip(")").split(", ")))
    assert counts["getxattr in the shim"] >= 50 + 3, served  # every probe, and the three reads above
    assert counts.get("getxattr", 0) <= 2, served  # only the user.* read (and no probe) reached Python
