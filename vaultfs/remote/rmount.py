"""rclone's own mount of a remote, as the backing dir under a vaultfs mount.

``vaultfs mount REMOTE:PATH MOUNTPOINT`` starts ``rclone mount REMOTE:PATH DIR
--vfs-cache-mode full`` in a private directory under the runtime dir, waits until it
answers, and the vaultfs daemon serves from DIR.  rclone keeps every file the vault
writes in its cache on local disk (``~/.cache/vaultfs/rclone``) and uploads it
``--vfs-write-back`` (1 s) after the vault closes it; a file not cached yet is
downloaded when first read.

rclone 1.60 exits at unmount without uploading what is still queued (it uploads that
the next time it runs with the same cache), so stopping is: ask rclone's remote control
(``rc vfs/stats``, on 127.0.0.1 with a random user and password) until nothing is
queued, uploading or dirty in its cache, then unmount and wait for the process to exit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from vaultfs.errors import RemoteFailed
from vaultfs.fuse.state import mount_type, process_start, run_dir
from vaultfs.remote import rclone
from vaultfs.remote.rclone import Remote

READY_TIMEOUT = 60.0  # seconds for rclone's mount to answer
EXIT_TIMEOUT = 30.0  # seconds for rclone to exit once unmounted
POLL = 0.2
WRITE_BACK = "1s"  # rclone uploads a closed file this long after its last close
# rclone makes a read wait for a running download instead of starting another one when
# the read is less than --buffer-size (default 16M) ahead of it.  Opening a vault file
# reads its header and then authenticates its last block, so with 16M the open of a
# file under 16 MiB waited for the whole file to download (while the vault daemon's
# event loop waited with it: docs/remote.md, "Parallel reads").  1M (rclone's floor for
# that window) fetches the end with its own ranged read.  RCLONE_BUFFER_SIZE overrides.
BUFFER_SIZE = "1M"

Say = Callable[[str], None]


@dataclass
class Record:
    """A running rclone mount under one vaultfs mountpoint (a 0600 file in a 0700 dir)."""

    mountpoint: str
    remote: str
    directory: str
    cache_dir: str
    log: str
    rc_addr: str
    rc_user: str
    rc_pass: str = field(repr=False)
    upload_timeout: float = 120.0
    pid: int | None = None
    start: str | None = None


def private_dir(mountpoint: str) -> str:
    digest = hashlib.sha256(mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(run_dir(), "remote", digest)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "vaultfs", "rclone")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def load(mountpoint: str) -> Record | None:
    try:
        with open(os.path.join(private_dir(mountpoint), "record.json"), encoding="utf-8") as f:
            record = Record(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None
    return record if record.mountpoint == mountpoint else None


def all_records() -> list[Record]:
    """Every remote mount this user has running (for ``vaultfs status REMOTE:PATH``)."""
    base = os.path.join(run_dir(), "remote")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        try:
            with open(os.path.join(base, name, "record.json"), encoding="utf-8") as f:
                record = Record(**json.load(f))
        except (OSError, ValueError, TypeError):
            continue
        if private_dir(record.mountpoint) == os.path.join(base, name):
            found.append(record)
    return found


def _save(record: Record) -> None:
    path = os.path.join(private_dir(record.mountpoint), "record.json")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(record), f)
    os.replace(path + ".tmp", path)


def alive(record: Record) -> bool:
    return bool(record.pid and record.start and process_start(record.pid) == record.start)


# ---- start -----------------------------------------------------------------------------


def start(remote: Remote, mountpoint: str, upload_timeout: float, read_only: bool = False,
          say: Say = print) -> Record:
    """Mount REMOTE in the private dir of ``mountpoint`` and return once it answers."""
    leftover = load(mountpoint)
    if leftover is not None:
        stop(leftover, say=say)  # a mount a failed lock left behind: its uploads first
    private = private_dir(mountpoint)
    os.makedirs(private, mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    directory = os.path.join(private, "backing")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for attempt in range(3):  # the free port may be taken between choosing and binding it
        record = Record(mountpoint=mountpoint, remote=remote.text, directory=directory, cache_dir=cache_dir(),
                        log=os.path.join(private, "rclone.log"), rc_addr=f"127.0.0.1:{_free_port()}",
                        rc_user=secrets.token_hex(8), rc_pass=secrets.token_hex(16), upload_timeout=upload_timeout)
        process = _launch(record, read_only)
        record.pid, record.start = process.pid, process_start(process.pid)
        _save(record)
        try:
            _wait_ready(record, process)
            return record
        except RemoteFailed as failure:
            _stop_process(record)
            _forget(record, keep_log=True)
            if "address already in use" not in failure.message or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(record: Record, read_only: bool) -> subprocess.Popen[bytes]:
    command = [rclone.binary(), "mount", record.remote, record.directory, "--vfs-cache-mode", "full",
               "--cache-dir", record.cache_dir, "--vfs-write-back", WRITE_BACK, "--umask", "077",
               "--rc", "--rc-addr", record.rc_addr, "--log-file", record.log, "--log-level", "INFO"]
    if read_only:
        command.append("--read-only")
    if "RCLONE_BUFFER_SIZE" not in os.environ:
        command += ["--buffer-size", BUFFER_SIZE]
    # rclone reads every flag from RCLONE_<FLAG> too: the rc credentials stay out of argv.
    env = {**os.environ, "RCLONE_RC_USER": record.rc_user, "RCLONE_RC_PASS": record.rc_pass}
    with open(record.log, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, close_fds=True)


def _wait_ready(record: Record, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RemoteFailed(f"rclone could not mount {record.remote}: {_log_tail(record)}")
        if mount_type(record.directory) == "fuse.rclone":
            try:
                os.listdir(record.directory)
                rc(record, "core/pid")
                return
            except OSError:
                pass  # not answering yet
        time.sleep(0.05)
    raise RemoteFailed(f"rclone's mount of {record.remote} did not answer within {READY_TIMEOUT:.0f} s")


def _log_tail(record: Record) -> str:
    try:
        with open(record.log, encoding="utf-8", errors="replace") as f:
            return rclone.last_error(f.read()[-4000:])
    except OSError:
        return "no log"


# ---- remote control --------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def rc(record: Record, method: str, timeout: float = 10.0) -> dict:
    """One call to rclone's remote control (OSError if it does not answer)."""
    token = base64.b64encode(f"{record.rc_user}:{record.rc_pass}".encode()).decode()
    request = urllib.request.Request(f"http://{record.rc_addr}/{method}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
    with _OPENER.open(request, timeout=timeout) as answer:
        return json.load(answer)


def _dirty_files(meta_dir: str) -> int:
    """Files in rclone's cache not uploaded yet (its metadata says Dirty), queued or not."""
    count = 0
    for directory, _dirs, files in os.walk(meta_dir):
        for name in files:
            with contextlib.suppress(OSError, ValueError), open(os.path.join(directory, name), encoding="utf-8") as f:
                count += bool(json.load(f).get("Dirty"))
    return count


def pending_uploads(record: Record, timeout: float = 10.0) -> tuple[int, int]:
    """(files queued, uploading or dirty; bytes rclone has transferred so far)."""
    disk = rc(record, "vfs/stats", timeout).get("diskCache") or {}
    pending = int(disk.get("uploadsQueued") or 0) + int(disk.get("uploadsInProgress") or 0)
    if pending == 0 and disk.get("pathMeta"):
        pending = _dirty_files(str(disk["pathMeta"]))
    return pending, int(rc(record, "core/stats", timeout).get("bytes") or 0)


def wait_uploads(record: Record, say: Say, give_up: Callable[[], bool] | None = None) -> int:
    """Wait until rclone has uploaded everything; give up after ``upload_timeout`` without progress,
    or as soon as ``give_up()`` says so (``vaultfs run`` was signalled).

    Returns the number of files still waiting (0: all uploaded).  "Nothing pending" must
    hold for three polls in a row: the kernel tells rclone about the vault's last closes
    asynchronously, a moment after the vault daemon exits.
    """
    quiet, last, moved_at, told = 0, None, time.monotonic(), 0.0
    pending = 0
    while alive(record):
        try:
            pending, sent = pending_uploads(record)
        except OSError:
            pending, sent = max(pending, 1), None  # rc not answering: counts as no progress
        if pending == 0:
            quiet += 1
            if quiet >= 3:
                return 0
        else:
            quiet = 0
            if (pending, sent) != last:
                last, moved_at = (pending, sent), time.monotonic()
            if time.monotonic() - told > 5:
                say(f"waiting for rclone to upload {pending} file(s) to {record.remote}")
                told = time.monotonic()
            if time.monotonic() - moved_at > record.upload_timeout or (give_up is not None and give_up()):
                return pending
        time.sleep(POLL)
    return _dirty_files(_meta_dir(record))  # rclone is gone: what its cache still holds


def _meta_dir(record: Record) -> str:
    """rclone's metadata dir for this remote in the cache: vfsMeta/NAME/PATH."""
    name, _, path = record.remote.partition(":")
    return os.path.join(record.cache_dir, "vfsMeta", name.split(",", 1)[0], path.strip("/"))


# ---- stop ------------------------------------------------------------------------------


def stop(record: Record, *, wait: bool = True, say: Say = print, give_up: Callable[[], bool] | None = None) -> int:
    """Uploads first (unless ``wait`` is off), then unmount, exit, cleanup; returns files not uploaded."""
    pending = wait_uploads(record, say, give_up) if wait and alive(record) else 0
    _stop_process(record)
    _forget(record, keep_log=pending > 0)
    return pending


def _stop_process(record: Record) -> None:
    from vaultfs.fuse.mount import fusermount

    if mount_type(record.directory) is not None:
        done = fusermount("-u", mountpoint=record.directory)
        if done.returncode != 0 and alive(record):
            assert record.pid is not None
            os.kill(record.pid, signal.SIGTERM)  # busy: rclone unmounts lazily on SIGTERM
    deadline = time.monotonic() + EXIT_TIMEOUT
    while alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(record):
        assert record.pid is not None
        os.kill(record.pid, signal.SIGKILL)
    if mount_type(record.directory) is not None:
        fusermount("-u", "-z", mountpoint=record.directory)


def _forget(record: Record, keep_log: bool) -> None:
    private = private_dir(record.mountpoint)
    names = ["record.json", "locking"] + ([] if keep_log else ["rclone.log"])
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(private, name))
    for path in (record.directory, private):
        with contextlib.suppress(OSError):
            os.rmdir(path)


# ---- lock in progress ------------------------------------------------------------------


def mark_locking(record: Record) -> None:
    """`vaultfs lock` takes rclone down itself (on the user's terminal), not the exiting daemon."""
    me = os.getpid()
    with open(os.path.join(private_dir(record.mountpoint), "locking"), "w", encoding="ascii") as f:
        f.write(f"{me} {process_start(me)}")


def unmark_locking(record: Record) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(private_dir(record.mountpoint), "locking"))


def locking_now(record: Record) -> bool:
    try:
        with open(os.path.join(private_dir(record.mountpoint), "locking"), encoding="ascii") as f:
            pid, started = f.read().split()
    except (OSError, ValueError):
        return False
    return process_start(int(pid)) == started
