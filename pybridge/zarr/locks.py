"""Chunk locks: a read-modify-write of a chunk holds the chunk's key.

Writes to the same chunk from two requests would otherwise lose one of them
(each reads the chunk, changes its own part and writes it whole). Shape
changes are kept apart by the extent locks (:mod:`pybridge.zarr.extent`).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable

__all__ = ["LockTable"]


class LockTable:
    """Named locks taken all at once: no lock order, so no deadlock.

    :meth:`acquire` waits until none of the keys is held, then holds them
    all; :meth:`release` lets them go.
    """

    def __init__(self) -> None:
        self._held: set[Hashable] = set()
        self._cond = threading.Condition()

    def acquire(self, keys: Iterable[Hashable]) -> list[Hashable]:
        wanted = list(dict.fromkeys(keys))
        with self._cond:
            while any(k in self._held for k in wanted):
                self._cond.wait()
            self._held.update(wanted)
        return wanted

    def release(self, keys: Iterable[Hashable]) -> None:
        with self._cond:
            self._held.difference_update(keys)
            self._cond.notify_all()

    def held(self) -> int:
        with self._cond:
            return len(self._held)

