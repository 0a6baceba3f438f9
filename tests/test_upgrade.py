"""`vaultfs upgrade`: a version-1 vault becomes version 2 in place, nothing lost, safe to kill and rerun.

The version-1 vaults here are written by the spec writer (tests/spec_writer.py: no vaultfs code) with
what the committed vectors lack: FIFOs, sockets, hard links (of files and of FIFOs, across
directories), long-name symlinks, sync-conflict copies, a directory two devices created, damaged and
torn files. After the upgrade both the independent decrypter and vaultfs's format layer read the tree
back; a kill at every mutating step followed by a rerun ends in the same vault.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests import crash_points, format_walk
from tests import independent_decrypter as idec
from tests import spec_writer as sw
from tests.conftest import VAULTFS_BIN, cli_env, run_cli, write_passfile
from tests.terminal import shown_on_terminal
from vaultfs import backing
from vaultfs.errors import UsageError
from vaultfs.format import contentcheck, keyfile
from vaultfs.format.keys import VaultKeys
from vaultfs.tools import upgrade
from vaultfs.vault import Vault

PASSWORD = "upgrade me"
LONG = "a symlink with a long name " * 5
TREE: dict[str, idec.Entry] = {
    "/chats": idec.Entry("dir"),
    "/chats/msgstore.db": idec.Entry("file", content=os.urandom(3 * 4096 + 17), mode=0o640),
    "/chats/msgstore (conflict 1).db": idec.Entry("file", content=b"the other phone's version"),
    "/chats/empty": idec.Entry("file", content=b""),
    "/chats/link": idec.Entry("symlink", target="msgstore.db"),
    "/chats/link (conflict LAPTOP)": idec.Entry("symlink", target="elsewhere"),
    "/chats/" + LONG: idec.Entry("symlink", target="/" + "t" * 2400),
    "/chats/pipe": idec.Entry("fifo", mode=0o600),
    "/chats/socket": idec.Entry("socket", mode=0o644),
    "/media": idec.Entry("dir"),
    "/media/photo.jpg": idec.Entry("file", content=os.urandom(5000), mode=0o600),
    "/media/photo-hardlink.jpg": idec.Entry("file", content=None),  # a hard link of /media/photo.jpg
    "/chats/photo-link-in-chats.jpg": idec.Entry("file", content=None),  # and another one, elsewhere
    "/media/pipe-link": idec.Entry("fifo", mode=0o600),  # a hard link of /chats/pipe
    "/shared": idec.Entry("dir"),
    "/shared/from-device-a.txt": idec.Entry("file", content=b"A"),
    "/shared/from-device-b.txt": idec.Entry("file", content=b"B"),  # under the directory's second ID
    "/shared/" + "l" * 150: idec.Entry("file", content=b"long name, second ID"),
}
EXTRAS = sw.Extras(
    links={"/media/photo-hardlink.jpg": "/media/photo.jpg", "/chats/photo-link-in-chats.jpg": "/media/photo.jpg",
           "/media/pipe-link": "/chats/pipe"},
    copies={"/chats/msgstore (conflict 1).db": ("/chats/msgstore.db", " (1)"),
            "/chats/link (conflict LAPTOP)": ("/chats/link", "-LAPTOP")},
    extra_ids={"/shared": "vaultfs (1).dirid"},
    under_second=frozenset({"/shared/from-device-b.txt", "/shared/" + "l" * 150}),
)


def expected_tree() -> dict[str, tuple[str, bytes | None, str | None]]:
    tree = dict(TREE)
    for link, original in EXTRAS.links.items():
        tree[link] = TREE[original]
    return sw.summary(tree)


@pytest.fixture(scope="module")
def v1_vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backing_dir = tmp_path_factory.mktemp("v1") / "vault"
    sw.write_vault(backing_dir, TREE, PASSWORD, extras=EXTRAS)
    return backing_dir


@pytest.fixture
def vault(v1_vault: Path, tmp_path: Path) -> Path:
    return sw.copy_vault(v1_vault, tmp_path / "vault")


def unlock_v1(backing_dir: Path) -> tuple[VaultKeys, keyfile.Config]:
    config = keyfile.load_config(str(backing_dir), allow_v1=True)
    return keyfile.unwrap(config, PASSWORD), config


def assert_upgraded(backing_dir: Path) -> None:
    """Version 2, the whole tree readable by both readers, links and modes kept, nothing left over."""
    assert keyfile.load_config(str(backing_dir)).version == 2
    assert sw.summary(idec.open_vault(backing_dir, password=PASSWORD).walk()) == expected_tree()
    keys = format_walk.unlock(backing_dir, PASSWORD)
    walked = format_walk.walk_v2(backing_dir, keys)
    assert sw.summary(walked) == expected_tree()
    for path in ("/chats/msgstore.db", "/media/photo.jpg", "/chats/pipe", "/chats/socket"):
        assert walked[path].mode == TREE[path].mode, path
    left = [p for p in backing_dir.rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())]
    assert left == [], "only regular files and directories"
    assert not [p for p in backing_dir.rglob("vaultfs.upgrade*")]
    photo, *links = (sw.backing_path(backing_dir, keys_of(backing_dir), p, 2)
                     for p in ("/media/photo.jpg", "/media/photo-hardlink.jpg", "/chats/photo-link-in-chats.jpg"))
    assert {os.stat(p).st_ino for p in links} == {os.stat(photo).st_ino} and os.stat(photo).st_nlink == 3
    pipe, pipe_link = (sw.backing_path(backing_dir, keys_of(backing_dir), p, 2) for p in ("/chats/pipe",
                                                                                          "/media/pipe-link"))
    assert os.stat(pipe).st_ino == os.stat(pipe_link).st_ino and pipe.suffix == ".vfx"


def vault_entries(vault: Vault, top: str = "/") -> dict[str, idec.Entry]:
    """What the version-2 Vault shows, as the independent decrypter's entries."""
    import stat

    kinds = {stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}
    out: dict[str, idec.Entry] = {}
    for name, attr in vault.listdir(top):
        path = top.rstrip("/") + "/" + name
        if stat.S_ISDIR(attr.st_mode):
            out[path] = idec.Entry("dir")
            out.update(vault_entries(vault, path))
        elif stat.S_ISLNK(attr.st_mode):
            out[path] = idec.Entry("symlink", target=vault.readlink(path))
        elif stat.S_ISREG(attr.st_mode):
            handle = vault.open(path, os.O_RDONLY)
            out[path] = idec.Entry("file", content=handle.read(0, handle.size))
            handle.close()
        else:
            out[path] = idec.Entry(kinds[stat.S_IFMT(attr.st_mode)])
    return out


def keys_of(backing_dir: Path) -> idec.Keys:
    return idec.open_vault(backing_dir, password=PASSWORD).keys


def test_upgrade_converts_everything_and_keeps_links_modes_and_times(vault: Path) -> None:
    keys, config = unlock_v1(vault)
    chats = sw.backing_path(vault, keys_of(vault), "/chats")
    msgstore = sw.backing_path(vault, keys_of(vault), "/chats/msgstore.db")
    os.utime(msgstore, ns=(1_000_000_000, 2_000_000_000))
    os.utime(chats, ns=(3_000_000_000, 4_000_000_000))
    report = upgrade.upgrade(str(vault), keys, config)
    assert_upgraded(vault)
    assert report.left == [] and report.carried_damage == []
    assert report.multi_id == ["/shared"]
    assert report.specials_converted == 6 and report.files_converted == 9
    assert os.stat(msgstore).st_mtime_ns == 2_000_000_000, "a file's times are kept"
    assert os.stat(chats).st_mtime_ns == 4_000_000_000, "a directory's times are restored"
    for read_only in (True, False, True):  # the version-2 Vault reads it; a writable one resolves and merges
        opened = Vault.unlock(str(vault), PASSWORD, read_only=read_only)
        try:
            assert sw.summary(vault_entries(opened)) == expected_tree()
        finally:
            opened.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to other users")
def test_a_rewritten_file_keeps_its_owner_and_set_id_bits(vault: Path) -> None:
    keys, config = unlock_v1(vault)
    msgstore = sw.backing_path(vault, keys_of(vault), "/chats/msgstore.db")
    os.chown(msgstore, 1000, 1001)  # first: chown clears set-user-ID
    os.chmod(msgstore, 0o6750)
    upgrade.upgrade(str(vault), keys, config)
    opened = Vault.unlock(str(vault), PASSWORD, read_only=True)
    try:
        attr = opened.getattr("/chats/msgstore.db")
    finally:
        opened.close()
    assert (attr.st_mode & 0o7777, attr.st_uid, attr.st_gid) == (0o6750, 1000, 1001)


def test_the_second_directory_id_stays_valid_only_where_it_is(vault: Path) -> None:
    keys, config = unlock_v1(vault)
    upgrade.upgrade(str(vault), keys, config)
    shared = sw.backing_path(vault, keys_of(vault), "/shared", 2)
    chats = sw.backing_path(vault, keys_of(vault), "/chats", 2)
    (chats / "vaultfs (1).dirid").write_bytes((shared / "vaultfs (1).dirid").read_bytes())  # a planted copy
    checked = idec.open_vault(vault, password=PASSWORD)
    assert sw.summary(checked.walk()) == expected_tree()
    assert any("not valid at this place" in problem for problem in checked.problems)


def test_damage_is_carried_over_and_a_torn_append_stays_repairable(tmp_path: Path) -> None:
    tree = {"/damaged": idec.Entry("file", content=os.urandom(3 * 4096)),
            "/torn": idec.Entry("file", content=os.urandom(5000)),
            "/fine": idec.Entry("file", content=b"fine")}
    vault = tmp_path / "vault"
    keys = sw.write_vault(vault, tree, PASSWORD, torn=frozenset({"/torn"}))
    damaged = sw.backing_path(vault, keys, "/damaged")
    with open(damaged, "r+b") as f:
        f.seek(40 + 4124 + 100)
        f.write(b"\xff")
    vault_keys, config = unlock_v1(vault)
    report = upgrade.upgrade(str(vault), vault_keys, config)
    assert len(report.carried_damage) == 2 and report.left == []
    assert any("/damaged: converted with damaged block(s) 1" in line for line in report.carried_damage)
    v2_keys = idec.open_vault(vault, password=PASSWORD).keys
    for path, bad, torn in (("/damaged", [1], False), ("/torn", [], True), ("/fine", [], False)):
        fd = os.open(sw.backing_path(vault, v2_keys, path, 2), os.O_RDWR)
        try:
            found = contentcheck.check_file(fd, vault_keys.file_key, 4096, layout=2)
            assert (found.bad_blocks, found.torn_append) == (bad, torn), path
            if torn:
                contentcheck.repair_torn_append(fd, vault_keys.file_key, 4096)
        finally:
            os.close(fd)
    reader = idec.open_vault(vault, password=PASSWORD)
    with pytest.raises(idec.IntegrityError, match="/damaged"):
        reader.walk()


def test_unconvertible_entries_are_left_and_reported(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    keys = sw.write_vault(vault, {"/bad-header": idec.Entry("file", content=b"x"),
                                  "/bad-link": idec.Entry("symlink", target="t"),
                                  "/ok": idec.Entry("file", content=b"ok")}, PASSWORD)
    bad_header = sw.backing_path(vault, keys, "/bad-header")
    bad_header.write_bytes(b"JUNK" + bad_header.read_bytes()[4:])
    bad_link = sw.backing_path(vault, keys, "/bad-link")
    bad_link.unlink()
    os.symlink("a" * 40, bad_link)
    passfile = write_passfile(tmp_path / "pw", PASSWORD)
    result = run_cli("upgrade", str(vault), "--passfile", str(passfile))
    assert result.returncode == 14, result.stderr
    assert "/bad-header" in result.stderr and "/bad-link" in result.stderr
    assert bad_header.read_bytes()[:4] == b"JUNK" and bad_link.is_symlink()
    assert keyfile.load_config(str(vault)).version == 2
    reader = idec.open_vault(vault, password=PASSWORD)
    assert idec.decrypt_content_v2(sw.backing_path(vault, reader.keys, "/ok", 2).read_bytes(), reader.keys) == (
        "file", b"ok")


def test_cli_refuses_a_wrong_password_and_changes_nothing(vault: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in vault.rglob("*") if not p.is_symlink()}
    result = run_cli("upgrade", str(vault), "--passfile", str(write_passfile(tmp_path / "pw", "wrong")))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in vault.rglob("*") if not p.is_symlink()} == before


def test_a_second_upgrade_at_the_same_time_is_refused(vault: Path) -> None:
    keys, config = unlock_v1(vault)
    import fcntl

    fd = os.open(vault, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another"):
            upgrade.upgrade(str(vault), keys, config)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- killed at every step, then rerun

MUTATIONS = ("rename", "unlink", "link", "utime", "fchmod", "ftruncate")


def _upgrade_until(backing_dir: Path, stop_at: int | None) -> int:
    """Upgrade in a child that dies (like kill -9) before its mutation number ``stop_at``; return how many it made."""
    def work() -> None:
        keys, config = unlock_v1(backing_dir)
        upgrade.upgrade(str(backing_dir), keys, config)

    done = crash_points.run_until(work, [(os, name) for name in MUTATIONS] + [(backing, "pwrite_all")], stop_at)
    return len(done[0]) if done else -1


def test_a_kill_at_any_step_and_a_rerun_give_the_same_vault(v1_vault: Path, tmp_path: Path) -> None:
    total = _upgrade_until(sw.copy_vault(v1_vault, tmp_path / "full"), None)
    assert total > 50
    for stop_at in range(0, total, 3 if total > 150 else 1):
        vault = sw.copy_vault(v1_vault, tmp_path / f"killed-{stop_at}")
        assert _upgrade_until(vault, stop_at) == -1, "the child died"
        if stop_at < total - 1:
            assert keyfile.load_config(str(vault), allow_v1=True).version == 1, "the version changes last"
        keys, config = unlock_v1(vault)
        if config.version == 1:
            upgrade.upgrade(str(vault), keys, config)
        assert_upgraded(vault)


def test_the_real_cli_killed_at_random_moments_then_rerun(v1_vault: Path, tmp_path: Path) -> None:
    """The same through the installed command and SIGKILL, on a vault with enough data to take a while."""
    big = dict(TREE)
    big.update({f"/bulk/file-{n}": idec.Entry("file", content=os.urandom(100_000)) for n in range(150)})
    big["/bulk"] = idec.Entry("dir")
    vault = tmp_path / "vault"
    sw.write_vault(vault, big, PASSWORD, extras=EXTRAS)
    passfile = write_passfile(tmp_path / "pw", PASSWORD)
    for delay in (0.3, 0.5, 0.7):
        process = subprocess.Popen([VAULTFS_BIN, "upgrade", str(vault), "--passfile", str(passfile)],
                                   env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    result = run_cli("upgrade", str(vault), "--passfile", str(passfile))
    assert result.returncode == 0, result.stderr
    tree = sw.summary(idec.open_vault(vault, password=PASSWORD).walk())
    expected = expected_tree()
    expected.update(sw.summary({p: e for p, e in big.items() if p.startswith("/bulk")}))
    assert tree == expected
    assert all(stat.S_ISREG(p.lstat().st_mode) or p.is_dir() for p in vault.rglob("*"))


def test_extended_attributes_of_a_rewritten_file_are_kept(vault: Path) -> None:
    """vaultfs stores encrypted user.* attributes on the backing file; the new inode carries them over."""
    keys, config = unlock_v1(vault)
    photo = sw.backing_path(vault, keys_of(vault), "/media/photo.jpg")
    msgstore = sw.backing_path(vault, keys_of(vault), "/chats/msgstore.db")
    os.setxattr(photo, "user.vaultfs.abcdef", b"sealed value")
    os.setxattr(msgstore, "user.vaultfs.ghijkl", b"another")
    upgrade.upgrade(str(vault), keys, config)
    v2_keys = keys_of(vault)
    for path, name, value in (("/media/photo.jpg", "user.vaultfs.abcdef", b"sealed value"),
                              ("/chats/photo-link-in-chats.jpg", "user.vaultfs.abcdef", b"sealed value"),
                              ("/chats/msgstore.db", "user.vaultfs.ghijkl", b"another")):
        assert os.getxattr(sw.backing_path(vault, v2_keys, path, 2), name) == value, path


def test_a_progress_bar_on_a_terminal(vault: Path, tmp_path: Path) -> None:
    passfile = write_passfile(tmp_path / "pw", PASSWORD)
    returncode, stdout, shown = shown_on_terminal([VAULTFS_BIN, "upgrade", str(vault), "--passfile", str(passfile)],
                                                  cli_env(), stdout_piped=True)
    assert returncode == 0 and b"upgraded" in stdout
    assert b"upgrade:" in shown and b"100%" in shown, shown[-300:]
