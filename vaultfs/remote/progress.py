"""One progress bar over the several rclone runs of a push, pull or sync (terminal only)."""

from __future__ import annotations

from vaultfs.tools.progress import Progress


class RcloneProgress(Progress):
    """Fed with rclone's JSON stats; each rclone run adds its bytes to those of the runs before."""

    def __init__(self, description: str) -> None:
        super().__init__(description, None)
        self._done_bytes = 0
        self._done_total = 0
        self._run_bytes = 0
        self._run_total = 0

    def next_run(self) -> None:
        self._done_bytes += self._run_bytes
        self._done_total += self._run_total
        self._run_bytes = self._run_total = 0

    def stats(self, stats: dict) -> None:
        self._run_bytes = int(stats.get("bytes") or 0)
        self._run_total = int(stats.get("totalBytes") or 0)
        bar = self._bar
        if bar is None:
            return
        bar.total = max(self._done_total + self._run_total, 1)
        bar.n = self._done_bytes + self._run_bytes
        bar.set_postfix_str(f"{int(stats.get('transfers') or 0)}/{int(stats.get('totalTransfers') or 0)} files",
                            refresh=False)
        bar.refresh()


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
