"""Same-host handoff of large results through shared memory (PROTOCOL.md §3).

A handler that answers with ``"shm": {"path", "bytes"}`` fills a fresh
segment inside :func:`result_handoff`. The segment is unlinked on every path
the sidecar controls: when the handler fails or is cancelled while it runs,
and when the request is cancelled after the handler returned but before its
reply went out (a small janitor thread watches each segment until its reply
is settled). Once the reply is out, the client owns the file: it reads it
once and unlinks it.

When ``/dev/shm`` cannot hold the segment (missing, read-only, full),
:func:`result_handoff` raises :class:`HandoffUnavailable` before its block
runs, and the handler answers by the pipe instead (inline or streamed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pybridge.errors import TooLarge

if TYPE_CHECKING:
    from pybridge.handoff.shm import Segment
    from pybridge.rpc.call import Call

__all__ = ["MAX_HANDOFF_BYTES", "HandoffJanitor", "HandoffUnavailable",
           "result_handoff"]

log = logging.getLogger(__name__)

#: Largest result sent by handoff (one segment in /dev/shm).
MAX_HANDOFF_BYTES = 4 << 30


class HandoffUnavailable(Exception):
    """No handoff segment could be made; the result goes by the pipe instead.

    Never reaches the wire: every handler that offers a handoff catches it.
    """


@contextlib.contextmanager
def result_handoff(call: Call, nbytes: int) -> Iterator[Segment]:
    """A fresh segment for a handoff result, unlinked unless it reaches the client.

    The block fills it. On any exception (a cancel included) it is unlinked
    at once; otherwise it is watched until the request's reply is settled,
    and unlinked if the request is cancelled meanwhile. Raises
    :class:`HandoffUnavailable` (before the block) when ``/dev/shm`` cannot
    hold ``nbytes``.
    """
    from pybridge.handoff.shm import Segment, ShmUnavailable

    if nbytes > MAX_HANDOFF_BYTES:
        raise TooLarge(f"a handoff result of {nbytes} bytes is over the limit of "
                       f"{MAX_HANDOFF_BYTES} bytes", bytes=nbytes, limit=MAX_HANDOFF_BYTES)
    try:
        seg = Segment.create(nbytes, "read")
    except ShmUnavailable as e:
        log.info("request %s: no handoff, the result goes by the pipe: %s", call.id, e)
        raise HandoffUnavailable(str(e)) from None
    try:
        yield seg
        call.check_cancelled()
    except BaseException:
        seg.close()
        seg.unlink()
        raise
    seg.close()
    call.context.handoff_janitor.watch(call, seg.path)


class HandoffJanitor:
    """Unlinks handoff segments whose request is cancelled after its handler returned.

    A cancel that arrives between the handler's return and the reply makes
    the server drop the reply, and the client never learns the segment's
    name. Each watched segment is checked every :attr:`interval` seconds
    until its call is finished and :attr:`grace` seconds more have passed
    (after that no cancel can reach the call).
    """

    interval = 0.05
    grace = 2.0

    def __init__(self) -> None:
        self._items: list[list[Any]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, call: Call, path: str) -> None:
        with self._lock:
            self._items.append([call, path, None])
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pybridge-handoff",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                keep = []
                for item in self._items:
                    call, path, since = item
                    if call.cancelled.is_set():
                        with contextlib.suppress(OSError):
                            os.unlink(path)
                        continue
                    if call.finished:
                        if since is None:
                            item[2] = now
                        elif now - since > self.grace:
                            continue
                    keep.append(item)
                self._items = keep
                if not keep:
                    self._thread = None
                    return

