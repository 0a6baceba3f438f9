"""Run the real CLI on a pseudo-terminal and answer its prompts, as a person would."""

from __future__ import annotations

import os
import pty
import select
import time
from collections.abc import Sequence


def on_terminal(program: str, args: Sequence[str], env: dict[str, str],
                dialogue: Sequence[tuple[bytes, bytes]] = (), timeout: float = 60) -> tuple[int, str]:
    """Run ``program`` with a pty as its controlling terminal.

    ``dialogue`` is a list of (prompt, answer): each answer is typed once the output
    holds that prompt one more time than before.  Returns (exit status, everything
    the terminal showed).
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the real program
        os.execve(program, [program, *args], env)
    output = b""
    pending = list(dialogue)
    seen: dict[bytes, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child and everything holding the terminal ended
                    break
                if not chunk:
                    break
                output += chunk
            if pending:
                prompt, answer = pending[0]
                if output.count(prompt) > seen.get(prompt, 0):
                    seen[prompt] = seen.get(prompt, 0) + 1
                    os.write(fd, answer)
                    pending.pop(0)
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")
