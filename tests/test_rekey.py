"""`vaultfs rekey`: a new master key, everything re-encrypted, the same vault shown, the old key useless.

Every test drives the installed command on a vault written by vaultfs itself (tests/rekey_tree.py:
files, long names, holes, symlinks, FIFOs, a socket, a device, hard links across directories,
extended attributes, owners, modes, times) plus what sync clients leave (conflict copies of a file,
a symlink, a long name and a directory; a directory with a second ID).  What the vault shows is
compared before and after (a read-only Vault, the exported tree, `vaultfs conflicts`); what opens
with the old master key is searched for in every file, name, record and attribute of the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests import independent_decrypter as idec
from tests import rekey_tree
from tests.conftest import WEAK_KDF, run_cli, write_file, write_passfile
from vaultfs.errors import IntegrityError
from vaultfs.format import blocks, contentcheck, keyfile
from vaultfs.format.keys import VaultKeys
from vaultfs.format.recovery import decode as decode_recovery_key
from vaultfs.vault import Vault

OLD = "the old password, leaked"
NEW = "a fresh passphrase nobody has seen"
_KEY = re.compile(r"^    ([0-9A-Z]{5}(?:-[0-9A-Z]{5}){10})$", re.MULTILINE)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    backing = tmp_path_factory.mktemp("rekey") / "vault"
    return backing, rekey_tree.build(backing, OLD)


@pytest.fixture
def vault(pristine: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the built vault (cp -a: links, attributes, holes and times as they are)."""
    copy = tmp_path / "vault"
    subprocess.run(["cp", "-a", "--", str(pristine[0]), str(copy)], check=True)
    return copy


@pytest.fixture
def passfiles(tmp_path: Path) -> tuple[Path, Path]:
    return write_passfile(tmp_path / "old", OLD), write_passfile(tmp_path / "new", NEW)


def rekey(backing: Path, passfiles: tuple[Path, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("rekey", str(backing), "--passfile", str(passfiles[0]), "--new-passfile", str(passfiles[1]),
                   *WEAK_KDF, *extra, timeout=300)


def recovery_key_in(stdout: str) -> str:
    found = _KEY.findall(stdout)
    assert len(found) == 1, stdout
    return found[0]


def unlock(backing: Path, password: str) -> VaultKeys:
    return keyfile.unwrap(keyfile.load_config(str(backing)), password)


def export_tree(dest: Path) -> dict[str, tuple]:
    """An exported tree as data: type, mode, owner, mtime, contents or target, device, attributes, links."""
    tree: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for path in [dest, *dest.rglob("*")]:
        st = path.lstat()
        rel = "/" + str(path.relative_to(dest)) if path != dest else "/"
        body: bytes | str | None = None
        if stat.S_ISREG(st.st_mode):
            body = path.read_bytes()
            if st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(path)
        xattrs = () if stat.S_ISLNK(st.st_mode) else tuple(sorted(
            (name, os.getxattr(path, name)) for name in os.listxattr(path)))
        tree[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                     st.st_mtime_ns, body, st.st_rdev, xattrs)
    for group in inodes.values():
        for rel in group:
            tree[rel] += (tuple(sorted(set(group) - {rel})),)
    return tree


def test_the_vault_shows_the_same_after_a_rekey_and_only_the_new_password_opens_it(
        vault: Path, passfiles: tuple[Path, Path]) -> None:
    before = rekey_tree.snapshot(vault, OLD)
    assert before["/setuid-tool"].mode == 0o4755 and before["/null-device"].rdev == os.makedev(1, 3)
    conflicts = run_cli("conflicts", str(vault), "--passfile", str(passfiles[0]))
    times = rekey_tree.trace(vault, unlock(vault, OLD)).times
    result = rekey(vault, passfiles)
    assert result.returncode == 0, result.stderr
    assert rekey_tree.trace(vault, unlock(vault, NEW)).times == times, "every atime and mtime, the root's too"
    assert rekey_tree.without_atimes(rekey_tree.snapshot(vault, NEW)) == rekey_tree.without_atimes(before)
    after = run_cli("conflicts", str(vault), "--passfile", str(passfiles[1]))
    assert (after.returncode, after.stdout) == (conflicts.returncode, conflicts.stdout) and "msgstore (conflict 1)" \
        in after.stdout
    with pytest.raises(keyfile.WrongPassword):
        unlock(vault, OLD)
    assert not list(vault.rglob("vaultfs.rekey*")) and not list(vault.rglob("vaultfs.tmp-*"))
    assert "New recovery key" in result.stdout and "no longer open" in result.stdout


def test_the_exported_tree_is_the_same_byte_for_byte(vault: Path, passfiles: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    assert run_cli("export", str(vault), str(before), "--passfile", str(passfiles[0])).returncode == 0
    assert rekey(vault, passfiles).returncode == 0
    assert run_cli("export", str(vault), str(after), "--passfile", str(passfiles[1])).returncode == 0
    exported = export_tree(before)
    assert export_tree(after) == exported
    kinds = {entry[0] for entry in exported.values()}
    assert {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR} <= kinds
    assert exported["/media/photo.jpg"][-1] == ("/chats/photo-in-chats.jpg", "/media/photo-link.jpg")
    assert exported["/media/photo.jpg"][2:4] == (1234, 5678)


def test_nothing_in_the_folder_opens_with_the_old_key_the_old_config_or_the_old_recovery_key(
        vault: Path, pristine: tuple[Path, str], passfiles: tuple[Path, Path], tmp_path: Path) -> None:
    old_keys = unlock(vault, OLD)
    traced = rekey_tree.trace(vault, old_keys)
    old_config = (vault / "vaultfs.conf").read_bytes()
    assert rekey_tree.old_key_findings(vault, old_keys, traced) != [], "the search finds the old key before"
    assert rekey(vault, passfiles).returncode == 0
    assert rekey_tree.old_key_findings(vault, old_keys, traced) == []
    old_key_file = tmp_path / "old-key"
    old_key_file.write_text(pristine[1] + "\n")
    for extra in ((), ("--rebuild-config",)):
        refused = run_cli("recover", str(vault), "--recovery-key-file", str(old_key_file), "--new-passfile",
                          str(passfiles[0]), *WEAK_KDF, *extra)
        assert refused.returncode == 3, refused.stderr
    new_config = (vault / "vaultfs.conf").read_bytes()
    (vault / "vaultfs.conf").write_bytes(old_config)  # the attacker's copy from the cloud's history
    try:
        with pytest.raises(IntegrityError, match="/: no directory ID valid here"):
            Vault.unlock(str(vault), OLD, read_only=True)
        listed = run_cli("ls", str(vault), "--passfile", str(passfiles[0]))
        assert listed.returncode != 0 and "msgstore" not in listed.stdout
    finally:
        (vault / "vaultfs.conf").write_bytes(new_config)
    assert rekey_tree.recoverable(vault, [old_keys]) == set()


def test_the_new_recovery_key_opens_the_vault_and_rebuilds_its_config(
        vault: Path, passfiles: tuple[Path, Path], tmp_path: Path) -> None:
    before = rekey_tree.snapshot(vault, OLD)
    result = rekey(vault, passfiles)
    key = recovery_key_in(result.stdout)
    assert decode_recovery_key(key) == unlock(vault, NEW).master_key
    reader = idec.open_vault(vault, recovery_key=key)  # the spec alone reads the rekeyed vault
    assert rekey_tree.snapshot(vault, NEW)["/chats/msgstore.db"].content == \
        reader.walk(strict=False)["/chats/msgstore.db"].content
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    third = write_passfile(tmp_path / "third", "yet another strong passphrase")
    (vault / "vaultfs.conf").unlink()
    rebuilt = run_cli("recover", str(vault), "--recovery-key-file", str(key_file), "--new-passfile", str(third),
                      "--rebuild-config", *WEAK_KDF)
    assert rebuilt.returncode == 0, rebuilt.stderr
    rebuilt_tree = rekey_tree.without_atimes(rekey_tree.snapshot(vault, "yet another strong passphrase"))
    expected = rekey_tree.without_atimes(before)
    assert rebuilt_tree.pop("/").xattrs == expected.pop("/").xattrs  # writing a config moves the root's mtime
    assert rebuilt_tree == expected


def test_conflict_copies_and_a_second_directory_id_stay_what_they_are(vault: Path,
                                                                      passfiles: tuple[Path, Path]) -> None:
    def markers(root: Path) -> list[str]:
        return sorted(re.sub(r"^[a-z2-7]+", "", p.name) for p in root.rglob("*")
                      if not re.fullmatch(r"[a-z2-7]+\.(vfs|vfx|vfl|vxl|vfn)", p.name))

    kept = markers(vault)
    assert " (1).vfs" in kept and "-LAPTOP.vfx" in kept and " (1).dirid" in kept
    assert rekey(vault, passfiles).returncode == 0
    assert markers(vault) == kept, "the same clients' copies, of the same kinds, in the same places"


def test_a_hole_of_a_terabyte_stays_a_hole(tmp_path: Path, passfiles: tuple[Path, Path]) -> None:
    backing = tmp_path / "sparse"
    from vaultfs.vault import init_vault

    init_vault(str(backing), OLD, keyfile.TEST_KDF)
    opened = Vault.unlock(str(backing), OLD)
    try:
        handle = opened.create("/disk.img", 0o600)
        handle.write(0, b"boot sector")
        handle.truncate(1 << 40)
        handle.write((1 << 39) + 5, b"half way")
        handle.close()
        write_file(opened, "/small", b"x")
    finally:
        opened.close()
    (stored,) = [p for p in backing.iterdir() if p.stat().st_size > 1 << 39]
    used_before = stored.stat().st_blocks
    result = rekey(backing, passfiles)
    assert result.returncode == 0, result.stderr
    (stored,) = [p for p in backing.iterdir() if p.stat().st_size > 1 << 39]
    assert stored.stat().st_blocks <= used_before + 64, "no hole was filled"
    opened = Vault.unlock(str(backing), NEW, read_only=True)
    try:
        handle = opened.open("/disk.img", os.O_RDONLY)
        assert handle.size == 1 << 40
        assert handle.read(0, 16) == b"boot sector" + bytes(5)
        assert handle.read((1 << 39) + 5, 8) == b"half way"
        assert handle.read(1 << 38, 4096) == bytes(4096) and handle.read((1 << 40) - 10, 10) == bytes(10)
        handle.close()
    finally:
        opened.close()


# ---------------------------------------------------------------- damage and a crash's marks carried over

def _blocks_of(backing: Path, password: str, path: str) -> Path:
    opened = Vault.unlock(str(backing), password, read_only=True)
    try:
        return Path(opened.locate(path).path)
    finally:
        opened.close()


def _seal_last_block_as_not_last(stored: Path, keys: VaultKeys) -> None:
    """What a crash between the two steps of an append leaves: the last block authentic, not marked last."""
    from vaultfs import crypto

    data = stored.read_bytes()
    header = data[:7] + b"\0" + data[8:40]
    gcm = crypto.Gcm(keys.file_key(data[8:40]))
    index = (len(data) - 40 - 1) // (4096 + 28)
    offset = blocks.block_offset(index)
    plain = gcm.open(data[offset:], blocks.block_aad_v2(header, index, True, index))
    stored.write_bytes(data[:offset] + gcm.seal(plain, blocks.block_aad_v2(header, index, False, index)))


def _check(backing: Path, password: str, path: str) -> contentcheck.FileCheck:
    keys = unlock(backing, password)
    fd = os.open(_blocks_of(backing, password, path), os.O_RDONLY)
    try:
        return contentcheck.check_file(fd, keys.file_key, 4096, layout=2)
    finally:
        os.close(fd)


def test_damage_stays_damage_and_a_crash_s_marks_stay_repairable(tmp_path: Path, passfiles: tuple[Path, Path]
                                                                 ) -> None:
    from vaultfs.vault import init_vault

    backing = tmp_path / "damaged"
    init_vault(str(backing), OLD, keyfile.TEST_KDF)
    data = {name: os.urandom(3 * 4096 + 100) for name in ("flipped", "torn", "fill", "cut")}
    opened = Vault.unlock(str(backing), OLD)
    try:
        for name, content in data.items():
            write_file(opened, "/" + name, content)
        handle = opened.open("/fill", os.O_RDWR)
        handle.truncate(20 * 4096)  # blocks 4..18 are holes, 19 is the last
        handle.close()
    finally:
        opened.close()
    keys = unlock(backing, OLD)
    flipped = _blocks_of(backing, OLD, "/flipped")
    with open(flipped, "r+b") as f:  # a flipped byte in block 1
        f.seek(blocks.block_offset(1) + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    damaged_block = flipped.read_bytes()[blocks.block_offset(1):blocks.block_offset(2)]
    _seal_last_block_as_not_last(_blocks_of(backing, OLD, "/torn"), keys)
    fill = _blocks_of(backing, OLD, "/fill")
    last_block = fill.read_bytes()[blocks.block_offset(19):]
    opened = Vault.unlock(str(backing), OLD)
    try:
        handle = opened.open("/fill", os.O_RDWR)
        handle.write(10 * 4096, b"into the hole")  # re-seals block 19 with a new run start...
        handle.close()
    finally:
        opened.close()
    with open(fill, "r+b") as f:  # ...which a crash had not written yet
        f.seek(blocks.block_offset(19))
        f.write(last_block)
    cut = _blocks_of(backing, OLD, "/cut")
    whole = cut.read_bytes()
    opened = Vault.unlock(str(backing), OLD)
    try:
        opened.truncate("/cut", 5000)  # writes the new last block 1, then cuts the file...
    finally:
        opened.close()
    cut.write_bytes(cut.read_bytes() + whole[len(cut.read_bytes()):])  # ...which a crash did not do

    def found(password: str) -> dict[str, tuple]:
        return {name: ((c := _check(backing, password, "/" + name)).bad_blocks, c.torn_append,
                       [b for b, _ in c.torn_fills], c.truncated_at) for name in data}

    expected = {"flipped": ([1], False, [], None), "torn": ([], True, [], None), "fill": ([], False, [19], None),
                "cut": ([], False, [], (1, 5000 - 4096))}
    assert found(OLD) == expected
    result = rekey(backing, passfiles)
    assert result.returncode == 0, result.stderr
    assert "/flipped: block(s) 1 failed authentication" in result.stderr
    assert "/torn: a torn append" in result.stderr and "/cut: an interrupted truncate" in result.stderr
    assert found(NEW) == expected
    new_block = _blocks_of(backing, NEW, "/flipped").read_bytes()[blocks.block_offset(1):blocks.block_offset(2)]
    assert len(new_block) == len(damaged_block) and new_block != damaged_block, "unreadable, and not the old bytes"
    repaired = run_cli("fsck", str(backing), "--repair", "--accept-truncated", "--passfile", str(passfiles[1]))
    assert repaired.returncode == 12 and "/flipped" in repaired.stdout + repaired.stderr
    reader = Vault.unlock(str(backing), NEW, read_only=True)
    try:
        assert reader.open("/torn", os.O_RDONLY).read(0, 1 << 20) == data["torn"]
        assert reader.open("/cut", os.O_RDONLY).read(0, 1 << 20) == data["cut"][:5000]
        filled = reader.open("/fill", os.O_RDONLY).read(0, 1 << 20)
        assert filled[:len(data["fill"])] == data["fill"] and filled[10 * 4096:10 * 4096 + 13] == b"into the hole"
        flipped_handle = reader.open("/flipped", os.O_RDONLY)
        assert flipped_handle.read(0, 4096) == data["flipped"][:4096]
        with pytest.raises(IntegrityError):
            flipped_handle.read(4096, 4096)
    finally:
        reader.close()


def test_a_second_rekey_leaves_neither_earlier_key_anything(vault: Path, passfiles: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    first = unlock(vault, OLD)
    traced = rekey_tree.trace(vault, first)
    before = rekey_tree.without_atimes(rekey_tree.snapshot(vault, OLD))
    assert rekey(vault, passfiles).returncode == 0
    second = unlock(vault, NEW)
    traced_second = rekey_tree.trace(vault, second)
    third = write_passfile(tmp_path / "third", "the third strong passphrase")
    again = run_cli("rekey", str(vault), "--passfile", str(passfiles[1]), "--new-passfile", str(third), *WEAK_KDF)
    assert again.returncode == 0, again.stderr
    assert rekey_tree.without_atimes(rekey_tree.snapshot(vault, "the third strong passphrase")) == before
    assert rekey_tree.old_key_findings(vault, first, traced) == []
    assert rekey_tree.old_key_findings(vault, second, traced_second) == []


def test_copies_of_the_config_for_the_old_key_are_removed_at_the_switch(vault: Path,
                                                                         passfiles: tuple[Path, Path]) -> None:
    config = (vault / "vaultfs.conf").read_bytes()
    for name in ("vaultfs.conf.bak", "vaultfs (1).conf"):
        (vault / name).write_bytes(config)
    (vault / "vaultfs.conf.tmp").write_bytes(config[:200])  # a write a crash cut short
    (vault / "vaultfs.conf.notes").write_text("not a config: left alone")
    assert rekey(vault, passfiles).returncode == 0
    assert sorted(p.name for p in vault.glob("vaultfs*conf*")) == ["vaultfs.conf", "vaultfs.conf.notes"]


def test_unrelated_files_in_the_folder_are_left_and_reported(vault: Path, passfiles: tuple[Path, Path]) -> None:
    (vault / "desktop.ini").write_text("a sync client's own file")
    shutil.copy(next(vault.glob("*.vfx")), vault / ("a" * 52 + ".vfs"))  # a name that decrypts nowhere
    result = rekey(vault, passfiles)
    assert result.returncode == 14, result.stderr
    assert "desktop.ini" in result.stderr and (vault / "desktop.ini").exists()
    assert unlock(vault, NEW) is not None and not (vault / keyfile.REKEY_NAME).exists()
