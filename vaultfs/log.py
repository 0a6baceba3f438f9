"""Logging for the mount daemon: where records go, and what may never be logged.

In the foreground records go to stderr; a detached daemon has no terminal, so they go
to ``--log FILE`` or else to syslog (``/dev/log``).  Records carry paths and errnos,
never file contents or keys: mfusepy's debug records include callback arguments, so
its logger is held at WARNING whatever our level is.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"


def setup(*, foreground: bool, logfile: str | None = None, level: int = logging.INFO) -> logging.Handler:
    """Route vaultfs (and mfusepy warning) records to one handler and return it."""
    handler: logging.Handler
    if logfile is not None:
        handler = logging.FileHandler(os.path.abspath(logfile), encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    elif os.path.exists(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        handler.setFormatter(logging.Formatter(f"vaultfs[{os.getpid()}]: %(levelname)s %(name)s: %(message)s"))
    else:
        # No syslog daemon (containers): records are dropped rather than written to a
        # terminal the daemon no longer has. --log FILE keeps them.
        handler = logging.NullHandler()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("fuse").setLevel(logging.WARNING)  # mfusepy: its DEBUG records hold call arguments
    return handler
