"""How guessable a new password is: zxcvbn's estimate, shown at the prompt, and the refusal.

The data behind a vault cannot be recovered without the password or the recovery key,
and anyone holding a copy of the synced folder can try passwords offline for as long
as they like.  A maintained estimator (zxcvbn: dictionaries, keyboard patterns, dates,
l33t) judges far better than a home-made rule on length and character classes.  Very
weak passwords (zxcvbn score 0 or 1: under about a million guesses) are refused unless
the user insists with ``--allow-weak-password``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from zxcvbn import zxcvbn

from vaultfs.errors import UsageError, WeakPassword
from vaultfs.passwords import TRIES, read_password

MIN_SCORE = 2  # zxcvbn: 0 "too guessable", 1 "very guessable" (< 10^6 guesses) are refused
MAX_ESTIMATED = 72  # zxcvbn's own input limit (its matching is superlinear); longer: the prefix is judged
LABELS = ("very weak", "very weak", "fair", "good", "strong")


@dataclass(frozen=True)
class Estimate:
    score: int  # 0..4
    guesses_log10: float
    crack_time: str  # at 10,000 guesses per second: a well-funded offline attack on argon2id
    warning: str

    @property
    def weak(self) -> bool:
        return self.score < MIN_SCORE

    def describe(self) -> str:
        """One line: the verdict, the numbers behind it, and zxcvbn's warning if it has one."""
        text = (f"{LABELS[self.score]} (zxcvbn score {self.score} of 4, about 10^{self.guesses_log10:.0f} "
                f"guesses, {self.crack_time} at 10,000 guesses/s)")
        return f"{text}: {self.warning.rstrip('.')}" if self.warning else text


def estimate(password: str, hints: list[str] | tuple[str, ...] = ()) -> Estimate:
    """zxcvbn's estimate; ``hints`` are words an attacker would try first (the folder's name)."""
    result = zxcvbn(password[:MAX_ESTIMATED], user_inputs=[h for h in hints if h][:8])
    return Estimate(score=int(result["score"]), guesses_log10=float(result["guesses_log10"]),
                    crack_time=str(result["crack_times_display"]["offline_slow_hashing_1e4_per_second"]),
                    warning=str(result["feedback"].get("warning") or ""))


def check(password: str, allow_weak: bool, hints: list[str] | tuple[str, ...] = ()) -> Estimate:
    """Refuse a very weak password unless allowed; return the estimate either way."""
    result = estimate(password, hints)
    if result.weak and not allow_weak:
        raise WeakPassword(f"{result.describe()}; choose a longer one (four or five random words work), "
                           "or pass --allow-weak-password")
    return result


def read_new_password(source: str | None, allow_weak: bool, hints: list[str] | tuple[str, ...] = ()) -> str:
    """A new password from ``source`` (file, ``-``) or the terminal, judged before it is used.

    At the terminal the estimate is shown after the first entry, before the repeat, so
    a refused password need not be typed twice.
    """
    if source is not None:
        password = read_password(source)
        check(password, allow_weak, hints)
        return password
    for attempt in range(1, TRIES + 1):
        password = read_password(None, "New password: ")
        print(f"Password strength: {estimate(password, hints).describe()}", file=sys.stderr)
        check(password, allow_weak, hints)
        if read_password(None, "Repeat password: ") == password:
            return password
        if attempt < TRIES:
            print("vaultfs: the two passwords differ, try again", file=sys.stderr)
    raise UsageError(f"the two passwords differed {TRIES} times")
