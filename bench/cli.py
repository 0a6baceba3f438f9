"""vaultfs benchmark: the chat-backup workloads, side by side with the peers, interleaved.

    scripts/bench                 # full sizes, 3 repeats, vaultfs vs the Python passthrough
    scripts/bench --quick         # small sizes, 1 repeat (under 2 minutes)
    scripts/bench --peers         # also gocryptfs (installed if missing), securefs, cryfs
    scripts/bench --workloads seq_write,sqlite --fs vaultfs,passthrough --repeat 5
    scripts/bench --remote        # push/pull to a loopback WebDAV server, remote mount (bench/remote.py)

Every (filesystem, workload, repetition) is a fresh backing dir, init and mount; the
filesystem order rotates each repetition so that drift from other load on the machine
spreads evenly.  Prints medians and ratios (vaultfs / best durable peer, vaultfs /
passthrough; > 1 means vaultfs is faster) and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time

from bench import mounts, probes, workloads
from bench.mounts import DURABLE_PEERS, PASSWORD, Instance
from bench.workloads import METRICS, QUICK, WORKLOADS, Sizes

WORKLOAD_METRICS = {
    "seq_write": ["seq_write"], "seq_read_cold": ["seq_read_cold"], "small_files": ["small_write", "small_read"],
    "sqlite": ["sqlite"], "rand_4k": ["rand_4k"], "metadata": ["stat", "rename"], "backup_tree": ["backup_tree"],
}


def run_trial(name: str, fs: str, spec: mounts.FsSpec, run_dir: str, passfile: str, sizes: Sizes,
              timeout: float) -> dict[str, float]:
    work = tempfile.mkdtemp(prefix=f"{fs}-{name}-", dir=run_dir)
    scratch = os.path.join(work, "scratch")
    os.makedirs(scratch)
    inst = Instance(spec, work, passfile)
    # A hung daemon would block the workload in a syscall: killing it aborts the connection.
    watchdog = threading.Timer(timeout, inst.kill)
    watchdog.daemon = True
    try:
        inst.init()
        inst.mount()
        watchdog.start()
        return workloads.run(name, inst, sizes, scratch, run_dir)
    finally:
        watchdog.cancel()
        inst.unmount()
        shutil.rmtree(work, ignore_errors=True)


def speed(metric: str, value: float, base: float) -> float:
    """> 1 means `value` is better than `base`, whatever the metric's direction."""
    return value / base if METRICS[metric][1] else base / value


def summarize(trials: list[dict], fs_names: list[str], metrics: list[str]) -> dict:
    summary: dict = {}
    for m in metrics:
        row: dict = {}
        for fs in fs_names:
            values = [t["metrics"][m] for t in trials if t["fs"] == fs and m in t.get("metrics", {})]
            fails = [t["error"] for t in trials if t["fs"] == fs and t.get("error") and m in t["expects"]]
            row[fs] = {"values": values, "median": statistics.median(values) if values else None, "errors": fails}
        peers = [row[p]["median"] for p in DURABLE_PEERS if p in row and row[p]["median"]]
        if peers:
            best = max(peers) if METRICS[m][1] else min(peers)
            row["best_durable_peer"] = best
        v = row.get("vaultfs", {}).get("median")
        if v and peers:
            row["vaultfs_vs_best_peer"] = speed(m, v, row["best_durable_peer"])
        p = row.get("passthrough", {}).get("median")
        if v and p:
            row["vaultfs_vs_passthrough"] = speed(m, v, p)
        summary[m] = row
    return summary


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def table(summary: dict, fs_names: list[str], repeat: int) -> str:
    lines = [f"medians of {repeat} interleaved run(s); ratios > 1: vaultfs faster", "",
             "| metric | unit | " + " | ".join(fs_names) + " | vaultfs / best peer | vaultfs / passthrough |",
             "|---|---|" + "---|" * (len(fs_names) + 2)]
    for m, row in summary.items():
        unit, higher = METRICS[m]
        cells = []
        for fs in fs_names:
            e = row[fs]
            cells.append("FAIL" if e["median"] is None and e["errors"] else fmt(e["median"]))
        r1, r2 = row.get("vaultfs_vs_best_peer"), row.get("vaultfs_vs_passthrough")
        lines.append(f"| {m} | {unit} {'↑' if higher else '↓'} | " + " | ".join(cells) +
                     f" | {'-' if r1 is None else f'{r1:.2f}x'} | {'-' if r2 is None else f'{r2:.2f}x'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat by default")
    ap.add_argument("--peers", action="store_true", help="also gocryptfs (apt-get if missing), securefs, cryfs")
    ap.add_argument("--fs", help="comma list of raw,passthrough,vaultfs,gocryptfs,securefs,cryfs")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list (default: all)")
    ap.add_argument("--repeat", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--no-probes", action="store_true", help="skip memory and unlock measurements")
    ap.add_argument("--json", default="bench-results.json", help="where to write results (default %(default)s)")
    ap.add_argument("--tmp", default="/tmp", help="parent of the work dir")
    ap.add_argument("--timeout", type=float, default=600, help="per trial, seconds")
    ap.add_argument("--remote", action="store_true",
                    help="only the remote section: push/pull of a chat backup to a loopback WebDAV server vs rclone "
                         "copy, and a remote mount vs a local one (bench/remote.py)")
    ap.add_argument("--remote-media", type=int, metavar="N", help="media files in the remote backup (default 2000, "
                    "--quick 200)")
    args = ap.parse_args(argv)
    if args.remote:
        return run_remote(args)

    if os.geteuid() != 0:
        sys.stderr.write("warning: not root: cold-cache workloads cannot drop the page cache\n")
    all_specs = mounts.specs()
    if args.fs:
        fs_names = [f for f in args.fs.split(",") if f]
    else:
        fs_names = ["passthrough", "vaultfs"]
        if args.peers:
            mounts.ensure_gocryptfs()
            fs_names += [p for p in ("gocryptfs", "securefs", "cryfs") if shutil.which(p)]
    unknown = [f for f in fs_names if f not in all_specs]
    if unknown:
        ap.error(f"unknown filesystem(s): {', '.join(unknown)}")
    missing = [f for f in fs_names for need in all_specs[f].needs if not shutil.which(need)]
    if missing:
        ap.error(f"not installed: {', '.join(missing)}")
    wl_names = [w for w in args.workloads.split(",") if w]
    if any(w not in WORKLOADS for w in wl_names):
        ap.error(f"workloads are {', '.join(WORKLOADS)}")
    sizes = Sizes(**QUICK.__dict__) if args.quick else Sizes()
    repeat = args.repeat or (1 if args.quick else 3)

    run_dir = tempfile.mkdtemp(prefix="vaultfs-bench-", dir=args.tmp)
    passfile = os.path.join(run_dir, "passfile")
    with open(passfile, "w") as f:
        f.write(PASSWORD + "\n")
    t_start = time.monotonic()
    trials: list[dict] = []
    extra: dict = {}
    try:
        workloads.pool()
        if "backup_tree" in wl_names:
            workloads.build_backup_source(os.path.join(run_dir, "backup-src"), sizes)
        for w in wl_names:
            for rep in range(repeat):
                order = fs_names[rep % len(fs_names) :] + fs_names[: rep % len(fs_names)]
                for fs in order:
                    rec = {"fs": fs, "workload": w, "rep": rep, "expects": WORKLOAD_METRICS[w], "error": None}
                    t0 = time.monotonic()
                    try:
                        rec["metrics"] = run_trial(w, fs, all_specs[fs], run_dir, passfile, sizes, args.timeout)
                        shown = ", ".join(f"{k}={fmt(v)} {METRICS[k][0]}" for k, v in rec["metrics"].items())
                    except Exception as e:  # noqa: BLE001 - one failed trial is reported, the run goes on
                        rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                        shown = "FAIL " + rec["error"]
                    trials.append(rec)
                    sys.stderr.write(f"[{(time.monotonic() - t_start) / 60:4.1f}m] {w} r{rep} {fs}: {shown} "
                                     f"({time.monotonic() - t0:.1f}s)\n")
        if not args.no_probes and "vaultfs" in fs_names:
            extra = run_probes(all_specs["vaultfs"], run_dir, passfile, sizes)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    metrics = [m for w in wl_names for m in WORKLOAD_METRICS[w]]
    summary = summarize(trials, fs_names, metrics)
    text = table(summary, fs_names, repeat)
    if extra:
        text += "\n\n" + "\n".join(f"- {k}: {fmt(v) if isinstance(v, float) else v}" for k, v in extra.items())
    print(text)
    print(f"\n({'quick' if args.quick else 'full'} sizes, {(time.monotonic() - t_start) / 60:.1f} min, "
          f"{os.cpu_count()} CPUs, kernel {platform.release()})")
    with open(args.json, "w") as f:
        json.dump({"sizes": sizes.__dict__, "repeat": repeat, "filesystems": fs_names, "summary": summary,
                   "probes": extra, "trials": trials, "table": text}, f, indent=1)
    sys.stderr.write(f"wrote {args.json}\n")
    return 1 if any(t["error"] for t in trials) else 0


def run_remote(args: argparse.Namespace) -> int:
    from bench import remote

    sizes = Sizes(**QUICK.__dict__) if args.quick else Sizes()
    repeat = args.repeat or (1 if args.quick else 3)
    media = args.remote_media or (200 if args.quick else 2000)
    run_dir = tempfile.mkdtemp(prefix="vaultfs-bench-", dir=args.tmp)
    t_start = time.monotonic()
    try:
        text, data = remote.run(run_dir, sizes, media, repeat)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(text)
    print(f"\n({'quick' if args.quick else 'full'} sizes, {(time.monotonic() - t_start) / 60:.1f} min, "
          f"{os.cpu_count()} CPUs, kernel {platform.release()}, {remote.rclone_version()})")
    with open(args.json, "w") as f:
        json.dump({"remote": data, "sizes": sizes.__dict__, "media": media, "repeat": repeat, "table": text}, f,
                  indent=1)
    sys.stderr.write(f"wrote {args.json}\n")
    return 0


def run_probes(spec: mounts.FsSpec, run_dir: str, passfile: str, sizes: Sizes) -> dict:
    results: dict = {}
    for probe in (probes.rss_big_write, probes.rss_tree):
        work = tempfile.mkdtemp(prefix="vaultfs-probe-", dir=run_dir)
        inst = Instance(spec, work, passfile)
        try:
            inst.init()
            inst.mount()
            results.update(probe(inst, sizes))
        except Exception as e:  # noqa: BLE001 - reported, the table still prints
            results[probe.__name__ + "_error"] = str(e)
        finally:
            inst.unmount()
            shutil.rmtree(work, ignore_errors=True)
        sys.stderr.write(f"probe {probe.__name__} done\n")
    results.update(probes.unlock_and_mount_ready(tempfile.mkdtemp(prefix="vaultfs-kdf-", dir=run_dir)))
    return results
