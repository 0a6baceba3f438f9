"""What `vaultfs rekey` keeps between runs, and the checks around it (tools/rekey.py walks the tree).

- ``vaultfs.rekey`` in the backing root is the *pending config*: a complete
  ``vaultfs.conf`` for the new master key, its slot wrapping the new key under the new
  password.  It exists from before the first entry changes until the switch-over, which
  is one rename of it over ``vaultfs.conf``.  Every other reader refuses a vault that has
  it (format/keyfile.py ``check_backing_dir``); a second run opens it with the new
  password and goes on with the same key.
- A directory's original times wait in an extended attribute of the directory itself
  (``user.vaultfs-rekey-times``; an attribute changes no mtime) from before its first
  change until they are put back, so a run killed half-way loses no directory time.
- The backing dir's flock, the one a mount daemon and push/pull/sync hold: a rekey
  refuses while they run and keeps them out while it runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator

from vaultfs import backing, crypto
from vaultfs.entries import join_path
from vaultfs.errors import (
    ConfigDamaged,
    IntegrityError,
    NotEnoughSpace,
    RekeyBlocked,
    UnsupportedFormat,
    VaultBusy,
    WrongPassword,
)
from vaultfs.format import keyfile, listing
from vaultfs.format.dirids import ROOT, BoundDirIds, Place
from vaultfs.format.keyfile import Config, KdfParams
from vaultfs.format.keys import DIR_ID_SIZE, VaultKeys, new_master_key
from vaultfs.format.names import NameCipher, is_reserved

PENDING_NAME = keyfile.REKEY_NAME
TIMES_XATTR = "user.vaultfs-rekey-times"  # not user.vaultfs.*: vaultfs's attribute store ignores it
LABEL_REKEY_DIR_ID = "vaultfs/v2/rekey-dir-id"
SPACE_MARGIN = 4 << 20  # directory ID files, sidecars, the config: small, but not nothing
_TIMES = struct.Struct(">qq")


# ---------------------------------------------------------------- one rekey at a time, never while in use

@contextlib.contextmanager
def claimed(backing_dir: str) -> Iterator[int]:
    """Hold the backing dir's flock for the whole rekey; yield the root's fd.

    The mount daemon holds this flock until it exits (fuse/serve.py ``claim_backing``),
    and so do push, pull and sync (remote/guard.py ``exclusive``).  State files name the
    mountpoint of a daemon an older vaultfs started without it.
    """
    from vaultfs.remote import guard

    where = guard.mounted_at(backing_dir)
    if where is not None:
        raise VaultBusy(f"{backing_dir} is mounted at {where}; lock it first (vaultfs lock {where})")
    fd = open_dir(None, backing_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaultBusy(f"{backing_dir} is in use: mounted, or a push, pull, sync or another rekey of it is "
                            "running; lock it or let that finish first") from None
        yield fd
    finally:
        os.close(fd)


def open_dir(parent_fd: int | None, name: str) -> int:
    """A directory fd whose listings leave the directory's atime alone (O_NOATIME where allowed).

    A rekey lists every directory; with relatime a listing moves an atime that is not
    newer than the mtime or ctime, and the times a rekey keeps must be the ones it found.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if parent_fd is not None:  # inside the vault nothing is followed; BACKING itself may be a symlink
        flags |= os.O_NOFOLLOW
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=parent_fd)
    except PermissionError:  # O_NOATIME needs the owner (or CAP_FOWNER)
        return os.open(name, flags, dir_fd=parent_fd)


# ---------------------------------------------------------------- the pending config

def pending_path(backing_dir: str) -> str:
    return os.path.join(backing_dir, PENDING_NAME)


def load_pending(backing_dir: str) -> Config | None:
    """The pending config of a rekey under way, or None; parsed as strictly as ``vaultfs.conf``."""
    path = pending_path(backing_dir)
    if not os.path.lexists(path):
        return None
    try:
        raw = backing.read_bounded(path, keyfile.MAX_CONFIG_BYTES)
    except backing.NotRegularFile as exc:
        raise ConfigDamaged(f"{path} is {exc.kind}, not a regular file") from None
    try:
        return keyfile.parse_config(raw)
    except ConfigDamaged as exc:
        raise ConfigDamaged(f"{path}: {exc.detail}") from None


def open_pending(config: Config, password: str) -> VaultKeys:
    """The new master key, with the new password given when the rekey started."""
    try:
        return keyfile.unwrap(config, password)
    except WrongPassword:
        raise WrongPassword("that is not the new password given when this rekey started") from None


def start(backing_dir: str, new_password: str, kdf: KdfParams) -> tuple[VaultKeys, Config]:
    """A new master key, written as the pending config (atomically, fsynced) before anything else changes."""
    keys = VaultKeys.derive(new_master_key())
    config = keyfile.new_config(keys, new_password, kdf)
    backing.atomic_replace(pending_path(backing_dir), config.serialize(), 0o600)
    return keys, config


def start_interrupted(root_fd: int) -> bool:
    """A run was killed while writing the pending config: the root's kept times are its originals then.

    Otherwise a fresh start takes the root's times anew (a run killed right after the
    switch-over leaves its kept times behind, older than what happened since).
    """
    try:
        os.lstat(PENDING_NAME + ".tmp", dir_fd=root_fd)
    except FileNotFoundError:
        return False
    return True


def just_switched(root_fd: int) -> bool:
    """The root still keeps the times of a rekey whose pending config is gone: one was killed right after
    its switch-over (the new password opens the vault; the old one is expected to fail)."""
    try:
        os.lstat(PENDING_NAME, dir_fd=root_fd)
    except FileNotFoundError:
        return _kept_times(root_fd) is not None
    return False


def stale_configs(root_fd: int, old_vault_id: bytes) -> list[str]:
    """Files in the root holding a slot for the old master key besides ``vaultfs.conf``: the backup an
    older vaultfs kept, a crashed write's temp file, a sync client's conflict copies of the config."""
    found = []
    for name in os.listdir(root_fd):
        if not name.startswith("vaultfs") or ".conf" not in name or name == keyfile.CONFIG_NAME:
            continue
        try:
            config = keyfile.parse_config(backing.read_bounded(name, keyfile.MAX_CONFIG_BYTES, dir_fd=root_fd))
        except (OSError, ConfigDamaged, UnsupportedFormat):
            continue
        if config.vault_id == old_vault_id:
            found.append(name)
    return found


def commit(root_fd: int, old_vault_id: bytes) -> None:
    """The switch-over: the pending config replaces ``vaultfs.conf`` in one rename.

    First every other copy of a config for the old key goes, so that none outlives it.
    """
    own = [keyfile.LEGACY_BACKUP_NAME, keyfile.CONFIG_NAME + ".tmp", PENDING_NAME + ".tmp"]  # even half written
    for name in stale_configs(root_fd, old_vault_id) + own:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=root_fd)
    os.rename(PENDING_NAME, keyfile.CONFIG_NAME, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    os.fsync(root_fd)


# ---------------------------------------------------------------- directory IDs

def new_dir_id(old: VaultKeys, new: VaultKeys, old_id: bytes) -> bytes:
    """The new ID of a directory: a pseudorandom function of its old ID under the new master key.

    Deterministic, so a run killed half-way need not remember which new ID it gave
    which directory (a name written under it says so by decrypting); unpredictable to
    anyone without the new key, old key or not.  The root's is the new derived root ID.
    """
    if old_id == old.root_dir_id:
        return new.root_dir_id
    return crypto.hkdf(new.master_key, LABEL_REKEY_DIR_ID, DIR_ID_SIZE, salt=old_id)


# ---------------------------------------------------------------- directory times

def remember_times(fd: int, overwrite: bool = False) -> tuple[int, int]:
    """Keep a directory's (atime, mtime) on itself unless an earlier run did; return the originals."""
    if not overwrite:
        kept = _kept_times(fd)
        if kept is not None:
            return kept
    st = os.fstat(fd)
    times = (st.st_atime_ns, st.st_mtime_ns)
    try:
        os.setxattr(fd, TIMES_XATTR, _TIMES.pack(*times))
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise  # no attributes here: the times are kept in memory only (a kill loses this one's)
    return times


def _kept_times(fd: int) -> tuple[int, int] | None:
    try:
        raw = os.getxattr(fd, TIMES_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    return _TIMES.unpack(raw) if len(raw) == _TIMES.size else None


def restore_times(fd: int, times: tuple[int, int] | None = None) -> None:
    """Put the kept times back, then drop the attribute (which changes no mtime)."""
    times = times or _kept_times(fd)
    if times is None:
        return
    os.utime(fd, ns=times)
    with contextlib.suppress(OSError):
        os.removexattr(fd, TIMES_XATTR)


# ---------------------------------------------------------------- before the first change

def check_space(root_fd: int, backing_dir: str) -> int:
    """Refuse (before anything changes) when the largest file cannot be written once more.

    A rekey works per file: each new file is written next to its old one, which goes
    right after.  A hard-linked file's new copy waits until all its names are converted,
    so those count together.  Allocated blocks are counted (a sparse file's holes cost
    nothing, in the old copy and in the new one).  Returns the bytes allocated in all (the
    progress bar's total).
    """
    largest, linked, total, seen = 0, 0, 0, set()
    stack = [os.dup(root_fd)]
    while stack:
        fd = stack.pop()
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(open_dir(fd, entry.name))
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    allocated = st.st_blocks * 512
                    total += allocated
                    if st.st_nlink > 1:
                        if st.st_ino not in seen:
                            seen.add(st.st_ino)
                            linked += allocated
                    else:
                        largest = max(largest, allocated)
        finally:
            os.close(fd)
    need = largest + linked + SPACE_MARGIN
    vfs = os.fstatvfs(root_fd)
    free = vfs.f_bavail * vfs.f_frsize
    if free < need:
        raise NotEnoughSpace(f"a rekey writes each file anew before removing the old one and needs about "
                             f"{_mib(need)} free in {backing_dir} (its largest file once more, hard-linked files "
                             f"once more together); {_mib(free)} is free. Nothing was changed")
    return total


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def check_readable(root_fd: int, keys: VaultKeys) -> None:
    """Refuse (before anything changes) a vault with a directory whose entries cannot be named.

    A directory without a valid ID (its ``vaultfs.dirid`` damaged, or moved away by a
    rename on another device) cannot have its names translated: a rekey would leave them
    under the old key.  ``fsck --repair`` takes in what another device's rename left
    behind; what it cannot repair has to go before the old key can.  An empty directory
    without an ID (an interrupted mkdir, hidden by every reader) is no obstacle.
    """
    names, dirids = NameCipher(keys.name_key), BoundDirIds(keys)
    failed: list[str] = []
    stack: list[tuple[int, Place, str]] = [(os.dup(root_fd), ROOT, "/")]
    while stack:
        fd, place, label = stack.pop()
        try:
            try:
                ids = dirids.read_at(fd, place, label).ids
            except IntegrityError as exc:
                if any(not (is_reserved(n) or listing.is_sidecar(n)) for n in os.listdir(fd)):
                    failed.append(exc.strerror or label)
                continue
            for name in sorted(os.listdir(fd)):
                if is_reserved(name) or listing.is_sidecar(name):
                    continue
                entry = listing.decode(names, fd, ids, name)
                if entry is not None and not entry.special and stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                    stack.append((open_dir(fd, name), Place(entry.parent_id, entry.name_bytes),
                                  join_path(label, entry.name)))
        finally:
            os.close(fd)
    if failed:
        raise RekeyBlocked(f"{len(failed)} director{'y' if len(failed) == 1 else 'ies'} cannot be read "
                           f"({'; '.join(failed[:5])}). `vaultfs fsck` says why, and `fsck --repair` takes in a "
                           "directory another device's rename left behind; remove what it cannot repair, then "
                           "run rekey again. Nothing was changed")
