"""Unit tests of pybridge.rpc.framing and pybridge.rpc.protocol on real pipes."""

from __future__ import annotations

import math
import os
import struct
import tempfile
import threading
from collections.abc import Iterator

import msgpack
import pytest
from helpers import frame
from hypothesis import given, settings
from hypothesis import strategies as st

from pybridge.rpc import protocol
from pybridge.rpc.framing import (
    FrameReader,
    FrameWriter,
    OversizedFrame,
    TruncatedFrame,
    set_pipe_size,
)

LIMIT = 64 * 1024


_writers: list[threading.Thread] = []


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe ``(r, w)``. The test owns ``w`` and must close it (directly or
    through :func:`write_in_thread`); the fixture closes ``r`` once the
    writer threads are done, so no fd number is ever closed twice."""
    r, w = os.pipe()
    set_pipe_size(w)
    yield r, w
    while _writers:
        _writers.pop().join(10)
    os.close(r)


def write_in_thread(fd: int, data: bytes, pieces: int = 1, close: bool = True) -> threading.Thread:
    """Write ``data`` to ``fd`` from a thread, in ``pieces`` writes, then close ``fd``."""
    def run() -> None:
        step = max(1, math.ceil(len(data) / pieces))
        for offset in range(0, len(data), step):
            view = memoryview(data)[offset:offset + step]
            while view:
                view = view[os.write(fd, view):]
        if close:
            os.close(fd)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    _writers.append(t)
    return t


def read_all(reader: FrameReader) -> list[bytes | OversizedFrame]:
    out: list[bytes | OversizedFrame] = []
    while True:
        f = reader.read()
        if f is None:
            return out
        out.append(f if isinstance(f, OversizedFrame) else bytes(f))


# -- FrameReader ------------------------------------------------------------------

def test_reads_frames_written_together(pipe):
    r, w = pipe
    bodies = [b"one", b"", b"three" * 100, bytes(range(256))]
    write_in_thread(w, b"".join(frame(b) for b in bodies))
    assert read_all(FrameReader(r, LIMIT)) == bodies


def test_reads_frames_split_byte_by_byte(pipe):
    r, w = pipe
    bodies = [b"alpha", b"", b"gamma" * 7]
    data = b"".join(frame(b) for b in bodies)
    write_in_thread(w, data, pieces=len(data))
    assert read_all(FrameReader(r, LIMIT)) == bodies


def test_zero_length_frame_is_an_empty_body(pipe):
    r, w = pipe
    write_in_thread(w, frame(b""))
    reader = FrameReader(r, LIMIT)
    body = reader.read()
    assert isinstance(body, memoryview) and body.nbytes == 0
    assert reader.read() is None


def test_large_frame_grows_the_buffer_then_gives_it_back(pipe):
    """A buffer grown past 8 MiB shrinks back; a smaller one is kept for the next frame."""
    r, w = pipe
    big = os.urandom(12 * 1024 * 1024)
    medium = os.urandom(3 * 1024 * 1024)
    write_in_thread(w, frame(big) + frame(b"after") + frame(medium) + frame(b"end"), pieces=37)
    reader = FrameReader(r, 16 * 1024 * 1024)
    assert bytes(reader.read()) == big
    assert bytes(reader.read()) == b"after"
    assert len(reader._buf) <= 1024 * 1024
    assert bytes(reader.read()) == medium
    grown = len(reader._buf)
    assert grown >= len(medium)
    assert bytes(reader.read()) == b"end"
    assert len(reader._buf) == grown
    assert reader.read() is None


def test_many_frames_crossing_the_buffer_end(pipe):
    """Frames that straddle the end of the read buffer are moved, not lost."""
    r, w = pipe
    bodies = [os.urandom(n) for n in range(1000, 300_000, 7919)]
    write_in_thread(w, b"".join(frame(b) for b in bodies), pieces=101)
    assert read_all(FrameReader(r, LIMIT * 8)) == bodies


def test_oversized_frame_is_discarded_without_allocation(pipe):
    r, w = pipe
    limit = 4096
    request = msgpack.packb([0, 77, "echo", {"data": b"x" * 4_000_000}], use_bin_type=True)
    write_in_thread(w, frame(request) + frame(b"next"), pieces=13)
    reader = FrameReader(r, limit)
    over = reader.read()
    assert isinstance(over, OversizedFrame)
    assert over.length == len(request)
    assert over.head == request[:64]
    assert protocol.peek_request_id(over.head) == 77
    assert len(reader._buf) <= 1024 * 1024  # the 4 MB body was never stored
    assert bytes(reader.read()) == b"next"
    assert reader.read() is None


def test_oversized_frame_already_in_the_buffer(pipe):
    """A small limit: the whole oversized frame and the next arrive in one read."""
    r, w = pipe
    write_in_thread(w, frame(b"z" * 5000) + frame(b"ok"))
    reader = FrameReader(r, 4096)
    over = reader.read()
    assert over == OversizedFrame(5000, b"z" * 64)
    assert bytes(reader.read()) == b"ok"


def test_clean_eof_returns_none(pipe):
    r, w = pipe
    os.close(w)
    assert FrameReader(r, LIMIT).read() is None


@pytest.mark.parametrize("data", [
    b"\x00\x00",  # in the header
    b"\x00\x00\x00\x10abc",  # in the body
])
def test_eof_mid_frame_raises_truncated(pipe, data):
    r, w = pipe
    write_in_thread(w, data)
    with pytest.raises(TruncatedFrame):
        FrameReader(r, LIMIT).read()


def test_eof_inside_an_oversized_body_raises_truncated(pipe):
    r, w = pipe
    write_in_thread(w, struct.pack(">I", 100_000) + b"\x94\x00\x05" + b"\x00" * 5000)
    with pytest.raises(TruncatedFrame):
        FrameReader(r, 4096).read()


@settings(max_examples=100, deadline=None)
@given(bodies=st.lists(st.binary(max_size=3000), max_size=12),
       pieces=st.integers(min_value=1, max_value=50))
def test_any_frames_any_split(bodies, pieces):
    r, w = os.pipe()
    try:
        data = b"".join(frame(b) for b in bodies)
        t = write_in_thread(w, data, pieces=pieces)
        assert read_all(FrameReader(r, LIMIT)) == bodies
        t.join()
    finally:
        os.close(r)


# -- FrameWriter ------------------------------------------------------------------

def test_writer_frames_bytes_and_parts(pipe):
    r, w = pipe
    writer = FrameWriter(w)
    big = os.urandom(3 * 1024 * 1024)
    result: list[list[bytes | OversizedFrame]] = []
    t = threading.Thread(target=lambda: result.append(read_all(FrameReader(r, 8 << 20))))
    t.start()
    writer.write(b"small")
    writer.write(b"")
    writer.write_parts([b"head-", memoryview(big)[10:1_000_010], bytearray(b"-tail")])
    writer.write(big)  # larger than the pipe: partial writes are resumed
    os.close(w)
    t.join(10)
    assert result == [[b"small", b"", b"head-" + big[10:1_000_010] + b"-tail", big]]


def test_writer_frames_never_interleave(pipe):
    r, w = pipe
    writer = FrameWriter(w)
    result: list[list[bytes | OversizedFrame]] = []
    reader = threading.Thread(target=lambda: result.append(read_all(FrameReader(r, 1 << 20))))
    reader.start()

    def spam(byte: int) -> None:
        for n in range(40):
            writer.write_parts([bytes([byte]) * (1000 + n * 3000)])

    threads = [threading.Thread(target=spam, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(w)
    reader.join(10)
    bodies = result[0]
    assert len(bodies) == 160
    for body in bodies:
        assert body == bytes([body[0]]) * len(body)


def test_set_pipe_size():
    r, w = os.pipe()
    try:
        assert set_pipe_size(w, 1 << 20) in (True, False)  # may exceed the OS limit
        assert set_pipe_size(w, 64 * 1024) is True
    finally:
        os.close(r)
        os.close(w)
    with tempfile.TemporaryFile() as f:
        assert set_pipe_size(f.fileno()) is False


# -- protocol -------------------------------------------------------------------

def test_parse_request_and_notification():
    body = msgpack.packb([0, 7, "ping", {}], use_bin_type=True)
    assert protocol.parse(body) == protocol.Request(7, "ping", {})
    body = msgpack.packb([2, "cancel", {"id": 7}], use_bin_type=True)
    assert protocol.parse(body) == protocol.Notification("cancel", {"id": 7})


@pytest.mark.parametrize(("message", "request_id"), [
    ({"not": "an array"}, None),
    ([], None),
    ([1, 5, None, {}], None),  # a response
    ([9, "x"], None),
    ([True, 5, "ping", {}], None),
    ([0, 5, "ping"], 5),
    ([0, 5, "ping", {}, 1], 5),
    ([0, -1, "ping", {}], None),
    ([0, 2**32, "ping", {}], None),
    ([0, 5.0, "ping", {}], None),
    ([0, 5, b"ping", {}], 5),
    ([0, 5, "ping", [1]], 5),
    ([2, "cancel"], None),
    ([2, 5, {}], None),
    ([2, "cancel", []], None),
])
def test_parse_rejects_bad_shapes(message, request_id):
    with pytest.raises(protocol.BadMessage) as info:
        protocol.parse(msgpack.packb(message, use_bin_type=True))
    assert info.value.code == "invalid_message"
    assert info.value.request_id == request_id


@pytest.mark.parametrize("body", [b"", b"\xc1", b"\x94\x00", b"\x90\x90", b"\x81\x01\x02"])
def test_unpack_rejects_non_msgpack_and_non_str_keys(body):
    with pytest.raises(protocol.BadMessage):
        protocol.unpack(body)


@pytest.mark.parametrize(("head", "expected"), [
    (msgpack.packb([0, 12, "x", {}]), 12),
    (msgpack.packb([0, 300, "x", {}])[:5], 300),
    (msgpack.packb([0, 300, "x", {}])[:4], None),  # the id is cut
    (msgpack.packb([0, 2**32 - 1, "x", {}])[:7], 2**32 - 1),
    (msgpack.packb([0, 2**32, "x", {}])[:10], None),
    (msgpack.packb([2, "cancel", {}]), None),
    (msgpack.packb([0, -3, "x", {}]), None),
    (b"\x94\x00", None),
    (b"", None),
    (b"\xc1\xc1", None),
    (b"\xdc\x00\x04\x00\x07", 7),  # array 16 header
])
def test_peek_request_id(head, expected):
    assert protocol.peek_request_id(head) == expected


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 300_000])
@pytest.mark.parametrize("rid", [0, 127, 128, 2**32 - 1])
def test_stream_data_parts_equal_a_packed_notification(size, rid):
    data = os.urandom(size)
    parts = protocol.stream_data_parts(rid, memoryview(data))
    assert parts[1].obj is data  # the payload itself, not a copy
    expected = protocol.pack_notification("stream.data", {"data": data, "id": rid})
    assert b"".join(bytes(p) for p in parts) == expected


def test_pack_response_keeps_bin_and_str_apart():
    body = protocol.pack_response(3, None, {"s": "abc", "b": b"abc", "f": math.nan})
    _, rid, err, result = msgpack.unpackb(body, raw=False)
    assert (rid, err) == (3, None)
    assert result["s"] == "abc" and result["b"] == b"abc" and math.isnan(result["f"])
    assert b"\xa3abc" in body and b"\xc4\x03abc" in body
