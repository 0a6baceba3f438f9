"""fstab support: ``mount MOUNTPOINT`` for a line of type ``fuse.vaultfs``.

mount(8) hands a ``fuse.TYPE`` line to ``mount.fuse3``, which runs
``TYPE SOURCE MOUNTPOINT -o OPTIONS`` (with a reset PATH: the type may be the absolute
path, ``fuse./usr/local/bin/vaultfs``).  ``vaultfs BACKING MOUNTPOINT -o ...`` is
therefore ``vaultfs mount`` with its flags spelled as mount options:

    /srv/cloud/ChatBackup  /srv/ChatBackup  fuse.vaultfs  passfile=/root/.vaultfs-pass,idle=30m,nofail  0 0

``passfile=FILE``, ``passcmd=PROGRAM`` (fstab fields cannot hold spaces: point it to a
script), ``idle=DURATION``, ``log=FILE``, ``allow_other`` and ``ro`` map to the flags of
the same name; the kernel's generic flags (``nodev``, ``noexec`` ...) go to libfuse;
mount(8)'s own (``noauto``, ``nofail``, ``user``, ``_netdev``, ``x-systemd.*`` ...)
are dropped.  ``umount MOUNTPOINT`` unmounts: the daemon flushes, exits and the
mountpoint stays sealed underneath.

A remote source (``gdrive:Backups/chat``, rclone's mount underneath) is refused: the
lock of a remote mount must wait for rclone's uploads, and nothing can make umount(8)
wait (it detaches the mount and returns; it would only run an ``umount.fuse.vaultfs``
helper installed in /sbin, which a pip install cannot provide).  At shutdown systemd
would then stop the network while the uploads are still queued: the backup would look
done and stay on this disk.  docs/remote.md names what to use instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaultfs.errors import UsageError
from vaultfs.remote.rclone import split_remote

FLAGS = {"passfile": "--passfile", "passcmd": "--passcmd", "idle": "--idle", "log": "--log"}
SWITCHES = {"allow_other": "--allow-other", "ro": "--read-only"}
KERNEL = {"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
          "strictatime", "nodiratime", "sync", "async", "dirsync"}
MOUNT8 = {"defaults", "auto", "noauto", "nofail", "user", "users", "owner", "group", "_netdev"}


def looks_like_helper_call(argv: Sequence[str], verbs: set[str]) -> bool:
    """``SOURCE MOUNTPOINT [-o OPTS]``: two paths (or a remote and a path) where a verb would be."""
    return (len(argv) >= 2 and argv[0] not in verbs and not argv[0].startswith("-")
            and ("/" in argv[0] or split_remote(argv[0]) is not None) and "/" in argv[1]
            and not argv[1].startswith("-"))


def to_mount_args(argv: Sequence[str]) -> list[str]:
    """Translate the mount helper call into ``vaultfs mount`` arguments."""
    source, mountpoint, rest = argv[0], argv[1], list(argv[2:])
    if split_remote(source) is not None:
        raise UsageError(f"fstab: a remote source ({source}) is not supported: umount cannot wait for rclone's "
                         "uploads, so an unmount or a shutdown would cut them off. Mount it at login with the "
                         "user unit (`vaultfs login-unit`), or with `vaultfs mount`/`vaultfs run` (docs/remote.md)")
    options: list[str] = []
    while rest:
        flag = rest.pop(0)
        if flag == "-o" and rest:
            options += [o for o in rest.pop(0).split(",") if o]
        elif flag.startswith("-o") and len(flag) > 2:
            options += [o for o in flag[2:].split(",") if o]
        elif flag in ("-n", "-s", "-f", "-v"):  # mount(8)'s: no mtab, sloppy, fake, verbose
            continue
        else:
            raise UsageError(f"mount helper: unexpected argument {flag!r}")
    args = ["mount", source, mountpoint]
    passthrough: list[str] = []
    for option in options:
        name, sep, value = option.partition("=")
        if name in FLAGS and sep:
            args += [FLAGS[name], value]
        elif name in SWITCHES and not sep:
            args.append(SWITCHES[name])
        elif name in MOUNT8 or name.startswith(("x-", "comment=")) or option.startswith("comment="):
            continue
        elif name in KERNEL and not sep:
            if name != "rw":
                passthrough.append(name)
        else:
            passthrough.append(option)
    if passthrough:
        args += ["-o", ",".join(passthrough)]
    return args
