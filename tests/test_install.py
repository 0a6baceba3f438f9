"""``pip install .`` (not editable, as pipx does) gives a working vaultfs: every subpackage
and the package data are in the built distribution, not only in the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import REPO
from tests.mounting import PASSWORD, WEAK_KDF

PACKAGE_FILES = ("setup.cfg", "setup.py", "README.md")  # and the vaultfs/ tree: what a release carries


def test_a_non_editable_install_has_every_module_and_the_unit(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "vaultfs", source / "vaultfs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in PACKAGE_FILES:
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    # -S: no site module, so the editable install of this checkout (a .pth finder) stays
    # out; the dependencies come from this venv's site-packages, vaultfs only from target
    dependencies = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{dependencies}"}
    program = [sys.executable, "-S", str(target / "bin" / "vaultfs")]

    def vaultfs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*program, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                              input=stdin, timeout=120)

    where = subprocess.run([sys.executable, "-S", "-c", "import vaultfs.fuse.seal, vaultfs.format.blocks, "
                            "vaultfs.tools.fsck as m; print(m.__file__)"], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
    assert where.stdout.strip() == str(target / "vaultfs" / "tools" / "fsck.py"), where.stderr
    assert "ExecStart=" in vaultfs("login-unit").stdout
    backing = tmp_path / "cloud"
    assert vaultfs("init", str(backing), "--passfile", "-", *WEAK_KDF, stdin=PASSWORD + "\n").returncode == 0
    listed = vaultfs("ls", str(backing), "--passfile", "-", stdin=PASSWORD + "\n")
    assert listed.returncode == 0 and listed.stdout == "", listed.stderr
    assert vaultfs("status", str(backing)).returncode == 16
