"""vaultfs.conf is hostile input: capped before any argon2id runs, and never a traceback (issue 11).

A config read from the synced folder is parsed before anything in it is authenticated,
so every count and cost it names must be capped first; any bytes at all must end in
ConfigDamaged / UnsupportedFormat (exit 6 / 7), never in another exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import WEAK_KDF, VaultDir, run_cli, write_passfile
from vaultfs.errors import ConfigDamaged, UnsupportedFormat
from vaultfs.format import keyfile
from vaultfs.format.keyfile import KDF_MAX, MAX_SLOTS, TEST_KDF, KdfParams
from vaultfs.format.keys import VaultKeys

KEYS = VaultKeys.derive(bytes(range(32)))
VALID = json.loads(keyfile.new_config(KEYS, "fuzzing password", TEST_KDF).serialize())
SLOT = VALID["slots"][0]

# Any JSON value, nested a little: what an attacker or a broken sync client can put in a field.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
TOP_FIELDS = sorted(VALID)
SLOT_FIELDS = sorted(SLOT)
KDF_FIELDS = sorted(SLOT["kdf"])


def parse_or_refuse(document: object) -> keyfile.Config | None:
    """Parse; the only acceptable failures are the two documented ones."""
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    try:
        config = keyfile.parse_config(raw)
    except (ConfigDamaged, UnsupportedFormat) as exc:
        assert "\n" not in exc.message and len(exc.message) < 400, exc.message
        return None
    for slot in config.slots:  # whatever parses is within the caps
        kdf = slot.kdf
        assert kdf.memory_kib <= KDF_MAX.memory_kib and kdf.time_cost <= KDF_MAX.time_cost
        assert kdf.parallelism <= KDF_MAX.parallelism
    assert 1 <= len(config.slots) <= MAX_SLOTS
    return config


def copy() -> dict:
    return json.loads(json.dumps(VALID))


def test_the_valid_config_parses() -> None:
    assert parse_or_refuse(VALID) is not None


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(TOP_FIELDS), value=JSON_VALUES)
def test_fuzz_every_top_level_field(field: str, value: object) -> None:
    document = copy()
    document[field] = value
    parse_or_refuse(document)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(SLOT_FIELDS), value=JSON_VALUES, where=st.integers(0, 2))
def test_fuzz_every_slot_field(field: str, value: object, where: int) -> None:
    document = copy()
    slots = [json.loads(json.dumps(SLOT)) for _ in range(where + 1)]
    for number, slot in enumerate(slots, 1):
        slot["id"] = number
    slots[where][field] = value
    document["slots"] = slots
    parse_or_refuse(document)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(KDF_FIELDS), value=JSON_VALUES | st.integers(min_value=-5, max_value=2**33))
def test_fuzz_every_kdf_field(field: str, value: object) -> None:
    document = copy()
    document["slots"][0]["kdf"][field] = value
    parse_or_refuse(document)


@settings(max_examples=200, deadline=None)
@given(drop=st.sets(st.sampled_from(TOP_FIELDS)), extra=st.dictionaries(st.text(max_size=10), JSON_VALUES,
                                                                          max_size=3))
def test_fuzz_missing_and_extra_members(drop: set[str], extra: dict) -> None:
    document = {k: v for k, v in copy().items() if k not in drop}
    document.update(extra)
    parse_or_refuse(document)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_fuzz_raw_bytes(raw: bytes) -> None:
    parse_or_refuse(raw)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_fuzz_one_byte_of_the_serialized_config(position: int, byte: int) -> None:
    raw = bytearray(json.dumps(VALID).encode())
    raw[position % len(raw)] = byte
    parse_or_refuse(bytes(raw))


@pytest.mark.parametrize("opener", ["[", '{"a":', '{"format":"vaultfs","version":1,"slots":['])
def test_deep_nesting_is_damage_not_a_recursion_error(opener: str) -> None:
    raw = (opener * 100_000).encode()
    with pytest.raises(ConfigDamaged):
        keyfile.parse_config(raw[: keyfile.MAX_CONFIG_BYTES])


def test_non_canonical_values_that_python_would_accept_are_refused() -> None:
    for field, value in (("version", True), ("block_size", True), ("version", 1.0)):
        document = copy()
        document[field] = value
        with pytest.raises((ConfigDamaged, UnsupportedFormat)):
            keyfile.parse_config(json.dumps(document).encode())
    spaced = copy()
    spaced["mac"] = " ".join(spaced["mac"][i:i + 2] for i in range(0, 64, 2))[:64]  # bytes.fromhex skips spaces
    with pytest.raises(ConfigDamaged, match="lowercase hex"):
        keyfile.parse_config(json.dumps(spaced).encode())
    huge = json.dumps(copy()).replace('"block_size": 4096', '"block_size": ' + "9" * 5000)
    with pytest.raises(ConfigDamaged):  # Python refuses to read integers over 4,300 digits: ValueError
        keyfile.parse_config(huge.encode())


# ---- caps on unauthenticated work, through the real CLI --------------------------------------


def edit_config(vault_dir: VaultDir, edit) -> None:
    path = vault_dir.path / "vaultfs.conf"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(("field", "value", "cap"), [
    ("memory_kib", 4 * 1024 * 1024, "1048576"),
    ("time_cost", 64, "16"),
    ("parallelism", 64, "16"),
])
def test_kdf_parameters_above_what_vaultfs_writes_are_refused_before_the_kdf(
        vault_dir: VaultDir, field: str, value: int, cap: str) -> None:
    edit_config(vault_dir, lambda d: d["slots"][0]["kdf"].__setitem__(field, value))
    for args in (["info", str(vault_dir.path)], ["ls", str(vault_dir.path), "--passfile", str(vault_dir.passfile)]):
        result = run_cli(*args, timeout=30)
        assert result.returncode == 6, (result.returncode, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert field in line and cap in line and "refused before running it" in line, line


def test_more_key_slots_than_the_cap_are_refused(vault_dir: VaultDir) -> None:
    def add_slots(document: dict) -> None:
        for number in range(2, 66):  # the 64 slots of 1 GiB each that the old cap allowed
            slot = json.loads(json.dumps(document["slots"][0]))
            slot["id"] = number
            slot["kdf"]["memory_kib"] = 1024 * 1024
            document["slots"].append(slot)

    edit_config(vault_dir, add_slots)
    result = run_cli("ls", str(vault_dir.path), "--passfile", str(vault_dir.passfile), timeout=30)
    assert result.returncode == 6, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "65 key slots" in line and f"cap of {MAX_SLOTS}" in line, line


def test_a_deeply_nested_config_is_exit_6_without_a_traceback(vault_dir: VaultDir) -> None:
    (vault_dir.path / "vaultfs.conf").write_text("[" * 60_000)
    for args in (["info", str(vault_dir.path)], ["ls", str(vault_dir.path), "--passfile", str(vault_dir.passfile)],
                 ["fsck", str(vault_dir.path), "--passfile", str(vault_dir.passfile)]):
        result = run_cli(*args)
        assert result.returncode == 6, (args, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_init_refuses_kdf_flags_above_the_cap_so_every_vault_it_writes_opens(tmp_path: Path) -> None:
    passfile = write_passfile(tmp_path / "p", "a long enough test password")
    for flag, value in (("--kdf-memory-kib", "2097152"), ("--kdf-time", "17"), ("--kdf-parallelism", "17")):
        result = run_cli("init", str(tmp_path / "v"), "--passfile", str(passfile), flag, value)
        assert result.returncode == 2 and flag.removeprefix("--kdf-").split("-")[0] in result.stderr, result.stderr
        assert not (tmp_path / "v").exists()
    made = run_cli("init", str(tmp_path / "v"), "--passfile", str(passfile), *WEAK_KDF)
    assert made.returncode == 0, made.stderr


def test_the_caps_cover_what_calibration_can_choose() -> None:
    KdfParams(1024 * 1024, 16, 4).check_bounds()  # calibrate_kdf's largest choice
    keyfile.KDF_FLOOR.check_bounds()
    with pytest.raises(ConfigDamaged, match="memory_kib"):
        KdfParams(KDF_MAX.memory_kib + 1, 3, 4).check_bounds()
