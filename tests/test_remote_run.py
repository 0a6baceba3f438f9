"""``vaultfs run`` with a remote: on rclone's mount (REMOTE:PATH), and the nightly job
"pull, back up, lock, push" (``--pull``/``--push``, ``--sync``) around a local vault.

Real CLI, real FUSE mounts, real rclone against loopback servers (tests/rclone_servers.py).
What the exit status says is checked step by step: the command's status only when every
vault step succeeded, 27 when the transfer before failed (nothing ran), 26 when rclone's
uploads stalled at the lock, 28 when the transfer after the lock failed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mounting import track_mountpoint
from tests.rclone_servers import VAULTFS_BIN, Cloud, cloud, sftp_keys  # noqa: F401 - fixtures
from tests.remote_helpers import leaks, make_vault, read
from tests.test_remote_mount import FAST_FAIL, rclone_dir, wait_until
from vaultfs.fuse.state import canonical, process_start, vaultfs_mounted
from vaultfs.remote import rmount

pytestmark = [pytest.mark.remote, pytest.mark.mount]


def lines_of(stderr: str, *needles: str) -> list[int]:
    """Index of the first stderr line holding each needle (-1 if none): the order of the steps."""
    rows = stderr.splitlines()
    return [next((i for i, row in enumerate(rows) if needle in row), -1) for needle in needles]


def mountpoint(tmp_path: Path, name: str = "mnt") -> Path:
    mnt = track_mountpoint(tmp_path / name)
    mnt.mkdir()
    return mnt


def no_rclone_left(mnt: Path) -> bool:
    return rmount.load(canonical(str(mnt))) is None and not rclone_dir(mnt).exists()


STATUS_WHILE_UPLOADING = """
import json, subprocess, sys, time
mnt, vaultfs = sys.argv[1], sys.argv[2]
with open(mnt + "/PLANTED-NAME-Hochzeitsfotos.bin", "wb") as f:
    f.write(b"PLANTED-CONTENT-7f3a9c-do-not-leak" * 100_000)
seen = None
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    seen = json.loads(subprocess.run([vaultfs, "status", mnt, "--json"], capture_output=True, text=True).stdout)
    if (seen.get("remote") or {}).get("uploads_pending"):
        break
    time.sleep(0.2)
print(json.dumps(seen))
sys.exit(3)
"""


def test_run_on_a_remote_mount_shows_it_in_status_and_waits_for_the_uploads(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=2)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = mountpoint(tmp_path)
    done = cloud.vaultfs("run", "dav:chat", str(mnt), "--passfile", str(one.passfile), "--",
                         sys.executable, "-c", STATUS_WHILE_UPLOADING, str(mnt), VAULTFS_BIN,
                         check=False, extra_env={"RCLONE_BWLIMIT": "1M"})
    assert done.returncode == 3, done.stderr  # the command's status: every vault step succeeded
    seen = json.loads(done.stdout)  # stdout is the command's alone
    assert seen["state"] == "mounted" and seen["backing"] == "dav:chat", seen
    rclone = seen["remote"]
    assert rclone["remote"] == "dav:chat" and rclone["running"] and rclone["uploads_pending"] >= 1, rclone
    assert rclone["mount"] == str(rclone_dir(mnt)) and rclone["cache_dir"].endswith("vaultfs/rclone"), rclone
    assert process_start(rclone["pid"]) is None  # rclone is gone with the lock
    mounted, locked, uploaded = lines_of(done.stderr, "is mounted at", f"locked {mnt}", "rclone uploaded everything")
    assert -1 < mounted < locked < uploaded, done.stderr
    assert not vaultfs_mounted(canonical(str(mnt))) and no_rclone_left(mnt)
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/PLANTED-NAME-Hochzeitsfotos.bin") == b"PLANTED-CONTENT-7f3a9c-do-not-leak" * 100_000
    assert leaks(server.files()) == []


def test_run_on_a_remote_mount_reports_stalled_uploads_and_the_next_run_sends_them(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = mountpoint(tmp_path)
    started, go_on = tmp_path / "started", tmp_path / "go-on"
    job = (f"echo 'written while the server was down' > {mnt}/late.txt && touch {started} && "
           f"while [ ! -e {go_on} ]; do sleep 0.1; done")
    process = subprocess.Popen([VAULTFS_BIN, "run", "dav:chat", str(mnt), "--passfile", str(one.passfile),
                                "--upload-timeout", "2s", "--", "sh", "-c", job], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**cloud.env(), **FAST_FAIL})
    try:
        assert wait_until(started.exists, 60), process.communicate(timeout=60)
        server.stop()
        go_on.touch()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 26, err  # reported, not swallowed by the command's 0
    assert "the command exited with status 0" in err and "not uploaded to dav:chat" in err, err
    assert not vaultfs_mounted(canonical(str(mnt))) and no_rclone_left(mnt)
    server.start()
    again = cloud.vaultfs("run", "dav:chat", str(mnt), "--passfile", str(one.passfile), "--", "cat",
                          f"{mnt}/late.txt")
    assert again.stdout == "written while the server was down\n"
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/late.txt") == b"written while the server was down\n"


def test_a_wrong_password_on_a_remote_mount_runs_nothing_and_stops_rclone(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt = mountpoint(tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    marker = tmp_path / "ran"
    refused = cloud.vaultfs("run", "dav:chat", str(mnt), "--passfile", str(wrong), "--", "touch", str(marker),
                            check=False)
    assert refused.returncode == 3 and not marker.exists(), refused.stderr
    assert no_rclone_left(mnt) and not vaultfs_mounted(canonical(str(mnt)))


def test_the_nightly_job_pulls_backs_up_locks_and_pushes(cloud, tmp_path: Path) -> None:  # noqa: F811
    laptop = make_vault(tmp_path / "laptop", media=3)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(laptop.path), "dav:chat")
    backing, mnt = tmp_path / "server-copy", mountpoint(tmp_path)  # a new machine: no local copy yet
    job = f"ls {mnt}/Databases; echo 'night 1' > {mnt}/backup-1.txt; exit 5"
    first = cloud.vaultfs("run", str(backing), str(mnt), "--passfile", str(laptop.passfile),
                          "--pull", "dav:chat", "--push", "dav:chat", "--", "sh", "-c", job, check=False)
    assert first.returncode == 5, first.stderr  # the command's status: pull, mount, lock and push succeeded
    assert first.stdout == "msgstore.db\n"  # the pull came before the mount; stdout is the command's alone
    pulled, mounted, locked, pushed = lines_of(first.stderr, "pulled", "is mounted at", f"locked {mnt}", "pushed 1")
    assert -1 < pulled < mounted < locked < pushed, first.stderr
    assert not vaultfs_mounted(canonical(str(mnt)))

    cloud.vaultfs("pull", "dav:chat", str(laptop.path))  # the laptop gets night 1, changes something
    assert read(laptop.path, "/backup-1.txt") == b"night 1\n"
    cloud.vaultfs("mount", str(laptop.path), str(mountpoint(tmp_path, "laptop-mnt")), "--passfile",
                  str(laptop.passfile))
    (tmp_path / "laptop-mnt" / "from-laptop.txt").write_text("the laptop wrote this\n")
    os.unlink(tmp_path / "laptop-mnt" / "backup-1.txt")
    cloud.vaultfs("lock", str(tmp_path / "laptop-mnt"))
    cloud.vaultfs("push", str(laptop.path), "dav:chat", "--delete")

    job = f"cat {mnt}/from-laptop.txt; ls {mnt}; echo 'night 2' > {mnt}/backup-2.txt"
    second = cloud.vaultfs("run", str(backing), str(mnt), "--passfile", str(laptop.passfile),
                           "--pull", "dav:chat", "--push", "dav:chat", "--delete", "--", "sh", "-c", job)
    assert second.stdout.startswith("the laptop wrote this\n")
    # one-way steps: pull keeps what the remote lacks (the laptop's deletion does not come down), and push
    # --delete makes the remote a mirror of this vault (several devices that delete: --sync)
    assert "backup-1.txt" in second.stdout
    assert "pushed 2 file(s)" in second.stderr, second.stderr  # backup-2.txt, and backup-1.txt back
    remote = tmp_path / "check"
    cloud.vaultfs("pull", "dav:chat", str(remote))
    assert read(remote, "/backup-2.txt") == b"night 2\n" and read(remote, "/backup-1.txt") == b"night 1\n"
    assert leaks(server.files()) == []


def test_a_failed_pull_runs_nothing_and_a_failed_push_says_so_after_the_command(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    server = cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt, marker = mountpoint(tmp_path), tmp_path / "ran"
    run = ["run", str(one.path), str(mnt), "--passfile", str(one.passfile)]
    unknown = cloud.vaultfs(*run, "--push", "nosuch:chat", "--", "touch", str(marker), check=False)
    assert unknown.returncode == 22 and "'nosuch' is not a remote" in unknown.stderr and not marker.exists()

    server.stop()
    failed = cloud.vaultfs(*run, "--pull", "dav:chat", "--", "touch", str(marker), check=False, extra_env=FAST_FAIL)
    assert failed.returncode == 27, failed.stderr
    assert "pull from dav:chat" in failed.stderr and not marker.exists()
    assert not vaultfs_mounted(canonical(str(mnt)))

    job = f"echo 'kept locally' > {mnt}/tonight.txt; touch {marker}"
    failed = cloud.vaultfs(*run, "--push", "dav:chat", "--", "sh", "-c", job, check=False, extra_env=FAST_FAIL)
    assert failed.returncode == 28, failed.stderr
    assert marker.exists() and "push to dav:chat" in failed.stderr, failed.stderr
    assert "the command exited with status 0" in failed.stderr and f"vaultfs push {one.path} dav:chat" in failed.stderr
    assert lines_of(failed.stderr, f"locked {mnt}")[0] > -1 and not vaultfs_mounted(canonical(str(mnt)))
    server.start()
    cloud.vaultfs("push", str(one.path), "dav:chat")
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/tonight.txt") == b"kept locally\n"


def test_a_signalled_job_locks_and_skips_the_push(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt, started = mountpoint(tmp_path), tmp_path / "started"
    job = f"echo partial > {mnt}/partial.txt; touch {started}; exec sleep 60"
    process = subprocess.Popen([VAULTFS_BIN, "run", str(one.path), str(mnt), "--passfile", str(one.passfile),
                                "--push", "dav:chat", "--", "sh", "-c", job], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=cloud.env())
    try:
        assert wait_until(started.exists, 60), process.communicate(timeout=60)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signal.SIGTERM, err  # the command's status: killed by SIGTERM
    assert "not running the push with dav:chat: the job was interrupted by signal 15" in err, err
    assert not vaultfs_mounted(canonical(str(mnt)))
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert not (two / "partial.txt").exists() and read(one.path, "/partial.txt") == b"partial\n"


def test_the_nightly_job_with_sync_on_two_devices(cloud, tmp_path: Path) -> None:  # noqa: F811
    laptop = make_vault(tmp_path / "laptop", media=2)
    cloud.server("sf")
    phone, phone_mnt, laptop_mnt = tmp_path / "phone", mountpoint(tmp_path, "phone-mnt"), mountpoint(tmp_path)
    sync = ["--passfile", str(laptop.passfile), "--sync", "sf:chat", "--"]
    first = cloud.vaultfs("run", str(laptop.path), str(laptop_mnt), *sync, "sh", "-c",
                          f"echo laptop > {laptop_mnt}/laptop.txt")
    assert "first sync" in first.stderr and "synced" in first.stderr.split(f"locked {laptop_mnt}")[1], first.stderr
    second = cloud.vaultfs("run", str(phone), str(phone_mnt), *sync, "sh", "-c",
                           f"cat {phone_mnt}/laptop.txt; echo phone > {phone_mnt}/phone.txt")
    assert second.stdout == "laptop\n", second.stderr  # the laptop's night, synced before the phone's mount
    third = cloud.vaultfs("run", str(laptop.path), str(laptop_mnt), *sync, "cat", f"{laptop_mnt}/phone.txt")
    assert third.stdout == "phone\n" and "0 new conflict copies" in third.stderr, third.stderr


def test_run_flags_that_do_not_fit_are_refused_before_anything_happens(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    mnt, marker = mountpoint(tmp_path), tmp_path / "ran"
    base = ["run", str(one.path), str(mnt), "--passfile", str(one.passfile)]
    for flags, words in ((["--sync", "dav:a", "--pull", "dav:a"], "either --sync or --pull/--push"),
                         (["--delete"], "--delete goes with --push")):
        refused = cloud.vaultfs(*base, *flags, "--", "touch", str(marker), check=False)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    refused = cloud.vaultfs("run", "dav:chat", str(mnt), "--passfile", str(one.passfile), "--push", "dav:chat",
                            "--", "touch", str(marker), check=False)
    assert refused.returncode == 2 and "rclone's mount is the backing dir" in refused.stderr, refused.stderr
    assert not marker.exists() and not vaultfs_mounted(canonical(str(mnt))) and no_rclone_left(mnt)


def test_a_signal_during_the_upload_wait_stops_it_with_26(cloud, tmp_path: Path) -> None:  # noqa: F811
    one = make_vault(tmp_path / "one", media=1)
    cloud.server("dav")
    cloud.vaultfs("push", str(one.path), "dav:chat")
    mnt, wrote = mountpoint(tmp_path), tmp_path / "wrote"
    big = os.urandom(2_000_000)
    (tmp_path / "big").write_bytes(big)
    process = subprocess.Popen([VAULTFS_BIN, "run", "dav:chat", str(mnt), "--passfile", str(one.passfile), "--",
                                "sh", "-c", f"cp {tmp_path}/big {mnt}/big && touch {wrote}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**cloud.env(), "RCLONE_BWLIMIT": "100k"})
    try:  # 2 MB at 100 kB/s: the upload would take 20 s
        assert wait_until(wrote.exists, 60) and wait_until(lambda: not vaultfs_mounted(canonical(str(mnt))), 60)
        process.send_signal(signal.SIGTERM)  # a supervisor's stop while run waits for rclone
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 26, err
    assert "the wait was interrupted by a signal" in err and "the command exited with status 0" in err, err
    assert no_rclone_left(mnt)
    again = cloud.vaultfs("run", "dav:chat", str(mnt), "--passfile", str(one.passfile), "--", "true")
    assert "rclone uploaded everything" in again.stderr
    two = tmp_path / "two"
    cloud.vaultfs("pull", "dav:chat", str(two))
    assert read(two, "/big") == big
