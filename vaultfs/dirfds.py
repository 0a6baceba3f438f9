"""Open fds of the backing directories in use: an LRU whose entries are pinned while used.

An fd follows its directory through renames, so a cached one stays right where a path
would go stale, and the tree need not re-open (and re-check) a directory on every
request.  An fd is closed only when nobody holds it: dropping a slot (the directory is
gone) only marks it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from vaultfs.entries import BackingKey

DIR_FDS = 256  # directory fds kept open: well below any RLIMIT_NOFILE, enough for a backup's hot dirs


class _FdSlot:
    __slots__ = ("fd", "pins", "dropped")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pins = 1
        self.dropped = False


class DirFdCache:
    """Open fds of recently used directories; an fd is closed only when nobody is using it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._slots: OrderedDict[BackingKey, _FdSlot] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: BackingKey) -> _FdSlot | None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                self._slots.move_to_end(key)
                slot.pins += 1
            return slot

    def put(self, key: BackingKey, fd: int) -> _FdSlot:
        slot = _FdSlot(fd)
        with self._lock:
            old = self._slots.pop(key, None)
            if old is not None:
                self._retire(old)
            self._slots[key] = slot
            while len(self._slots) > self._capacity:
                _, oldest = self._slots.popitem(last=False)
                self._retire(oldest)
        return slot

    def release(self, slot: _FdSlot) -> None:
        with self._lock:
            slot.pins -= 1
            if slot.dropped and not slot.pins:
                os.close(slot.fd)

    def drop(self, key: BackingKey) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is not None:
                self._retire(slot)

    def close_all(self) -> None:
        with self._lock:
            while self._slots:
                self._retire(self._slots.popitem()[1])

    @staticmethod
    def _retire(slot: _FdSlot) -> None:
        slot.dropped = True
        if not slot.pins:
            os.close(slot.fd)
