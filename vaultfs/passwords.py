"""Reading secrets: from the tty, a file, stdin (``--passfile -``) or a command (``--passcmd``).

Secrets never come from argv or the environment, where other users and logs can see
them.  With ``-`` several secrets (old then new password; recovery key then password)
are read as successive lines of stdin.  On a terminal people mistype: a password that
does not unlock is asked again (three tries in all), and two new passwords that differ
are asked again too; a file, stdin or a command gets one try, since asking again would
read the same wrong answer.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from typing import TypeVar

from vaultfs.errors import Interrupted, UsageError, WrongPassword
from vaultfs.passcmd import PassCommand

T = TypeVar("T")
Source = str | PassCommand | None  # a file path, "-" for stdin, a command, or None for the tty
TRIES = 3

_stdin_lines: list[str] | None = None


def _next_stdin_line() -> str:
    global _stdin_lines
    if _stdin_lines is None:
        _stdin_lines = sys.stdin.read().splitlines()
    if not _stdin_lines:
        raise UsageError("standard input ended before a secret was read")
    return _stdin_lines.pop(0)


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.readline()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    return text.rstrip("\r\n")


def _prompt(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        raise Interrupted("no secret entered") from None


def read_secret(source: Source, prompt: str, what: str = "password", confirm: bool = False) -> str:
    """Read one secret from ``source`` (a file path, ``-`` for stdin, a PassCommand) or, if None, the tty."""
    if isinstance(source, PassCommand):
        return source.read()
    if source == "-":
        secret = _next_stdin_line()
    elif source is not None:
        secret = _read_file(source)
    else:
        if not sys.stdin.isatty():
            raise UsageError(f"no terminal to ask the {what} on; use --passfile FILE, --passfile - or --passcmd CMD")
        secret = _ask(prompt, what, confirm)
    if not secret:
        raise UsageError(f"empty {what}" + (f" in {source}" if source not in (None, "-") else ""))
    return secret


def _ask(prompt: str, what: str, confirm: bool) -> str:
    """Prompt on the tty; with ``confirm``, ask twice and start over (three times) if they differ."""
    for attempt in range(1, TRIES + 1):
        secret = _prompt(prompt)
        if not confirm or _prompt(f"Repeat {what}: ") == secret:
            return secret
        if attempt < TRIES:
            print(f"vaultfs: the two {what}s differ, try again", file=sys.stderr)
    raise UsageError(f"the two {what}s differed {TRIES} times")


def read_password(passfile: Source, prompt: str = "Password: ", confirm: bool = False) -> str:
    return read_secret(passfile, prompt, "password", confirm)


def unlock_with_retries(source: Source, unlock: Callable[[str], T], prompt: str = "Password: ") -> T:
    """Call ``unlock(password)``; on the tty a wrong password is asked again, up to three tries."""
    for attempt in range(1, TRIES + 1):
        password = read_password(source, prompt)
        try:
            return unlock(password)
        except WrongPassword:
            if source is not None or attempt == TRIES:
                raise
            print("vaultfs: wrong password, try again", file=sys.stderr)
        finally:
            del password
    raise AssertionError("unreachable")
