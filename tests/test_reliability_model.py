"""The randomized model test, long: many more operations, then remount and fsck over the result.

CI runs 10,000 operations; ``VAULTFS_SLOW_SCALE=10`` runs 100,000 by hand.
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from tests.mounting import Vault, vaultfs
from tests.reliability import SCALE
from tests.test_model_mount import Run

pytestmark = pytest.mark.slow

STEPS = 10_000 * SCALE


def test_long_random_run_then_fsck_finds_nothing(mounted_vault: Vault) -> None:
    seed = int(os.environ.get("VAULTFS_MODEL_SEED", random.SystemRandom().randrange(2**32)))
    root = mounted_vault.mnt / "model"
    root.mkdir()
    run = Run(root, random.Random(seed))
    try:
        for step in range(STEPS):
            run.step()
            if step % 10 == 0 or step == STEPS - 1:
                run.compare()
        run.close_all()
        mounted_vault.remount()
        run.compare()
    except BaseException as e:
        recent = "; ".join(run.log[-8:])
        raise AssertionError(f"long model run failed with VAULTFS_MODEL_SEED={seed} after: {recent}") from e
    finally:
        for h in run.handles:
            with contextlib.suppress(OSError):
                os.close(h.fd)
    mounted_vault.lock()
    result = vaultfs("fsck", str(mounted_vault.backing), "--passfile", str(mounted_vault.passfile), check=False)
    mounted_vault.mount()
    assert result.returncode == 0, f"seed {seed}: " + result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout
    assert not mounted_vault.log_problems()
