"""Kill an operation at its N-th write, the way a power cut or kill -9 would, to test that a
rerun (or fsck) finishes what it left.

The operation runs in a forked child whose chosen functions are counted; right before the
call number ``stop_at`` the child ends with ``os._exit``: nothing flushed, no ``finally``,
no cleanup.  Used by the sparse-file, upgrade and rekey crash tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest


def run_until(work: Callable[[], Any], patched: Sequence[tuple[object, str]],
              stop_at: int | None) -> tuple[list[str], Any] | None:
    """Run ``work`` in a child whose calls of each ``(owner, attribute)`` in ``patched`` are
    counted; before call number ``stop_at`` (None: never) the child dies.

    Returns (the names of the calls made, what ``work`` returned, which must be JSON), or
    None when the child died (at ``stop_at``, or by an exception: then nothing is reported).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, and never back into it
        try:
            os.close(read_end)
            calls: list[str] = []

            def wrap(name: str, real: Callable) -> Callable:
                def call(*args, **kwargs):
                    if stop_at is not None and len(calls) == stop_at:
                        os._exit(0)
                    calls.append(name)
                    return real(*args, **kwargs)
                return call

            with pytest.MonkeyPatch.context() as patch:
                for owner, name in patched:
                    patch.setattr(owner, name, wrap(name, getattr(owner, name)))
                result = work()
            os.write(write_end, json.dumps([calls, result]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        told = pipe.read()
    os.waitpid(pid, 0)
    if not told:
        return None
    calls, result = json.loads(told)
    return calls, result
