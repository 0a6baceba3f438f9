"""vaultfs.conf: the password key slot(s) that wrap the master key, and the config MAC.

The file is untrusted input (it lives in a cloud folder), so parsing is strict and KDF
parameters are capped before the KDF runs.  The master key is wrapped with AES-GCM
under an argon2id KEK whose parameters are in the AAD (no silent downgrade); the whole
config carries an HMAC under a key derived from the master key (no silent edit).
See docs/format.md section 4.
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.errors import ConfigDamaged, NeedsUpgrade, NotAVault, UnsupportedFormat, VaultIOError, WrongPassword
from vaultfs.format.keys import VaultKeys

CONFIG_NAME = "vaultfs.conf"
BACKUP_NAME = "vaultfs.conf.bak"
FORMAT_NAME = "vaultfs"
FORMAT_VERSION = 2
UPGRADABLE_VERSION = 1  # read only by `vaultfs upgrade` (and `recover`, which keeps the version)
CIPHER_SUITE = "AES-256-GCM+AES-SIV-512+HKDF-SHA256"
NAME_ENCODING = "AES-SIV+base32"
BLOCK_SIZE = 4096
SALT_SIZE = 32
WRAPPED_KEY_SIZE = 12 + 32 + 16
MAX_CONFIG_BYTES = 64 * 1024
UNLOCK_TARGET_SECONDS = 1.0


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost parameters of one key slot (memory in KiB)."""

    memory_kib: int
    time_cost: int
    parallelism: int

    def check_bounds(self) -> None:
        """Cap parameters read from an untrusted file before spending memory on them."""
        p = self.parallelism
        if not (1 <= p <= 64 and 8 * p <= self.memory_kib <= 4 * 1024 * 1024 and 1 <= self.time_cost <= 64):
            raise ConfigDamaged(f"argon2id parameters out of range: {self}")

    def below_floor(self) -> bool:
        return (
            self.memory_kib < KDF_FLOOR.memory_kib
            or self.time_cost < KDF_FLOOR.time_cost
            or self.parallelism < KDF_FLOOR.parallelism
        )


KDF_FLOOR = KdfParams(memory_kib=64 * 1024, time_cost=3, parallelism=4)  # RFC 9106, second recommendation
TEST_KDF = KdfParams(memory_kib=1024, time_cost=1, parallelism=1)


def _time_kdf(params: KdfParams) -> float:
    start = time.perf_counter()
    crypto.argon2id(b"calibration", bytes(SALT_SIZE), params.memory_kib, params.time_cost, params.parallelism)
    return time.perf_counter() - start


def calibrate_kdf(target_seconds: float = UNLOCK_TARGET_SECONDS) -> KdfParams:
    """Pick argon2id parameters so that one unlock takes about ``target_seconds`` here.

    Memory is the better cost for an attacker, so it doubles first (64 MiB .. 1 GiB at
    t=3, p=4) while a measured run predicts the next doubling still fits (cost grows
    faster than linearly once memory leaves the caches), then passes are added; never
    below the RFC 9106 floor.
    """
    params = KDF_FLOOR
    seconds = _time_kdf(params)
    while params.memory_kib < 1024 * 1024 and seconds * 2.3 <= target_seconds:
        params = KdfParams(params.memory_kib * 2, params.time_cost, params.parallelism)
        seconds = _time_kdf(params)
    for _ in range(2):  # refine the pass count on real runs: timings at this size are noisy
        passes = max(KDF_FLOOR.time_cost, min(16, round(params.time_cost * target_seconds / seconds)))
        if passes == params.time_cost:
            break
        params = KdfParams(params.memory_kib, passes, params.parallelism)
        seconds = _time_kdf(params)
    return params


def canonical(value: object) -> bytes:
    """The canonical JSON of docs/format.md: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True)
class Slot:
    slot_id: int
    kdf: KdfParams
    salt: bytes
    wrapped_key: bytes = field(repr=False)

    def kdf_json(self) -> dict[str, object]:
        return {
            "algorithm": "argon2id",
            "memory_kib": self.kdf.memory_kib,
            "time_cost": self.kdf.time_cost,
            "parallelism": self.kdf.parallelism,
            "salt": self.salt.hex(),
        }

    def aad(self, vault_id: bytes) -> bytes:
        return vault_id + self.slot_id.to_bytes(4, "big") + canonical(self.kdf_json())

    def to_json(self) -> dict[str, object]:
        return {"id": self.slot_id, "type": "password", "kdf": self.kdf_json(), "wrapped_key": self.wrapped_key.hex()}


@dataclass(frozen=True)
class Config:
    vault_id: bytes
    slots: tuple[Slot, ...]
    block_size: int = BLOCK_SIZE
    version: int = FORMAT_VERSION
    cipher_suite: str = CIPHER_SUITE
    name_encoding: str = NAME_ENCODING
    mac: bytes = b""

    def unsigned_json(self) -> dict[str, object]:
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "vault_id": self.vault_id.hex(),
            "cipher_suite": self.cipher_suite,
            "block_size": self.block_size,
            "name_encoding": self.name_encoding,
            "slots": [slot.to_json() for slot in self.slots],
        }

    def signed(self, keys: VaultKeys) -> Config:
        mac = crypto.hmac_sha256(keys.config_mac_key, canonical(self.unsigned_json()))
        return Config(self.vault_id, self.slots, self.block_size, self.version, self.cipher_suite,
                      self.name_encoding, mac)

    def verify(self, keys: VaultKeys) -> None:
        if not crypto.constant_time_equal(keys.vault_id, self.vault_id):
            raise ConfigDamaged("the vault ID does not belong to this key")
        expected = crypto.hmac_sha256(keys.config_mac_key, canonical(self.unsigned_json()))
        if not crypto.constant_time_equal(expected, self.mac):
            raise ConfigDamaged("the config MAC does not verify (a field was edited)")

    def serialize(self) -> bytes:
        document = self.unsigned_json()
        document["mac"] = self.mac.hex()
        return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


# ---------------------------------------------------------------- strict parsing

def _expect_keys(obj: object, keys: set[str], what: str) -> dict:
    if not isinstance(obj, dict) or set(obj) != keys:
        raise ConfigDamaged(f"{what} has unexpected or missing members")
    return obj


def _int(value: object, what: str) -> int:
    if type(value) is not int:
        raise ConfigDamaged(f"{what} is not an integer")
    return value


def _hex(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or value != value.lower():
        raise ConfigDamaged(f"{what} is not {size} bytes of lowercase hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigDamaged(f"{what} is not hex") from None


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """JSON objects with a member twice are ambiguous: refuse them instead of keeping the last."""
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ConfigDamaged("a JSON member appears twice")
    return document


def parse_config(raw: bytes, allow_v1: bool = False) -> Config:
    """Parse vaultfs.conf strictly; raise ConfigDamaged / UnsupportedFormat / NeedsUpgrade.

    Version 1 is accepted only with ``allow_v1`` (upgrade, recover); otherwise it is
    ``NeedsUpgrade``, whose message says what to run.
    """
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigDamaged(f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ConfigDamaged("not a vaultfs config")
    version = document.get("version")
    if type(version) is int and version == UPGRADABLE_VERSION and not allow_v1:
        raise NeedsUpgrade()
    if type(version) is not int or version not in (FORMAT_VERSION, UPGRADABLE_VERSION):
        raise UnsupportedFormat(f"version {version!r}; this vaultfs reads version {FORMAT_VERSION}")
    _expect_keys(document, {"format", "version", "vault_id", "cipher_suite", "block_size", "name_encoding",
                            "slots", "mac"}, "the config")
    if document["cipher_suite"] != CIPHER_SUITE or document["name_encoding"] != NAME_ENCODING:
        raise UnsupportedFormat(f"cipher suite {document['cipher_suite']!r} / {document['name_encoding']!r}")
    if _int(document["block_size"], "block_size") != BLOCK_SIZE:
        raise UnsupportedFormat(f"block size {document['block_size']}")
    slots_json = document["slots"]
    if not isinstance(slots_json, list) or not 1 <= len(slots_json) <= 64:
        raise ConfigDamaged("slots must be a list of 1 to 64 key slots")
    slots = []
    for entry in slots_json:
        _expect_keys(entry, {"id", "type", "kdf", "wrapped_key"}, "a key slot")
        if entry["type"] != "password":
            raise UnsupportedFormat(f"key slot type {entry['type']!r}")
        kdf_json = _expect_keys(entry["kdf"], {"algorithm", "memory_kib", "time_cost", "parallelism", "salt"},
                                "a slot's kdf")
        if kdf_json["algorithm"] != "argon2id":
            raise UnsupportedFormat(f"KDF {kdf_json['algorithm']!r}")
        kdf = KdfParams(_int(kdf_json["memory_kib"], "memory_kib"), _int(kdf_json["time_cost"], "time_cost"),
                        _int(kdf_json["parallelism"], "parallelism"))
        kdf.check_bounds()
        slot_id = _int(entry["id"], "slot id")
        if not 1 <= slot_id <= 65535:
            raise ConfigDamaged("slot id out of range")
        slots.append(Slot(slot_id, kdf, _hex(kdf_json["salt"], SALT_SIZE, "salt"),
                          _hex(entry["wrapped_key"], WRAPPED_KEY_SIZE, "wrapped_key")))
    if len({slot.slot_id for slot in slots}) != len(slots):
        raise ConfigDamaged("duplicate slot ids")
    return Config(vault_id=_hex(document["vault_id"], 16, "vault_id"), slots=tuple(slots), version=version,
                  mac=_hex(document["mac"], 32, "mac"))


# ---------------------------------------------------------------- slots

def normalize_password(password: str) -> bytes:
    return unicodedata.normalize("NFC", password).encode("utf-8")


def make_slot(keys: VaultKeys, password: str, kdf: KdfParams, slot_id: int = 1) -> Slot:
    salt = crypto.random_bytes(SALT_SIZE)
    unsealed = Slot(slot_id, kdf, salt, b"")
    kek = crypto.argon2id(normalize_password(password), salt, kdf.memory_kib, kdf.time_cost, kdf.parallelism)
    wrapped = crypto.Gcm(kek).seal(keys.master_key, unsealed.aad(keys.vault_id))
    return Slot(slot_id, kdf, salt, wrapped)


def unwrap(config: Config, password: str, verify: bool = True) -> VaultKeys:
    """Try every slot with the password; verify vault ID and MAC on success (fsck checks them itself)."""
    secret = normalize_password(password)
    for slot in config.slots:
        kek = crypto.argon2id(secret, slot.salt, slot.kdf.memory_kib, slot.kdf.time_cost, slot.kdf.parallelism)
        try:
            master_key = crypto.Gcm(kek).open(slot.wrapped_key, slot.aad(config.vault_id))
        except crypto.AuthenticationFailed:
            continue
        keys = VaultKeys.derive(master_key)
        if verify:
            config.verify(keys)
        return keys
    raise WrongPassword()


# ---------------------------------------------------------------- files

def config_path(backing_dir: str) -> str:
    return os.path.join(backing_dir, CONFIG_NAME)


def check_backing_dir(backing_dir: str) -> None:
    if not os.path.exists(backing_dir):
        raise NotAVault(f"{backing_dir} does not exist")
    if not os.path.isdir(backing_dir):
        raise NotAVault(f"{backing_dir} is not a directory")


def load_config(backing_dir: str, allow_v1: bool = False) -> Config:
    """Read and strictly parse the config, falling back to vaultfs.conf.bak if the live one is gone."""
    check_backing_dir(backing_dir)
    for name in (CONFIG_NAME, BACKUP_NAME):
        path = os.path.join(backing_dir, name)
        try:
            raw = backing.read_bounded(path, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise VaultIOError(f"{path}: {exc.strerror}") from None
        try:
            return parse_config(raw, allow_v1)
        except NeedsUpgrade:
            raise NeedsUpgrade(f"run `vaultfs upgrade {backing_dir}` (in place; safe to interrupt and rerun)") from None
    if os.path.exists(os.path.join(backing_dir, "vaultfs.dirid")):
        raise NotAVault(f"{backing_dir} has no vaultfs.conf; restore it with `vaultfs recover --rebuild-config`")
    raise NotAVault(f"{backing_dir} has no vaultfs.conf")


def write_config(backing_dir: str, config: Config) -> None:
    try:
        backing.atomic_replace(config_path(backing_dir), config.serialize(), 0o600,
                               backup=os.path.join(backing_dir, BACKUP_NAME))
    except OSError as exc:
        raise VaultIOError(f"writing {config_path(backing_dir)}: {exc.strerror}") from None


def new_config(keys: VaultKeys, password: str, kdf: KdfParams, version: int = FORMAT_VERSION) -> Config:
    return Config(vault_id=keys.vault_id, slots=(make_slot(keys, password, kdf),), version=version).signed(keys)


def unlock(backing_dir: str, password: str, allow_v1: bool = False) -> tuple[VaultKeys, Config]:
    config = load_config(backing_dir, allow_v1)
    return unwrap(config, password), config


def change_password(backing_dir: str, old_password: str, new_password: str, kdf: KdfParams) -> None:
    """Rewrap the master key under a new password: no file is re-encrypted."""
    keys, _ = unlock(backing_dir, old_password)
    write_config(backing_dir, new_config(keys, new_password, kdf))


def recover(backing_dir: str, keys: VaultKeys, new_password: str, kdf: KdfParams, rebuild: bool) -> None:
    """Set a new password with the master key (from the recovery key).

    With ``rebuild`` the config is written anew from the master key alone, after the
    root's sealed directory ID proved that the key belongs to this vault.
    """
    from vaultfs.errors import WrongRecoveryKey
    from vaultfs.format.dirids import root_version  # dirids sits beside keyfile; imported here to keep it standalone

    check_backing_dir(backing_dir)
    if rebuild:
        version = root_version(keys, backing_dir)  # WrongRecoveryKey unless the root's ID opens with this key
    else:
        config = load_config(backing_dir, allow_v1=True)  # a v1 vault keeps its version: upgrade needs the password
        version = config.version
        if not crypto.constant_time_equal(config.vault_id, keys.vault_id):
            raise WrongRecoveryKey()
        try:
            config.verify(keys)
        except ConfigDamaged as exc:
            raise ConfigDamaged(f"{exc.detail}; rerun with --rebuild-config to write a new one") from None
    write_config(backing_dir, new_config(keys, new_password, kdf, version))
