"""vaultfs.conf, key slots, password changes and the recovery key."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import VaultDir, read_file, write_file
from vaultfs.errors import ConfigDamaged, MistypedRecoveryKey, NotAVault, WrongPassword, WrongRecoveryKey
from vaultfs.format import keyfile, recovery
from vaultfs.format.keyfile import TEST_KDF, KdfParams
from vaultfs.format.keys import VaultKeys


def test_config_is_0600_and_strict_json(vault_dir: VaultDir) -> None:
    config = vault_dir.path / "vaultfs.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    document = json.loads(config.read_text())
    assert set(document) == {"format", "version", "vault_id", "cipher_suite", "block_size", "name_encoding",
                              "slots", "mac"}
    assert "password" not in config.read_text().lower().replace('"type": "password"', "")


def test_non_canonical_hex_and_huge_kdf_parameters_are_refused(vault_dir: VaultDir) -> None:
    config = vault_dir.path / "vaultfs.conf"
    original = json.loads(config.read_text())
    upper = json.loads(json.dumps(original))
    upper["mac"] = upper["mac"].upper()
    with pytest.raises(ConfigDamaged):
        keyfile.parse_config(json.dumps(upper).encode())
    huge = json.loads(json.dumps(original))
    huge["slots"][0]["kdf"]["memory_kib"] = 1 << 40
    with pytest.raises(ConfigDamaged, match="out of range"):
        keyfile.parse_config(json.dumps(huge).encode())
    as_float = json.loads(json.dumps(original))
    as_float["slots"][0]["kdf"]["time_cost"] = 1.0
    with pytest.raises(ConfigDamaged):
        keyfile.parse_config(json.dumps(as_float).encode())
    with pytest.raises(ConfigDamaged):
        keyfile.parse_config(b"\xff\xfe")


def test_unlock_wrong_password(vault_dir: VaultDir) -> None:
    with pytest.raises(WrongPassword):
        keyfile.unlock(str(vault_dir.path), "not it")
    keys, _ = keyfile.unlock(str(vault_dir.path), vault_dir.password)
    assert isinstance(keys, VaultKeys)
    assert "master_key" not in repr(keys) or keys.master_key.hex() not in repr(keys)


def test_password_is_nfc_normalised(vault_dir: VaultDir, tmp_path) -> None:
    import unicodedata

    backing = tmp_path / "nfc"
    from vaultfs.vault import init_vault

    init_vault(str(backing), "café", TEST_KDF)
    keyfile.unlock(str(backing), unicodedata.normalize("NFD", "café"))


def test_change_password_rewraps_only(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/f", b"data" * 3000)
    vault.close()
    before = {p: p.read_bytes() for p in vault_dir.path.rglob("*.vfs")}
    keyfile.change_password(str(vault_dir.path), vault_dir.password, "new pw", TEST_KDF)
    assert {p: p.read_bytes() for p in vault_dir.path.rglob("*.vfs")} == before
    with pytest.raises(WrongPassword):
        keyfile.unlock(str(vault_dir.path), vault_dir.password)
    keyfile.unlock(str(vault_dir.path), "new pw")
    assert sorted(p.name for p in vault_dir.path.glob("vaultfs.conf*")) == ["vaultfs.conf"]  # no .bak, no .tmp


def test_recovery_key_round_trip_and_typos() -> None:
    master = os.urandom(32)
    key = recovery.encode(master)
    groups = key.split("-")
    assert len(groups) == 11 and all(len(g) == 5 for g in groups)
    assert recovery.decode(key) == master
    assert recovery.decode(key.lower().replace("-", " ")) == master
    assert recovery.decode(key.replace("0", "O").replace("1", "I")) == master
    for position in range(len(key)):
        if key[position] == "-":
            continue
        for replacement in "0123456789ABCDEFGHJKMNPQRSTVWXYZ":
            if replacement == key[position]:
                continue
            typo = key[:position] + replacement + key[position + 1 :]
            try:
                decoded = recovery.decode(typo)
            except MistypedRecoveryKey:
                continue
            assert decoded != master  # 1 in 65536 typos may pass the checksum: still never the same key
    with pytest.raises(MistypedRecoveryKey):
        recovery.decode(key[:-1])
    with pytest.raises(MistypedRecoveryKey):
        recovery.decode(key[:-1] + "U")


def test_single_symbol_typos_are_caught_by_the_checksum() -> None:
    master = bytes(range(32))
    key = recovery.encode(master).replace("-", "")
    caught = 0
    for position in range(len(key)):
        typo = key[:position] + ("0" if key[position] != "0" else "1") + key[position + 1 :]
        with pytest.raises(MistypedRecoveryKey):
            recovery.decode(typo)
        caught += 1
    assert caught == 55


def test_recover_sets_a_new_password_and_rebuilds_a_lost_config(vault_dir: VaultDir) -> None:
    vault = vault_dir.unlock()
    write_file(vault, "/keep", b"precious")
    vault.close()
    keys = VaultKeys.derive(recovery.decode(vault_dir.recovery_key))
    keyfile.recover(str(vault_dir.path), keys, "after recovery", TEST_KDF, rebuild=False)
    keyfile.unlock(str(vault_dir.path), "after recovery")
    (vault_dir.path / "vaultfs.conf").unlink()
    with pytest.raises(NotAVault, match="rebuild-config"):
        keyfile.unlock(str(vault_dir.path), "after recovery")
    wrong = VaultKeys.derive(os.urandom(32))
    with pytest.raises(WrongRecoveryKey):
        keyfile.recover(str(vault_dir.path), wrong, "x", TEST_KDF, rebuild=True)
    keyfile.recover(str(vault_dir.path), keys, "rebuilt", TEST_KDF, rebuild=True)
    from vaultfs.vault import Vault

    vault = Vault.unlock(str(vault_dir.path), "rebuilt")
    assert read_file(vault, "/keep") == b"precious"
    vault.close()


def test_calibrated_parameters_respect_the_floor() -> None:
    params = keyfile.calibrate_kdf(target_seconds=0.05)
    assert not params.below_floor()
    assert params == KdfParams(65536, 3, 4)


def test_duplicate_json_members_are_refused(vault_dir: VaultDir) -> None:
    raw = (vault_dir.path / "vaultfs.conf").read_text()
    doubled = raw.replace('"block_size": 4096', '"block_size": 4096, "block_size": 4096', 1)
    assert doubled != raw
    with pytest.raises(ConfigDamaged, match="twice"):
        keyfile.parse_config(doubled.encode())
