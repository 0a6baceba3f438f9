"""The verbs that unlock a vault and read or write its contents without FUSE.

export, import, ls, cat, fsck, conflicts and upgrade: each opens the backing dir
directly (``_unlock`` or the config and key by hand), does its one job and closes it.
"""

from __future__ import annotations

import argparse
import os
import sys

from vaultfs.errors import UsageError
from vaultfs.format import keyfile
from vaultfs.passwords import read_password, unlock_with_retries


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
