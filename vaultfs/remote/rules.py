"""What never leaves the machine, and what a conflict copy made by rclone bisync looks like.

Only whole, consistent files may reach the remote.  vaultfs writes an unfinished file
under a temporary name and renames it into place in one step, so excluding those names
is enough (with the vault not mounted: guard.py).  The same rules, as rclone filter
flags, a bisync filters file and a local matcher, keep every transfer direction and
vaultfs's own listings in agreement.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator

PULL_STAGING = "vaultfs.pull"  # pull's own staging dir in the backing root (transfer.py)

# rclone filter patterns: without "/" a pattern matches a file's name at any depth.
EXCLUDED = (
    "vaultfs.tmp-*",  # staged writes of import (staging.py), unfinished until renamed
    "*.tmp",  # atomic replacement of vaultfs.conf (backing.atomic_replace)
    ".fuse_hidden*",  # libfuse's names for files deleted while open
    f"/{PULL_STAGING}/**",  # files pull has fetched but not yet put in place
    "/vaultfs.conf.bak",  # an older vaultfs's copy of the previous config: it keeps an old password working
)

CONFIG_FILES = ("vaultfs.conf",)  # transferred last: a half copy is not yet a vault
STALE_CONFIG = "vaultfs.conf.bak"  # deleted from the remote by push and sync (issue 11)

# rclone bisync's conflict copies: 1.58-1.65 rename both sides to NAME..path1 / NAME..path2;
# later versions add .conflictN.
_BISYNC_COPY = re.compile(r"\.\.path[12]$|\.conflict\d+(?:\.|$)")


# v1 keeps symlinks as backing symlinks (encrypted targets); rclone skips symlinks unless
# told to carry them as NAME.rclonelink files, and brings them back as symlinks.
TRANSFER_FLAGS = ("--links",)


def filter_args(*, config: bool = True) -> list[str]:
    """The rules as rclone flags (--filter keeps their order); without ``config``, vaultfs.conf* too."""
    patterns = EXCLUDED if config else EXCLUDED + tuple(f"/{name}" for name in CONFIG_FILES)
    return [arg for pattern in patterns for arg in ("--filter", f"- {pattern}")]


def config_only_args() -> list[str]:
    """rclone flags that let only the root's vaultfs.conf through."""
    rules = [f"+ /{name}" for name in CONFIG_FILES] + ["- **"]
    return ["--max-depth", "1", *(arg for rule in rules for arg in ("--filter", rule))]


def filters_file_text() -> str:
    """The rules as a bisync ``--filters-file`` (bisync asks for --resync when this text changes)."""
    return "# vaultfs: names that never leave the machine\n" + "".join(f"- {p}\n" for p in EXCLUDED)


def excluded(relative: str) -> bool:
    """Whether a backing-relative path (``a/b.vfs``) falls under the rules."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in EXCLUDED:
        if pattern.startswith("/"):
            if (relative + "/").startswith(pattern[1:].rstrip("*")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def local_files(root: str, symlinks: bool = False) -> dict[str, tuple[int, int]]:
    """Every regular file (and symlink) below ``root`` that the rules let through: path -> (size, mtime in ns)."""
    found = {}
    for relative, info in _walk(root, symlinks):
        if not excluded(relative):
            found[relative] = (info.st_size, info.st_mtime_ns)
    return found


def _walk(root: str, symlinks: bool, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    try:
        entries = list(os.scandir(os.path.join(root, prefix) if prefix else root))
    except FileNotFoundError:
        return
    for entry in entries:
        relative = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, symlinks, relative + "/")
        elif entry.is_file(follow_symlinks=False) or (symlinks and entry.is_symlink()):
            yield relative, entry.stat(follow_symlinks=False)


def is_conflict_copy(relative: str) -> bool:
    return bool(_BISYNC_COPY.search(relative.rsplit("/", 1)[-1]))


def conflict_copies(root: str) -> set[str]:
    """The bisync conflict copies below ``root``."""
    return {relative for relative in local_files(root) if is_conflict_copy(relative)}
