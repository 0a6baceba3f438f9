#!/usr/bin/env python3
"""Benchmark of the core below FUSE: Vault-API throughput, per-block cost, unlock time.

    .venv/bin/python scripts/bench_core.py [--size-mib 256] [--json out.json]

A benchmark, not a test: numbers go into the closing note and docs/design-notes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vaultfs import crypto  # noqa: E402
from vaultfs.format import keyfile  # noqa: E402
from vaultfs.format.keyfile import TEST_KDF  # noqa: E402
from vaultfs.vault import Vault, init_vault  # noqa: E402

MiB = 1 << 20


def per_block_cost(iterations: int = 20000) -> dict[str, float]:
    gcm = crypto.Gcm(os.urandom(32))
    block = os.urandom(4096)
    aad = bytes(49)
    start = time.perf_counter()
    for _ in range(iterations):
        sealed = gcm.seal(block, aad)
    seal_us = (time.perf_counter() - start) / iterations * 1e6
    start = time.perf_counter()
    for _ in range(iterations):
        gcm.open(sealed, aad)
    open_us = (time.perf_counter() - start) / iterations * 1e6
    return {"seal_4k_us": round(seal_us, 2), "open_4k_us": round(open_us, 2)}


def throughput(work: str, size_mib: int) -> dict[str, float]:
    backing = os.path.join(work, "backing")
    init_vault(backing, "bench", TEST_KDF)
    vault = Vault.unlock(backing, "bench")
    chunk = os.urandom(MiB)
    handle = vault.create("/big", 0o644, os.O_RDWR)
    start = time.perf_counter()
    for i in range(size_mib):
        handle.write(i * MiB, chunk)
    handle.fsync()
    write_s = time.perf_counter() - start
    handle.close()
    os.system("sync")
    handle = vault.open("/big", os.O_RDONLY)
    start = time.perf_counter()
    for i in range(size_mib):
        handle.read(i * MiB, MiB)
    read_s = time.perf_counter() - start
    handle.close()
    rng = random.Random(1)
    handle = vault.open("/big", os.O_RDWR)
    page = os.urandom(4096)
    count = 20000
    start = time.perf_counter()
    for _ in range(count):
        handle.write(rng.randrange(size_mib * 256) * 4096, page)
    random_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(count):
        handle.read(rng.randrange(size_mib * 256) * 4096, 4096)
    random_read_s = time.perf_counter() - start
    handle.close()
    vault.close()
    return {
        "seq_write_MBps": round(size_mib * MiB / write_s / 1e6, 1),
        "seq_read_MBps": round(size_mib * MiB / read_s / 1e6, 1),
        "rand_write_4k_per_s": round(count / random_s),
        "rand_read_4k_per_s": round(count / random_read_s),
    }


def unlock_time(work: str) -> dict[str, object]:
    backing = os.path.join(work, "kdf")
    params = keyfile.calibrate_kdf()
    init_vault(backing, "bench", params)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        keyfile.unlock(backing, "bench")
        times.append(time.perf_counter() - start)
    return {"kdf": params.__dict__, "unlock_s_median": round(sorted(times)[1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vaultfs-bench-") as work:
        results = {"per_block": per_block_cost(), "vault_api": throughput(work, args.size_mib),
                   "unlock": unlock_time(work)}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
