"""The benchmarks still run against the code: ``python -m bench`` mounts vaultfs and the
passthrough and measures, and ``scripts/bench_core.py`` drives the Vault API (it once broke
silently when keyfile moved into vaultfs.format). Numbers are not checked, only that each
measurement happened and is a number."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.mount


def test_bench_mounts_both_filesystems_and_measures_a_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--fs", "vaultfs,passthrough",
                           "--workloads", "metadata", "--no-probes", "--repeat", "1", "--json", str(out),
                           "--tmp", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    for metric in ("stat", "rename"):
        for fs in ("vaultfs", "passthrough"):
            assert summary[metric][fs]["errors"] == [], (metric, fs)
            assert summary[metric][fs]["median"] > 0, (metric, fs)
    assert "| stat | stats/s" in done.stdout


def test_core_bench_drives_the_vault_api(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_core", Path(REPO) / "scripts" / "bench_core.py")
    assert spec is not None and spec.loader is not None
    bench_core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_core)
    assert set(bench_core.per_block_cost(iterations=50)) == {"seal_4k_us", "open_4k_us"}
    result = bench_core.throughput(str(tmp_path), size_mib=2)
    assert all(value > 0 for value in result.values()), result
