"""Progress bars for long verbs (export, import, fsck): on a terminal only, quiet when piped."""

from __future__ import annotations

import os
import shutil
import sys
from types import TracebackType
from typing import TextIO


class _Terminal:
    """stderr seen through a plain object: tqdm 4.70 printed nothing when handed sys.stderr on a pty."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return True


class Progress:
    """Bytes with rate and ETA, plus a file count; a no-op unless stderr is a terminal."""

    def __init__(self, description: str, total_bytes: int | None, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.files = 0
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            # a terminal that reports 0 columns (a fresh pty) would get an empty bar
            columns = shutil.get_terminal_size().columns
            self._bar = tqdm(total=total_bytes, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
                             file=_Terminal(sys.stderr), ncols=columns, mininterval=0.2)

    def add_bytes(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def add_file(self) -> None:
        self.files += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.files} files", refresh=False)

    def write(self, line: str) -> None:
        """Print a line without tearing the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self, finished: bool = False) -> None:
        """End the bar; ``finished`` (the work completed) shows it at 100%.

        The total is an estimate made before the work (fsck counts ciphertext sizes,
        headers and tags included, while it reports the bytes it checked), so a
        finished job settles the total to what was counted instead of stopping short.
        """
        if self._bar is not None:
            if finished and self._bar.total is not None and self._bar.n != self._bar.total:
                self._bar.total = self._bar.n
                self._bar.refresh()
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(finished=kind is None)


def tree_bytes(root: str) -> int:
    """Total size of the files below ``root``: the bar's total for import and fsck."""
    return sum(os.lstat(os.path.join(directory, name)).st_size
               for directory, _, files in os.walk(root) for name in files)
