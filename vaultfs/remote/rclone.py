"""Running rclone: find it, recognise its remotes, run it, read its JSON log.

vaultfs drives rclone as a program (DESIGN.md): the engine for everything beyond one
machine's disk, not a cloud client of our own.  The user's rclone.conf names the
remotes; rclone finds it itself (``$RCLONE_CONFIG`` or its default place), and every
rclone flag can be given in the environment as ``RCLONE_<FLAG>`` (``RCLONE_TRANSFERS=8``,
``RCLONE_BWLIMIT=2M``: rclone's own mechanism), so vaultfs adds no flags for rclone's knobs.
"""

from __future__ import annotations

import ctypes
import functools
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vaultfs.errors import RcloneMissing, RemoteFailed, RemoteUnusable

MIN_VERSION = (1, 58)  # bisync; vfs/stats counts queued uploads
MODTIME_NOT_SUPPORTED = 100 * 365 * 24 * 3600 * 10**9  # rclone's fs.ModTimeNotSupported, in ns
NOT_FOUND_CODES = (3, 4)  # rclone exit codes: directory not found, file not found
_PR_SET_PDEATHSIG = 1


def binary() -> str:
    """The rclone program, checked once per process to be recent enough."""
    path = shutil.which("rclone")
    if path is None:
        raise RcloneMissing()
    found = _version(path)
    if found < MIN_VERSION:
        raise RcloneMissing(f"rclone {found[0]}.{found[1]} at {path} is too old")
    return path


@functools.cache
def _version(path: str) -> tuple[int, int]:
    out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"rclone v(\d+)\.(\d+)", out)
    if match is None:
        raise RcloneMissing(f"{path} does not say which rclone version it is")
    return int(match.group(1)), int(match.group(2))


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec only calls it


def _die_with_parent() -> None:
    """In the child: SIGTERM when vaultfs dies, so a killed push stops uploading as well."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# ---- remotes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """``NAME:PATH`` on a remote configured in rclone.conf; ``text`` is what rclone gets."""

    name: str
    path: str
    text: str

    def __str__(self) -> str:
        return self.text

    def child(self, relative: str) -> str:
        """``dav:vault`` + ``vaultfs.conf`` -> ``dav:vault/vaultfs.conf`` (``dav:`` -> ``dav:vaultfs.conf``)."""
        base = self.text if self.text.endswith((":", "/")) else self.text + "/"
        return base + relative


def split_remote(text: str) -> tuple[str, str] | None:
    """(NAME, PATH) of ``NAME:PATH``; None where the part before ``:`` cannot be a remote name."""
    name, sep, path = text.partition(":")
    if not sep or not name or "/" in name:
        return None  # ./a:b and /x/a:b are local paths, as for rclone itself
    return name.split(",", 1)[0], path  # NAME,option=value:PATH is rclone's connection string


@functools.cache
def configured_remotes() -> frozenset[str]:
    done = run(["listremotes"])
    return frozenset(line.strip().rstrip(":") for line in done.stdout.splitlines() if line.strip())


def config_file() -> str:
    done = run(["config", "file"], check=False)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else "rclone.conf"


def remote_of(text: str) -> Remote:
    """The remote a push/pull/sync names, or a clear error (unknown name, no rclone)."""
    parts = split_remote(text)
    if parts is None:
        raise RemoteUnusable(f"{text!r} is not REMOTE:PATH (a remote configured with `rclone config`)")
    known = configured_remotes()
    if parts[0] not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise RemoteUnusable(f"{parts[0]!r} is not a remote in {config_file()} (configured: {listed}); "
                             "add it with `rclone config`, or set RCLONE_CONFIG to your config file")
    return Remote(parts[0], parts[1], text)


def remote_or_none(text: str) -> Remote | None:
    """``text`` as a remote if NAME is configured; a local dir named ``a:b`` stays local."""
    parts = split_remote(text)
    if parts is None or shutil.which("rclone") is None:
        return None
    return Remote(parts[0], parts[1], text) if parts[0] in configured_remotes() else None


# ---- short commands -----------------------------------------------------------------


def run(args: Sequence[str], *, check: bool = True, timeout: float = 300,
        ok_codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """A short rclone command, output captured; RemoteFailed with rclone's reason unless ``check`` is off."""
    done = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    if check and done.returncode not in ok_codes:
        raise RemoteFailed(f"rclone {args[0]}: {last_error(done.stderr)}")
    return done


def last_error(stderr: str) -> str:
    """rclone's own last words, without its timestamps."""
    lines = [re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith("NOTICE: Config file")]
    return lines[-1] if lines else "no message"


def cat(location: str, limit: int) -> bytes | None:
    """A small remote file, or None when it does not exist."""
    done = subprocess.run([binary(), "cat", "--count", str(limit + 1), location], capture_output=True,
                          timeout=300, check=False, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    if done.returncode in NOT_FOUND_CODES:
        return None
    if done.returncode != 0:
        raise RemoteFailed(f"rclone cat {location}: {last_error(done.stderr.decode('utf-8', 'replace'))}")
    if len(done.stdout) > limit:
        raise RemoteFailed(f"{location} is larger than {limit} bytes")
    return done.stdout


@dataclass(frozen=True)
class Features:
    """What a remote keeps, which decides how rclone can tell that two files differ."""

    modtime: bool
    hashes: tuple[str, ...]

    @property
    def compare(self) -> str:
        """'modtime' (rclone's default), 'checksum' (--checksum) or 'size' (nothing but the size)."""
        if self.modtime:
            return "modtime"
        return "checksum" if self.hashes else "size"


def features(remote: Remote) -> Features:
    done = run(["backend", "features", remote.text])
    try:
        data = json.loads(done.stdout)
        return Features(int(data["Precision"]) < MODTIME_NOT_SUPPORTED, tuple(data.get("Hashes") or ()))
    except (ValueError, KeyError, TypeError):
        raise RemoteFailed(f"rclone backend features {remote}: unexpected answer") from None


def lsjson(location: str, filter_args: Sequence[str]) -> dict[str, tuple[int, str]]:
    """Every file below ``location``: relative path -> (size, modification time as rclone says it)."""
    done = run(["lsjson", "-R", "--files-only", "--no-mimetype", *filter_args, location], check=False)
    if done.returncode in NOT_FOUND_CODES:
        return {}
    if done.returncode != 0:
        raise RemoteFailed(f"rclone lsjson {location}: {last_error(done.stderr)}")
    return {item["Path"]: (int(item["Size"]), str(item["ModTime"])) for item in json.loads(done.stdout or "[]")}


# ---- long commands with a JSON log ----------------------------------------------------


@dataclass
class Outcome:
    """What a long rclone run reported: per-file results, errors, its last stats."""

    returncode: int = 0
    copied: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def failure(self) -> str:
        return "; ".join(dict.fromkeys(self.errors[-3:])) or f"rclone exited with status {self.returncode}"


def stream(args: Sequence[str], on_stats: Callable[[dict], None] | None = None,
           on_record: Callable[[dict], None] | None = None) -> Outcome:
    """Run a transfer, reading rclone's JSON log line by line (progress, copied files, errors).

    If vaultfs is interrupted, rclone is stopped as well (and dies with us if killed).
    """
    command = [binary(), *args, "--use-json-log", "--log-level", "INFO", "--stats", "500ms",
               "--stats-log-level", "NOTICE"]
    outcome = Outcome()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, errors="replace", preexec_fn=_die_with_parent)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            record = _take(line, outcome, on_stats)
            if record is not None and on_record is not None:
                on_record(record)
        outcome.returncode = process.wait()
    except BaseException:
        process.terminate()
        process.wait(30)
        raise
    return outcome


def _take(line: str, outcome: Outcome, on_stats: Callable[[dict], None] | None) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        text = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s*", "", line).strip()
        if text.startswith(("Failed to", "ERROR")):
            outcome.errors.append(text)
        elif text:
            outcome.notices.append(text)
        return None
    message, item = str(record.get("msg", "")).strip(), record.get("object")
    if "stats" in record:
        outcome.stats = record["stats"]
        if on_stats is not None:
            on_stats(record["stats"])
    elif message.startswith("Copied") and item:
        outcome.copied.append(str(item))
    elif record.get("level") in ("error", "critical", "fatal"):
        outcome.errors.append(f"{item}: {message}" if item else message)
    elif record.get("level") in ("warning", "notice") and message:
        outcome.notices.append(f"{item}: {message}" if item else message)
    return record
