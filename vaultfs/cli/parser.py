"""The argparse side of the ``vaultfs`` command: every verb, its flags and help texts.

Kept apart from the verbs so that the help texts, the shared flag helpers (password
source, password hashing, mount options) and the argument types (durations, positive
integers, --passcmd) read in one place.  ``build_parser`` wires each verb to its
``cmd_<verb>`` function; the verb modules never import this one.
"""

from __future__ import annotations

import argparse
import re

from vaultfs import __version__
from vaultfs.cli.content_verbs import (
    cmd_cat,
    cmd_conflicts,
    cmd_export,
    cmd_fsck,
    cmd_import,
    cmd_ls,
    cmd_upgrade,
)
from vaultfs.cli.key_verbs import cmd_info, cmd_init, cmd_passwd, cmd_recover, cmd_rekey
from vaultfs.cli.mount_verbs import (
    cmd_lock,
    cmd_login_unit,
    cmd_mount,
    cmd_pull,
    cmd_push,
    cmd_run,
    cmd_status,
    cmd_sync,
)
from vaultfs.errors import UsageError, VaultError
from vaultfs.format.keyfile import KDF_FLOOR, KDF_MAX
from vaultfs.passcmd import PassCommand

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and the usage exit code of errors.UsageError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(UsageError.exit_code, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_duration(text: str) -> float:
    """'90' or '90s', '15m', '2h', '1d' -> seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 90s, 15m, 2h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _add_password_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every verb that sets a new password: strength override and KDF parameters."""
    parser.add_argument("--allow-weak-password", action="store_true",
                        help="accept a password that zxcvbn rates very weak (score 0 or 1)")
    group = parser.add_argument_group(
        "password hashing",
        f"Default: calibrated to about 1 s on this machine. Never below the floor of RFC 9106's second "
        f"recommendation: memory {KDF_FLOOR.memory_kib} KiB ({KDF_FLOOR.memory_kib // 1024} MiB), time "
        f"{KDF_FLOOR.time_cost}, parallelism {KDF_FLOOR.parallelism}.")
    group.add_argument("--kdf-memory-kib", type=_positive_int, metavar="KIB",
                       help=f"argon2id memory in KiB (at most {KDF_MAX.memory_kib})")
    group.add_argument("--kdf-time", type=_positive_int, metavar="N",
                       help=f"argon2id passes (at most {KDF_MAX.time_cost})")
    group.add_argument("--kdf-parallelism", type=_positive_int, metavar="N",
                       help=f"argon2id lanes (at most {KDF_MAX.parallelism})")
    group.add_argument("--insecure-kdf-for-tests", action="store_true",
                       help="TEST ONLY, never for real data: allow --kdf-* values below the floor "
                            f"({KDF_FLOOR.memory_kib} KiB, {KDF_FLOOR.time_cost} passes, {KDF_FLOOR.parallelism} "
                            "lanes), and without them use 1 MiB, 1 pass, 1 lane; passwords can then be "
                            "guessed thousands of times faster")


PASSFILE_HELP = "read the password from FILE (first line), or from stdin with -"
PASSCMD_HELP = ("run CMD (split like a shell would, no shell run) and take the first line it prints as "
                "the password, e.g. --passcmd 'secret-tool lookup vaultfs chat'")
NEW_PASSFILE_HELP = "new password from FILE, or the next line of stdin with -"


def _passcmd(text: str) -> PassCommand:
    try:
        return PassCommand(text)
    except VaultError as exc:
        raise argparse.ArgumentTypeError(exc.detail or exc.message) from None


def _verb(sub: argparse._SubParsersAction, name: str, func, summary: str, description: str,
          passfile: str | None = PASSFILE_HELP) -> argparse.ArgumentParser:
    """A verb on BACKING: its parser with the BACKING argument and, if it needs one, --passfile/--passcmd."""
    parser = sub.add_parser(name, help=summary, description=description)
    parser.add_argument("backing", metavar="BACKING")
    if passfile is not None:
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--passfile", metavar="FILE|-", help=passfile)
        source.add_argument("--passcmd", dest="passfile", metavar="CMD", type=_passcmd, help=PASSCMD_HELP)
    parser.set_defaults(func=func)
    return parser


def _add_mount_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--read-only", action="store_true", help="mount read-only")
    parser.add_argument("--allow-other", action="store_true",
                        help="let other users access the mount (enables default_permissions)")
    parser.add_argument("-o", dest="fuse_options", action="append", default=[], metavar="OPTIONS",
                        help="extra FUSE mount options, comma-separated (repeatable)")
    parser.add_argument("--log", metavar="FILE", help="log to FILE instead of syslog when in the background")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaultfs", description="Encrypted filesystem for chat backups bound for the cloud.")
    parser.add_argument("--version", action="version", version=f"vaultfs {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    p = _verb(sub, "init", cmd_init, "create a new vault in an empty directory",
              "Create a vault in BACKING (new or empty) and print its recovery key once.")
    _add_password_flags(p)

    _verb(sub, "info", cmd_info, "show the vault's format and key-slot parameters (no password)",
          "Show format, cipher suite, block size and KDF parameters. No secrets.", passfile=None)

    p = _verb(sub, "passwd", cmd_passwd, "change the password (no file is re-encrypted)",
              "Change the password: the master key is re-wrapped, files stay as they are.",
              passfile="current password: " + PASSFILE_HELP)
    p.add_argument("--new-passfile", metavar="FILE|-", help=NEW_PASSFILE_HELP)
    _add_password_flags(p)

    p = _verb(sub, "recover", cmd_recover, "set a new password with the recovery key",
              "Set a new password with the recovery key printed at init; "
              "--rebuild-config writes a new vaultfs.conf when it was lost or damaged.", passfile=None)
    p.add_argument("--recovery-key-file", metavar="FILE|-", help="read the recovery key from FILE or stdin (-)")
    p.add_argument("--new-passfile", metavar="FILE|-", help=NEW_PASSFILE_HELP)
    p.add_argument("--rebuild-config", action="store_true", help="write vaultfs.conf anew from the recovery key")
    _add_password_flags(p)

    p = _verb(sub, "export", cmd_export, "decrypt the vault (or some paths) into a plain directory, no FUSE",
              "Decrypt the whole vault, or the given paths, into DEST: modes, times, symlinks and hard links "
              "kept. Files that fail authentication are reported and skipped.")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("paths", metavar="PATH", nargs="*", help="vault paths to export (default: everything)")
    p.add_argument("--force", action="store_true", help="export into a non-empty DEST, overwriting")

    p = _verb(sub, "import", cmd_import, "encrypt a plain directory tree into the vault (resumable)",
              "Encrypt the tree SRC into the vault, under --into PATH. Run again after an interruption, it "
              "resumes; a half-written file is never visible.")
    p.add_argument("source", metavar="SRC")
    p.add_argument("--into", default="/", metavar="PATH", help="vault directory to import into (default /)")

    p = _verb(sub, "ls", cmd_ls, "list a vault directory without mounting",
              "List a directory of the vault (like ls -l), without FUSE.")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")

    p = _verb(sub, "cat", cmd_cat, "write one vault file to stdout without mounting",
              "Stream one file of the vault to standard output, without FUSE.")
    p.add_argument("path", metavar="PATH")

    p = _verb(sub, "fsck", cmd_fsck, "check every name, header and block; --repair fixes the safe problems",
              "Check the config MAC, every directory ID, name, long-name sidecar, header, block tag, is_last mark "
              "and hole, and list the sync conflicts waiting for you. Exit 0 when clean, 12 when problems remain.")
    p.add_argument("--repair", action="store_true",
                   help="remove orphan sidecars and staging leftovers, resolve sync-conflict copies and duplicate "
                        "names, merge a directory's IDs, move a directory without an ID into the one its names "
                        "belong to, finish interrupted writes into holes and truncates (refused when the config "
                        "does not verify)")
    p.add_argument("--accept-truncated", action="store_true",
                   help="with --repair: accept a file whose last block is not marked last (a crash during an "
                        "append, or a file cut at a block boundary) at its shorter length; what followed is lost")

    _verb(sub, "conflicts", cmd_conflicts, "list the sync conflicts waiting for you (read-only)",
          "List every entry that is another device's version of a file, directory or link, shown next to the "
          "original under the sync client's words (which client, against which original). Changes nothing.")

    _verb(sub, "upgrade", cmd_upgrade, "convert a format-version-1 vault to version 2, in place",
          "Convert a vault of format version 1 to version 2 in place: directory IDs bound to their place, "
          "symlinks and FIFOs stored as files, sparse-capable contents. Safe to interrupt and run again; "
          "the version in vaultfs.conf changes last.")

    p = _verb(sub, "rekey", cmd_rekey, "re-encrypt the whole vault under a new master key and a new password",
              "Create a new master key and re-encrypt every name, directory ID, file, special entry and extended "
              "attribute under it, in place, one file at a time; then print the new recovery key. After it, "
              "neither the old password nor the old recovery key (nor an old copy of vaultfs.conf) opens the "
              "vault. Safe to interrupt: run it again with the same passwords and it finishes; until then the "
              "vault does not open. Refused while the vault is mounted or a push, pull or sync runs.",
              passfile="current password: " + PASSFILE_HELP)
    p.add_argument("--new-passfile", metavar="FILE|-", help=NEW_PASSFILE_HELP)
    _add_password_flags(p)

    p = _verb(sub, "mount", cmd_mount, "unlock the vault and mount its plaintext view",
              "Ask for the password (three tries on a terminal), mount BACKING at MOUNTPOINT and return "
              "once it answers. The empty mountpoint underneath stays sealed against writes, root's too. "
              "BACKING may be REMOTE:PATH of an rclone remote: rclone's own mount is then the backing dir.")
    _add_mount_options(p)
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay attached; logs go to stderr; tells systemd (Type=notify) once mounted")
    p.add_argument("--idle", type=parse_duration, metavar="DURATION",
                   help="lock by itself after no access for DURATION (e.g. 15m), never while a file is open")
    p.add_argument("--upload-timeout", type=parse_duration, metavar="DURATION", default=120.0,
                   help="with REMOTE:PATH: how long lock waits for rclone's uploads to move before giving up "
                        "(they resume at the next mount; default 2m)")

    p = _verb(sub, "run", cmd_run, "mount, run a command, lock afterwards whatever happened",
              "Unlock and mount BACKING at MOUNTPOINT, run COMMAND once the mount answers, then lock "
              "(cutting off anything the command left open), also on Ctrl-C or SIGTERM. Exits with the "
              "command's status, or vaultfs's own code if a vault step failed (pull/sync before: 27, "
              "mount: its code, lock: 13 or 26, push/sync after: 28). BACKING may be REMOTE:PATH (rclone's "
              "mount underneath; the lock waits for its uploads). "
              "Example: vaultfs run CLOUD MNT --passfile F --pull gdrive:chat --push gdrive:chat -- "
              "rsync -a ~/backup/ MNT/")
    _add_mount_options(p)
    p.add_argument("command", metavar="-- COMMAND", nargs="*", help="the command and its arguments, after --")
    remote = p.add_argument_group("remote steps", "an rclone remote around a local vault (docs/remote.md)")
    remote.add_argument("--pull", metavar="REMOTE:PATH", help="pull from REMOTE:PATH before mounting; if that "
                        "fails, nothing is mounted or run (exit 27)")
    remote.add_argument("--push", metavar="REMOTE:PATH", help="push to REMOTE:PATH after locking, whatever the "
                        "command's status (exit 28 if that fails; skipped after a signal)")
    remote.add_argument("--delete", action="store_true", help="with --push: also delete remote files the vault "
                        "no longer has (push --delete)")
    remote.add_argument("--sync", metavar="REMOTE:PATH", help="sync with REMOTE:PATH (rclone bisync) before "
                        "mounting and after locking (exit 27 or 28 if that fails)")
    remote.add_argument("--upload-timeout", type=parse_duration, metavar="DURATION", default=120.0,
                        help="with REMOTE:PATH as BACKING: how long the lock waits for rclone's uploads to move "
                             "(default 2m; then exit 26, they resume at the next mount)")

    _add_remote_verbs(sub)

    for verb in ("lock", "unmount"):
        p = sub.add_parser(verb, help="flush, unmount and lock" + (" (alias of lock)" if verb == "unmount" else ""),
                           description="Flush, unmount, wait for the daemon to exit and seal the mountpoint. "
                                       "Refuses (exit 13) while a process holds a file, a working directory "
                                       "or a memory map in the mount, and names them; --force cuts them off.")
        p.add_argument("mountpoint", metavar="MOUNTPOINT")
        p.add_argument("--force", action="store_true",
                       help="lock even if files are open: they are flushed and closed, their processes cut off")
        p.set_defaults(func=cmd_lock)

    p = sub.add_parser("status", help="mounted or locked; daemon, open files, idle timer",
                       description="Show whether a vault is mounted (exit 0), locked (16) or left stale by a "
                                   "daemon that died (17); with a mount: backing dir, daemon pid, open files "
                                   "and the processes holding them, the idle timer. Without an argument: every "
                                   "vaultfs mount of this user (everyone's for root).")
    p.add_argument("target", metavar="MOUNTPOINT|BACKING", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("login-unit", help="print the systemd user unit that mounts a vault at login",
                       description="Print the systemd user unit template vaultfs@.service (shipped with vaultfs) "
                                   "with this vaultfs's path filled in: "
                                   "vaultfs login-unit > ~/.config/systemd/user/vaultfs@.service")
    p.set_defaults(func=cmd_login_unit)
    return parser


def _add_remote_verbs(sub: argparse._SubParsersAction) -> None:
    """push, pull, sync: a locked vault to and from any rclone remote (docs/remote.md)."""
    p = sub.add_parser("push", help="upload a locked vault to an rclone remote (resumable)",
                       description="Upload BACKING to REMOTE:PATH with rclone: whole files only, never while the "
                                   "vault is mounted; run again after an interruption, it resumes.")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("remote", metavar="REMOTE:PATH", help="a remote configured in rclone.conf, and a path in it")
    p.add_argument("--delete", action="store_true", help="also delete remote files that BACKING no longer has")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="download a vault from an rclone remote (resumable)",
                       description="Download REMOTE:PATH into BACKING (new, empty, or the same vault) with rclone; "
                                   "every file is put in place whole. Local files the remote lacks stay unless "
                                   "--delete.")
    p.add_argument("remote", metavar="REMOTE:PATH", help="a remote configured in rclone.conf, and a path in it")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("--delete", action="store_true", help="also delete local files that the remote does not have")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("sync", help="two-way sync of a locked vault with an rclone remote (rclone bisync)",
                       description="Sync BACKING and REMOTE:PATH both ways with rclone bisync, for several devices. "
                                   "A file changed on both sides is kept twice (NAME..path1, NAME..path2); the first "
                                   "run keeps both versions of every file that differs.")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("remote", metavar="REMOTE:PATH", help="a remote configured in rclone.conf, and a path in it")
    p.add_argument("--force", action="store_true", help="go on past bisync's safety stop (more than half deleted)")
    p.set_defaults(func=cmd_sync)
