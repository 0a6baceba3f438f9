"""A backing dir on a network filesystem: every backing call leaves the event loop.

With rclone's mount (or NFS) underneath, one open may wait seconds on the network; the
FUSE layer then runs each Vault call in a worker thread, so other requests go on.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import trio

from tests.conftest import VaultDir
from tests.mounting import Vault, mounted
from vaultfs.fuse.inodes import ROOT_INODE
from vaultfs.fuse.ops import VaultOperations
from vaultfs.fuse.serve import backing_is_slow


class Ctx:
    uid = gid = umask = pid = 0


def test_a_slow_call_does_not_stall_the_others(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    try:
        for name in ("slow", "fast"):
            vault.create(f"/{name}", 0o644).close()
        real_lookup = vault.lookup
        released = threading.Event()

        def lookup(directory, name):  # the network under "slow" hangs until released
            if name == "slow":
                released.wait(10)
            return real_lookup(directory, name)

        vault.lookup = lookup  # type: ignore[method-assign]
        order: list[str] = []

        async def main(slow_backing: bool) -> None:
            ops = VaultOperations(vault, slow_backing=slow_backing)

            async def ask(name: str) -> None:
                await ops.lookup(ROOT_INODE, name.encode(), Ctx)
                order.append(name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "slow")
                await trio.sleep(0.1)
                nursery.start_soon(ask, "fast")
                await trio.sleep(0.3)
                released.set()

        trio.run(main, True)
        assert order == ["fast", "slow"]  # the fast request was answered while the slow one waited
    finally:
        vault.close()


@pytest.mark.mount
def test_a_vault_on_a_fuse_backing_runs_threaded_and_works(mounted_vault: Vault, tmp_path: Path) -> None:
    # a second vault whose backing dir lives inside the first one's mount: a FUSE backing
    inner = Vault(mounted_vault.mnt / "inner-cloud", tmp_path / "inner-mnt", mounted_vault.passfile,
                  tmp_path / "inner.log")
    inner.mnt.mkdir()
    from tests.mounting import WEAK_KDF, vaultfs

    vaultfs("init", str(inner.backing), "--passfile", str(inner.passfile), *WEAK_KDF)
    assert backing_is_slow(str(inner.backing)) and not backing_is_slow(str(mounted_vault.backing))
    with mounted(inner):
        mnt = inner.mnt
        (mnt / "d").mkdir()
        data = os.urandom(3 << 20)
        (mnt / "d" / "big").write_bytes(data)
        os.rename(mnt / "d" / "big", mnt / "d" / "moved")
        assert (mnt / "d" / "moved").read_bytes() == data
        assert os.listdir(mnt / "d") == ["moved"]
        started = time.monotonic()
        for i in range(50):
            (mnt / f"small{i}").write_bytes(b"x" * i)
        assert time.monotonic() - started < 30
    assert "worker threads" in inner.logfile.read_text()
