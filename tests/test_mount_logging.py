"""A detached daemon without --log and without syslog still records integrity errors."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.mounting import Vault, backing_path, vaultfs
from vaultfs.fuse.mount import log_path
from vaultfs.fuse.state import canonical
from vaultfs.log import SYSLOG_SOCKET


def test_integrity_errors_reach_the_fallback_log(new_vault: Vault) -> None:
    if os.path.exists(SYSLOG_SOCKET):
        pytest.skip("this machine has a syslog socket: records go there, not to the fallback file")
    vaultfs("mount", str(new_vault.backing), str(new_vault.mnt), "--passfile", str(new_vault.passfile))
    try:
        (new_vault.mnt / "chat.db").write_bytes(os.urandom(10_000))
        target = backing_path(new_vault, "/chat.db")
        # the tampering must get a later mtime than our own write (timestamps are coarse), or the
        # kernel keeps the page cache it has for the file (an unchanged file keeps it)
        time.sleep(0.05)
        raw = bytearray(target.read_bytes())
        raw[5000] ^= 1
        target.write_bytes(bytes(raw))
        with pytest.raises(OSError) as info:
            (new_vault.mnt / "chat.db").read_bytes()
        assert info.value.errno == errno.EIO
    finally:
        new_vault.lock()
    logfile = Path(log_path(canonical(str(new_vault.mnt))))
    assert (logfile.stat().st_mode & 0o777) == 0o600
    text = logfile.read_text()
    assert "/chat.db" in text and "authentication failed" in text
