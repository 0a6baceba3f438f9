"""The randomized model test, long: many more operations, then remount and fsck over the result.

CI runs 10,000 operations; ``VAULTFS_SLOW_SCALE=10`` runs 100,000 by hand.
"""

from __future__ import annotations

import pytest

from tests.mounting import Vault, vaultfs
from tests.reliability import SCALE
from tests.test_model_mount import run_model

pytestmark = pytest.mark.slow

STEPS = 10_000 * SCALE


def test_long_random_run_then_fsck_finds_nothing(mounted_vault: Vault) -> None:
    seed = run_model(mounted_vault, STEPS, compare_every=10)
    mounted_vault.lock()
    result = vaultfs("fsck", str(mounted_vault.backing), "--passfile", str(mounted_vault.passfile), check=False)
    mounted_vault.mount()
    assert result.returncode == 0, f"seed {seed}: " + result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout
    assert not mounted_vault.log_problems()
