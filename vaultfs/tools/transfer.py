"""Restore and import without FUSE: export, import, ls and cat on the Vault API.

Everything streams: one directory listing and one 1 MiB buffer at a time, so a vault
of 100,000 files and 20 GiB needs no more memory than a small one.  Export skips (and
reports) files that fail authentication and restores the rest; import writes each file
to a hidden staging entry and renames it into place, so an interrupted import leaves no
half-written file visible and a second run resumes where the first stopped.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from vaultfs import backing
from vaultfs.entries import Attr, join_path, split_path
from vaultfs.errors import IntegrityError, NoSuchFile, UsageError
from vaultfs.tools.progress import Progress
from vaultfs.vault import Vault

CHUNK = 1 << 20


@dataclass
class TransferResult:
    files: int = 0
    bytes: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def walk(vault: Vault, top: str, failed: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, Attr]]:
    """Depth-first (pre-order) plaintext paths below ``top`` with their attributes, by name.

    A directory that cannot be listed (no valid directory ID: fsck says why) is recorded
    in ``failed`` and skipped, if a list is given; else the error propagates.
    """
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            listing = vault.listdir(directory)
        except IntegrityError as exc:
            if failed is None:
                raise
            failed.append((directory, exc.strerror or "integrity error"))
            continue
        for name, attr in sorted(listing, key=lambda item: item[0], reverse=True):
            path = join_path(directory, name)
            yield path, attr
            if stat.S_ISDIR(attr.st_mode):
                stack.append(path)


def total_size(vault: Vault, paths: list[str]) -> int:
    total = 0
    for top in paths:
        attr = vault.getattr(top)
        if stat.S_ISREG(attr.st_mode):
            total += attr.st_size
        elif stat.S_ISDIR(attr.st_mode):
            total += sum(a.st_size for _, a in walk(vault, top) if stat.S_ISREG(a.st_mode))
    return total


# ---------------------------------------------------------------- export

def _set_times(path: str, attr: Attr) -> None:
    os.utime(path, ns=(attr.st_atime_ns, attr.st_mtime_ns), follow_symlinks=False)


def _set_owner(path: str, attr: Attr) -> None:
    """As root, the owner the vault holds. Before any chmod: chown clears set-user-ID and
    set-group-ID of a file, so a mode set first would lose them."""
    if os.geteuid() == 0:
        os.chown(path, attr.st_uid, attr.st_gid, follow_symlinks=False)


def _xattrs_out(vault: Vault, path: str, target: str) -> None:
    """Copy an entry's user.* extended attributes to the restored file (where the target supports them)."""
    for name in vault.listxattr(path):
        try:
            os.setxattr(target, name, vault.getxattr(path, name), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            return  # the destination filesystem keeps none: nothing more to try here


def _xattrs_in(source: str, vault: Vault, path: str) -> None:
    """Copy a source entry's user.* extended attributes into the vault."""
    try:
        names = [name for name in os.listxattr(source, follow_symlinks=False) if name.startswith("user.")]
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    for name in names:
        vault.setxattr(path, name.encode("utf-8", "surrogateescape"),
                       os.getxattr(source, name, follow_symlinks=False))


def _export_file(vault: Vault, path: str, target: str, progress: Progress) -> int:
    handle = vault.open(path, os.O_RDONLY)
    written = 0
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while True:
                data = handle.read(written, CHUNK)
                if not data:
                    break
                backing.pwrite_all(fd, data, written)
                written += len(data)
                progress.add_bytes(len(data))
        finally:
            os.close(fd)
    finally:
        handle.close()
    return written


def export(vault: Vault, dest: str, paths: list[str], force: bool, progress: Progress) -> TransferResult:
    """Decrypt ``paths`` (default: everything) into the plain directory ``dest``."""
    result = TransferResult()
    directories: list[tuple[str, str, Attr]] = []
    links: dict[int, str] = {}
    os.makedirs(dest, exist_ok=True)

    def target_of(path: str) -> str:
        return os.path.join(dest, *split_path(path))

    def clear(target: str) -> None:
        if os.path.lexists(target) and force:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)

    def export_one(path: str, attr: Attr) -> None:
        target = target_of(path)
        mode = stat.S_IMODE(attr.st_mode)
        if stat.S_ISDIR(attr.st_mode):
            if not os.path.isdir(target):
                clear(target)
                os.makedirs(target, 0o700)
            directories.append((path, target, attr))
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        clear(target)
        if stat.S_ISLNK(attr.st_mode):
            os.symlink(vault.readlink(path), target)
        elif stat.S_ISFIFO(attr.st_mode):
            os.mkfifo(target, mode)
        elif (stat.S_ISCHR(attr.st_mode) or stat.S_ISBLK(attr.st_mode)) and os.geteuid() == 0:
            os.mknod(target, stat.S_IFMT(attr.st_mode) | mode, attr.st_rdev)
        elif stat.S_ISREG(attr.st_mode):
            if attr.st_nlink > 1 and attr.st_ino in links:
                os.link(links[attr.st_ino], target)
                result.files += 1
                progress.add_file()
                return
            try:
                result.bytes += _export_file(vault, path, target, progress)
            except IntegrityError as exc:
                if os.path.lexists(target):
                    os.unlink(target)
                result.failed.append((path, exc.strerror or "authentication failed"))
                progress.write(f"vaultfs: FAILED {path}: {exc.strerror}; skipped")
                return
            _set_owner(target, attr)
            os.chmod(target, mode)
            _xattrs_out(vault, path, target)
            if attr.st_nlink > 1:
                links[attr.st_ino] = target
            result.files += 1
            progress.add_file()
        else:
            result.skipped += 1
            return
        if not stat.S_ISREG(attr.st_mode):  # a regular file's owner was set before its mode
            _set_owner(target, attr)
        _set_times(target, attr)

    for top in paths or ["/"]:
        attr = vault.getattr(top)
        if split_path(top):
            export_one(top, attr)
        else:
            directories.append((top, dest, attr))
        if stat.S_ISDIR(attr.st_mode):
            for path, child_attr in walk(vault, top, result.failed):
                export_one(path, child_attr)
    for path, target, attr in reversed(directories):  # children first: their creation touched the mtime
        _xattrs_out(vault, path, target)
        _set_owner(target, attr)
        os.chmod(target, stat.S_IMODE(attr.st_mode))
        _set_times(target, attr)
    return result


# ---------------------------------------------------------------- import

def _vault_attr(vault: Vault, path: str) -> Attr | None:
    try:
        return vault.getattr(path)
    except FileNotFoundError:
        return None


def _owner_in(vault: Vault, path: str, st: os.stat_result) -> None:
    """As root, the source's owner, as ``cp -a`` and tar keep it (another user's files stay
    theirs); a user's import makes everything theirs anyway. chown clears set-user-ID and
    set-group-ID, so the mode is put back after it. Checked on every run, so a run killed
    between publishing a file and this is finished by the next."""
    if os.geteuid() != 0:
        return
    attr = vault.getattr(path)
    if (attr.st_uid, attr.st_gid) == (st.st_uid, st.st_gid):
        return
    vault.chown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        vault.chmod(path, stat.S_IMODE(st.st_mode))


def _copy_in(vault: Vault, source: str, path: str, st: os.stat_result, progress: Progress) -> int:
    handle, staged = vault.create_staged(path, 0o600)
    copied = 0
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while True:
                data = os.read(fd, CHUNK)
                if not data:
                    break
                handle.write(copied, data)
                copied += len(data)
                progress.add_bytes(len(data))
        finally:
            os.close(fd)
        handle.fsync()
    finally:
        handle.close()
    vault.publish_staged(staged, path, stat.S_IMODE(st.st_mode), st.st_atime_ns, st.st_mtime_ns)
    return copied


def import_tree(vault: Vault, source: str, into: str, progress: Progress) -> TransferResult:
    """Encrypt the plain tree ``source`` into the vault directory ``into``; resumable."""
    result = TransferResult()
    links: dict[tuple[int, int], str] = {}
    directories: list[tuple[str, str, os.stat_result]] = []
    parts = split_path(into)
    for depth in range(1, len(parts) + 1):
        partial = "/" + "/".join(parts[:depth])
        if _vault_attr(vault, partial) is None:
            vault.mkdir(partial, 0o755)
    stack = [(source, "/" + "/".join(parts))]
    directories.append((stack[0][1], source, os.stat(source)))  # INTO stands for SRC itself
    while stack:
        source_dir, vault_dir = stack.pop()
        vault.remove_staged(vault_dir)
        with os.scandir(source_dir) as entries:
            items = sorted(entries, key=lambda item: item.name)
        for item in items:
            path = join_path(vault_dir, item.name)
            st = item.stat(follow_symlinks=False)
            existing = _vault_attr(vault, path)
            if stat.S_ISDIR(st.st_mode):
                if existing is None:
                    vault.mkdir(path, 0o700)
                elif not stat.S_ISDIR(existing.st_mode):
                    result.failed.append((path, "exists in the vault and is not a directory"))
                    continue
                directories.append((path, item.path, st))
                stack.append((item.path, path))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(item.path)
                if existing is not None and stat.S_ISLNK(existing.st_mode) and vault.readlink(path) == target:
                    _owner_in(vault, path, st)
                    continue
                if existing is not None:
                    vault.unlink(path)
                vault.symlink(target, path)
                _owner_in(vault, path, st)
                vault.utime(path, st.st_atime_ns, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                unchanged = (existing is not None and stat.S_ISREG(existing.st_mode)
                             and existing.st_size == st.st_size and existing.st_mtime_ns == st.st_mtime_ns)
                if unchanged:
                    result.skipped += 1
                elif st.st_nlink > 1 and key in links:
                    if existing is not None:
                        vault.unlink(path)
                    vault.link(links[key], path)
                else:
                    result.bytes += _copy_in(vault, item.path, path, st, progress)
                    _xattrs_in(item.path, vault, path)
                    result.files += 1
                _owner_in(vault, path, st)
                if st.st_nlink > 1:
                    links.setdefault(key, path)
                progress.add_file()
            elif stat.S_IFMT(st.st_mode) in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
                if existing is None:  # stored as a special entry: a regular file in the backing dir
                    vault.mknod(path, st.st_mode, st.st_rdev)
                _owner_in(vault, path, st)
                vault.utime(path, st.st_atime_ns, st.st_mtime_ns)
            else:
                result.failed.append((path, "unknown file type: not imported"))
    for path, source_path, st in reversed(directories):
        _xattrs_in(source_path, vault, path)
        _owner_in(vault, path, st)
        vault.chmod(path, stat.S_IMODE(st.st_mode))
        vault.utime(path, st.st_atime_ns, st.st_mtime_ns)
    return result


# ---------------------------------------------------------------- ls / cat

def format_listing(vault: Vault, path: str) -> Iterator[str]:
    try:
        attr = vault.getattr(path)
    except (FileNotFoundError, NotADirectoryError):
        raise NoSuchFile(path) from None
    entries = vault.listdir(path) if stat.S_ISDIR(attr.st_mode) else [(split_path(path)[-1], attr)]
    for name, child in sorted(entries, key=lambda item: item[0]):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(child.st_mtime_ns / 1e9))
        line = f"{stat.filemode(child.st_mode)} {child.st_nlink:>3} {child.st_size:>12} {when} {name}"
        if stat.S_ISLNK(child.st_mode):
            line += " -> " + vault.readlink(join_path(path, name) if stat.S_ISDIR(attr.st_mode) else path)
        yield line


def cat(vault: Vault, path: str, out: BinaryIO) -> int:
    """Stream one file to ``out``; a closed ``out`` raises BrokenPipeError (the CLI ends quietly)."""
    try:
        if stat.S_ISDIR(vault.getattr(path).st_mode):
            raise UsageError(f"{path} is a directory (vaultfs ls lists it)")
        handle = vault.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        raise NoSuchFile(path) from None
    offset = 0
    try:
        while True:
            data = handle.read(offset, CHUNK)
            if not data:
                return offset
            out.write(data)
            offset += len(data)
    finally:
        handle.close()
