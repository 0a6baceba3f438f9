"""The verbs that create a vault or change what opens it: init, info, passwd, recover, rekey.

They share the choice of a new password (refused when very weak) and of its password
hash parameters (``kdf_from_args``), which only these verbs take.
"""

from __future__ import annotations

import argparse
import os
import sys

from vaultfs.errors import UsageError, VaultError
from vaultfs.format import keyfile, recovery
from vaultfs.format.keyfile import KDF_FLOOR, TEST_KDF, KdfParams
from vaultfs.format.keys import VaultKeys
from vaultfs.passwords import read_password, read_secret, unlock_with_retries


def kdf_from_args(args: argparse.Namespace) -> KdfParams:
    """KDF parameters from the flags, or calibrated to ~1 s; below the floor only with the test flag.

    Only a flag on the command line can weaken a new slot: no environment variable, no
    config file (the shipped CLI must not obey a switch a user never typed).
    """
    given = (args.kdf_memory_kib, args.kdf_time, args.kdf_parallelism)
    if all(value is None for value in given):
        if args.insecure_kdf_for_tests:
            return TEST_KDF
        print("vaultfs: calibrating the password hash to about 1 s on this machine...", file=sys.stderr)
        return keyfile.calibrate_kdf()
    params = KdfParams(
        memory_kib=args.kdf_memory_kib or KDF_FLOOR.memory_kib,
        time_cost=args.kdf_time or KDF_FLOOR.time_cost,
        parallelism=args.kdf_parallelism or KDF_FLOOR.parallelism,
    )
    if params.below_floor() and not args.insecure_kdf_for_tests:
        raise UsageError(f"KDF parameters below the floor (memory {KDF_FLOOR.memory_kib} KiB, "
                         f"time {KDF_FLOOR.time_cost}, parallelism {KDF_FLOOR.parallelism})")
    try:
        params.check_bounds()
    except VaultError as exc:
        raise UsageError(exc.detail) from None
    return params


def new_password(args: argparse.Namespace, source: str | None, backing_dir: str) -> str:
    """The new password of init/passwd/recover, refused if very weak (strength.py)."""
    from vaultfs import strength

    hints = ["vaultfs", *os.path.normpath(backing_dir).split(os.sep)[-2:]]
    return strength.read_new_password(source, args.allow_weak_password, hints)


def cmd_init(args: argparse.Namespace) -> int:
    from vaultfs.vault import check_init_target, init_vault

    backing_dir = os.path.abspath(args.backing)
    check_init_target(backing_dir)  # before the password prompt
    password = new_password(args, args.passfile, backing_dir)
    kdf = kdf_from_args(args)
    key = init_vault(backing_dir, password, kdf)
    print(f"Created a vault in {backing_dir}.\n")
    print("Recovery key (write it down and keep it somewhere safe, away from this computer):\n")
    print(f"    {key}\n")
    print("Nobody can recover your files without this key or your password: not vaultfs, not your\n"
          "cloud provider. It is shown only this once.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    backing_dir = os.path.abspath(args.backing)
    config = keyfile.load_config(backing_dir, allow_v1=True)
    print(f"vault:         {backing_dir}")
    print(f"format:        vaultfs version {config.version}"
          + (" (run `vaultfs upgrade` to convert it)" if config.version != keyfile.FORMAT_VERSION else ""))
    print(f"cipher suite:  {config.cipher_suite}")
    print(f"block size:    {config.block_size} bytes")
    print(f"names:         {config.name_encoding}")
    print(f"key slots:     {len(config.slots)}")
    for slot in config.slots:
        kdf = slot.kdf
        print(f"  slot {slot.slot_id}: password, argon2id memory {kdf.memory_kib // 1024} MiB "
              f"({kdf.memory_kib} KiB), time cost {kdf.time_cost}, parallelism {kdf.parallelism}")
    print("(the config MAC is verified when the vault is unlocked)")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    backing_dir = os.path.abspath(args.backing)
    keyfile.load_config(backing_dir)  # a missing vault is reported before any prompt
    old = read_password(args.passfile, "Current password: ")
    keys, _ = keyfile.unlock(backing_dir, old)
    new = new_password(args, args.new_passfile, backing_dir)
    keyfile.write_config(backing_dir, keyfile.new_config(keys, new, kdf_from_args(args)))
    print(f"Password changed for {backing_dir}. No file was re-encrypted; no copy of the old config was kept.")
    print("Anyone who already copied the old vaultfs.conf (a cloud's version history) can still open the vault\n"
          "with the old password: the master key is unchanged. `vaultfs rekey` gives the vault a new one\n"
          "(see README, \"Changing the password\").")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    backing_dir = os.path.abspath(args.backing)
    keyfile.check_backing_dir(backing_dir)
    if not args.rebuild_config:
        keyfile.load_config(backing_dir, allow_v1=True)
    typed = read_secret(args.recovery_key_file, "Recovery key: ", "recovery key")
    keys = VaultKeys.derive(recovery.decode(typed))
    keyfile.check_recovery_key(backing_dir, keys, rebuild=args.rebuild_config)  # before asking for a password
    new = new_password(args, args.new_passfile, backing_dir)
    keyfile.recover(backing_dir, keys, new, kdf_from_args(args), rebuild=args.rebuild_config)
    action = "Rebuilt vaultfs.conf and set" if args.rebuild_config else "Set"
    print(f"{action} a new password for {backing_dir}.")
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    from vaultfs.errors import PartialFailure, WrongPassword
    from vaultfs.tools import rekey, rekeystate
    from vaultfs.tools.progress import Progress

    backing_dir = os.path.abspath(args.backing)
    config = keyfile.load_config(backing_dir, rekeying=True)  # a missing or version-1 vault: before any prompt
    with rekeystate.claimed(backing_dir) as root_fd:
        current: list[str] = []

        def unlock_current(password: str) -> VaultKeys:
            try:
                keys = keyfile.unwrap(config, password)
            except WrongPassword:
                if rekeystate.just_switched(root_fd):
                    raise WrongPassword("a rekey of this vault has just finished: its new password (and the new "
                                        "recovery key it showed) opens it now") from None
                raise
            current.append(password)  # compared with the new one below
            return keys

        old = unlock_with_retries(args.passfile, unlock_current, "Current password: ")
        pending = rekeystate.load_pending(backing_dir)
        if pending is not None:
            print(f"vaultfs: finishing the interrupted rekey of {backing_dir}", file=sys.stderr)
            new = unlock_with_retries(args.new_passfile, lambda p: rekeystate.open_pending(pending, p),
                                      "New password (the one chosen when this rekey started): ")
            total = rekeystate.check_space(root_fd, backing_dir)
        else:
            password = new_password(args, args.new_passfile, backing_dir)
            if keyfile.normalize_password(password) == keyfile.normalize_password(current[-1]):
                raise UsageError("the new password must differ from the current one (the new key's config lands "
                                 "in the same synced folder: a password that leaked would hand it over too)")
            rekeystate.check_readable(root_fd, old)
            total = rekeystate.check_space(root_fd, backing_dir)
            kdf = kdf_from_args(args)
            rekeystate.remember_times(root_fd, overwrite=not rekeystate.start_interrupted(root_fd))
            new, _ = rekeystate.start(backing_dir, password, kdf)

        with Progress("rekey", total if sys.stderr.isatty() else None) as progress:
            def show_key(report: rekey.RekeyReport) -> None:
                progress.close(finished=True)
                print(f"rekeyed {backing_dir}: {_count(report.directories, 'directory', 'directories')}, "
                      f"{_count(report.files, 'file', 'files')} ({report.bytes_read} bytes read) and "
                      f"{report.specials} symlinks/FIFOs/sockets/devices re-encrypted under a new master key\n")
                print("New recovery key (write it down and keep it somewhere safe, away from this computer):\n")
                print(f"    {recovery.encode(new.master_key)}\n")
                print("It replaces the old one: the old recovery key and the old password no longer open this "
                      "vault.\nCopies of the folder made before now (a backup, the cloud's version history) still "
                      "open with them.", flush=True)

            report = rekey.rekey(root_fd, old, new, config.block_size, show_key, on_bytes=progress.add_bytes,
                                 on_problem=progress.write, on_file=progress.add_file)
    if report.left:
        raise PartialFailure(f"{len(report.left)} backing entr{'y' if len(report.left) == 1 else 'ies'} were not "
                             "vault entries of their directory (hidden before and after) and were left as they "
                             "were: " + "; ".join(report.left[:5]))
    return 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
