"""``scripts/bench --remote``: a chat backup to a loopback WebDAV server, and a remote mount's I/O.

- push and pull of the backup (one msgstore.db + media files, imported into a vault)
  with ``vaultfs push``/``pull`` against ``rclone copy`` of the same plaintext tree up
  and down: the ceiling, since vaultfs drives that same rclone and adds its checks,
  the manifest listings and the ciphertext's overhead;
- sequential write and cold read through ``vaultfs mount bench:vault`` (rclone's mount
  underneath, its cache emptied before the read) against a local ``vaultfs mount``, and
  how long ``lock`` then waits for rclone's uploads.

The server is ``rclone serve webdav`` on 127.0.0.1 (no times, no checksums: the size-only
path with vaultfs's manifest); every repetition starts from empty storage.  Throughput is
plaintext MiB per second of wall time, checked bytes included.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from bench.mounts import PASSWORD, WEAK_KDF, drop_caches, is_mounted, vaultfs_bin
from bench.workloads import MiB, Sizes, build_backup_source, read_big, write_big
from vaultfs.fuse import seal


class Loopback:
    """rclone serve webdav on a free port, and the environment every command of the bench runs in."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.storage = os.path.join(work, "webdav-storage")
        os.makedirs(self.storage)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.config = os.path.join(work, "rclone.conf")
        with open(self.config, "w") as f:
            f.write(f"[bench]\ntype = webdav\nurl = http://127.0.0.1:{self.port}/\nvendor = other\n")
        self.env = {**os.environ, "RCLONE_CONFIG": self.config, "XDG_STATE_HOME": os.path.join(work, "state"),
                    "XDG_CACHE_HOME": os.path.join(work, "cache")}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Loopback:
        log = open(os.path.join(self.work, "serve.log"), "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(["rclone", "serve", "webdav", self.storage, "--addr",
                                         f"127.0.0.1:{self.port}"], stdout=log, stderr=log,
                                        env={**self.env, "RCLONE_CONFIG": os.devnull})
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("rclone serve webdav did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    def run(self, *args: str, timeout: float = 3600) -> float:
        """Run a command in the bench's environment; seconds it took."""
        t0 = time.perf_counter()
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
        return elapsed

    def empty(self) -> None:
        """Empty storage, caches and records; the server restarts (its directory cache would be stale)."""
        self.__exit__()
        for name in os.listdir(self.storage):
            shutil.rmtree(os.path.join(self.storage, name))
        self.__enter__()
        shutil.rmtree(os.path.join(self.work, "cache"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.work, "state"), ignore_errors=True)


def rclone_version() -> str:
    out = subprocess.run(["rclone", "version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "rclone ?"


def tree_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, files in os.walk(root) for n in files)


def transfer_round(cloud: Loopback, src: str, backing: str, passfile: str, scratch: str) -> dict[str, float]:
    """One repetition: rclone copy up and down of the plaintext, then vaultfs push and pull."""
    vb = vaultfs_bin()
    plain_mib = tree_bytes(src) / MiB
    cloud.empty()
    results = {"rclone_copy_up": plain_mib / cloud.run("rclone", "copy", src, "bench:plain")}
    drop_caches()
    down = os.path.join(scratch, "plain-down")
    results["rclone_copy_down"] = plain_mib / cloud.run("rclone", "copy", "bench:plain", down)
    results["push"] = plain_mib / cloud.run(vb, "push", backing, "bench:vault")
    drop_caches()
    pulled = os.path.join(scratch, "pulled")
    results["pull"] = plain_mib / cloud.run(vb, "pull", "bench:vault", pulled)
    if tree_bytes(pulled) != tree_bytes(backing):
        raise RuntimeError("pull: the pulled vault differs in size from the pushed one")
    results["push_unchanged_s"] = cloud.run(vb, "push", backing, "bench:vault")  # nothing to send: listings only
    cloud.run(vb, "fsck", pulled, "--passfile", passfile)
    shutil.rmtree(down)
    shutil.rmtree(pulled)
    return results


def _write(path: str, mib: int) -> float:
    t0 = time.perf_counter()
    write_big(path, mib)
    return mib / (time.perf_counter() - t0)


def _read_check(path: str, mib: int) -> float:
    t0 = time.perf_counter()
    read_big(path, mib, path)
    return mib / (time.perf_counter() - t0)


def mount_round(cloud: Loopback, backing: str, passfile: str, scratch: str, mib: int) -> dict[str, float]:
    """Sequential write, lock (uploads), cold read: remote mount and local mount."""
    vb = vaultfs_bin()
    results: dict[str, float] = {}
    for label, source in (("local", backing), ("remote", "bench:vault")):
        mnt = os.path.join(scratch, f"mnt-{label}")
        os.makedirs(mnt, exist_ok=True)
        cloud.run(vb, "mount", source, mnt, "--passfile", passfile)
        try:
            results[f"{label}_seq_write"] = _write(os.path.join(mnt, "seq.bin"), mib)
        finally:
            results[f"{label}_lock_s"] = cloud.run(vb, "lock", mnt)
        shutil.rmtree(os.path.join(cloud.work, "cache"), ignore_errors=True)  # rclone's cache: a cold read
        drop_caches()
        cloud.run(vb, "mount", source, mnt, "--passfile", passfile)
        try:
            results[f"{label}_seq_read_cold"] = _read_check(os.path.join(mnt, "seq.bin"), mib)
            os.unlink(os.path.join(mnt, "seq.bin"))
        finally:
            cloud.run(vb, "lock", mnt)
        if is_mounted(mnt):
            raise RuntimeError(f"{mnt} still mounted")
        seal.release(mnt)  # a locked mountpoint stays sealed (immutable for root): free it for the cleanup
    return results


UNITS = {"rclone_copy_up": "MiB/s", "rclone_copy_down": "MiB/s", "push": "MiB/s", "pull": "MiB/s",
         "push_unchanged_s": "s", "local_seq_write": "MiB/s", "remote_seq_write": "MiB/s", "local_lock_s": "s",
         "remote_lock_s": "s", "local_seq_read_cold": "MiB/s", "remote_seq_read_cold": "MiB/s"}


def run(run_dir: str, sizes: Sizes, media: int, repeat: int) -> tuple[str, dict]:
    """The whole remote section; returns the table and the raw numbers."""
    if shutil.which("rclone") is None:
        raise RuntimeError("rclone is not installed (apt-get install rclone)")
    work = os.path.join(run_dir, "remote")
    os.makedirs(work)
    passfile = os.path.join(work, "passfile")
    with open(passfile, "w") as f:
        f.write(PASSWORD + "\n")
    src = os.path.join(work, "backup-src")
    build_backup_source(src, Sizes(**{**sizes.__dict__, "small_n": media}))
    backing = os.path.join(work, "backing")
    samples: dict[str, list[float]] = {}
    with Loopback(work) as cloud:
        vb = vaultfs_bin()
        cloud.run(vb, "init", backing, "--passfile", passfile, *WEAK_KDF.split())
        cloud.run(vb, "import", backing, src, "--passfile", passfile)
        for rep in range(repeat):
            scratch = os.path.join(work, f"rep{rep}")
            os.makedirs(scratch)
            for key, value in {**transfer_round(cloud, src, backing, passfile, scratch),
                               **mount_round(cloud, backing, passfile, scratch, sizes.seq_mib)}.items():
                samples.setdefault(key, []).append(value)
            shutil.rmtree(scratch)
            sys.stderr.write(f"remote r{rep}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in samples.items()) + "\n")
    medians = {key: statistics.median(values) for key, values in samples.items()}
    return table(medians, tree_bytes(src), media, sizes, repeat), {"samples": samples, "medians": medians}


def table(m: dict[str, float], plain_bytes: int, media: int, sizes: Sizes, repeat: int) -> str:
    lines = [f"remote (loopback rclone serve webdav), medians of {repeat}: backup = msgstore.db "
             f"{sizes.msgstore_mib} MiB + {media} media files, {plain_bytes / MiB:.0f} MiB plaintext; "
             f"seq file {sizes.seq_mib} MiB", "",
             "| what | vaultfs | ceiling | vaultfs / ceiling |", "|---|---|---|---|"]
    for ours, ceiling, what in (("push", "rclone_copy_up", "upload, MiB/s (vs rclone copy of the plaintext)"),
                                ("pull", "rclone_copy_down", "download, MiB/s (vs rclone copy of the plaintext)"),
                                ("remote_seq_write", "local_seq_write", "mount: sequential write, MiB/s (vs local)"),
                                ("remote_seq_read_cold", "local_seq_read_cold", "mount: cold sequential read, MiB/s "
                                 "(vs local)")):
        lines.append(f"| {what} | {m[ours]:.1f} | {m[ceiling]:.1f} | {m[ours] / m[ceiling]:.2f}x |")
    lines.append(f"| lock after the write, s (remote: waits for the upload) | {m['remote_lock_s']:.1f} | "
                 f"{m['local_lock_s']:.1f} | - |")
    lines.append(f"| push with nothing changed, s | {m['push_unchanged_s']:.1f} | - | - |")
    return "\n".join(lines)
