"""Band buffers: shared-memory segments reused from request to request.

Reads and writes move data through the workers one *band* at a time (whole
chunk rows along axis 0). A band's bytes live in a shared-memory segment
that the workers map by path; keeping a few segments alive between requests
means the workers' mappings stay valid and nothing is re-created per band.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pybridge.handoff.shm import Segment

__all__ = ["BandBuffers", "split"]

MiB = 1 << 20
T = TypeVar("T")


class BandBuffers:
    """A small free list of segments; :meth:`take` one, :meth:`give` it back."""

    def __init__(self, max_free: int = 4, max_free_bytes: int = 64 * MiB) -> None:
        self._free: list[Segment] = []
        self._lock = threading.Lock()
        self.max_free = max_free
        self.max_free_bytes = max_free_bytes

    def take(self, nbytes: int) -> Segment:
        """A segment of at least ``nbytes`` (sizes are rounded up to a power of two)."""
        with self._lock:
            fits = [s for s in self._free if s.size >= nbytes]
            if fits:
                seg = min(fits, key=lambda s: s.size)
                self._free.remove(seg)
                return seg
        from pybridge.handoff.shm import Segment

        size = MiB
        while size < nbytes:
            size *= 2
        return Segment.scratch(size, "band")

    def give(self, seg: Segment) -> None:
        """Return a segment; the smallest ones are dropped beyond the limits."""
        with self._lock:
            self._free.append(seg)
            self._free.sort(key=lambda s: s.size, reverse=True)
            while self._free and (len(self._free) > self.max_free
                                  or sum(s.size for s in self._free) > self.max_free_bytes):
                old = self._free.pop()
                old.close()
                old.unlink()

    def clear(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for seg in free:
            seg.close()
            seg.unlink()




def split(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """Cut ``items`` into at most ``n`` contiguous groups of near-equal size."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out = []
    i = 0
    for k in range(n):
        j = i + size + (1 if k < extra else 0)
        out.append(items[i:j])
        i = j
    return out
