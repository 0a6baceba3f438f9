"""Error classes of vaultfs: each carries its one-line message and its exit code.

The CLI has exactly one ``except VaultError`` (in ``cli.main``) that prints
``vaultfs: <message>`` and exits with ``exit_code``; the README's
exit-code table lists the same numbers.  Filesystem-level failures inside an unlocked vault are
plain ``OSError`` with an errno (see ``IntegrityError``), because that is what the
FUSE layer and Python callers expect.
"""

from __future__ import annotations

import errno


class VaultError(Exception):
    """vaultfs failed."""

    exit_code = 1

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = (self.__doc__ or "").strip().splitlines()[0]
        return f"{text}: {self.detail}" if self.detail else text


class UsageError(VaultError):
    """invalid usage"""

    exit_code = 2


class WrongPassword(VaultError):
    """wrong password (or the key slot in vaultfs.conf was altered)"""

    exit_code = 3


class WrongRecoveryKey(VaultError):
    """this recovery key does not open this vault"""

    exit_code = 3


class MistypedRecoveryKey(VaultError):
    """the recovery key is mistyped (its checksum does not match); check each group"""

    exit_code = 4


class NotAVault(VaultError):
    """not a vaultfs vault"""

    exit_code = 5


class ConfigDamaged(VaultError):
    """vaultfs.conf is damaged or was tampered with"""

    exit_code = 6


class UnsupportedFormat(VaultError):
    """unsupported vault format"""

    exit_code = 7


class NeedsUpgrade(UnsupportedFormat):
    """this vault has format version 1 and must be converted to version 2 first"""

    exit_code = 20


class VaultIOError(VaultError):
    """I/O error"""

    exit_code = 8


class AlreadyExists(VaultError):
    """refusing to overwrite"""

    exit_code = 9


class MountError(VaultError):
    """cannot mount"""

    exit_code = 10


class FuseUnavailable(VaultError):
    """FUSE is not available (install the fuse3 package and make sure /dev/fuse exists)"""

    exit_code = 11


class ProblemsFound(VaultError):
    """fsck found problems"""

    exit_code = 12


class PartialFailure(VaultError):
    """some files could not be processed"""

    exit_code = 14


# ---- remote storage through rclone (vaultfs/remote/): 21-28 ------------------------


class RcloneMissing(VaultError):
    """rclone is not available (install it: apt-get install rclone; version 1.58 or later)"""

    exit_code = 21


class RemoteUnusable(VaultError):
    """cannot use this remote"""

    exit_code = 22


class VaultBusy(VaultError):
    """the vault is in use"""

    exit_code = 23


class RemoteFailed(VaultError):
    """rclone failed (run the same command again: it resumes)"""

    exit_code = 24


class DifferentVault(VaultError):
    """the two sides hold different vaults; refusing to mix them"""

    exit_code = 25


class UploadPending(VaultError):
    """locked, but rclone has not finished uploading"""

    exit_code = 26


class RunBeforeFailed(VaultError):
    """run: the transfer before mounting failed; nothing was mounted or run"""

    exit_code = 27


class RunAfterFailed(VaultError):
    """run: the vault is locked, but the transfer after locking failed"""

    exit_code = 28


class NoSuchFile(VaultError):
    """no such file"""

    exit_code = 19


class PasswordCommandFailed(VaultError):
    """the password command failed"""

    exit_code = 18


class RekeyInProgress(VaultError):
    """rekey in progress"""

    exit_code = 29


class NotEnoughSpace(VaultError):
    """not enough free space"""

    exit_code = 30


class RekeyBlocked(ProblemsFound):
    """the vault has damage a rekey cannot carry over"""


class Interrupted(VaultError):
    """interrupted"""

    exit_code = 130


class IntegrityError(OSError):
    """Ciphertext failed authentication: surfaced as EIO, never as wrong plaintext."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EIO, f"authentication failed: {what}")


class LockError(VaultError):
    """cannot lock"""

    exit_code = 13


class WeakPassword(VaultError):
    """password too weak"""

    exit_code = 15
