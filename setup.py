"""Setuptools shim: the project metadata lives in setup.cfg; this file builds the C part.

``vaultfs/fuse/lowlevel_extra.c`` becomes ``vaultfs/fuse/_lowlevel_extra*.so``: the libfuse
shim that adds the FUSE operations pyfuse3 lacks (docs/mount.md, "fallocate and the libfuse
shim").  It is a plain shared library that ``vaultfs/fuse/extra_ops.py`` loads with ctypes,
not a Python module; it is built as an extension because that is how setuptools compiles C
for ``pip install .`` and ``pip install -e .`` alike.  It needs what pyfuse3's own build
needs: libfuse3's headers, pkg-config and a C compiler (scripts/setup-env installs them).
"""

import subprocess

from setuptools import Extension, setup

SHIM_DIR = "vaultfs/fuse"


def fuse3_flags(kind: str) -> list[str]:
    """pkg-config's --cflags or --libs of fuse3, or a one-line reason why the build cannot go on."""
    try:
        result = subprocess.run(["pkg-config", kind, "fuse3"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"vaultfs: pkg-config {kind} fuse3 failed ({exc}); install libfuse3-dev and pkg-config "
            "(scripts/setup-env does)"
        ) from None
    return result.stdout.split()


shim = Extension(
    "vaultfs.fuse._lowlevel_extra",
    sources=[f"{SHIM_DIR}/lowlevel_extra.c"],
    depends=[f"{SHIM_DIR}/lowlevel_extra.map"],
    extra_compile_args=[*fuse3_flags("--cflags"), "-fvisibility=hidden", "-Wall", "-Wextra"],
    # The version script gives fuse_session_new libfuse's own symbol version and hides the rest.
    extra_link_args=[f"-Wl,--version-script={SHIM_DIR}/lowlevel_extra.map", *fuse3_flags("--libs"), "-ldl"],
)

setup(ext_modules=[shim])
