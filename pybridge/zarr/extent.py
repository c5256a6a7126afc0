"""Per-array extent locks: a shape change never overlaps a read or write of the array.

Inside one sidecar, every request that rewrites an array's metadata document
(``array.resize``, ``array.append``, the attribute changes) holds its
array's lock **exclusively**, from reading the current metadata until it is
done; ``array.read``, ``array.write`` and ``array.write_chunk_raw`` hold it
**shared**, from opening the metadata until they are done. So:

- appends (and resizes) are serialized per array: each reads the current
  shape, grows the array and writes the new region before the next starts,
  and a failed append shrinks the array back before anyone sees its growth;
- a read sees the array between two shape changes, never an append's new
  rows before they are written;
- a write works with the current shape to its end (a write with a stale,
  smaller shape would store an edge chunk as if it ended at the old extent,
  wiping the rows an append had just put there).

Reads and writes of the same array still run concurrently with each other
(their chunks have their own locks, :attr:`pybridge.context.SidecarContext.chunk_locks`).
Waiters are served in arrival order, so a stream of appends cannot starve
the readers or the other way round. A waiting request stays cancellable.

The key is the array's resolved location (``realpath`` of its directory, or
of the zip archive) plus its path, so two spellings of one array share the
lock. Nothing here serializes two sidecars, or a sidecar and another
process, writing the same array.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING

from pybridge.errors import Cancelled

if TYPE_CHECKING:
    from pybridge.rpc.call import Call
    from pybridge.zarr.store import StoreRef

__all__ = ["ExtentLocks", "extent_key"]

#: How often a waiting request looks at its cancelled flag.
_POLL_S = 0.05


def extent_key(ref: StoreRef) -> Hashable:
    """What an array's extent lock is keyed by: its resolved location and path."""
    if ref.kind == "filesystem":
        return ("filesystem", os.path.realpath(ref.dir))
    if ref.kind == "zip":
        return ("zip", os.path.realpath(ref.root), ref.path)
    return (ref.kind, ref.root, ref.path)


class _Ticket:
    """One request's place in the line of an array's lock."""

    __slots__ = ("exclusive",)

    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive


class ExtentLocks:
    """Shared/exclusive locks by key, granted in arrival order.

    A ticket may run when every ticket ahead of it in its key's line is
    shared and it is shared too, or when it is first in line.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lines: dict[Hashable, list[_Ticket]] = {}

    def _may_run(self, key: Hashable, ticket: _Ticket) -> bool:
        for other in self._lines[key]:
            if other is ticket:
                return True
            if other.exclusive or ticket.exclusive:
                return False
        raise AssertionError("ticket not in line")

    @contextlib.contextmanager
    def hold(self, key: Hashable, exclusive: bool, call: Call | None = None,
             before_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold ``key`` (exclusively or shared) for the block.

        ``before_wait`` runs once, outside the table's lock, when the
        request has to wait for its turn (keeping its place in line): a
        request with an upload stream takes its upload then, so that the
        reader thread never blocks on a request that waits here. A
        cancelled ``call`` stops waiting with :class:`Cancelled`.
        """
        ticket = _Ticket(exclusive)
        with self._cond:
            self._lines.setdefault(key, []).append(ticket)
            ready = self._may_run(key, ticket)
        try:
            if not ready:
                if before_wait is not None:
                    before_wait()
                self._wait(key, ticket, call)
            yield
        finally:
            with self._cond:
                line = self._lines[key]
                line.remove(ticket)
                if not line:
                    del self._lines[key]
                self._cond.notify_all()

    def _wait(self, key: Hashable, ticket: _Ticket, call: Call | None) -> None:
        with self._cond:
            while not self._may_run(key, ticket):
                if call is not None and call.cancelled.is_set():
                    raise Cancelled("cancelled while waiting for the array")
                self._cond.wait(_POLL_S)

    def waiting(self) -> int:
        """Tickets in every line (held or waiting); 0 when the table is idle."""
        with self._cond:
            return sum(len(line) for line in self._lines.values())

