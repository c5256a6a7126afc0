"""What a handler receives: one request in flight, with its streams.

A handler is ``handler(call: Call) -> dict``. It reads ``call.params`` (already
validated against the method's spec), may check ``call.cancelled``, may send
a large result as a stream with :meth:`Call.send_data` or
:meth:`Call.reply_bytes`, and may consume an upload with :meth:`Call.upload`.

Streams (PROTOCOL.md §3)
------------------------
*Results.* :meth:`Call.send_data` cuts its buffer into ``stream.data``
notifications of at most ``stream_frame_bytes`` and writes each at once;
the payload is passed to the writer as memoryview slices, never copied. When
the handler returns, the server adds ``"stream": {"frames": n, "bytes":
total}`` to its result.

*Uploads.* A request whose params carry ``"stream": {"bytes": total}`` is
followed by ``stream.data`` notifications with its id. The server's reader
thread puts each piece on this call's queue, which holds at most
:data:`UPLOAD_QUEUE_FRAMES` pieces. When the queue is full the reader thread
**blocks** until the handler takes a piece: that is the back-pressure, the
client's writes stall in the pipe instead of the sidecar buffering without
bound. While it blocks, the reader reads no other frame, so a handler must
consume its upload promptly and must never wait for another request. The
reader stops waiting, and drops the piece, as soon as the call is cancelled
or finished, so a handler that fails early cannot wedge the channel.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Union

from pybridge.errors import Cancelled, InvalidParams
from pybridge.protocol import stream_data_parts

if TYPE_CHECKING:
    from pybridge.context import SidecarContext
    from pybridge.framing import FrameWriter
    from pybridge.settings import Settings

__all__ = ["UPLOAD_QUEUE_FRAMES", "Call"]

Buffer = Union[bytes, bytearray, memoryview]

#: Pieces of an upload buffered per call before the reader thread blocks
#: (64 pieces of 256 KiB: 16 MiB).
UPLOAD_QUEUE_FRAMES = 64
#: How often blocked waits look at the cancelled and finished flags.
_POLL_S = 0.05


class _NeverCancelled(threading.Event):
    """The ``cancelled`` event of inline calls, which run to completion on the
    reader thread (the thread that would handle their cancel): never set."""

    def set(self) -> None:
        raise RuntimeError("an inline call cannot be cancelled")


_NEVER_CANCELLED = _NeverCancelled()


class Call:
    """One request being served.

    ``inline`` calls (run on the reader thread) share one ``cancelled``
    event that is never set, which saves creating one per ping.
    """

    __slots__ = (
        "_upload",
        "_upload_bytes",
        "_writer",
        "cancelled",
        "context",
        "finished",
        "id",
        "method",
        "params",
        "stream_bytes",
        "stream_frames",
        "streamed",
    )

    def __init__(self, id: int, method: str, params: dict[str, Any],
                 context: SidecarContext, writer: FrameWriter, *, inline: bool = False) -> None:
        self.id = id
        self.method = method
        self.params = params
        self.context = context
        #: Set when the client cancels the request (or the sidecar stops).
        self.cancelled = _NEVER_CANCELLED if inline else threading.Event()
        #: Set by the server when the handler has returned or raised.
        self.finished = False
        self.streamed = False
        self.stream_frames = 0
        self.stream_bytes = 0
        self._writer = writer
        self._upload: queue.Queue[bytes] | None = None
        self._upload_bytes = 0

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.method}>"

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def check_cancelled(self) -> None:
        """Raise :class:`~pybridge.errors.Cancelled` if the request was cancelled."""
        if self.cancelled.is_set():
            raise Cancelled(f"request {self.id} was cancelled")

    # -- results ---------------------------------------------------------

    def send_data(self, buf: Buffer) -> None:
        """Append ``buf`` to this call's result stream, writing it out now.

        ``buf`` may be any C-contiguous buffer (bytes, a numpy array, a
        shared-memory view); it is sent as ``stream.data`` frames of at most
        ``stream_frame_bytes``, without copying. Raises ``Cancelled`` between
        frames once the request is cancelled.
        """
        view = buf if isinstance(buf, memoryview) else memoryview(buf)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        step = self.context.settings.stream_frame_bytes
        self.streamed = True
        for offset in range(0, view.nbytes, step):
            self.check_cancelled()
            piece = view[offset:offset + step]
            self._writer.write_parts(stream_data_parts(self.id, piece))
            self.stream_frames += 1
            self.stream_bytes += piece.nbytes

    def send_file(self, path: str, offset: int, nbytes: int) -> None:
        """Like :meth:`send_data`, for ``nbytes`` of the file at ``path`` from ``offset``.

        The bytes are read a frame at a time into one small buffer, so the
        file's pages (say a shared-memory band that the workers decoded into)
        never enter this process's memory: its RSS stays flat whatever the
        size. (``sendfile`` would save that copy, but a pipe keeps references
        to the file's pages, not copies, and the band is reused at once.)
        """
        import os

        step = self.context.settings.stream_frame_bytes
        self.streamed = True
        buf = memoryview(bytearray(min(step, nbytes)))
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for start in range(offset, offset + nbytes, step):
                self.check_cancelled()
                n = min(step, offset + nbytes - start)
                got = 0
                while got < n:
                    k = os.preadv(fd, [buf[got:n]], start + got)
                    if k == 0:
                        raise OSError(f"{path} ended {n - got} bytes early")
                    got += k
                self._writer.write_parts(stream_data_parts(self.id, buf[:n]))
                self.stream_frames += 1
                self.stream_bytes += n
        finally:
            os.close(fd)

    def reply_bytes(self, buf: Buffer) -> dict[str, Any]:
        """The result fields for a bytes payload: inline when small, else streamed.

        Returns ``{"data": buf}`` when ``buf`` fits in one stream frame;
        otherwise sends it with :meth:`send_data` and returns ``{}`` (the
        server then adds ``"stream"``). Merge the returned dict into the
        handler's result.
        """
        view = buf if isinstance(buf, memoryview) else memoryview(buf)
        if view.nbytes <= self.context.settings.stream_frame_bytes:
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")
            return {"data": view}
        self.send_data(view)
        return {}

    # -- uploads ---------------------------------------------------------

    @property
    def upload_bytes(self) -> int | None:
        """The size the request declared for its upload, or None if it has none."""
        return self._upload_bytes if self._upload is not None else None

    def expect_upload(self, total: int) -> None:
        """Server side: this request announced ``"stream": {"bytes": total}``."""
        self._upload = queue.Queue(maxsize=UPLOAD_QUEUE_FRAMES)
        self._upload_bytes = total

    def feed_upload(self, data: bytes) -> bool:
        """Server side (reader thread): queue one piece; blocks while the queue is full.

        Returns False when the piece was dropped: the call expects no upload,
        or it was cancelled or finished meanwhile.
        """
        q = self._upload
        if q is None:
            return False
        while not (self.finished or self.cancelled.is_set()):
            try:
                q.put(data, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def upload(self) -> Iterator[bytes]:
        """Iterate over the pieces of this request's upload, in order, as they arrive.

        Stops after the declared number of bytes. Raises ``Cancelled`` when
        the request is cancelled while waiting, and ``InvalidParams`` when
        the request declared no stream or the pieces overrun its size.
        """
        q = self._upload
        if q is None:
            raise InvalidParams("this request carries no upload stream",
                                param="stream", expected="map")
        total = self._upload_bytes
        received = 0
        while received < total:
            try:
                piece = q.get(timeout=_POLL_S)
            except queue.Empty:
                self.check_cancelled()
                continue
            self.check_cancelled()
            received += len(piece)
            if received > total:
                raise InvalidParams(
                    f"the upload stream carried more than the {total} bytes declared",
                    param="stream", expected=f"{total} bytes")
            yield piece

    def read_upload(self) -> bytes:
        """The whole upload joined into one bytes object (for small uploads)."""
        return b"".join(self.upload())
