"""A login session whose vault lives in a remote, for tests/test_remote_units.py.

Run as ``unshare -m --propagation private python -m tests.remote_login_session WORKDIR``
(as tests/login_session.py, whose Session it uses: a real ``systemd --user`` in a private
mount namespace).  The "cloud" is ``rclone serve webdav`` on loopback, started and
stopped here; the unit instance ``vaultfs@cloud`` has ``BACKING=dav:chat``.

1. the server is down at login: the start fails with exit 24 and is retried (the test's
   drop-in shortens RestartSec); the server comes up, the unit mounts by itself;
2. a file is written, ``vaultfs status`` is asked, logout: the lock waits for the upload;
3. login, a file is written, the server goes down, ``systemctl --user stop``: the lock
   reports exit 26 (uploads stalled), the unit says so, rclone is stopped anyway;
4. the server is back, login: the file written offline is there and goes out;
5. a second machine pulls the remote and reads both files.

Prints one JSON object with what it saw; the test asserts on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.login_session import Session, vaultfs_mounted, wait
from tests.rclone_servers import Server
from vaultfs.fuse.state import process_start


def main(work: Path) -> dict[str, object]:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    Path("/run/systemd/system").mkdir()
    (work / "xdg").mkdir(mode=0o700, exist_ok=True)
    settings = json.loads((work / "settings.json").read_text())
    mountpoint, vaultfs, env = settings["mountpoint"], settings["vaultfs"], settings["env"]
    server = Server("webdav", Path(settings["storage"]), settings["port"], work / "serve.log", work / "keys")
    seen: dict[str, object] = {}
    session = Session(work)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([vaultfs, *args], capture_output=True, text=True, env=env, timeout=120)

    def rclone_pid() -> int | None:
        done = cli("status", mountpoint, "--json")
        remote = json.loads(done.stdout or "{}").get("remote") or {}
        return remote.get("pid")

    try:
        session.login()  # 1. offline at login
        session.systemctl("enable", "vaultfs@cloud")
        seen["offline_start"] = session.systemctl("start", "vaultfs@cloud").returncode
        seen["offline"] = session.show("vaultfs@cloud.service")
        time.sleep(2.5)  # RestartSec=1s in the test's drop-in: tried again meanwhile
        seen["retried_offline"] = int(session.show("vaultfs@cloud.service").get("NRestarts", "0"))
        server.start()
        seen["mounted_once_online"] = wait(lambda: vaultfs_mounted(mountpoint), 60)
        seen["active"] = session.systemctl("is-active", "vaultfs@cloud").stdout.strip()

        Path(mountpoint, "at-login.txt").write_text("written in the first session")  # 2. logout uploads
        seen["status"] = json.loads(cli("status", mountpoint, "--json").stdout or "{}")
        pid = rclone_pid()
        session.logout()
        seen["mounted_after_logout"] = vaultfs_mounted(mountpoint)
        seen["rclone_after_logout"] = pid is not None and process_start(pid) is not None

        session.login()  # 3. the server drops before the logout
        seen["mounted_second_login"] = wait(lambda: vaultfs_mounted(mountpoint), 60)
        Path(mountpoint, "offline.txt").write_text("written before the server went down")
        pid = rclone_pid()
        server.stop()
        seen["stop_while_offline"] = session.systemctl("stop", "vaultfs@cloud").returncode
        seen["stopped_offline"] = session.show("vaultfs@cloud.service")
        seen["stop_command"] = session.systemctl("show", "vaultfs@cloud.service", "-p", "ExecStop").stdout.strip()
        seen["mounted_after_stalled_stop"] = vaultfs_mounted(mountpoint)
        seen["rclone_after_stalled_stop"] = pid is not None and process_start(pid) is not None
        session.logout()

        server.start()  # 4. back online: the next login sends what waited in rclone's cache
        session.login()
        seen["mounted_third_login"] = wait(lambda: vaultfs_mounted(mountpoint), 60)
        seen["offline_file"] = Path(mountpoint, "offline.txt").read_text() if seen["mounted_third_login"] else None
        session.logout()

        other = work / "second-machine"  # 5. what reached the cloud
        seen["pull"] = cli("pull", "dav:chat", str(other)).returncode
        seen["files"] = {name: cli("cat", str(other), f"/{name}", "--passfile", settings["passfile"]).stdout
                         for name in ("at-login.txt", "offline.txt")}
    finally:
        session.logout()
        server.stop()
    return seen


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
