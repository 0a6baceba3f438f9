"""What the workloads do not show: daemon memory, unlock time, mount-ready time.

Peak RSS is the daemon's VmHWM (/proc/PID/status), reset once the mount answers
(``clear_refs`` 5) so that the password KDF's memory is not counted, only serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.mounts import PASSWORD, REPO, Instance, drop_caches, vaultfs_bin
from bench.workloads import MiB, Sizes, chunk

KiB = 1 << 10


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5\n")


def peak_mib(pid: int) -> float:
    return _status_kib(pid, "VmHWM") / KiB


def rss_big_write(inst: Instance, sizes: Sizes) -> dict[str, float]:
    """Peak daemon RSS while writing (then reading back) one file of rss_write_mib."""
    pid = inst.pid
    assert pid is not None
    reset_peak(pid)
    start = _status_kib(pid, "VmRSS") / KiB
    path = os.path.join(inst.mnt, "big.bin")
    half = {}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(sizes.rss_write_mib):
            os.write(fd, chunk(i))
            if i == sizes.rss_write_mib // 4:
                half["peak_quarter"] = peak_mib(pid)
        os.fsync(fd)
    finally:
        os.close(fd)
    after_write = peak_mib(pid)
    drop_caches()
    with open(path, "rb", buffering=0) as f:
        while f.read(MiB):
            pass
    os.unlink(path)
    return {"rss_start_mib": start, "rss_peak_quarter_mib": half.get("peak_quarter", after_write),
            "rss_peak_write_mib": after_write, "rss_peak_write_read_mib": peak_mib(pid)}


def rss_tree(inst: Instance, sizes: Sizes) -> dict[str, float]:
    """Peak daemon RSS while holding a tree of rss_tree_files files: create, walk+stat, read some."""
    pid = inst.pid
    assert pid is not None
    reset_peak(pid)
    root = os.path.join(inst.mnt, "tree")
    per_dir = 1000
    t0 = time.perf_counter()
    for n in range(sizes.rss_tree_files):
        d = os.path.join(root, f"d{n // per_dir:04d}")
        if n % per_dir == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{n:06d}.txt"), "wb") as f:
            f.write(b"%d\n" % n)
    created = time.perf_counter() - t0
    after_create = peak_mib(pid)
    seen = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            seen += 1
    if seen != sizes.rss_tree_files:
        raise RuntimeError(f"tree: walked {seen} files")
    return {"tree_files": seen, "tree_create_files_per_s": seen / created, "rss_peak_tree_create_mib": after_create,
            "rss_peak_tree_mib": peak_mib(pid)}


def unlock_and_mount_ready(work: str) -> dict[str, float]:
    """Unlock time with the default (calibrated) KDF, and mount-ready time after the password.

    ``vaultfs mount`` (detached) returns only once the mount answers; the time after the
    password is that total minus the unlock, measured in the same run.
    """
    backing, mnt = os.path.join(work, "kdf-backing"), os.path.join(work, "kdf-mnt")
    os.makedirs(mnt)
    passfile = os.path.join(work, "kdf-pass")
    with open(passfile, "w") as f:
        f.write(PASSWORD + "\n")
    env = dict(os.environ)
    vb = vaultfs_bin()
    subprocess.run([vb, "init", backing, "--passfile", passfile], check=True, capture_output=True, env=env)
    code = ("import sys,time; sys.path.insert(0, sys.argv[1]); from vaultfs.format import keyfile; "
            "t=time.perf_counter(); keyfile.unlock(sys.argv[2], sys.argv[3]); print(time.perf_counter()-t)")
    unlock = [float(subprocess.run([sys.executable, "-c", code, REPO, backing, PASSWORD], check=True,
                                   capture_output=True, text=True, env=env).stdout) for _ in range(3)]
    mounts = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([vb, "mount", backing, mnt, "--passfile", passfile], check=True, capture_output=True,
                       env=env)
        mounts.append(time.perf_counter() - t0)
        os.listdir(mnt)
        subprocess.run([vb, "lock", mnt], check=True, capture_output=True, env=env)
    unlock_s, mount_s = sorted(unlock)[1], sorted(mounts)[1]
    return {"unlock_s": unlock_s, "mount_total_s": mount_s, "mount_ready_after_password_s": mount_s - unlock_s}
