"""Reading secrets: from the tty, from a file, or from stdin (``--passfile -``).

Secrets never come from argv or the environment, where other users and logs can see
them.  With ``-`` several secrets (old then new password; recovery key then password)
are read as successive lines of stdin.
"""

from __future__ import annotations

import getpass
import sys

from vaultfs.errors import Interrupted, UsageError

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


def read_secret(source: str | None, prompt: str, what: str = "password", confirm: bool = False) -> str:
    """Read one secret from ``source`` (a file path, ``-`` for stdin) or, if None, the tty."""
    if source == "-":
        secret = _next_stdin_line()
    elif source is not None:
        secret = _read_file(source)
    else:
        if not sys.stdin.isatty():
            raise UsageError(f"no terminal to ask the {what} on; use --passfile FILE or --passfile -")
        secret = _prompt(prompt)
        if confirm and _prompt(f"Repeat {what}: ") != secret:
            raise UsageError(f"the two {what}s differ")
    if not secret:
        raise UsageError(f"empty {what}" + (f" in {source}" if source not in (None, "-") else ""))
    return secret


def read_password(passfile: str | None, prompt: str = "Password: ", confirm: bool = False) -> str:
    return read_secret(passfile, prompt, "password", confirm)
