"""The ``vaultfs`` command: one entry point, one error handler, documented exit codes.

The command is split by job: ``parser`` builds the argparse verbs and their flags,
``key_verbs`` holds the verbs that create the vault or change its password or key,
``content_verbs`` the verbs that read or write its contents without FUSE, and
``mount_verbs`` the mount lifecycle and the trips of a locked vault to a remote.
This module keeps only ``main`` (the console script ``vaultfs = vaultfs.cli:main``).

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
import sys
from collections.abc import Sequence

from vaultfs.cli.parser import build_parser
from vaultfs.errors import VaultError, VaultIOError


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
