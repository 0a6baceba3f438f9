"""Restore and sync conflicts end to end: files written through a real mount, read back by export."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.mounting import Vault as MountVault
from tests.mounting import backing_path, mounted, vaultfs
from tests.test_conflicts import PROVIDERS
from tests.test_transfer import assert_same_tree, make_tree


def plant_conflict(vault: MountVault, path: str, form: str, scratch: str) -> Path:
    """Turn the scratch file's ciphertext into a sync client's conflict copy of ``path``."""
    original = backing_path(vault, path)
    copy = original.with_name(form.format(e=original.name[:-4], x=original.name[-4:]))
    os.rename(backing_path(vault, scratch), copy)
    return copy


def test_export_of_a_tree_written_through_the_mount_equals_the_source(mounted_vault: MountVault,
                                                                       tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    subprocess.run(["cp", "-a", f"{source}/.", str(mounted_vault.mnt)], check=True)
    os.utime(mounted_vault.mnt, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    mounted_vault.lock()
    out = tmp_path / "restored"
    vaultfs("export", str(mounted_vault.backing), str(out), "--passfile", str(mounted_vault.passfile))
    os.chmod(out, source.stat().st_mode & 0o7777)  # the mountpoint's own mode is not part of the vault
    assert_same_tree(source, out)
    mounted_vault.mount()  # the fixture locks it again


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_conflict_copy_through_the_mount_and_in_export(new_vault: MountVault, tmp_path: Path, provider: str) -> None:
    form, shown = PROVIDERS[provider]
    with mounted(new_vault):
        chats = new_vault.mnt / "chats"
        chats.mkdir()
        (chats / "msgstore.db").write_bytes(b"this phone")
        (chats / "scratch").write_bytes(b"the other phone")
        planted = plant_conflict(new_vault, "/chats/msgstore.db", form, "/chats/scratch")
        assert sorted(os.listdir(chats)) == sorted([shown, "msgstore.db"])
        assert not planted.exists()
        assert (chats / shown).read_bytes() == b"the other phone"
        assert (chats / "msgstore.db").read_bytes() == b"this phone"
        os.rename(chats / shown, chats / "theirs.db")
        assert (chats / "theirs.db").read_bytes() == b"the other phone"
        os.unlink(chats / "theirs.db")
        assert os.listdir(chats) == ["msgstore.db"]
        # a new name: the kernel may still cache the dentry of the scratch file renamed behind its back
        (chats / "scratch2").write_bytes(b"a later copy")
    plant_conflict(new_vault, "/chats/msgstore.db", form, "/chats/scratch2")
    before = sorted(str(p) for p in new_vault.backing.rglob("*"))
    out = tmp_path / "out"
    vaultfs("export", str(new_vault.backing), str(out), "--passfile", str(new_vault.passfile))
    assert sorted(os.listdir(out / "chats")) == sorted([shown, "msgstore.db"])
    assert (out / "chats" / shown).read_bytes() == b"a later copy"
    assert sorted(str(p) for p in new_vault.backing.rglob("*")) == before, "export must not change the vault"
    log = new_vault.logfile.read_text()
    assert "conflict" in log and shown in log
