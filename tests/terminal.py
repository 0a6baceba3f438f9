"""Run the real CLI on a pseudo-terminal and answer its prompts, as a person would."""

from __future__ import annotations

import os
import pty
import select
import subprocess
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


def shown_on_terminal(args: Sequence[str], env: dict[str, str], *, stdout_piped: bool = False,
                      timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run ``args`` with stdin from /dev/null and stderr (and stdout, unless ``stdout_piped``)
    on a fresh pty, which is not its controlling terminal: what a progress bar sees.

    Returns (exit status, stdout if piped else b"", everything the terminal showed).
    """
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(list(args), env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE if stdout_piped else terminal, stderr=terminal)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = process.communicate(timeout=timeout)
    finally:
        os.close(controller)
    return process.returncode, stdout or b"", shown
