"""The ``vaultfs`` command: argparse verbs, one error handler, documented exit codes.

Each verb is a function ``cmd_<verb>(args) -> int``.  Errors are raised as
``errors.VaultError`` subclasses and turned into one line on stderr plus the class's
exit code in ``main`` (the list is in the README).  ``main`` also ends quietly on a
closed pipe (``vaultfs ls ... | head``), and takes the mount(8) helper form
``vaultfs BACKING MOUNTPOINT -o OPTIONS`` (fstab.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from vaultfs import __version__
from vaultfs.errors import UsageError, VaultError, VaultIOError
from vaultfs.format import keyfile, recovery
from vaultfs.format.keyfile import KDF_FLOOR, KDF_MAX, TEST_KDF, KdfParams
from vaultfs.format.keys import VaultKeys
from vaultfs.passcmd import PassCommand
from vaultfs.passwords import read_password, read_secret, unlock_with_retries

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


def kdf_from_args(args: argparse.Namespace) -> KdfParams:
    """KDF parameters from the flags, or calibrated to ~1 s; below the floor only with the test flag.

    Only a flag on the command line can weaken a new slot: no environment variable, no
    config file (the shipped CLI must not obey a switch a user never typed).
    """
    given = (args.kdf_memory_kib, args.kdf_time, args.kdf_parallelism)
    if all(value is None for value in given):
        if args.insecure_kdf_for_tests:
            return TEST_KDF
        print("vaultfs: calibrating the password hash to about 1 s on this machine...", file=sys.stderr)
        return keyfile.calibrate_kdf()
    params = KdfParams(
        memory_kib=args.kdf_memory_kib or KDF_FLOOR.memory_kib,
        time_cost=args.kdf_time or KDF_FLOOR.time_cost,
        parallelism=args.kdf_parallelism or KDF_FLOOR.parallelism,
    )
    if params.below_floor() and not args.insecure_kdf_for_tests:
        raise UsageError(f"KDF parameters below the floor (memory {KDF_FLOOR.memory_kib} KiB, "
                         f"time {KDF_FLOOR.time_cost}, parallelism {KDF_FLOOR.parallelism})")
    try:
        params.check_bounds()
    except VaultError as exc:
        raise UsageError(exc.detail) from None
    return params


def new_password(args: argparse.Namespace, source: str | None, backing_dir: str) -> str:
    """The new password of init/passwd/recover, refused if very weak (strength.py)."""
    from vaultfs import strength

    hints = ["vaultfs", *os.path.normpath(backing_dir).split(os.sep)[-2:]]
    return strength.read_new_password(source, args.allow_weak_password, hints)


# ---------------------------------------------------------------- verbs

def cmd_init(args: argparse.Namespace) -> int:
    from vaultfs.vault import check_init_target, init_vault

    backing_dir = os.path.abspath(args.backing)
    check_init_target(backing_dir)  # before the password prompt
    password = new_password(args, args.passfile, backing_dir)
    kdf = kdf_from_args(args)
    key = init_vault(backing_dir, password, kdf)
    print(f"Created a vault in {backing_dir}.\n")
    print("Recovery key (write it down and keep it somewhere safe, away from this computer):\n")
    print(f"    {key}\n")
    print("Nobody can recover your files without this key or your password: not vaultfs, not your\n"
          "cloud provider. It is shown only this once.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    backing_dir = os.path.abspath(args.backing)
    config = keyfile.load_config(backing_dir, allow_v1=True)
    print(f"vault:         {backing_dir}")
    print(f"format:        vaultfs version {config.version}"
          + (" (run `vaultfs upgrade` to convert it)" if config.version != keyfile.FORMAT_VERSION else ""))
    print(f"cipher suite:  {config.cipher_suite}")
    print(f"block size:    {config.block_size} bytes")
    print(f"names:         {config.name_encoding}")
    print(f"key slots:     {len(config.slots)}")
    for slot in config.slots:
        kdf = slot.kdf
        print(f"  slot {slot.slot_id}: password, argon2id memory {kdf.memory_kib // 1024} MiB "
              f"({kdf.memory_kib} KiB), time cost {kdf.time_cost}, parallelism {kdf.parallelism}")
    print("(the config MAC is verified when the vault is unlocked)")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    backing_dir = os.path.abspath(args.backing)
    keyfile.load_config(backing_dir)  # a missing vault is reported before any prompt
    old = read_password(args.passfile, "Current password: ")
    keys, _ = keyfile.unlock(backing_dir, old)
    new = new_password(args, args.new_passfile, backing_dir)
    keyfile.write_config(backing_dir, keyfile.new_config(keys, new, kdf_from_args(args)))
    print(f"Password changed for {backing_dir}. No file was re-encrypted; no copy of the old config was kept.")
    print("Anyone who already copied the old vaultfs.conf (a cloud's version history) can still open the vault\n"
          "with the old password: the master key is unchanged (see README, \"Changing the password\").")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    backing_dir = os.path.abspath(args.backing)
    keyfile.check_backing_dir(backing_dir)
    if not args.rebuild_config:
        keyfile.load_config(backing_dir, allow_v1=True)
    typed = read_secret(args.recovery_key_file, "Recovery key: ", "recovery key")
    keys = VaultKeys.derive(recovery.decode(typed))
    keyfile.check_recovery_key(backing_dir, keys, rebuild=args.rebuild_config)  # before asking for a password
    new = new_password(args, args.new_passfile, backing_dir)
    keyfile.recover(backing_dir, keys, new, kdf_from_args(args), rebuild=args.rebuild_config)
    action = "Rebuilt vaultfs.conf and set" if args.rebuild_config else "Set"
    print(f"{action} a new password for {backing_dir}.")
    return 0


def _unlock(args: argparse.Namespace, read_only: bool = True):
    from vaultfs.vault import Vault

    backing_dir = os.path.abspath(args.backing)
    keyfile.load_config(backing_dir)  # a missing vault is reported before any prompt
    return unlock_with_retries(args.passfile, lambda password: Vault.unlock(backing_dir, password,
                                                                             read_only=read_only))


def cmd_export(args: argparse.Namespace) -> int:
    from vaultfs.errors import AlreadyExists, PartialFailure
    from vaultfs.tools import transfer
    from vaultfs.tools.progress import Progress

    dest = os.path.abspath(args.dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UsageError(f"{dest} is not a directory")
    if os.path.isdir(dest) and os.listdir(dest) and not args.force:
        raise AlreadyExists(f"{dest} is not empty (use --force to overwrite)")
    vault = _unlock(args)
    try:
        paths = [p if p.startswith("/") else "/" + p for p in args.paths] or ["/"]
        with Progress("export", transfer.total_size(vault, paths) if sys.stderr.isatty() else None) as progress:
            result = transfer.export(vault, dest, paths, args.force, progress)
    finally:
        vault.close()
    print(f"exported {result.files} files ({result.bytes} bytes) to {dest}")
    if result.failed:
        raise PartialFailure(f"{len(result.failed)} file(s) failed authentication and were skipped: "
                             + ", ".join(path for path, _ in result.failed[:5]))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from vaultfs.errors import PartialFailure
    from vaultfs.tools import transfer
    from vaultfs.tools.progress import Progress, tree_bytes

    source = os.path.abspath(args.source)
    if not os.path.isdir(source):
        raise UsageError(f"{source} is not a directory")
    vault = _unlock(args, read_only=False)
    try:
        total = None
        if sys.stderr.isatty():
            total = tree_bytes(source)
        with Progress("import", total) as progress:
            result = transfer.import_tree(vault, source, args.into, progress)
    finally:
        vault.close()
    print(f"imported {result.files} files ({result.bytes} bytes), {result.skipped} already present")
    if result.failed:
        raise PartialFailure("; ".join(f"{path}: {why}" for path, why in result.failed[:5]))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from vaultfs.tools import transfer

    vault = _unlock(args)
    try:
        for line in transfer.format_listing(vault, args.path if args.path.startswith("/") else "/" + args.path):
            print(line)
    finally:
        vault.close()
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    from vaultfs.tools import transfer

    vault = _unlock(args)
    try:
        transfer.cat(vault, args.path if args.path.startswith("/") else "/" + args.path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    finally:
        vault.close()
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from vaultfs.errors import ConfigDamaged, ProblemsFound
    from vaultfs.tools.fsck import Checker, Problem
    from vaultfs.tools.progress import Progress, tree_bytes
    from vaultfs.vault import Vault

    backing_dir = os.path.abspath(args.backing)
    if args.accept_truncated and not args.repair:
        raise UsageError("--accept-truncated only works with --repair")
    config = keyfile.load_config(backing_dir)
    keys = keyfile.unwrap(config, read_password(args.passfile), verify=False)
    config_problem = None
    try:
        config.verify(keys)
    except ConfigDamaged as exc:
        config_problem = Problem("config", None, keyfile.config_path(backing_dir), exc.message)
        print(config_problem.line(backing_dir))
        if args.repair:  # an edited config may say anything: repair nothing on its word
            raise ConfigDamaged(f"{exc.detail}; --repair writes nothing to a vault whose config does not "
                                "verify (fsck without --repair lists the problems; `vaultfs recover "
                                "--rebuild-config` writes a new config)") from None
    vault = Vault(backing_dir, keys, config, read_only=not args.repair)
    total = None
    if sys.stderr.isatty():
        total = tree_bytes(backing_dir)
    try:
        with Progress("fsck", total) as progress:
            checker = Checker(vault, repair=args.repair, accept_truncated=args.accept_truncated,
                              on_problem=lambda p: progress.write(p.line(backing_dir)),
                              on_bytes=progress.add_bytes)
            report = checker.run()
    finally:
        vault.close()
    problems = report.problems + ([config_problem] if config_problem else [])
    remaining = [p for p in problems if not p.repaired]
    print(f"checked {report.directories} directories, {report.files} files, {report.specials} special entries "
          f"(symlinks, FIFOs, sockets, devices), {report.bytes_checked} bytes: "
          f"{len(problems)} problem(s), {len(problems) - len(remaining)} repaired, {len(remaining)} remaining")
    if report.conflicts:
        print(f"{len(report.conflicts)} sync conflict(s) waiting for you (keep one version: delete or rename "
              "the other):")
        for conflict in report.conflicts:
            print(f"  {conflict.line()}")
    if remaining:
        raise ProblemsFound(f"{len(remaining)} problem(s) remain" + ("" if args.repair else
                            "; `vaultfs fsck --repair` fixes the safe ones"))
    return 0


def cmd_conflicts(args: argparse.Namespace) -> int:
    from vaultfs.tools.conflicts import find_conflicts

    vault = _unlock(args)
    try:
        found = 0
        for conflict, original_exists in find_conflicts(vault):
            print(conflict.line(original_exists))
            found += 1
    finally:
        vault.close()
    print(f"{found} sync conflict(s) waiting" + (" (keep one version: delete or rename the other)" if found else ""),
          file=sys.stderr)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from vaultfs.errors import PartialFailure
    from vaultfs.tools import upgrade
    from vaultfs.tools.progress import Progress

    backing_dir = os.path.abspath(args.backing)
    config = keyfile.load_config(backing_dir, allow_v1=True)
    if config.version == keyfile.FORMAT_VERSION:
        print(f"{backing_dir} already has format version {config.version}; nothing to do.")
        return 0
    keys = keyfile.unwrap(config, read_password(args.passfile))
    with Progress("upgrade", upgrade.planned_bytes(backing_dir) if sys.stderr.isatty() else None) as progress:
        report = upgrade.upgrade(backing_dir, keys, config, on_bytes=progress.add_bytes, on_problem=progress.write)
    print(f"upgraded {backing_dir} to format version {keyfile.FORMAT_VERSION}: {report.directories} directories "
          f"({report.dirids_rebound} directory ID files rebound), {report.files_converted} files "
          f"({report.bytes_converted} bytes) and {report.specials_converted} symlinks/FIFOs/sockets converted")
    for label in report.multi_id:
        print(f"note: {label} has more than one directory ID (two devices created it, or a copied "
              "vaultfs.dirid); `vaultfs fsck` lists them", file=sys.stderr)
    if report.left:
        raise PartialFailure(f"{len(report.left)} damaged entr{'y' if len(report.left) == 1 else 'ies'} could "
                             "not be converted and stayed as they were: " + "; ".join(report.left[:5]))
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    from vaultfs.errors import PartialFailure, WrongPassword
    from vaultfs.tools import rekey, rekeystate
    from vaultfs.tools.progress import Progress

    backing_dir = os.path.abspath(args.backing)
    config = keyfile.load_config(backing_dir, rekeying=True)  # a missing or version-1 vault: before any prompt
    with rekeystate.claimed(backing_dir) as root_fd:
        current: list[str] = []

        def unlock_current(password: str) -> VaultKeys:
            try:
                keys = keyfile.unwrap(config, password)
            except WrongPassword:
                if rekeystate.just_switched(root_fd):
                    raise WrongPassword("a rekey of this vault has just finished: its new password (and the new "
                                        "recovery key it showed) opens it now") from None
                raise
            current.append(password)  # compared with the new one below
            return keys

        old = unlock_with_retries(args.passfile, unlock_current, "Current password: ")
        pending = rekeystate.load_pending(backing_dir)
        if pending is not None:
            print(f"vaultfs: finishing the interrupted rekey of {backing_dir}", file=sys.stderr)
            new = unlock_with_retries(args.new_passfile, lambda p: rekeystate.open_pending(pending, p),
                                      "New password (the one chosen when this rekey started): ")
            total = rekeystate.check_space(root_fd, backing_dir)
        else:
            password = new_password(args, args.new_passfile, backing_dir)
            if keyfile.normalize_password(password) == keyfile.normalize_password(current[-1]):
                raise UsageError("the new password must differ from the current one (the new key's config lands "
                                 "in the same synced folder: a password that leaked would hand it over too)")
            rekeystate.check_readable(root_fd, old)
            total = rekeystate.check_space(root_fd, backing_dir)
            kdf = kdf_from_args(args)
            rekeystate.remember_times(root_fd, overwrite=not rekeystate.start_interrupted(root_fd))
            new, _ = rekeystate.start(backing_dir, password, kdf)

        with Progress("rekey", total if sys.stderr.isatty() else None) as progress:
            def show_key(report: rekey.RekeyReport) -> None:
                progress.close(finished=True)
                print(f"rekeyed {backing_dir}: {report.directories} directories, {report.files} files "
                      f"({report.bytes_read} bytes read) and {report.specials} symlinks/FIFOs/sockets/devices "
                      "re-encrypted under a new master key\n")
                print("New recovery key (write it down and keep it somewhere safe, away from this computer):\n")
                print(f"    {recovery.encode(new.master_key)}\n")
                print("It replaces the old one: the old recovery key and the old password no longer open this "
                      "vault.\nCopies of the folder made before now (a backup, the cloud's version history) still "
                      "open with them.", flush=True)

            report = rekey.rekey(root_fd, old, new, config.block_size, show_key, on_bytes=progress.add_bytes,
                                 on_problem=progress.write, on_file=progress.add_file)
    if report.left:
        raise PartialFailure(f"{len(report.left)} backing entr{'y' if len(report.left) == 1 else 'ies'} were not "
                             "vault entries of their directory (hidden before and after) and were left as they "
                             "were: " + "; ".join(report.left[:5]))
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from vaultfs.fuse import mount
    from vaultfs.remote import mounthook

    if mounthook.remote_source(args.backing) is not None:  # REMOTE:PATH: rclone's mount underneath
        return mounthook.mount_remote(args, mount.cmd_mount)
    return mount.cmd_mount(args)


def cmd_lock(args: argparse.Namespace) -> int:
    from vaultfs.fuse import lock as mountlock
    from vaultfs.remote import mounthook

    with mounthook.locking(args.mountpoint):  # a remote mount: rclone goes down after the vault, uploads done
        return mountlock.cmd_lock(args)


# ---- remote storage through rclone (vaultfs/remote/, docs/remote.md) -----------------

def cmd_push(args: argparse.Namespace) -> int:
    from vaultfs.remote import rclone, report, transfer

    remote = rclone.remote_of(args.remote)
    print("\n".join(report.pushed(transfer.push(args.backing, remote, delete=args.delete), args.backing, remote)))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from vaultfs.remote import rclone, report, transfer

    remote = rclone.remote_of(args.remote)
    result = transfer.pull(remote, args.backing, delete=args.delete)
    print("\n".join(report.pulled(result, remote, args.backing, args.delete)))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from vaultfs.remote import bisync, rclone, report

    remote = rclone.remote_of(args.remote)
    print("\n".join(report.synced(bisync.sync(args.backing, remote, force=args.force), args.backing, remote)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vaultfs import run

    return run.cmd_run(args)


def cmd_status(args: argparse.Namespace) -> int:
    from vaultfs import status

    return status.cmd_status(args)


def cmd_login_unit(args: argparse.Namespace) -> int:
    from vaultfs import units

    return units.cmd_login_unit(args)


# ---------------------------------------------------------------- parser

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


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``run ... -- COMMAND``: the part after the first ``--`` is the command, untouched by argparse."""
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb != "run" or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="vaultfs: %(message)s")
    from vaultfs import fstab

    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if fstab.looks_like_helper_call(arguments, set(_verbs(parser))):
        try:
            arguments = fstab.to_mount_args(arguments)
        except VaultError as exc:
            print(f"vaultfs: {exc.message}", file=sys.stderr)
            return exc.exit_code
    arguments, command = _split_command(arguments)
    args = parser.parse_args(arguments)
    if args.verb == "run":
        args.command = command if command is not None else args.command
    try:
        return args.func(args)
    except BrokenPipeError:
        return _closed_pipe()
    except VaultError as exc:
        print(f"vaultfs: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vaultfs: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        error = VaultIOError(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        print(f"vaultfs: {error.message}", file=sys.stderr)
        return error.exit_code


def _verbs(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _closed_pipe() -> int:
    """The reader went away (``vaultfs ls ... | head``): end quietly, as ls and cat do.

    Point stdout at /dev/null so that flushing at exit does not fail a second time.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + 13  # SIGPIPE, what the shell reports for a command cut off by a pipe


if __name__ == "__main__":
    sys.exit(main())
