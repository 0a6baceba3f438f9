"""sd_notify for ``vaultfs mount --foreground`` under systemd (``Type=notify``).

The login unit starts the daemon in the foreground so that systemd supervises it and
its log goes to the journal; ``READY=1`` is sent once the mount answers, so units
ordered after it (a backup job) start only when the vault is usable.  The protocol is
one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace):
no library needed.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(message.encode("utf-8"), address)
        return True
    return False
