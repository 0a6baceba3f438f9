"""A login session with a real systemd user manager, for tests/test_login_units.py.

Run as ``unshare -m --propagation private python -m tests.login_session WORKDIR``: in its
own mount namespace it puts a tmpfs on /run/systemd with a ``system`` directory (the
user manager refuses to start where systemd is not PID 1), then:

1. starts ``systemd --user`` (a login), enables ``vaultfs@chat`` and exits it (a logout);
2. starts it again: ``vaultfs@chat`` must come up by itself and mount the vault;
3. writes a file through the mount, then ``systemctl --user exit`` (a logout): the
   vault must be locked;
4. starts it once more and ``vaultfs@bad`` (wrong password): it must fail, and stay
   failed (no restart).

It prints one JSON object with what it saw; the test asserts on it.  Every process of
the namespace ends with it, so nothing it mounted can outlive it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def vaultfs_mounted(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == mountpoint and " fuse.vaultfs " in line for line in f)


class Session:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(work / "xdg"), "XDG_CONFIG_HOME": str(work / "config")}
        self.manager: subprocess.Popen[bytes] | None = None
        self.log = open(work / "manager.log", "ab")  # noqa: SIM115 - open for the whole session

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def login(self) -> None:
        self.manager = subprocess.Popen(["/lib/systemd/systemd", "--user", "--log-target=console"], env=self.env,
                                        stdout=self.log, stderr=self.log, cwd="/")
        deadline = time.monotonic() + 60
        while self.systemctl("is-system-running").stdout.strip() not in ("running", "degraded"):
            if time.monotonic() > deadline or self.manager.poll() is not None:
                raise RuntimeError("the user manager did not start; see manager.log")
            time.sleep(0.1)

    def logout(self) -> None:
        if self.manager is None:
            return
        self.systemctl("exit")
        try:
            self.manager.wait(150)
        except subprocess.TimeoutExpired:
            self.manager.kill()
            self.manager.wait()
        self.manager = None

    def show(self, unit: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", "ActiveState,Result,NRestarts,ExecMainStatus").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def main(work: Path) -> dict[str, object]:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    os.makedirs("/run/systemd/system")
    (work / "xdg").mkdir(mode=0o700, exist_ok=True)
    settings = json.loads((work / "settings.json").read_text())
    mountpoint = settings["mountpoint"]
    seen: dict[str, object] = {}
    session = Session(work)
    try:
        session.login()
        seen["enable"] = session.systemctl("enable", "vaultfs@chat").returncode
        seen["mounted_before_login"] = vaultfs_mounted(mountpoint)
        session.logout()

        session.login()  # the unit comes up with the session
        seen["mounted_at_login"] = wait(lambda: vaultfs_mounted(mountpoint))
        seen["active_at_login"] = session.systemctl("is-active", "vaultfs@chat").stdout.strip()
        if seen["mounted_at_login"]:
            Path(mountpoint, "written-in-session.txt").write_text("hello from the login session")
        session.logout()
        seen["mounted_after_logout"] = vaultfs_mounted(mountpoint)
        try:
            os.mkdir(os.path.join(mountpoint, "leak"))
            seen["locked_mountpoint_writable"] = True
        except OSError as exc:
            seen["locked_mountpoint_writable"] = exc.strerror

        session.login()
        seen["bad_start"] = session.systemctl("start", "vaultfs@bad").returncode
        time.sleep(2)  # a restart loop would show by now
        seen["bad"] = session.show("vaultfs@bad.service")
        seen["mounted_with_bad_password"] = vaultfs_mounted(settings["bad_mountpoint"])
        session.logout()
    finally:
        session.logout()
    return seen


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
