"""A loopback "cloud" for the remote tests: real rclone servers and the CLI pointed at them.

``rclone serve webdav`` (no modification times, no checksums: the hardest case) and
``rclone serve sftp`` (times and MD5) on free 127.0.0.1 ports, each with its own
storage dir, started lazily and stopped (or restarted, for network drops) by the test.
The CLI runs with its own rclone.conf (``RCLONE_CONFIG``), state and cache dirs, so
nothing touches the user's real ones.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import cli_env

VAULTFS_BIN = str(Path(sys.executable).with_name("vaultfs"))
SFTP_USER, SFTP_PASS = "vaultfs", "loopback-only"
REMOTES = {"dav": "webdav", "sf": "sftp"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """One ``rclone serve`` process over a storage dir; stop() and start() again simulate a drop."""

    kind: str
    storage: Path
    port: int
    log: Path
    key_cache: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        command = ["rclone", "serve", self.kind, str(self.storage), "--addr", f"127.0.0.1:{self.port}"]
        if self.kind == "sftp":
            command += ["--user", SFTP_USER, "--pass", SFTP_PASS]
        env = {**os.environ, "RCLONE_CACHE_DIR": str(self.key_cache), "RCLONE_CONFIG": os.devnull}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rclone serve {self.kind} exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rclone serve {self.kind} did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def files(self) -> dict[str, bytes]:
        """Everything the server stored: relative path -> bytes."""
        return {str(p.relative_to(self.storage)): p.read_bytes() for p in sorted(self.storage.rglob("*"))
                if p.is_file()}


@dataclass
class Cloud:
    """The servers of one test, its rclone.conf and the environment the CLI runs in."""

    root: Path
    key_cache: Path
    servers: dict[str, Server] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "rclone.conf"
        obscured = subprocess.run(["rclone", "obscure", SFTP_PASS], capture_output=True, text=True,
                                  check=True).stdout.strip()
        sections = []
        for name, kind in REMOTES.items():
            port = free_port()
            self.servers[name] = Server(kind, self.root / f"store-{name}", port, self.root / f"serve-{name}.log",
                                        self.key_cache)
            if kind == "webdav":
                sections.append(f"[{name}]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\n")
            else:
                sections.append(f"[{name}]\ntype = sftp\nhost = 127.0.0.1\nport = {port}\nuser = {SFTP_USER}\n"
                                f"pass = {obscured}\n")
        self.config.write_text("\n".join(sections))

    def server(self, name: str) -> Server:
        """The server behind remote ``name``, started on first use."""
        server = self.servers[name]
        if server.process is None:
            server.start()
        return server

    def env(self) -> dict[str, str]:
        env = cli_env()
        env.update(RCLONE_CONFIG=str(self.config), XDG_STATE_HOME=str(self.root / "state"),
                   XDG_CACHE_HOME=str(self.root / "cache"), RCLONE_CACHE_DIR=str(self.root / "rclone-cache"))
        return env

    def vaultfs(self, *args: str, check: bool = True, timeout: float = 180, extra_env: dict | None = None,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The real CLI, pointed at this cloud."""
        env = {**self.env(), **(extra_env or {})}
        done = subprocess.run([VAULTFS_BIN, *args], capture_output=True, text=True, timeout=timeout, env=env,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"vaultfs {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def rclone(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["rclone", *args], capture_output=True, text=True, timeout=120, env=self.env())
        if check and done.returncode != 0:
            raise AssertionError(f"rclone {' '.join(args)} -> {done.returncode}\n{done.stderr}")
        return done

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def sftp_keys(tmp_path_factory) -> Path:
    """rclone serve sftp makes its host keys once (2048-bit RSA takes a while): shared by every server."""
    return tmp_path_factory.mktemp("sftp-keys")


@pytest.fixture
def cloud(tmp_path: Path, sftp_keys: Path):
    if subprocess.run(["which", "rclone"], capture_output=True).returncode != 0:
        pytest.fail("rclone is not installed: scripts/test installs it (apt-get install rclone)")
    found = Cloud(tmp_path / "cloud", sftp_keys)
    try:
        yield found
    finally:
        found.stop()
