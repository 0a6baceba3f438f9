"""``--passcmd CMD``: a program that prints the password (like gocryptfs ``-extpass``).

The decision, and why:

- CMD is split with POSIX shell quoting rules (``shlex``) and run **without a shell**:
  ``--passcmd "secret-tool lookup vaultfs chat"`` runs ``secret-tool`` with three
  arguments.  Nothing is expanded, so a path or a label with ``$`` or ``*`` in it means
  what it says, and the same string works in a systemd unit, an fstab option and a
  crontab.  Who wants a pipe writes it out: ``--passcmd "sh -c 'pass show chat | head -1'"``.
  (gocryptfs splits on spaces only, which breaks quoted paths; a shell by default would
  expand what the user did not mean to.)
- The first line of its standard output is the password (the newline is stripped;
  further lines are ignored, as ``pass`` prints metadata after the first line).
- Its standard error and standard input stay the caller's, so a program that asks on
  the terminal or opens a desktop prompt (pinentry, ssh-askpass) works.
- It must exit 0 and print a non-empty first line; anything else is a clear error with
  exit code 18 (``PasswordCommandFailed``), and nothing is unlocked or mounted.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from vaultfs.errors import PasswordCommandFailed, UsageError

MAX_OUTPUT = 64 * 1024  # a password command has no reason to print more


class PassCommand:
    """A parsed ``--passcmd``: the argv to run.  Holds no secret, so its repr may be shown."""

    def __init__(self, text: str) -> None:
        try:
            self.argv = shlex.split(text)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"--passcmd {text!r}: {exc}") from None
        if not self.argv:
            raise UsageError("--passcmd needs a command")
        self.text = text

    def __repr__(self) -> str:
        return f"PassCommand({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def read(self) -> str:
        """Run the command; return the first line it printed."""
        name = self.argv[0]
        try:
            proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stdin=None, stderr=None,
                                    close_fds=True, env=os.environ.copy())
        except FileNotFoundError:
            raise PasswordCommandFailed(f"{name}: command not found") from None
        except PermissionError:
            raise PasswordCommandFailed(f"{name}: permission denied") from None
        except OSError as exc:
            raise PasswordCommandFailed(f"{name}: {exc.strerror}") from None
        assert proc.stdout is not None
        try:
            output = proc.stdout.read(MAX_OUTPUT)
            proc.stdout.close()
            status = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
        if status != 0:
            why = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            raise PasswordCommandFailed(f"`{self.text}` {why}")
        first = output.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            password = first.decode("utf-8")
        except UnicodeDecodeError:
            raise PasswordCommandFailed(f"`{self.text}` printed something that is not UTF-8 text") from None
        if not password:
            raise PasswordCommandFailed(f"`{self.text}` printed no password")
        return password
