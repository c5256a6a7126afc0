"""Messages on the wire: msgpack-rpc shapes, packing and shape checks.

Pure functions, no I/O. Bodies are decoded with ``raw=False`` (str stays
str, bin becomes bytes) and ``strict_map_key=True``, so a map key that is not
a str (or bin) makes the body an ``invalid_message``: the protocol's keys are
str. Everything is encoded with ``use_bin_type=True``: bytes, bytearray and
memoryview become bin, str becomes str. Floats are float64; NaN and the
infinities are ordinary Python floats.

A frame may hold at most :data:`MAX_FRAME_ELEMENTS` values inside its arrays
and maps (PROTOCOL.md §1), so that a small frame of many tiny values (a
16 MB array of empty arrays would take over a gigabyte as Python objects)
cannot exhaust memory: one container longer than that is refused at its
header, and decoding stops once the containers completed so far prove the
frame over the limit.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, cast

import msgpack

from pybridge.errors import InvalidMessage

__all__ = [
    "NOTIFICATION",
    "REQUEST",
    "RESPONSE",
    "MAX_FRAME_ELEMENTS",
    "BadMessage",
    "Notification",
    "Request",
    "pack",
    "pack_notification",
    "pack_response",
    "parse",
    "peek_request_id",
    "stream_data_parts",
    "unpack",
]

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2

#: Ids are unsigned and below 2**32 (PROTOCOL.md §2).
MAX_ID = 2**32 - 1

#: The most values one frame may hold inside its arrays and maps: the sum of
#: the arrays' lengths plus twice the maps' sizes (PROTOCOL.md §1).
MAX_FRAME_ELEMENTS = 1 << 20

Buffer = bytes | bytearray | memoryview


class Request(NamedTuple):
    """``[0, id, method, params]`` from the client."""

    id: int
    method: str
    params: dict[str, Any]


class Notification(NamedTuple):
    """``[2, method, params]``, either way."""

    method: str
    params: dict[str, Any]


class BadMessage(InvalidMessage):
    """An ``invalid_message`` that remembers the request id, when one was read."""

    def __init__(self, message: str, request_id: int | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.request_id = request_id


def pack(obj: Any) -> bytes:
    """Encode one value (bin for bytes-like, str for str)."""
    return cast(bytes, msgpack.packb(obj, use_bin_type=True))


class _TooManyElements(Exception):
    """Raised from the decoding hooks once a frame is known to be over the limit."""


class _ElementCounter:
    """Hooks for :func:`msgpack.unpackb` that count the values decoded into containers.

    Each completed array adds its length, each map twice its size. The hooks
    only see containers once they are complete, so the containers themselves
    are counted too: a frame of ``limit + 2`` completed containers holds more
    than ``limit`` values inside containers (every container but the
    outermost is one), whatever is still being decoded.
    """

    __slots__ = ("containers", "limit", "values")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.values = 0
        self.containers = 0

    def _add(self, n: int) -> None:
        self.values += n
        self.containers += 1
        if self.values > self.limit or self.containers > self.limit + 1:
            raise _TooManyElements()

    def on_list(self, items: list[Any]) -> list[Any]:
        self._add(len(items))
        return items

    def on_map(self, entries: dict[Any, Any]) -> dict[Any, Any]:
        self._add(2 * len(entries))
        return entries


def unpack(body: Buffer, max_elements: int = MAX_FRAME_ELEMENTS) -> Any:
    """Decode exactly one value; raise :class:`BadMessage` if ``body`` is not one.

    A body with more than ``max_elements`` values inside its arrays and maps
    is a :class:`BadMessage` too, found before it is all decoded.
    """
    counter = _ElementCounter(max_elements)
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True,
                               max_array_len=max_elements, max_map_len=max_elements,
                               list_hook=counter.on_list, object_hook=counter.on_map)
    except _TooManyElements:
        raise _too_many(max_elements) from None
    except ValueError as e:
        if "exceeds max_array_len" in str(e) or "exceeds max_map_len" in str(e):
            raise _too_many(max_elements) from None
        raise BadMessage(f"the frame's body is not one msgpack value: {e}") from None
    except Exception as e:  # noqa: BLE001 -- msgpack raises several types for bad input
        raise BadMessage(f"the frame's body is not one msgpack value: {e}") from None


def _too_many(limit: int) -> BadMessage:
    return BadMessage(f"the frame holds more than {limit} values in its arrays and maps, "
                      "the limit per frame: send fewer items per request", limit=limit)


def _is_id(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_ID


def parse(body: Buffer) -> Request | Notification:
    """Decode a frame's body and check its shape.

    Returns a :class:`Request` or a :class:`Notification`; raises
    :class:`BadMessage` (carrying the request id when it could be read)
    for anything else.
    """
    msg = unpack(body)
    if type(msg) is not list or not msg:
        raise BadMessage(f"a message must be a msgpack array, got {_kind(msg)}")
    kind = msg[0]
    if kind == REQUEST and type(kind) is int:
        rid = msg[1] if len(msg) > 1 and _is_id(msg[1]) else None
        if len(msg) != 4:
            raise BadMessage(f"a request has 4 elements, got {len(msg)}", rid)
        if rid is None:
            raise BadMessage("a request id must be an unsigned integer below 2^32")
        if type(msg[2]) is not str:
            raise BadMessage(f"a method name must be a str, got {_kind(msg[2])}", rid)
        if type(msg[3]) is not dict:
            raise BadMessage(f"params must be a map, got {_kind(msg[3])}", rid)
        return Request(rid, msg[2], msg[3])
    if kind == NOTIFICATION and type(kind) is int:
        if len(msg) != 3:
            raise BadMessage(f"a notification has 3 elements, got {len(msg)}")
        if type(msg[1]) is not str:
            raise BadMessage(f"a method name must be a str, got {_kind(msg[1])}")
        if type(msg[2]) is not dict:
            raise BadMessage(f"params must be a map, got {_kind(msg[2])}")
        return Notification(msg[1], msg[2])
    if kind == RESPONSE and type(kind) is int:
        raise BadMessage("the sidecar accepts requests and notifications, not responses")
    raise BadMessage(f"unknown message type {kind!r}")


def peek_request_id(head: Buffer) -> int | None:
    """Read the request id from the first bytes of a body, if they hold one.

    Used for bodies that cannot be decoded whole (oversized or corrupt), so
    the error reply can still name its request.
    """
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(head) + 1)
    try:
        unpacker.feed(head)
        if unpacker.read_array_header() != 4 or unpacker.unpack() != REQUEST:
            return None
        rid = unpacker.unpack()
    except Exception:  # noqa: BLE001 -- OutOfData, or bytes that are not msgpack at all
        return None
    return rid if _is_id(rid) else None


def pack_response(id: int, error: dict[str, Any] | None, result: Any) -> bytes:
    """``[1, id, error, result]``: exactly one of ``error`` and ``result`` is None."""
    return cast(bytes, msgpack.packb([RESPONSE, id, error, result], use_bin_type=True))


def pack_notification(method: str, params: dict[str, Any]) -> bytes:
    """``[2, method, params]``."""
    return cast(bytes, msgpack.packb([NOTIFICATION, method, params], use_bin_type=True))


# [2, "stream.data", {"data": <bin>, "id": id}] -- keys in bytewise order,
# like every map in the shared vectors.
_STREAM_DATA_HEAD = b"\x93\x02\xabstream.data\x82\xa4data"
_BIN8 = struct.Struct(">BB")
_BIN16 = struct.Struct(">BH")
_BIN32 = struct.Struct(">BI")


def stream_data_parts(id: int, data: memoryview) -> list[Buffer]:
    """The body of a ``stream.data`` notification as parts, ``data`` uncopied.

    The concatenation equals ``pack_notification("stream.data",
    {"data": data, "id": id})``; the parts let a writer send the payload
    slice with ``writev`` instead of copying it into a packed message.
    """
    n = data.nbytes
    if n < 0x100:
        bin_head = _BIN8.pack(0xC4, n)
    elif n < 0x10000:
        bin_head = _BIN16.pack(0xC5, n)
    else:
        bin_head = _BIN32.pack(0xC6, n)
    return [_STREAM_DATA_HEAD + bin_head, data, b"\xa2id" + msgpack.packb(id)]


def _kind(v: Any) -> str:
    names = {dict: "map", list: "array", str: "str", bytes: "bin", int: "int",
             float: "float", bool: "bool", type(None): "nil"}
    return names.get(type(v), type(v).__name__)
