"""What every FUSE handler of vaultfs goes through: the errno boundary, and name decoding.

Only ``FUSEError`` may leave a handler (anything else would stop pyfuse3's event loop); an
``OSError`` becomes its errno, an authentication failure (IntegrityError) EIO, logged, and
any other exception a logged EIO.  Each request also counts (by type) and marks the last
access that ``--idle`` and ``vaultfs status`` read.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

log = logging.getLogger("vaultfs.fuse.ops")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def handler(func: F) -> F:
    """Record the access (for --idle, and a count per request type) and turn every failure into an errno."""
    name = func.__name__

    @functools.wraps(func)
    async def wrapper(self: Any, *args: Any) -> Any:
        self.last_access = time.monotonic()
        self.requests[name] += 1
        try:
            return await func(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
            if code == errno.EIO:
                log.error("%s: %s", func.__name__, exc)
            raise pyfuse3.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - a bug must cost one EIO, not the whole mount
            log.exception("%s: unexpected error", func.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def name_of(raw: bytes) -> str:
    """A name exactly as the kernel gave it (any bytes), as the Vault API's str."""
    return raw.decode("utf-8", "surrogateescape")


def raw_of(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


