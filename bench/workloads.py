"""The workloads: a messaging app writing its backup, and a sync client reading it back.

Each takes the mounted instance and the sizes, and returns {metric: value}.  Data is
deterministic pseudo-random (incompressible), and every read is checked against what
was written, so a fast wrong answer fails the trial instead of winning it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass

from bench.mounts import Instance, drop_caches

KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Sizes:
    seq_mib: int = 512
    small_n: int = 3000
    small_dirs: int = 20
    sqlite_rows: int = 50_000
    sqlite_batch: int = 500
    rand_mib: int = 128
    rand_secs: int = 10
    stat_passes: int = 3
    renames: int = 1000
    msgstore_mib: int = 200
    rss_write_mib: int = 4096
    rss_tree_files: int = 100_000


QUICK = Sizes(seq_mib=64, small_n=300, sqlite_rows=5000, rand_mib=16, rand_secs=2, stat_passes=2, renames=200,
              msgstore_mib=16, rss_write_mib=256, rss_tree_files=2000)

# metric -> (unit, higher is better)
METRICS = {
    "seq_write": ("MiB/s", True),
    "seq_read_cold": ("MiB/s", True),
    "small_write": ("files/s", True),
    "small_read": ("files/s", True),
    "sqlite": ("s", False),
    "rand_4k": ("IOPS", True),
    "stat": ("stats/s", True),
    "rename": ("renames/s", True),
    "backup_tree": ("s", False),
}

_POOL: bytes = b""


def pool() -> bytes:
    """16 MiB + 1 MiB of deterministic random bytes; chunk i of a big file is a slice of it."""
    global _POOL
    if not _POOL:
        _POOL = random.Random(20261128).randbytes(17 * MiB)
    return _POOL


def chunk(i: int) -> bytes:
    start = (i * 7919 * 4096) % (16 * MiB)
    return pool()[start : start + MiB]


def write_big(path: str, mib: int, fsync: bool = True) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(mib):
            view = memoryview(chunk(i))
            while view:
                view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_big(path: str, mib: int, what: str) -> None:
    """Read back what ``write_big`` wrote, 1 MiB per read, and check every byte of it."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        for i in range(mib):
            got = 0
            while got < MiB:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            if got != MiB or buf != chunk(i):
                raise RuntimeError(f"{what}: chunk {i} differs")
        if f.read(1):
            raise RuntimeError(f"{what}: file is longer than written")


def small_plan(sizes: Sizes, seed: int = 4321) -> list[tuple[str, int, int]]:
    """(relative path, size, pool offset) of chat media: 1-256 KiB, skewed small."""
    rng = random.Random(seed)
    plan = []
    for n in range(sizes.small_n):
        size = int(min(256 * KiB, max(KiB, rng.lognormvariate(10.3, 1.0))))
        plan.append((f"d{n % sizes.small_dirs:02d}/IMG-{n:05d}.jpg", size, rng.randrange(16 * MiB)))
    return plan


def write_tree(root: str, plan: list[tuple[str, int, int]], sizes: Sizes) -> None:
    data = pool()
    for d in range(sizes.small_dirs):
        os.makedirs(os.path.join(root, f"d{d:02d}"), exist_ok=True)
    for rel, size, off in plan:
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data[off : off + size])


def read_file(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read()


# ---------------------------------------------------------------- workloads


def seq_write(inst: Instance, sizes: Sizes) -> dict[str, float]:
    path = os.path.join(inst.mnt, "seq.bin")
    t0 = time.perf_counter()
    write_big(path, sizes.seq_mib)
    elapsed = time.perf_counter() - t0
    if os.stat(path).st_size != sizes.seq_mib * MiB:
        raise RuntimeError("seq_write: wrong size after writing")
    return {"seq_write": sizes.seq_mib / elapsed}


def seq_read_cold(inst: Instance, sizes: Sizes) -> dict[str, float]:
    write_big(os.path.join(inst.mnt, "seq.bin"), sizes.seq_mib)
    inst.remount()
    drop_caches()
    t0 = time.perf_counter()
    read_big(os.path.join(inst.mnt, "seq.bin"), sizes.seq_mib, "seq_read_cold")
    return {"seq_read_cold": sizes.seq_mib / (time.perf_counter() - t0)}


def small_files(inst: Instance, sizes: Sizes) -> dict[str, float]:
    plan = small_plan(sizes)
    root = os.path.join(inst.mnt, "Media")
    for d in range(sizes.small_dirs):
        os.makedirs(os.path.join(root, f"d{d:02d}"))
    data = pool()
    t0 = time.perf_counter()
    for rel, size, off in plan:
        fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data[off : off + size])
        finally:
            os.close(fd)
    t_write = time.perf_counter() - t0
    inst.remount()
    drop_caches()
    t0 = time.perf_counter()
    for rel, size, off in sorted(plan):
        if read_file(os.path.join(inst.mnt, "Media", rel)) != data[off : off + size]:
            raise RuntimeError(f"small_files: {rel} differs")
    t_read = time.perf_counter() - t0
    return {"small_write": len(plan) / t_write, "small_read": len(plan) / t_read}


def sqlite_db(inst: Instance, sizes: Sizes) -> dict[str, float]:
    """A msgstore.db: batches of inserts in transactions (journal DELETE, synchronous FULL),
    integrity check, full scan."""
    rng = random.Random(77)
    letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?     "
    rows = [(rng.randrange(1, 200), rng.randrange(2), f"{rng.getrandbits(128):032x}", 1_700_000_000_000 + i * 977,
             0, "".join(rng.choices(letters, k=rng.randrange(100, 200)))) for i in range(sizes.sqlite_rows)]
    path = os.path.join(inst.mnt, "msgstore.db")
    t0 = time.perf_counter()
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("CREATE TABLE message (_id INTEGER PRIMARY KEY AUTOINCREMENT, chat_row_id INTEGER, "
                    "from_me INTEGER, key_id TEXT, timestamp INTEGER, status INTEGER, text_data TEXT)")
        con.execute("CREATE INDEX message_chat_ts ON message(chat_row_id, timestamp)")
        for i in range(0, len(rows), sizes.sqlite_batch):
            con.execute("BEGIN")
            con.executemany("INSERT INTO message (chat_row_id, from_me, key_id, timestamp, status, text_data) "
                            "VALUES (?,?,?,?,?,?)", rows[i : i + sizes.sqlite_batch])
            con.execute("COMMIT")
        check = con.execute("PRAGMA integrity_check").fetchall()
        count = sum(1 for _ in con.execute("SELECT * FROM message"))
    finally:
        con.close()
    elapsed = time.perf_counter() - t0
    if check != [("ok",)] or count != len(rows):
        raise RuntimeError(f"sqlite: integrity {check[:2]}, {count} rows")
    return {"sqlite": elapsed}


def rand_4k(inst: Instance, sizes: Sizes, scratch: str) -> dict[str, float]:
    """fio: 50/50 random 4 KiB pread/pwrite on a written file, cold caches."""
    write_big(os.path.join(inst.mnt, "rand.dat"), sizes.rand_mib)
    inst.remount()
    drop_caches()
    out = os.path.join(scratch, "fio.json")
    cmd = ["fio", "--name=rand4k", f"--filename={os.path.join(inst.mnt, 'rand.dat')}", f"--size={sizes.rand_mib}m",
           "--bs=4k", "--rw=randrw", "--rwmixread=50", "--ioengine=psync", "--iodepth=1", "--numjobs=1",
           f"--runtime={sizes.rand_secs}", "--time_based", "--fallocate=none", "--randrepeat=1",
           "--output-format=json", f"--output={out}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=sizes.rand_secs * 6 + 120)
    with open(out) as f:
        text = f.read()
    job = json.loads(text[text.index("{") :])["jobs"][0]
    return {"rand_4k": job["read"]["iops"] + job["write"]["iops"]}


def metadata(inst: Instance, sizes: Sizes) -> dict[str, float]:
    plan = small_plan(sizes)
    write_tree(os.path.join(inst.mnt, "Media"), plan, sizes)
    inst.remount()
    drop_caches()
    root = os.path.join(inst.mnt, "Media")
    n = 0
    t0 = time.perf_counter()
    for _ in range(sizes.stat_passes):
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                os.stat(os.path.join(dirpath, name))
                n += 1
    t_stat = time.perf_counter() - t0
    if n != sizes.stat_passes * len(plan):
        raise RuntimeError(f"metadata: walked {n} files")
    victims = [rel for rel, _, _ in plan[: sizes.renames]]
    t0 = time.perf_counter()
    for rel in victims:
        os.rename(os.path.join(root, rel), os.path.join(root, rel[:-4] + ".bak.jpg"))
    t_rename = time.perf_counter() - t0
    return {"stat": n / t_stat, "rename": len(victims) / t_rename}


def build_backup_source(src: str, sizes: Sizes) -> None:
    os.makedirs(src, exist_ok=True)
    write_big(os.path.join(src, "msgstore.db"), sizes.msgstore_mib, fsync=False)
    write_tree(os.path.join(src, "Media"), small_plan(sizes), sizes)


def backup_tree(inst: Instance, sizes: Sizes, src: str) -> dict[str, float]:
    """cp -r of a whole backup (msgstore.db + Media/), until unmounted (flush included)."""
    expect = {}
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            full = os.path.join(dirpath, name)
            expect[os.path.relpath(full, src)] = read_file(full)  # also warms the source
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", src, os.path.join(inst.mnt, "backup")], check=True, capture_output=True)
    inst.unmount()
    elapsed = time.perf_counter() - t0
    inst.mount()
    dst = os.path.join(inst.mnt, "backup")
    for rel in sorted(expect)[::37] + ["msgstore.db"]:
        if read_file(os.path.join(dst, rel)) != expect[rel]:
            raise RuntimeError(f"backup_tree: {rel} differs")
    count = sum(len(files) for _, _, files in os.walk(dst))
    if count != len(expect):
        raise RuntimeError(f"backup_tree: {count} files instead of {len(expect)}")
    return {"backup_tree": elapsed}


WORKLOADS = ["seq_write", "seq_read_cold", "small_files", "sqlite", "rand_4k", "metadata", "backup_tree"]


def run(name: str, inst: Instance, sizes: Sizes, scratch: str, run_dir: str) -> dict[str, float]:
    if name == "seq_write":
        return seq_write(inst, sizes)
    if name == "seq_read_cold":
        return seq_read_cold(inst, sizes)
    if name == "small_files":
        return small_files(inst, sizes)
    if name == "sqlite":
        return sqlite_db(inst, sizes)
    if name == "rand_4k":
        if not shutil.which("fio"):
            raise RuntimeError("fio is not installed")
        return rand_4k(inst, sizes, scratch)
    if name == "metadata":
        return metadata(inst, sizes)
    if name == "backup_tree":
        return backup_tree(inst, sizes, os.path.join(run_dir, "backup-src"))
    raise ValueError(name)
