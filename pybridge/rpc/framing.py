"""Frames on a pair of file descriptors: a 4-byte big-endian length, then the body.

:class:`FrameReader` reads frames into one reusable buffer with
``os.readv``: a single system call usually brings in a whole small frame (its
header and body), and a large body is read straight into place, so nothing is
sliced or copied more than once. A frame longer than ``max_frame_bytes`` is
never allocated: its first bytes are kept (to recover the request id), the
rest is read in pieces and thrown away, and :class:`OversizedFrame` is
returned so that the server can reply ``frame_too_large``.

:class:`FrameWriter` writes one frame per call with ``os.writev``, from a list
of buffers (so a large payload slice is never joined into a new bytes
object), under a lock so that frames from different threads never
interleave.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "FrameReader",
    "FrameWriter",
    "OversizedFrame",
    "TruncatedFrame",
    "set_pipe_size",
]

Buffer = bytes | bytearray | memoryview

_HEADER = struct.Struct(">I")
_F_SETPIPE_SZ = 1031
#: Default pipe size asked for (PROTOCOL.md §1).
PIPE_SIZE = 1 << 20
#: Bytes of an oversized body kept to recover the request id.
_PEEK_BYTES = 64
#: Starting size of the read buffer: room for several upload frames (256 KiB
#: of data each, plus their envelope) per ``readv``. It grows for a large
#: frame, and shrinks back once the buffer empties only when it grew past
#: :data:`_KEEP_BYTES`: a buffer that is reallocated for every frame costs
#: fresh, zero-filled pages each time.
_BUFFER_BYTES = 1 << 20
_KEEP_BYTES = 8 << 20
#: Below this total size a frame is joined and written with one ``os.write``.
_JOIN_BELOW = 16 * 1024


def set_pipe_size(fd: int, size: int = PIPE_SIZE) -> bool:
    """Ask for a pipe buffer of ``size`` bytes on ``fd``; False if refused.

    Fails quietly when ``fd`` is not a pipe or the OS limit is lower.
    """
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
        return True
    except OSError:
        return False


class TruncatedFrame(EOFError):
    """The input ended in the middle of a frame."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"input ended after {got} of {expected} bytes of a frame")
        self.expected = expected
        self.got = got


class OversizedFrame(NamedTuple):
    """What :meth:`FrameReader.read` returns for a frame over the limit.

    ``length`` is the declared body length, ``head`` the first bytes of the
    body (up to 64), which usually hold the request id.
    """

    length: int
    head: bytes


class FrameReader:
    """Reads frames from ``fd``; one instance per channel, one thread at a time."""

    def __init__(self, fd: int, max_frame_bytes: int) -> None:
        self.fd = fd
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray(_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0  # first unconsumed byte
        self._end = 0  # end of the bytes read so far

    def read(self) -> memoryview | OversizedFrame | None:
        """Return the next frame's body, an :class:`OversizedFrame`, or None at EOF.

        The returned memoryview points into the reader's buffer and is valid
        only until the next call: decode it (or copy it) first. None means
        the input ended cleanly between frames; an end in the middle of a
        frame raises :class:`TruncatedFrame`.
        """
        if self._start == self._end and len(self._buf) > _KEEP_BYTES:
            self._reset_buffer()  # the last frame was very large: give the memory back
        if not self._fill(4):
            if self._end == self._start:
                return None
            raise TruncatedFrame(4, self._end - self._start)
        (length,) = _HEADER.unpack_from(self._buf, self._start)
        if length > self.max_frame_bytes:
            self._start += 4
            return self._discard(length)
        total = 4 + length
        if not self._fill(total):
            raise TruncatedFrame(length, self._end - self._start - 4)
        body = self._view[self._start + 4:self._start + total]
        self._start += total
        return body

    def _reset_buffer(self) -> None:
        self._view.release()
        self._buf = bytearray(_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    def _fill(self, n: int) -> bool:
        """Make ``n`` bytes available from ``_start``; False on EOF first."""
        if self._end - self._start >= n:
            return True
        if self._start + n > len(self._buf):
            self._make_room(n)
        while self._end - self._start < n:
            got = os.readv(self.fd, [self._view[self._end:]])
            if got == 0:
                return False
            self._end += got
        return True

    def _make_room(self, n: int) -> None:
        """Move the pending bytes to the front, growing the buffer if needed."""
        pending = self._end - self._start
        if n > len(self._buf):
            new = bytearray(max(n, _BUFFER_BYTES))
            new[:pending] = self._view[self._start:self._end]
            self._view.release()
            self._buf = new
            self._view = memoryview(new)
        elif pending:
            # bytes() first: the source and destination ranges may overlap.
            self._buf[:pending] = bytes(self._view[self._start:self._end])
        self._start, self._end = 0, pending

    def _discard(self, length: int) -> OversizedFrame:
        """Consume an oversized body of ``length`` bytes without storing it."""
        peek = min(length, _PEEK_BYTES)
        # The header is consumed; keep reading until we have the head or EOF.
        self._fill(peek)
        have = min(self._end - self._start, length)
        head = bytes(self._view[self._start:self._start + min(have, peek)])
        self._start += have
        remaining = length - have
        if remaining == 0:
            return OversizedFrame(length, head)
        # The buffer holds nothing else now: read the rest of the body into
        # it in pieces and drop them.
        self._start = self._end = 0
        scratch = self._view
        while remaining > 0:
            got = os.readv(self.fd, [scratch[:min(remaining, len(scratch))]])
            if got == 0:
                raise TruncatedFrame(length, length - remaining)
            remaining -= got
        return OversizedFrame(length, head)


class FrameWriter:
    """Writes whole frames to ``fd``; safe to share between threads."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def write(self, body: Buffer) -> None:
        """Write one frame whose body is ``body``."""
        n = len(body) if not isinstance(body, memoryview) else body.nbytes
        if n < _JOIN_BELOW:
            data = _HEADER.pack(n) + body
            with self._lock:
                self._write_all(data)
        else:
            self.write_parts([body])

    def write_parts(self, parts: Sequence[Buffer]) -> None:
        """Write one frame whose body is the concatenation of ``parts``.

        The parts are handed to ``os.writev`` as they are: a memoryview slice
        of a large payload is never copied. Partial writes are resumed.
        """
        views = [p if isinstance(p, memoryview) else memoryview(p) for p in parts]
        views = [v if v.format == "B" and v.ndim == 1 else v.cast("B") for v in views]
        total = sum(v.nbytes for v in views)
        if total > 0xFFFFFFFF:
            raise ValueError(f"frame body of {total} bytes does not fit a 4-byte length")
        iov: list[memoryview] = [memoryview(_HEADER.pack(total))]
        iov.extend(v for v in views if v.nbytes)
        with self._lock:
            while iov:
                written = os.writev(self.fd, iov[:1024])
                while written and iov:
                    if written >= iov[0].nbytes:
                        written -= iov[0].nbytes
                        iov.pop(0)
                    else:
                        iov[0] = iov[0][written:]
                        written = 0

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
