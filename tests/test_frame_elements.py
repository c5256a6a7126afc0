"""The per-frame element limit (PROTOCOL.md §1): many tiny values cannot exhaust memory.

A frame of ``max_frame_bytes`` bounds the bytes, but 16 MB of empty msgpack
arrays decoded as Python lists take over a gigabyte. A frame may hold at most
``MAX_FRAME_ELEMENTS`` values inside its arrays and maps; a frame over it is
an ``invalid_message`` like any other bad frame, and the sidecar goes on.
"""

from __future__ import annotations

import struct
from pathlib import Path

import msgpack
import pytest
from helpers import SidecarProcess, pack

from pybridge.rpc.protocol import MAX_FRAME_ELEMENTS, BadMessage, unpack

L = MAX_FRAME_ELEMENTS


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 + n])
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def empties(n: int) -> bytes:
    """An array of ``n`` empty arrays."""
    return array_header(n) + b"\x90" * n


def request_around(rid: int, value: bytes) -> bytes:
    """``[0, rid, "echo", {"x": value}]`` with ``value`` already packed."""
    return b"\x94\x00" + pack(rid) + pack("echo") + b"\x81\xa1x" + value


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM line")


# 16 MB frames of tiny values, each over the limit in another way.
_SIXTEEN_MB = 16 * 1024 * 1024
ATTACKS = {
    # one array of 16M empty arrays: refused at its header
    "one long array": empties(_SIXTEEN_MB - 8),
    # 16 arrays of just under 1M empty arrays each: no container is too long
    "many arrays under the length limit": array_header(16) + empties(L - 1) * 16,
    # empty arrays nested so that none of the long ones ever completes
    "nested, never completing": (array_header(L) + b"\x90" * (L - 1)) * 15 + b"\x90",
    # 8M maps {"": nil}... in arrays under the limit: maps count twice
    "small maps": array_header(16) + (array_header(L // 2) + b"\x81\xa0\xc0" * (L // 2)) * 10
    + b"\x90" * 6,
    # 16M one-element arrays [[nil]] as pairs under the limit
    "nested pairs": array_header(16) + (array_header(L // 2) + b"\x91\xc0" * (L // 2)) * 16,
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_unpack_refuses_frames_over_the_element_limit(name):
    with pytest.raises(BadMessage) as info:
        unpack(ATTACKS[name])
    assert "more than 1048576 values" in str(info.value)
    assert info.value.to_wire()["details"]["limit"] == L


def test_unpack_accepts_frames_at_the_limit():
    assert unpack(empties(L)) == [[]] * L
    assert unpack(msgpack.packb([list(range(L // 2)), list(range(L // 2 - 2))])) == [
        list(range(L // 2)), list(range(L // 2 - 2))]
    assert len(unpack(msgpack.packb({str(i): i for i in range(L // 2)}))) == L // 2
    # nested: L values in all, counting the inner arrays themselves
    body = array_header(1024) + (array_header(1023) + b"\x00" * 1023) * 1024
    assert len(unpack(body)) == 1024


@pytest.mark.parametrize("body", [
    empties(L + 1),
    msgpack.packb([list(range(L // 2)), list(range(L // 2 - 1))]),
    msgpack.packb({str(i): i for i in range(L // 2 + 1)}),
    array_header(1025) + (array_header(1023) + b"\x00" * 1023) * 1025,
], ids=["long array", "two arrays", "map", "nested"])
def test_unpack_refuses_one_more(body):
    with pytest.raises(BadMessage, match="more than 1048576 values"):
        unpack(body)


def test_sidecar_memory_stays_bounded_and_it_keeps_serving():
    with SidecarProcess(workers=1) as sc:
        sc.ping()
        before = vm_hwm_kib(sc.pid)
        for rid, (name, value) in enumerate(ATTACKS.items(), start=100):
            sc.send_frame(request_around(rid, value))
            reply = sc.response(rid, timeout=60)
            assert reply.error is not None, name
            assert reply.error["code"] == "invalid_message", (name, reply.error)
            assert "more than 1048576 values" in reply.error["message"], name
            assert sc.ping().ok, name
        grew_mib = (vm_hwm_kib(sc.pid) - before) / 1024
        assert grew_mib < 200, f"peak RSS grew by {grew_mib:.0f} MiB"
        # a frame just under the limit is decoded: its unknown param is what is refused
        reply = sc.call("echo", {"data": b"abc", "pad": [[]] * (L - 100)}, timeout=60)
        assert reply.error is not None and reply.error["code"] == "invalid_params", reply.error
        assert reply.error["details"]["param"] == "pad"


def test_a_read_of_more_values_than_a_frame_holds_is_too_large(tmp_path):
    """The sidecar never sends a frame the client would refuse: such a read is too_large."""
    store = {"kind": "filesystem", "path": str(tmp_path)}
    n = L - 1024  # the most values one read answers
    with SidecarProcess(workers=1) as sc:
        sc.call("array.create", {"store": store, "path": "s", "shape": [n + 1],
                                 "chunks": [1 << 18], "dtype": "string",
                                 "fill_value": ""}).unwrap()
        reply = sc.call("array.read", {"store": store, "path": "s"}, timeout=60)
        assert reply.error is not None and reply.error["code"] == "too_large", reply.error
        assert reply.error["details"]["limit"] == n
        result = sc.call("array.read", {"store": store, "path": "s", "stop": [n]},
                         timeout=120).unwrap()
        assert len(result["values"]) == n and set(result["values"]) == {""}
