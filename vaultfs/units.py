"""``vaultfs login-unit``: the systemd user unit shipped with the package, ready to install.

The unit (``vaultfs/data/vaultfs@.service``, package data) names the program as plain
``vaultfs``; systemd looks that up in its own fixed PATH, which misses a venv or
``~/.local/bin`` (pip --user, pipx).  This verb prints the unit with the absolute path
of the ``vaultfs`` being run, so ``vaultfs login-unit > ~/.config/systemd/user/vaultfs@.service``
works wherever vaultfs was installed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from importlib import resources
from typing import Any

UNIT_NAME = "vaultfs@.service"


def shipped_unit() -> str:
    return resources.files("vaultfs").joinpath("data", UNIT_NAME).read_text(encoding="utf-8")


def program_path() -> str:
    """The absolute path of this vaultfs program."""
    here = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(here) == "vaultfs" and os.access(here, os.X_OK):
        return here
    return shutil.which("vaultfs") or "vaultfs"


def unit_text(program: str | None = None) -> str:
    program = program or program_path()
    if re.search(r"\s", program):
        program = '"' + program + '"'  # systemd splits Exec lines at whitespace unless quoted
    return re.sub(r"^(Exec\w+=)vaultfs ", lambda m: f"{m.group(1)}{program} ", shipped_unit(), flags=re.M)


def cmd_login_unit(args: Any) -> int:
    sys.stdout.write(unit_text())
    return 0
