"""Do uncached reads through a remote mount run in parallel?  ``python -m bench.remote_parallel``

Two files of the vault are read through ``vaultfs mount slow:vault`` (rclone's mount
underneath, its cache emptied before each case) from a slow "cloud": ``rclone serve
webdav`` behind bench/slowlink.py, which gives every connection its own latency and
bandwidth.  Cases, each on a fresh cold mount:

- alone: file A, then file B, one after the other (each reader has the link to itself);
- together: A and B at the same time, from two threads.  If the daemon served them in
  parallel, "together" takes as long as one file alone; if it serialises them, as long as
  both;
- a probe meanwhile: every 0.1 s, open + read + close of a small file that is already
  cached (rclone and kernel); its latency is how long any request waits behind the reads;
- the ceiling: the same two ciphertext files read straight from rclone's mount (no vaultfs),
  alone and together.

``--strace`` also records the daemon's syscalls on rclone's files during "together"
(``strace -f -y -T``) and says which thread spent how long in which call: the thread whose
id is the daemon's pid is pyfuse3's event loop (trio), where a blocking call stalls every
request.  Needs root (strace, mounts), rclone, and scripts/setup-env.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench.mounts import PASSWORD, WEAK_KDF, vaultfs_bin
from bench.remote import Loopback
from bench.slowlink import SlowLink
from vaultfs.fuse import seal

MiB = 1024 * 1024


def _read(path: str) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(MiB):
            pass
    return time.perf_counter() - t0


def _together(paths: list[str]) -> tuple[float, list[float]]:
    took: dict[str, float] = {}

    def one(path: str) -> None:
        took[path] = _read(path)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0, [took[p] for p in paths]


class Probe:
    """open + read + close of a small cached file every 0.1 s, in a thread; latencies in seconds."""

    def __init__(self, path: str) -> None:
        self.path, self.latencies = path, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            with open(self.path, "rb") as f:
                f.read()
            self.latencies.append(time.perf_counter() - t0)
            self._stop.wait(0.1)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Bench:
    def __init__(self, work: str, cloud: Loopback, passfile: str) -> None:
        self.work, self.cloud, self.passfile = work, cloud, passfile
        self.mnt = os.path.join(work, "mnt")
        os.makedirs(self.mnt, exist_ok=True)

    def vaultfs(self, *args: str) -> str:
        done = subprocess.run([vaultfs_bin(), *args], env=self.cloud.env, capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"vaultfs {' '.join(args[:2])}: {done.returncode} {done.stderr[-600:]}")
        return done.stdout

    def cold_mount(self) -> dict:
        shutil.rmtree(os.path.join(self.cloud.work, "cache"), ignore_errors=True)  # rclone's cache
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        self.vaultfs("mount", "slow:vault", self.mnt, "--passfile", self.passfile)
        os.listdir(self.mnt)
        _read(os.path.join(self.mnt, "small.txt"))  # cached from now on: the probe's file
        return json.loads(self.vaultfs("status", self.mnt, "--json"))

    def lock(self) -> None:
        self.vaultfs("lock", self.mnt)

    def ciphertexts(self, status: dict) -> list[str]:
        """The backing files of A and B in rclone's mount: the two largest."""
        root = status["remote"]["mount"]
        sizes = [(os.path.getsize(os.path.join(root, n)), os.path.join(root, n)) for n in os.listdir(root)
                 if n.endswith(".vfs")]
        return [path for _, path in sorted(sizes)[-2:]]


def strace_summary(path: str, daemon: int, rclone_dir: str) -> dict:
    """Time per (thread kind, syscall) on rclone's files, and the slowest calls.

    A call that blocks while another thread runs is split by strace into an
    ``<unfinished ...>`` line (with the fd's path) and a ``<... resumed>`` line (with the
    duration): the two are joined per thread.
    """
    start = re.compile(r"^(\d+)\s+[\d:.]+\s+(\w+)\((\d+)<([^>]*)>(.*)$")
    resumed = re.compile(r"^(\d+)\s+[\d:.]+\s+<\.\.\. (\w+) resumed>(.*)$")
    duration = re.compile(r"<([\d.]+)>$")
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.Counter()
    slow = []
    pending: dict[int, tuple[str, str, str]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            raw = raw.strip()
            if (match := start.match(raw)) is not None:
                tid, call, where, rest = int(match.group(1)), match.group(2), match.group(4), match.group(5)
                if rest.endswith("<unfinished ...>"):
                    pending[tid] = (call, where, raw)
                    continue
            elif (match := resumed.match(raw)) is not None and int(match.group(1)) in pending:
                tid = int(match.group(1))
                call, where, first = pending.pop(tid)
                rest, raw = match.group(3), first[:120] + " ... " + raw[-60:]
            else:
                continue
            found = duration.search(rest)
            if found is None or not where.startswith(rclone_dir):
                continue
            seconds = float(found.group(1))
            kind = "event loop (main thread)" if tid == daemon else "worker thread"
            totals[f"{kind}: {call}"] += seconds
            counts[f"{kind}: {call}"] += 1
            if seconds > 0.2:
                slow.append((seconds, kind, raw.strip()[:200]))
    return {"seconds": {k: round(v, 2) for k, v in sorted(totals.items())}, "calls": dict(counts),
            "slowest": [f"{s:.2f}s {k}: {r}" for s, k, r in sorted(slow, reverse=True)[:8]]}


def run(args: argparse.Namespace) -> dict:
    work = tempfile.mkdtemp(prefix="remote-parallel-", dir=args.dir)
    passfile = os.path.join(work, "passfile")
    with open(passfile, "w") as f:
        f.write(PASSWORD + "\n")
    results: dict[str, list] = collections.defaultdict(list)
    with Loopback(work) as cloud, SlowLink(cloud.port, args.latency, args.rate * MiB) as link:
        with open(cloud.config, "a") as f:
            f.write(f"[slow]\ntype = webdav\nurl = http://127.0.0.1:{link.port}/\nvendor = other\n")
        bench = Bench(work, cloud, passfile)
        backing, plain = os.path.join(work, "backing"), os.path.join(work, "plain")
        os.makedirs(plain)
        for name, size in (("a.bin", int(args.mib * MiB)), ("b.bin", int(args.mib * MiB)), ("small.txt", 1024)):
            with open(os.path.join(plain, name), "wb") as f:
                f.write(os.urandom(size))
        bench.vaultfs("init", backing, "--passfile", passfile, *WEAK_KDF.split())
        bench.vaultfs("import", backing, plain, "--passfile", passfile)
        bench.vaultfs("push", backing, "bench:vault")  # straight to the server, not through the slow link
        a, b = os.path.join(bench.mnt, "a.bin"), os.path.join(bench.mnt, "b.bin")
        try:
            for rep in range(args.repeat):
                bench.cold_mount()
                results["alone_a"].append(_read(a))
                results["alone_b"].append(_read(b))
                bench.lock()

                status = bench.cold_mount()
                tracer, trace_file = None, os.path.join(work, f"strace-{rep}.txt")
                if args.strace:
                    tracer = subprocess.Popen(["strace", "-f", "-y", "-T", "-tt", "-e",
                                               "trace=openat,read,pread64,pwrite64,fstat,newfstatat,lseek",
                                               "-p", str(status["pid"]), "-o", trace_file],
                                              stderr=subprocess.DEVNULL)
                    time.sleep(1.0)  # attached to every thread
                with Probe(os.path.join(bench.mnt, "small.txt")) as probe:
                    wall, each = _together([a, b])
                if tracer is not None:
                    tracer.terminate()
                    tracer.wait(30)
                    results["strace"].append(strace_summary(trace_file, status["pid"], status["remote"]["mount"]))
                results["together_wall"].append(wall)
                results["together_each"].append(each)
                results["probe_max"].append(max(probe.latencies))
                results["probe_median"].append(statistics.median(probe.latencies))
                bench.lock()

                status = bench.cold_mount()
                ca, cb = bench.ciphertexts(status)
                results["rclone_alone_a"].append(_read(ca))
                results["rclone_alone_b"].append(_read(cb))
                bench.lock()
                status = bench.cold_mount()
                ca, cb = bench.ciphertexts(status)
                results["rclone_together_wall"].append(_together([ca, cb])[0])
                bench.lock()
                sys.stderr.write(f"rep {rep}: " + ", ".join(f"{k}={v[-1]}" for k, v in results.items()
                                                            if k != "strace") + "\n")
        finally:
            subprocess.run([vaultfs_bin(), "lock", "--force", bench.mnt], env=cloud.env, capture_output=True)
            seal.release(bench.mnt)
    return {"settings": {"mib": args.mib, "rate_mib_s": args.rate, "latency_s": args.latency,
                         "repeat": args.repeat}, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=8, help="MiB in each of the two files (default 8)")
    parser.add_argument("--rate", type=float, default=1.0, help="MiB/s per connection (default 1)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to each request (default 0.1)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strace", action="store_true", help="record the daemon's syscalls during 'together'")
    parser.add_argument("--dir", default=None, help="work directory's parent (default: the system temp dir)")
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
