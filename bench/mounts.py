"""The filesystems under test: how to create, mount and unmount each, one trial at a time.

Every trial gets a fresh backing directory.  Mount commands stay in the foreground, so
the harness owns the daemon: it waits for its exit on unmount (the final flush is
measured) and can read its memory from /proc.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "bench-Passw0rd-not-secret"
WEAK_KDF = "--kdf-memory-kib 1024 --kdf-time 1 --kdf-parallelism 1 --insecure-kdf-for-tests"
DURABLE_PEERS = ("gocryptfs", "securefs")  # cryfs does not pass fsync through


@dataclass
class FsSpec:
    name: str
    init: str | None  # shell templates: {backing} {mnt} {passfile} {work}, already quoted
    mount: str | None  # None: no FUSE, the workload runs in the backing directory
    umount: str = "fusermount3 -u {mnt}"
    env: dict[str, str] = field(default_factory=dict)
    stdin_pass: bool = False
    needs: tuple[str, ...] = ()


def vaultfs_bin() -> str:
    return os.environ.get("VAULTFS_BIN") or os.path.join(REPO, ".venv", "bin", "vaultfs")


def specs() -> dict[str, FsSpec]:
    py = shlex.quote(sys.executable)
    vb = shlex.quote(vaultfs_bin())
    all_specs = [
        FsSpec("raw", None, None),
        FsSpec("passthrough", None, f"exec {py} -m bench.passthrough {{backing}} {{mnt}}",
               env={"PYTHONPATH": REPO}),
        FsSpec("vaultfs", f"{vb} init {{backing}} --passfile {{passfile}} {WEAK_KDF}",
               f"exec {vb} mount {{backing}} {{mnt}} --foreground --passfile {{passfile}}"),
        FsSpec("gocryptfs", "gocryptfs -init -q -passfile {passfile} {backing}",
               "exec gocryptfs -f -q -passfile {passfile} {backing} {mnt}", needs=("gocryptfs",)),
        FsSpec("securefs", "securefs create {backing}", "exec securefs mount {backing} {mnt}",
               stdin_pass=True, needs=("securefs",)),
        FsSpec("cryfs", None, "exec cryfs -f --cipher aes-256-gcm {backing} {mnt}",
               env={"CRYFS_FRONTEND": "noninteractive", "CRYFS_NO_UPDATE_CHECK": "true",
                    "CRYFS_LOCAL_STATE_DIR": "{work}/cryfs-state"},
               stdin_pass=True, needs=("cryfs",)),
    ]
    return {s.name: s for s in all_specs}


def ensure_gocryptfs() -> None:
    """--peers: install gocryptfs from the distribution when it is missing."""
    if shutil.which("gocryptfs"):
        return
    sys.stderr.write("installing gocryptfs (apt-get)\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "gocryptfs"], check=True, env=env)


def is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" - ")[0].split()
            if len(parts) > 4 and parts[4].replace("\\040", " ") == path:
                return True
    return False


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        sys.stderr.write(f"  warning: cannot drop caches: {e}\n")


class Instance:
    """One filesystem for one trial: backing dir, mountpoint, foreground daemon."""

    def __init__(self, spec: FsSpec, work: str, passfile: str) -> None:
        self.spec = spec
        self.work = work
        self.passfile = passfile
        self.backing = os.path.join(work, "backing")
        self.mnt = self.backing if spec.mount is None else os.path.join(work, "mnt")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(work, "daemon.log")

    def _fmt(self, template: str, quote: bool = True) -> str:
        q = shlex.quote if quote else str
        return template.format(backing=q(self.backing), mnt=q(self.mnt), passfile=q(self.passfile),
                               work=q(self.work))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: self._fmt(v, quote=False) for k, v in self.spec.env.items()})
        return env

    def _stdin(self):  # noqa: ANN202 - a file or DEVNULL
        return open(self.passfile, "rb") if self.spec.stdin_pass else subprocess.DEVNULL

    def init(self) -> None:
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)
        if self.spec.init:
            stdin = self._stdin()
            try:
                subprocess.run(self._fmt(self.spec.init), shell=True, check=True, stdin=stdin,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self._env(),
                               cwd=self.work, timeout=120)
            finally:
                if stdin is not subprocess.DEVNULL:
                    stdin.close()

    def mount(self, timeout: float = 60.0) -> float:
        """Mount and wait until the mountpoint answers; return the seconds that took."""
        if self.spec.mount is None:
            return 0.0
        t0 = time.perf_counter()
        stdin = self._stdin()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._fmt(self.spec.mount), shell=True, stdin=stdin, stdout=log,
                                         stderr=subprocess.STDOUT, env=self._env(), cwd=self.work,
                                         start_new_session=True)
        if stdin is not subprocess.DEVNULL:
            stdin.close()
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-500:]
                raise RuntimeError(f"{self.spec.name}: mount failed: {tail.strip()}")
            time.sleep(0.01)
        os.stat(self.mnt)
        return time.perf_counter() - t0

    def unmount(self, timeout: float = 300.0) -> None:
        if self.spec.mount is None:
            return
        if is_mounted(self.mnt):
            for _ in range(30):
                done = subprocess.run(self._fmt(self.spec.umount), shell=True, capture_output=True)
                if done.returncode == 0 or not is_mounted(self.mnt):
                    break
                time.sleep(0.3)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None
        if is_mounted(self.mnt):
            self.kill()
            subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True)

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid
