"""A vault with everything a rekey must carry over, what it shows, and what still opens with a key.

``build`` writes it with vaultfs's own Vault API (files, directories, long names, holes, symlinks,
FIFOs, sockets, a device, hard links across directories, extended attributes, modes, owners, times)
and then, with the format layer, what sync clients leave (conflict copies of a file, a symlink, a
long name and a directory; a directory two devices created, with entries under its second ID).
``snapshot`` is what a read-only Vault shows, every attribute included.  ``old_key_findings`` lists
anything in the backing dir that opens with a given (old) master key; ``recoverable`` the contents
that open with some key.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import write_file
from vaultfs import crypto
from vaultfs.format import blocks, keyfile, listing, specials
from vaultfs.format.content import EncryptedFile
from vaultfs.format.dirids import ROOT, SEALED_SIZE, BoundDirIds, Place, dirid_files, split_records
from vaultfs.format.header import Kind
from vaultfs.format.keyfile import TEST_KDF
from vaultfs.format.keys import VaultKeys
from vaultfs.format.names import NameCipher, is_reserved
from vaultfs.format.xattrs import XattrCipher
from vaultfs.vault import Vault, init_vault

LONG = "a long file name " * 8 + ".txt"
MIB = 1 << 20
SPARSE_SIZE = 8 * MIB  # exports write holes as zeros: kept small


def build(backing: Path, password: str) -> str:
    """Write the vault; return its recovery key."""
    key = init_vault(str(backing), password, TEST_KDF)
    vault = Vault.unlock(str(backing), password)
    try:
        _vault_part(vault)
    finally:
        vault.close()
    keys, _ = keyfile.unlock(str(backing), password)
    _sync_part(backing, keys)
    return key


def _vault_part(vault: Vault) -> None:
    for path, mode in (("/chats", 0o750), ("/media", 0o755), ("/shared", 0o755), ("/deep", 0o700),
                       ("/deep/a", 0o755), ("/deep/a/b", 0o755)):
        vault.mkdir(path, mode)
    write_file(vault, "/chats/msgstore.db", os.urandom(3 * 4096 + 17), 0o640)
    write_file(vault, "/chats/empty", b"")
    write_file(vault, "/chats/" + LONG, b"a file with a long name")
    write_file(vault, "/media/photo.jpg", os.urandom(5000), 0o600)
    write_file(vault, "/deep/a/b/leaf.txt", b"deep down")
    write_file(vault, "/setuid-tool", b"#!/bin/sh\n", 0o755)
    vault.chmod("/setuid-tool", 0o4755)
    write_file(vault, "/shared/from-device-a.txt", b"A")
    vault.symlink("msgstore.db", "/chats/link")
    vault.symlink("/" + "t" * 2000, "/chats/" + "a symlink with a long name " * 5)
    vault.mknod("/chats/pipe", stat.S_IFIFO | 0o600)
    vault.mknod("/chats/socket", stat.S_IFSOCK | 0o644)
    vault.mknod("/null-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    vault.link("/media/photo.jpg", "/media/photo-link.jpg")
    vault.link("/media/photo.jpg", "/chats/photo-in-chats.jpg")
    vault.link("/chats/pipe", "/media/pipe-link")
    handle = vault.create("/sparse.img", 0o644)  # data, a hole, data, a hole, data
    try:
        handle.write(0, b"start")
        handle.truncate(SPARSE_SIZE)
        handle.write(SPARSE_SIZE // 2, b"middle" * 1000)
        handle.write(SPARSE_SIZE - 10, b"the end...")
    finally:
        handle.close()
    vault.setxattr("/chats/msgstore.db", b"user.origin", b"phone")
    vault.setxattr("/media/photo.jpg", b"user.tags", b"holiday, beach")
    vault.setxattr("/chats", b"user.folder", b"chats folder")
    vault.setxattr("/", b"user.vault", b"root attribute")
    vault.chown("/media/photo.jpg", 1234, 5678)
    vault.utime("/chats/msgstore.db", 1_600_000_000_000_000_001, 1_600_000_000_000_000_002)
    for n, path in enumerate(("/deep/a/b", "/deep/a", "/deep", "/media", "/chats")):  # children first
        vault.utime(path, 1_500_000_000_000_000_000 + n, 1_500_000_000_000_000_000 + 1000 * n)


def _content(where: Path, keys: VaultKeys, data: bytes) -> None:
    fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        EncryptedFile.initialize(fd, keys.file_key, str(where)).write(0, data)
    finally:
        os.close(fd)


def _find(backing: Path, keys: VaultKeys, path: str) -> tuple[Path, bytes, Place]:
    """The backing entry of a plaintext path, its parent's ID and the directory's place (format layer)."""
    names, dirids = NameCipher(keys.name_key), BoundDirIds(keys)
    where, place = backing, ROOT
    for part in path.strip("/").split("/"):
        parent_id = dirids.read_at(str(where), place, "/").primary
        found = None
        for special in (False, True):
            candidate = where / names.encrypt(part, parent_id, special).entry
            if candidate.exists():
                found = candidate
        assert found is not None, path
        where, place = found, Place.of(parent_id, part)
    return where, place.parent_id, place


def _sync_part(backing: Path, keys: VaultKeys) -> None:
    names, dirids = NameCipher(keys.name_key), BoundDirIds(keys)
    msgstore, _, _ = _find(backing, keys, "/chats/msgstore.db")
    _content(msgstore.with_name(msgstore.name[:-4] + " (1).vfs"), keys, b"the other phone's version")
    link, _, _ = _find(backing, keys, "/chats/link")
    fd = os.open(link.with_name(link.name[:-4] + "-LAPTOP.vfx"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        specials.write(fd, keys.file_key, Kind.SYMLINK, b"elsewhere")
    finally:
        os.close(fd)
    long_entry, _, _ = _find(backing, keys, "/chats/" + LONG)
    stem = long_entry.name[:-4]
    (long_entry.parent / f"{stem}.sync-conflict-20261201-101500-MFZWI3D.vfn").write_bytes(
        (long_entry.parent / f"{stem}.vfn").read_bytes())
    _content(long_entry.parent / f"{stem}.sync-conflict-20261201-101500-MFZWI3D.vfl", keys, b"long, other device")
    media, root_id, media_place = _find(backing, keys, "/media")
    copy = media.with_name(media.name[:-4] + " (1).vfs")  # the same directory made on another device
    copy.mkdir()
    other_id = os.urandom(16)
    (copy / "vaultfs.dirid").write_bytes(dirids.seal(other_id, media_place))
    _content(copy / names.encrypt("from-the-copy.txt", other_id).entry, keys, b"in the directory's copy")
    shared, _, shared_place = _find(backing, keys, "/shared")
    second = os.urandom(16)
    (shared / "vaultfs (1).dirid").write_bytes(dirids.seal(second, shared_place))
    _content(shared / names.encrypt("from-device-b.txt", second).entry, keys, b"B")
    long_b = names.encrypt("l" * 150, second)
    (shared / long_b.sidecar).write_text(long_b.encoded, encoding="ascii")
    _content(shared / long_b.entry, keys, b"long name under the second ID")


# ---------------------------------------------------------------- what a reader shows

@dataclass(frozen=True)
class Shown:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int
    content: bytes | None = None
    target: str | None = None
    rdev: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    links: tuple[str, ...] = ()  # the other names of a hard-linked entry


_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}


def snapshot(backing: Path, password: str, contents: bool = True) -> dict[str, Shown]:
    """Everything a read-only Vault shows: every entry with its attributes, contents and link partners.

    Reading a file's contents may change its atime (relatime); without ``contents`` nothing is read
    but attributes (and directory listings, whose atime the first listing may change: list twice).
    """
    vault = Vault.unlock(str(backing), password, read_only=True)
    try:
        found: dict[str, tuple] = {}
        inodes: dict[int, list[str]] = {}
        stack = ["/"]
        while stack:
            top = stack.pop()
            for name, attr in vault.listdir(top):
                path = top.rstrip("/") + "/" + name
                kind = _KINDS[stat.S_IFMT(attr.st_mode)]
                content = target = None
                if kind == "dir":
                    stack.append(path)
                elif kind == "file" and contents:
                    handle = vault.open(path, os.O_RDONLY)
                    try:
                        content = handle.read(0, handle.size)
                    finally:
                        handle.close()
                elif kind == "symlink":
                    target = vault.readlink(path)
                xattrs = tuple(sorted((x, vault.getxattr(path, x)) for x in vault.listxattr(path)))
                if kind != "dir" and attr.st_nlink > 1:
                    inodes.setdefault(attr.st_ino, []).append(path)
                found[path] = (kind, attr, content, target, xattrs)
        root = vault.getattr("/")
        root_xattrs = tuple(sorted((x, vault.getxattr("/", x)) for x in vault.listxattr("/")))
    finally:
        vault.close()
    partners = {path: tuple(sorted(set(group) - {path})) for group in inodes.values() for path in group}
    # a directory's size is its backing directory's, which grows with the entries it ever held (ext4)
    shown = {path: Shown(kind, stat.S_IMODE(attr.st_mode), attr.st_uid, attr.st_gid,
                         0 if kind == "dir" else attr.st_size,
                         attr.st_mtime_ns, attr.st_atime_ns, content, target, attr.st_rdev, xattrs,
                         partners.get(path, ()))
             for path, (kind, attr, content, target, xattrs) in found.items()}
    shown["/"] = Shown("dir", stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid, 0, root.st_mtime_ns,
                       root.st_atime_ns, xattrs=root_xattrs)
    return shown


def without_atimes(tree: dict[str, Shown]) -> dict[str, Shown]:
    """A snapshot minus atimes: restoring times (utime) sets the ctime, after which the next reader's
    access moves an atime (relatime) whatever wrote it; ``trace`` compares the times themselves."""
    from dataclasses import replace

    return {path: replace(shown, atime_ns=0) for path, shown in tree.items()}


# ---------------------------------------------------------------- what opens with a key

@dataclass
class KeyTrace:
    """What a master key opens in a vault: every directory ID with its place, every file ID, and the
    backing times (atime, mtime) of every entry by its plaintext name (a client's copy with its markers)."""

    places: list[tuple[bytes, Place]] = field(default_factory=list)
    file_ids: set[bytes] = field(default_factory=set)
    times: dict[str, tuple[int, int]] = field(default_factory=dict)


def _noatime_dir(name: str | Path, parent: int | None = None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME, dir_fd=parent)


def trace(backing: Path, keys: VaultKeys) -> KeyTrace:
    """Walk the vault with the format layer, moving no atime (O_NOATIME): each directory's IDs at its
    place, each content file's ID, each entry's times."""
    names, dirids = NameCipher(keys.name_key), BoundDirIds(keys)
    found = KeyTrace()
    root = _noatime_dir(backing)
    st = os.fstat(root)
    found.times["/"] = (st.st_atime_ns, st.st_mtime_ns)
    stack = [(root, ROOT, "")]
    while stack:
        fd, place, prefix = stack.pop()
        try:
            ids = dirids.read_at(fd, place, prefix or "/").ids
            found.places.extend((dir_id, place) for dir_id in ids)
            for name in sorted(os.listdir(fd)):
                decoded = None if is_reserved(name) else listing.decode(names, fd, ids, name)
                if decoded is None:
                    continue
                st = os.lstat(name, dir_fd=fd)
                shown = f"{prefix}/{decoded.name}" + (decoded.copy.suffix if decoded.copy else "") + \
                    (" [special]" if decoded.special else "")
                found.times[shown] = (st.st_atime_ns, st.st_mtime_ns)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((_noatime_dir(name, fd), Place(decoded.parent_id, decoded.name_bytes), shown))
                else:
                    child = os.open(name, os.O_RDONLY | os.O_NOATIME, dir_fd=fd)
                    try:
                        found.file_ids.add(os.pread(child, 40, 0)[8:40])
                    finally:
                        os.close(child)
        finally:
            os.close(fd)
    return found


def old_key_findings(backing: Path, old: VaultKeys, before: KeyTrace) -> list[str]:
    """Everything in the backing dir that opens with ``old``: a config slot, a directory record at any of
    the old places, a name or sidecar under any old directory ID, a content file's header or block, an
    extended attribute.  Empty after a finished rekey."""
    findings: list[str] = []
    names, dirids, xattrs = NameCipher(old.name_key), BoundDirIds(old), XattrCipher(old.master_key)
    old_ids = tuple(dict.fromkeys(dir_id for dir_id, _ in before.places))
    places = list(dict.fromkeys(place for _, place in before.places))
    for path in [backing, *backing.rglob("*")]:
        if path.is_symlink():
            continue
        with_fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
        try:
            for attr in os.listxattr(with_fd):
                if xattrs.plain_name(attr) is not None:
                    findings.append(f"{path}: extended attribute {attr} opens with the old key")
        finally:
            os.close(with_fd)
        if path.is_dir():
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for file in dirid_files(fd):
                    for record in split_records((path / file).read_bytes()) or []:
                        if any(dirids.open(record, place) is not None for place in places):
                            findings.append(f"{path / file}: a directory record opens with the old key")
                for name in os.listdir(fd):
                    if not is_reserved(name) and listing.decode(names, fd, old_ids, name) is not None:
                        findings.append(f"{path / name}: the name decrypts with the old key")
            finally:
                os.close(fd)
            continue
        data = path.read_bytes()
        if path.parent == backing and path.name.startswith("vaultfs") and b'"slots"' in data:
            try:
                if keyfile.parse_config(data).vault_id == old.vault_id:
                    findings.append(f"{path}: a config of the old vault")
            except Exception:  # noqa: BLE001 - not a config at all: nothing to find here
                pass
            continue
        if path.suffix == ".vfn" or ".vfn" in path.name:
            if any(names.decrypt_encoded(data.decode("ascii", "replace"), d) for d in old_ids):
                findings.append(f"{path}: a long name that decrypts with the old key")
            continue
        if len(data) >= blocks.HEADER_SIZE + blocks.BLOCK_OVERHEAD and data[:4] == b"VFS2":
            file_id = data[8:40]
            if file_id in before.file_ids:
                findings.append(f"{path}: keeps an old file ID")
            gcm = crypto.Gcm(old.file_key(file_id))
            head = data[:7] + b"\0" + data[8:40]
            first = data[40 : 40 + min(len(data) - 40, 4096 + 28)]
            for is_last in (True, False):
                try:
                    gcm.open(first, blocks.block_aad_v2(head, 0, is_last, 0))
                    findings.append(f"{path}: block 0 opens with the old key")
                except crypto.AuthenticationFailed:
                    pass
    return findings


def files_noatime(backing: Path) -> list[Path]:
    """Every regular file below ``backing``, listed without moving a directory's atime."""
    found, stack = [], [backing]
    while stack:
        where = stack.pop()
        fd = _noatime_dir(where)
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(where / entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        found.append(where / entry.name)
        finally:
            os.close(fd)
    return found


def recoverable(backing: Path, key_sets: list[VaultKeys]) -> set[bytes]:
    """The plaintexts (file contents, special payloads) of every backing file that opens with one of the keys.

    Moves no atime (a rekey going on afterwards keeps the times it finds)."""
    found: set[bytes] = set()
    for path in files_noatime(backing):
        if path.name.startswith("vaultfs.conf"):
            continue
        fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
        try:
            head = os.pread(fd, 8, 0)
        finally:
            os.close(fd)
        if head[:4] != b"VFS2":
            continue
        for keys in key_sets:
            fd = os.open(path, os.O_RDONLY | os.O_NOATIME)  # reading moves no atime a rekey then keeps
            try:
                if head[6] == Kind.REGULAR:
                    content = EncryptedFile(fd, keys.file_key, str(path))
                    found.add(content.read(0, content.size))
                else:
                    found.add(specials.read(fd, keys.file_key, str(path)).payload)
                break
            except OSError:
                continue
            finally:
                os.close(fd)
    return found


def expected_payloads(tree: dict[str, Shown]) -> set[bytes]:
    """What ``recoverable`` must find for a shown tree: file contents and symlink targets."""
    return {s.content for s in tree.values() if s.kind == "file" and s.content is not None} | \
        {s.target.encode("utf-8", "surrogateescape") for s in tree.values() if s.kind == "symlink" and s.target}


def records_in(path: Path) -> int:
    return len((path / "vaultfs.dirid").read_bytes()) // SEALED_SIZE
