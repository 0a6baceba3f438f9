"""Logging for the mount daemon: where records go, and what may never be logged.

In the foreground records go to stderr; a detached daemon has no terminal, so they go
to ``--log FILE``, else to syslog (``/dev/log``), else (containers without a syslog
daemon) to a file beside the mount's state file, so that an integrity error is never
silently lost.  Records carry paths and errnos,
never file contents or keys: the FUSE binding's debug records may include request arguments, so
its logger is held at WARNING whatever our level is.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"


def _create_private(path: str) -> None:
    """Create ``path`` private (0600; the umask can only narrow it); an existing file keeps its mode."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.close(descriptor)


def setup(*, foreground: bool, logfile: str | None = None, fallback: str | None = None,
          level: int = logging.INFO) -> logging.Handler:
    """Route vaultfs (and pyfuse3 warning) records to one handler and return it."""
    handler: logging.Handler
    if logfile is not None:
        path = os.path.abspath(logfile)
        _create_private(path)  # records name plaintext paths: 0600 when vaultfs creates the file
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    elif os.path.exists(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        handler.setFormatter(logging.Formatter(f"vaultfs[{os.getpid()}]: %(levelname)s %(name)s: %(message)s"))
    elif fallback is not None:
        # No syslog daemon (containers): a private file, 0600, next to the state file.
        _create_private(fallback)
        handler = logging.FileHandler(fallback, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
    else:
        handler = logging.NullHandler()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pyfuse3").setLevel(logging.WARNING)  # its DEBUG records hold request details
    return handler
