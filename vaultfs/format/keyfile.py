"""vaultfs.conf: the password key slot(s) that wrap the master key, and the config MAC.

The file is untrusted input (it lives in a cloud folder), so parsing is strict and KDF
parameters are capped before the KDF runs.  The master key is wrapped with AES-GCM
under an argon2id KEK whose parameters are in the AAD (no silent downgrade); the whole
config carries an HMAC under a key derived from the master key (no silent edit).
See docs/format.md section 4.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import unicodedata
from dataclasses import dataclass, field

from vaultfs import backing, crypto
from vaultfs.errors import (
    ConfigDamaged,
    NeedsUpgrade,
    NotAVault,
    RekeyInProgress,
    UnsupportedFormat,
    VaultIOError,
    WrongPassword,
)
from vaultfs.format.keys import VaultKeys

log = logging.getLogger(__name__)

CONFIG_NAME = "vaultfs.conf"
LEGACY_BACKUP_NAME = "vaultfs.conf.bak"  # older versions kept the previous config here: removed on write
REKEY_NAME = "vaultfs.rekey"  # the new config while `vaultfs rekey` runs: every other reader refuses (format.md §15)
FORMAT_NAME = "vaultfs"
FORMAT_VERSION = 2
UPGRADABLE_VERSION = 1  # read only by `vaultfs upgrade` (and `recover`, which keeps the version)
CIPHER_SUITE = "AES-256-GCM+AES-SIV-512+HKDF-SHA256"
NAME_ENCODING = "AES-SIV+base32"
BLOCK_SIZE = 4096
SALT_SIZE = 32
WRAPPED_KEY_SIZE = 12 + 32 + 16
MAX_CONFIG_BYTES = 64 * 1024
MAX_SLOTS = 4  # init, passwd and recover write one; a config with more is refused before any KDF runs
UNLOCK_TARGET_SECONDS = 1.0
_LOWER_HEX = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost parameters of one key slot (memory in KiB)."""

    memory_kib: int
    time_cost: int
    parallelism: int

    def check_bounds(self) -> None:
        """Cap parameters read from an untrusted file before spending memory and time on them.

        The caps are the most that ``init``/``passwd`` ever write (``KDF_MAX``), so an
        edited config can make an unlock cost at most one honest maximal slot per slot:
        argon2id runs before anything is authenticated.
        """
        for name, value, low, high in (
            ("parallelism", self.parallelism, 1, KDF_MAX.parallelism),
            ("time_cost", self.time_cost, 1, KDF_MAX.time_cost),
            ("memory_kib", self.memory_kib, 8 * max(1, self.parallelism), KDF_MAX.memory_kib),
        ):
            if not low <= value <= high:
                raise ConfigDamaged(f"argon2id {name} {value} is out of range {low}..{high} "
                                    f"(vaultfs never writes more than {KDF_MAX_TEXT}; refused before running it)")

    def below_floor(self) -> bool:
        return (
            self.memory_kib < KDF_FLOOR.memory_kib
            or self.time_cost < KDF_FLOOR.time_cost
            or self.parallelism < KDF_FLOOR.parallelism
        )


KDF_FLOOR = KdfParams(memory_kib=64 * 1024, time_cost=3, parallelism=4)  # RFC 9106, second recommendation
# The most init/passwd/recover write: calibrate_kdf stops at 1 GiB and 16 passes; more lanes than
# 16 buy nothing on a reasonable machine.  Readers refuse anything above before running argon2id.
KDF_MAX = KdfParams(memory_kib=1024 * 1024, time_cost=16, parallelism=16)
KDF_MAX_TEXT = "1 GiB, 16 passes, 16 lanes"
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
    while params.memory_kib < KDF_MAX.memory_kib and seconds * 2.3 <= target_seconds:
        params = KdfParams(params.memory_kib * 2, params.time_cost, params.parallelism)
        seconds = _time_kdf(params)
    for _ in range(2):  # refine the pass count on real runs: timings at this size are noisy
        passes = max(KDF_FLOOR.time_cost, min(KDF_MAX.time_cost, round(params.time_cost * target_seconds / seconds)))
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
    # bytes.fromhex alone would also take spaces and upper case: canonical digits only.
    if not isinstance(value, str) or len(value) != 2 * size or not _LOWER_HEX.fullmatch(value):
        raise ConfigDamaged(f"{what} is not {size} bytes of lowercase hex")
    return bytes.fromhex(value)


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """JSON objects with a member twice are ambiguous: refuse them instead of keeping the last."""
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ConfigDamaged("a JSON member appears twice")
    return document


def _shown(value: object) -> str:
    """A value from the file for a one-line message: repr, cut short (the file is hostile)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_config(raw: bytes, allow_v1: bool = False) -> Config:
    """Parse vaultfs.conf strictly; raise ConfigDamaged / UnsupportedFormat / NeedsUpgrade.

    Every count and cost is checked here, before any KDF runs: nothing in the file is
    authenticated until a slot has been opened.  Version 1 is accepted only with
    ``allow_v1`` (upgrade, recover); otherwise it is ``NeedsUpgrade``, whose message says
    what to run.
    """
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and integers over 4,300 digits
        raise ConfigDamaged(f"not valid JSON ({exc.__class__.__name__})") from None
    except RecursionError:  # arrays or objects nested thousands deep: the parser's stack, not ours
        raise ConfigDamaged("not a vaultfs config (JSON nested too deeply)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ConfigDamaged("not a vaultfs config")
    version = document.get("version")
    if type(version) is int and version == UPGRADABLE_VERSION and not allow_v1:
        raise NeedsUpgrade()
    if type(version) is not int or version not in (FORMAT_VERSION, UPGRADABLE_VERSION):
        raise UnsupportedFormat(f"version {_shown(version)}; this vaultfs reads version {FORMAT_VERSION}")
    _expect_keys(document, {"format", "version", "vault_id", "cipher_suite", "block_size", "name_encoding",
                            "slots", "mac"}, "the config")
    if document["cipher_suite"] != CIPHER_SUITE or document["name_encoding"] != NAME_ENCODING:
        raise UnsupportedFormat(f"cipher suite {_shown(document['cipher_suite'])} / "
                                f"{_shown(document['name_encoding'])}")
    if _int(document["block_size"], "block_size") != BLOCK_SIZE:
        raise UnsupportedFormat(f"block size {_shown(document['block_size'])}")
    slots_json = document["slots"]
    if not isinstance(slots_json, list) or not slots_json:
        raise ConfigDamaged("slots must be a non-empty list of key slots")
    if len(slots_json) > MAX_SLOTS:
        raise ConfigDamaged(f"slots: {len(slots_json)} key slots, more than the cap of {MAX_SLOTS} "
                            "(vaultfs writes one; each costs an argon2id run before anything is authenticated)")
    slots = []
    for number, entry in enumerate(slots_json, 1):
        _expect_keys(entry, {"id", "type", "kdf", "wrapped_key"}, "a key slot")
        if entry["type"] != "password":
            raise UnsupportedFormat(f"key slot type {_shown(entry['type'])}")
        kdf_json = _expect_keys(entry["kdf"], {"algorithm", "memory_kib", "time_cost", "parallelism", "salt"},
                                "a slot's kdf")
        if kdf_json["algorithm"] != "argon2id":
            raise UnsupportedFormat(f"KDF {_shown(kdf_json['algorithm'])}")
        kdf = KdfParams(_int(kdf_json["memory_kib"], "memory_kib"), _int(kdf_json["time_cost"], "time_cost"),
                        _int(kdf_json["parallelism"], "parallelism"))
        try:
            kdf.check_bounds()
        except ConfigDamaged as exc:
            raise ConfigDamaged(f"key slot {number}: {exc.detail}") from None
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
        _warn_if_below_floor(slot)
        return keys
    raise WrongPassword()


def _warn_if_below_floor(slot: Slot) -> None:
    """Say so when the slot that opened is cheaper than the floor (made with --insecure-kdf-for-tests).

    The parameters are authentic here (they are in the slot's AAD), so this is the
    vault's real state, not something an attacker planted.
    """
    if slot.kdf.below_floor():
        kdf = slot.kdf
        log.warning("warning: key slot %d uses test-only argon2id parameters below the floor (memory %d KiB, "
                    "time cost %d, parallelism %d): run `vaultfs passwd` to protect this vault properly",
                    slot.slot_id, kdf.memory_kib, kdf.time_cost, kdf.parallelism)


# ---------------------------------------------------------------- files

def config_path(backing_dir: str) -> str:
    return os.path.join(backing_dir, CONFIG_NAME)


def check_backing_dir(backing_dir: str, rekeying: bool = False) -> None:
    """A directory, and no rekey half done in it (only ``vaultfs rekey`` itself passes ``rekeying``).

    While ``vaultfs.rekey`` exists the tree holds entries under two master keys; a reader
    of either key alone would see part of it, and a writer could damage the rest.
    """
    if not os.path.exists(backing_dir):
        raise NotAVault(f"{backing_dir} does not exist")
    if not os.path.isdir(backing_dir):
        raise NotAVault(f"{backing_dir} is not a directory")
    if not rekeying and os.path.lexists(os.path.join(backing_dir, REKEY_NAME)):
        raise RekeyInProgress(f"run `vaultfs rekey {backing_dir}` again, with the same current and new "
                              "passwords, to finish it; until then the vault does not open")


def load_config(backing_dir: str, allow_v1: bool = False, rekeying: bool = False) -> Config:
    """Read and strictly parse the config (a FIFO, socket or directory in its place is damage)."""
    check_backing_dir(backing_dir, rekeying)
    path = config_path(backing_dir)
    try:
        raw = backing.read_bounded(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if os.path.exists(os.path.join(backing_dir, "vaultfs.dirid")):
            raise NotAVault(f"{backing_dir} has no vaultfs.conf; restore it with `vaultfs recover --rebuild-config`"
                            ) from None
        raise NotAVault(f"{backing_dir} has no vaultfs.conf") from None
    except backing.NotRegularFile as exc:
        raise ConfigDamaged(f"{path} is {exc.kind}, not a regular file") from None
    except OSError as exc:
        raise VaultIOError(f"{path}: {exc.strerror}") from None
    try:
        return parse_config(raw, allow_v1)
    except NeedsUpgrade:
        raise NeedsUpgrade(f"run `vaultfs upgrade {backing_dir}` (in place; safe to interrupt and rerun)") from None


def write_config(backing_dir: str, config: Config) -> None:
    """Replace vaultfs.conf atomically, leaving no copy of the config it replaces.

    The old config holds a slot for the old password: a copy of it in the synced
    folder would keep that password working after ``passwd`` (issue 11).  The rename
    over the live file is the crash safety: at every instant ``vaultfs.conf`` is the
    old or the new config, and the temp file (the new config) never outlives a write
    that returned.  A ``vaultfs.conf.bak`` left by an older vaultfs is removed first, so
    no step after it can leave that old slot behind.
    """
    legacy = os.path.join(backing_dir, LEGACY_BACKUP_NAME)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(legacy)
        backing.atomic_replace(config_path(backing_dir), config.serialize(), 0o600)
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


def check_recovery_key(backing_dir: str, keys: VaultKeys, rebuild: bool) -> int:
    """Prove that the master key (from the recovery key) belongs to this vault, before any prompt.

    With ``rebuild`` the proof is the root's sealed directory ID (the config may be
    gone); otherwise the config's vault ID and MAC.  Returns the vault's format version,
    which the new config keeps (a version-1 vault stays one until `vaultfs upgrade`).
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
    return version


def recover(backing_dir: str, keys: VaultKeys, new_password: str, kdf: KdfParams, rebuild: bool) -> None:
    """Set a new password with the master key (from the recovery key); ``rebuild``: config written anew."""
    version = check_recovery_key(backing_dir, keys, rebuild)
    write_config(backing_dir, new_config(keys, new_password, kdf, version))
