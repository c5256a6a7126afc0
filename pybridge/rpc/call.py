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

*Upload handoff.* A request may instead carry ``"shm": {"path", "bytes"}``:
the client wrote the payload into a file of its own under this sidecar's
shared-memory prefix (PROTOCOL.md §3). :meth:`Call.upload_handoff` checks the
file and opens it (:class:`UploadHandoff`), and :meth:`Call.upload` then yields
its mapped bytes, so handlers that iterate the upload serve both forms. The
file is unlinked when the call finishes, whatever the path: success, error,
or a cancel (also of a call that never ran).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pybridge.errors import (
    Cancelled,
    DataSizeMismatch,
    ForbiddenPath,
    InvalidParams,
    TooLarge,
)
from pybridge.rpc.protocol import stream_data_parts

if TYPE_CHECKING:
    from pybridge.context import SidecarContext
    from pybridge.handoff.shm import Segment
    from pybridge.rpc.framing import FrameWriter
    from pybridge.settings import Settings

__all__ = ["UPLOAD_QUEUE_FRAMES", "Call", "UploadHandoff", "payload_source", "upload_handoff_path"]

Buffer = bytes | bytearray | memoryview

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
        "_finished",
        "_shm",
        "_shm_path",
        "_upload",
        "_upload_bytes",
        "_writer",
        "cancelled",
        "context",
        "id",
        "method",
        "params",
        "payload_source",
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
        self._finished = False
        self.streamed = False
        self.stream_frames = 0
        self.stream_bytes = 0
        #: Which of the method's payload params carries the input (None: no payload).
        self.payload_source: str | None = None
        self._writer = writer
        self._upload: queue.Queue[bytes] | None = None
        self._upload_bytes = 0
        self._shm: UploadHandoff | None = None
        # The upload handoff's file, when its name is one this sidecar may
        # remove; unlinked when the call finishes, even if it never ran.
        shm = params.get("shm")
        self._shm_path = upload_handoff_path(shm.get("path")) if isinstance(shm, dict) else None

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.method}>"

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def finished(self) -> bool:
        """Set by the server when the handler has returned or raised (or was skipped)."""
        return self._finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self._finished = value
        if value and self._shm_path is not None:
            self._drop_upload_handoff()

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
        step = self.context.settings.stream_frame_bytes
        self.streamed = True
        buf = memoryview(bytearray(min(step, nbytes)))
        from pybridge.handoff.shm import open_segment

        fd = open_segment(path, os.O_RDONLY)
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
        """The size the request declared for its upload (a stream, or a
        handoff file), or None if it has none."""
        if self._upload is not None:
            return self._upload_bytes
        shm = self.params.get("shm")
        if isinstance(shm, dict):
            return _shm_param(shm)[1]
        return None

    @property
    def has_upload_handoff(self) -> bool:
        """Whether the request's payload is an upload handoff (``"shm"``)."""
        return isinstance(self.params.get("shm"), dict)

    def upload_handoff(self) -> UploadHandoff:
        """The request's upload handoff file, checked and opened (once).

        Raises ``InvalidParams`` when the request has none or its ``shm``
        map is malformed, ``ForbiddenPath`` for a path outside this
        sidecar's prefix, a symlink, or a file another user could open,
        ``InvalidParams`` for anything but a regular file,
        ``DataSizeMismatch`` when its size is not the declared one and
        ``TooLarge`` past ``max_request_bytes``.
        """
        if self._shm is None:
            shm = self.params.get("shm")
            if not isinstance(shm, dict):
                raise InvalidParams("this request carries no upload file", param="shm",
                                    expected="map")
            self._shm = UploadHandoff.open(shm, self.context.settings.max_request_bytes)
        return self._shm

    def _drop_upload_handoff(self) -> None:
        """Unlink the upload handoff file (and close it, after the reply is on its way)."""
        path, self._shm_path = self._shm_path, None
        f, self._shm = self._shm, None
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if f is not None:
            f.close_later()

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

    def upload(self) -> Iterator[bytes | memoryview]:
        """Iterate over the pieces of this request's upload, in order, as they arrive.

        Stops after the declared number of bytes. Raises ``Cancelled`` when
        the request is cancelled while waiting, and ``InvalidParams`` when
        the request declared no stream or the pieces overrun its size.
        """
        q = self._upload
        if q is None:
            if self.has_upload_handoff:
                yield from self.upload_handoff().pieces()
                return
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

    def way_back(self, nbytes: int, handoff: bool) -> str:
        """How a result of ``nbytes`` goes back, decided here for every handler:
        ``"handoff"`` when the request allows a handoff (``handoff``) and the
        result reaches the sidecar's ``handoff_threshold``; else ``"inline"``
        when it fits one stream part (``stream_frame_bytes``), else
        ``"stream"``. A handler whose handoff cannot be made
        (``HandoffUnavailable``) asks again with ``handoff=False``.
        """
        settings = self.context.settings
        if handoff and nbytes >= settings.handoff_threshold:
            return "handoff"
        return "inline" if nbytes <= settings.stream_frame_bytes else "stream"

    def payload(self) -> Any:
        """The request's input bytes, however they came: the ``data`` param,
        or the whole upload (``stream`` or ``shm``); None when it came as
        ``values`` (the handler reads those from the params)."""
        if self.payload_source == "data":
            return self.params["data"]
        if self.payload_source in ("stream", "shm"):
            return self.read_upload()
        return None


def _quoted(names: tuple[str, ...]) -> str:
    quoted = [f"'{n}'" for n in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def payload_source(sources: tuple[str, ...], params: dict[str, Any]) -> str:
    """The one param of ``sources`` that ``params`` gives; :class:`InvalidParams`
    when none or several are given. The dispatcher calls it before the
    handler runs, so no handler checks its transport by hand."""
    given = [k for k in sources if params.get(k) is not None]
    if len(given) != 1:
        raise InvalidParams(f"give exactly one of {_quoted(sources)}", param=sources[0],
                            expected="bin")
    return given[0]


# -- the upload handoff ---------------------------------------------------------

def _shm_param(shm: dict[str, Any]) -> tuple[str, int]:
    """``(path, bytes)`` of a request's ``shm`` map, checked for shape only."""
    path, nbytes = shm.get("path"), shm.get("bytes")
    if (set(shm) != {"path", "bytes"} or not isinstance(path, str)
            or type(nbytes) is not int or nbytes < 0):
        raise InvalidParams("param 'shm' must be {\"path\": str, \"bytes\": int >= 0}",
                            param="shm", expected="{path: str, bytes: int >= 0}")
    return path, nbytes


def upload_handoff_path(path: Any) -> str | None:
    """``path`` when it names a file this sidecar may take as an upload, else None.

    The rule is the one clients apply to read handoffs: exactly
    ``/dev/shm/pybridge-<this sidecar's pid>-`` followed by a name without
    ``/`` (and without NUL).
    """
    from pybridge.handoff import shm

    if not isinstance(path, str):
        return None
    prefix = f"{shm.SHM_DIR}/{shm.PREFIX}{shm.sidecar_pid()}-"
    if not path.startswith(prefix) or len(path) == len(prefix):
        return None
    rest = path[len(prefix):]
    if "/" in rest or "\0" in rest:
        return None
    return path


class UploadHandoff:
    """An upload handoff file, checked and opened read-only.

    ``fd`` stays open until :meth:`close_later`, so the file's memory is
    freed off the reply's path (the unlink itself is then cheap). Workers
    map the file by :attr:`path`; the sidecar maps it only for
    :meth:`pieces`.
    """

    __slots__ = ("_closed", "_seg", "fd", "path", "size")

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        self._seg: Segment | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"UploadHandoff({self.path!r}, size={self.size})"

    @classmethod
    def open(cls, shm: dict[str, Any], limit: int | None) -> UploadHandoff:
        """Check the request's ``shm`` map and open its file (see :meth:`Call.upload_handoff`)."""
        import stat

        path, nbytes = _shm_param(shm)
        if limit is not None and nbytes > limit:
            raise TooLarge(f"an upload of {nbytes} bytes is over the per-request limit of "
                           f"{limit} bytes", bytes=nbytes, limit=limit)
        if upload_handoff_path(path) is None:
            from pybridge.handoff import shm as shm_

            raise ForbiddenPath(
                f"an upload file must be /dev/shm/{shm_.PREFIX}{shm_.sidecar_pid()}-<name>, "
                f"got {path!r}", param="shm", path=path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise InvalidParams(f"the upload file {path} does not exist", param="shm",
                                expected="an existing file") from None
        except OSError as e:
            if os.path.islink(path):
                raise ForbiddenPath(f"the upload file {path} is a symlink", param="shm",
                                    path=path) from None
            raise InvalidParams(f"cannot open the upload file {path}: {e.strerror or e}",
                                param="shm", expected="a readable regular file") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidParams(f"the upload file {path} is not a regular file",
                                    param="shm", expected="a regular file")
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise ForbiddenPath(
                    f"the upload file {path} must belong to this user with mode 0600 "
                    f"(owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})",
                    param="shm", path=path)
            if st.st_size != nbytes:
                raise DataSizeMismatch(
                    f"the upload file {path} holds {st.st_size} bytes, the request "
                    f"declared {nbytes}", expected=nbytes, got=st.st_size)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, nbytes)

    def segment(self) -> Segment:
        """The file mapped read-only in this process (mapped once)."""
        import mmap

        from pybridge.handoff.shm import Segment

        if self._seg is None:
            mm = mmap.mmap(self.fd, self.size, access=mmap.ACCESS_READ) if self.size else None
            self._seg = Segment(self.path, self.size, mm, owner=False)
        return self._seg

    def pieces(self) -> Iterator[memoryview]:
        """The file's bytes, as one read-only view (none when it is empty)."""
        if self.size:
            yield self.segment().buf

    def close_later(self) -> None:
        """Unmap now, and close the descriptor on a short-lived thread.

        Closing the last reference to a large file in ``/dev/shm`` frees its
        pages, which takes a while (about 25 ms for 256 MiB): not on the
        path of the reply.
        """
        if self._closed:
            return
        self._closed = True
        if self._seg is not None:
            self._seg.close()
            self._seg = None
        if self.size < (4 << 20):
            os.close(self.fd)
            return
        threading.Thread(target=os.close, args=(self.fd,), name="pybridge-upload-close",
                         daemon=True).start()
