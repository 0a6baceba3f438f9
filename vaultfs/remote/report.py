"""What push, pull and sync say when they are done: the same lines for the verbs and for ``run``.

The verbs print them on stdout; ``vaultfs run`` prints them on stderr, because there
stdout belongs to the command it runs.
"""

from __future__ import annotations

import os

from vaultfs.remote.bisync import SyncResult
from vaultfs.remote.progress import human_bytes
from vaultfs.remote.rclone import Remote
from vaultfs.remote.transfer import Result


def pushed(result: Result, backing: str, remote: Remote) -> list[str]:
    note = " (the remote keeps no times or checksums: compared by vaultfs's record)" if result.compare == "size" else ""
    return [f"pushed {result.files} file(s) ({human_bytes(result.bytes)}) from {os.path.abspath(backing)} "
            f"to {remote}{note}"]


def pulled(result: Result, remote: Remote, backing: str, delete: bool) -> list[str]:
    deleted = f", deleted {result.deleted} the remote does not have" if delete else ""
    return [f"pulled {result.files} file(s) ({human_bytes(result.bytes)}) from {remote} into "
            f"{os.path.abspath(backing)}{deleted}"]


def synced(result: SyncResult, backing: str, remote: Remote) -> list[str]:
    backing = os.path.abspath(backing)
    lines = []
    if result.first_run:
        lines.append(f"first sync of {backing} with {remote} (rclone bisync --resync)")
        lines += [f"  {path} differed: the remote's version keeps the name, this device's is kept as {path}..path1"
                  for path in result.kept_before_resync]
    lines.append(f"synced {backing} with {remote}: {result.files} file(s) transferred ({human_bytes(result.bytes)})")
    if result.new_conflicts:
        count = len(result.new_conflicts)
        lines.append(f"{count} new conflict cop{'y' if count == 1 else 'ies'} "
                     "(changed on both sides; both versions kept, shown by vaultfs as conflicts):")
        lines += [f"  {path}" for path in result.new_conflicts]
    else:
        lines.append("0 new conflict copies")
    return lines
