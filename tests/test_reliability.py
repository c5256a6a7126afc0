"""Faults and bad input, injected for real into a real sidecar (issue 6).

Each test injects one fault or one kind of bad input and checks the promise
that covers it: a specific error code, the sidecar still serving, and
nothing left behind (processes, files in ``/dev/shm``, semaphores). The
Elixir side of the same promises (SIGKILL mid-stream, a killed worker
through the client, a killed BEAM, 10 000 requests in flight) is in
``elixir_client/test/zarr_bridge/reliability_test.exs``.

The module-level functions under "Tasks" run in worker processes, which
import this module by name.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import random
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import SidecarProcess, frame, fs, pack, wait_for

from pybridge.handoff import shm
from pybridge.methods import method_table
from pybridge.rpc.params import Param
from pybridge.rpc.server import error_to_wire
from pybridge.settings import Settings
from pybridge.pool.pool import RemoteError, WorkerPool

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

MiB = 1 << 20


# --------------------------------------------------------------------------
# Tasks (run in the workers)


def answer(payload: Any, value: Any) -> Any:
    return value


def refuse_to_unpickle() -> None:
    raise RuntimeError("this argument cannot be unpickled here")


class Unpicklable:
    """Pickles fine in the sidecar; unpickling it in the worker raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (refuse_to_unpickle, ())


def raise_value_error(payload: Any) -> None:
    raise ValueError("bad value in the worker")


# --------------------------------------------------------------------------
# Helpers


def expect(reply: Any, code: str, **details: Any) -> dict[str, Any]:
    assert reply.error is not None, f"expected {code}, got a result: {reply.result}"
    assert reply.error["code"] == code, reply.error
    assert isinstance(reply.error["message"], str) and reply.error["message"]
    for key, value in details.items():
        assert reply.error["details"].get(key) == value, reply.error
    return reply.error


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat_path).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(text.split(" ", 1)[0]))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"


def segments_of(pid: int) -> list[str]:
    return glob.glob(os.path.join(shm.SHM_DIR, f"{shm.PREFIX}{pid}-*"))


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def started(sc: SidecarProcess, workers: int) -> list[int]:
    """Wait until the sidecar's pool runs ``workers`` workers; return its process tree."""
    sc.call("codec.encode", {"codec": {"id": "zlib"}, "data": b"warm"}, timeout=60).unwrap()

    def tree() -> list[int] | None:
        kids = children(sc.pid)
        return kids if any(len(children(k)) >= workers for k in kids) else None

    assert wait_for(lambda: tree() is not None, timeout=30), "the worker pool did not start"
    return [sc.pid, *(tree() or [])]


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


# --------------------------------------------------------------------------
# Frames


def test_length_prefix_of_4_gib_is_refused_without_allocating(sidecar: SidecarProcess) -> None:
    """A frame announcing 2^32 - 1 bytes: refused with frame_too_large, body never stored."""
    sidecar.ping()
    rid = 4_000_000_000
    body_head = pack([0, rid, "echo", {"data": b""}])[:-1]  # the head of a request
    length = 2**32 - 1
    sidecar.send_raw(struct.pack(">I", length) + body_head)
    zeros = memoryview(bytes(4 * MiB))
    remaining = length - len(body_head)
    while remaining:
        n = min(remaining, len(zeros))
        sidecar.send_raw(zeros[:n])
        remaining -= n
    expect(sidecar.response(rid, timeout=120), "frame_too_large", bytes=length,
           limit=64 * MiB)
    sidecar.ping()  # and it keeps serving
    peak = vm_kib(sidecar.pid, "VmHWM")
    assert peak < 150 * 1024, f"the sidecar's peak RSS reached {peak} KiB"


@pytest.mark.parametrize("cut", [
    b"\x00",  # one byte of a header
    b"\x00\x00\x10",  # three bytes of a header
    struct.pack(">I", 1000) + pack([0, 99, "echo", {"data": b"x" * 200}])[:50],  # in a body
    struct.pack(">I", 200 * MiB) + b"\x94\x00\x63" + bytes(100_000),  # in an oversized body
], ids=["header-1", "header-3", "body", "oversized-body"])
def test_truncated_frame_then_eof_leaves_nothing_behind(cut: bytes) -> None:
    """Input ends mid-frame while work is in flight: clean exit, nothing left running."""
    sc = SidecarProcess(workers=2)
    try:
        tree = started(sc, 2)
        sc.request("sleep", {"ms": 60_000})
        upload = sc.request("echo", {"stream": {"bytes": 10 * MiB}})
        sc.upload(upload, bytes(2 * MiB))  # an upload cut short too
        sc.request("codec.encode", {"codec": {"id": "zlib"}, "data": os.urandom(8 * MiB)})
        sc.send_raw(cut)
        t0 = time.monotonic()
        sc.close_input()
        assert sc.wait(10) == 0
        assert time.monotonic() - t0 < 3.0
        assert wait_for(lambda: not any(alive(p) for p in tree), timeout=2.0), \
            f"still running: {[p for p in tree if alive(p)]}"
        assert segments_of(sc.pid) == []
        assert "Traceback" not in sc.stderr_text(), sc.stderr_text()
    finally:
        sc.close()


# --------------------------------------------------------------------------
# Shutdown after blosc: no leaked semaphore


def test_blosc_leaves_no_semaphore_to_leak(tmp_path: Path) -> None:
    """numcodecs makes a multiprocessing lock (a POSIX semaphore) on a process's
    first blosc call. Workers ended by a signal (every shutdown terminates them,
    a crash kills them) never unregister it, and the resource tracker then warns
    about "leaked semaphore objects" (and would leave /dev/shm/sem.* behind if it
    died too). The sidecar gives blosc a thread lock instead: no semaphore at all.
    """
    before = set(glob.glob("/dev/shm/sem.*"))
    sc = SidecarProcess(workers=2)
    try:
        tree = started(sc, 2)
        blosc = {"id": "blosc", "cname": "lz4", "clevel": 1, "shuffle": 1}
        data = np.arange(1 << 16, dtype="int32").tobytes()
        for _ in range(6):  # both workers
            enc = sc.call("codec.encode", {"codec": blosc, "data": data, "dtype": "int32"},
                          timeout=30).unwrap()["data"]
            assert sc.call("codec.decode", {"codec": blosc, "data": enc}).unwrap()["data"] \
                == data
        # a small array request decodes blosc in the sidecar process itself
        sc.call("array.create", {"store": fs(tmp_path), "path": "c", "shape": [8],
                                 "chunks": [8], "dtype": "int32", "zarr_format": 2,
                                 "compressor": blosc}).unwrap()
        sc.call("array.write", {"store": fs(tmp_path), "path": "c", "shape": [8],
                                "data": bytes(range(32))}).unwrap()
        sc.call("array.read", {"store": fs(tmp_path), "path": "c"}).unwrap()
        assert set(glob.glob("/dev/shm/sem.*")) - before == set()
        everything = tree + [p for p in children(sc.pid) if p not in tree]
        sc.close_input()  # the everyday shutdown: the pool terminates its workers
        assert sc.wait(10) == 0
        # the resource tracker reports leaks when its last user is gone
        assert wait_for(lambda: not any(alive(p) for p in everything), timeout=10)
        time.sleep(0.2)
        err = sc.stderr_text()
        assert "leaked semaphore" not in err, err
        assert set(glob.glob("/dev/shm/sem.*")) - before == set()
    finally:
        sc.close()


# --------------------------------------------------------------------------
# Cancelled handoff: the segment is removed by the sidecar


class _StubContext:
    """Just enough of a SidecarContext for a Server that never needs the pool."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start_pool(self) -> None:
        pass


def test_a_reply_dropped_by_a_cancel_removes_its_handoff_segment() -> None:
    """The cancel lands after the handler's last check: the reply naming a
    segment is dropped, so the server must remove the segment itself."""
    from pybridge.rpc.framing import FrameReader, FrameWriter
    from pybridge.methods import Method
    from pybridge.rpc.server import Server

    made: list[str] = []

    def handoff(call: Any) -> dict[str, Any]:
        seg = shm.Segment.create(4096, "read")
        seg.close()
        made.append(seg.path)
        call.cancelled.set()  # as the reader thread does when the cancel arrives
        return {"shm": {"path": seg.path, "bytes": 4096}}

    settings = Settings(workers=1)
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    server = Server(settings, FrameReader(r_in, settings.max_frame_bytes), FrameWriter(w_out),
                    _StubContext(settings),  # type: ignore[arg-type]
                    {"handoff": Method("handoff", handoff, {})})
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        os.write(w_in, frame(pack([0, 1, "handoff", {}])))
        assert wait_for(lambda: made and not os.path.exists(made[0]), timeout=5), \
            f"the dropped reply's segment is still there: {made}"
    finally:
        os.close(w_in)
        thread.join(5)
        os.close(w_out)
        replies = os.read(r_out, 1 << 16)
        os.close(r_out)
        os.close(r_in)
        for path in made:
            if os.path.exists(path):
                os.unlink(path)
    assert replies == b"", "a reply was sent for a cancelled request"


def test_cancelled_handoff_reads_leave_no_segment(sidecar_factory: Any, tmp_path: Path) -> None:
    """Cancels land before, during and just after each read: no segment is ever left.

    The cancels that land after the handler's last check but before its reply
    is written used to leak the segment the reply named.
    """
    sc = sidecar_factory(["--handoff-threshold", "64KiB"], workers=2)
    z = zarr.create_array(str(tmp_path / "h"), shape=(256, 512), chunks=(64, 512),
                          dtype="float64", compressors=None)
    z[...] = 1.5
    params = {"store": fs(tmp_path / "h"), "handoff": True}
    durations = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = sc.call("array.read", params, timeout=60).unwrap()
        durations.append(time.perf_counter() - t0)
        os.unlink(res["shm"]["path"])
    duration = min(durations)
    rng = random.Random(6)
    for _ in range(40):
        rid = sc.request("array.read", params)
        time.sleep(rng.uniform(0.3, 1.2) * duration)
        sc.cancel(rid)
    sc.ping()
    time.sleep(0.3)
    for msg in sc.pending(wait=0.2):  # replies that beat their cancel are ours to remove
        if msg[0] == 1 and isinstance(msg[3], dict) and "shm" in msg[3]:
            os.unlink(msg[3]["shm"]["path"])
    sc._inbox.clear()
    assert [p for p in segments_of(sc.pid) if "-read-" in p] == []


# --------------------------------------------------------------------------
# Workers: a task that cannot be unpickled, and the types of remote errors


def test_task_that_cannot_be_unpickled_fails_alone() -> None:
    with WorkerPool(1) as pool:
        assert pool.wait_ready(60)
        pid = pool.submit(answer, "first").result(30) and pool.pids()[0]
        with pytest.raises(RemoteError) as info:
            pool.submit(answer, Unpicklable()).result(30)
        assert info.value.python_type == "RuntimeError"
        assert "cannot be unpickled here" in info.value.remote_traceback
        assert pool.submit(answer, "after").result(30) == "after"
        assert pool.pids() == [pid], "the worker died instead of reporting the error"


def test_worker_exceptions_keep_their_own_type_on_the_wire() -> None:
    with WorkerPool(1) as pool:
        future = pool.submit(raise_value_error)
        with pytest.raises(RemoteError) as info:
            future.result(60)
    wire = error_to_wire(info.value)
    assert wire["code"] == "internal"
    assert wire["python_type"] == "ValueError"
    assert wire["message"] == "ValueError: bad value in the worker"
    assert "raise_value_error" in wire["traceback"]  # the worker's own traceback


# --------------------------------------------------------------------------
# Resource limits on uploads


def test_upload_over_max_request_bytes_is_refused_before_it_is_read(
        sidecar_factory: Any) -> None:
    sc = sidecar_factory(["--max-request-bytes", "1MiB"])
    assert sc.call("hello").unwrap()["limits"]["max_request_bytes"] == MiB
    rid = sc.request("echo", {"stream": {"bytes": MiB + 1}})
    expect(sc.response(rid), "too_large", bytes=MiB + 1, limit=MiB)
    sc.upload(rid, bytes(MiB + 1))  # the pieces that follow are dropped
    ok = sc.request("echo", {"stream": {"bytes": MiB}})
    sc.upload(ok, bytes(MiB))
    assert sc.response(ok, timeout=30).data == bytes(MiB)
    expect(sc.call("codec.decode", {"codec": {"id": "zlib"}, "stream": {"bytes": 2 * MiB}}),
           "too_large")
    sc.ping()


# --------------------------------------------------------------------------
# Params: a wrong type in every param of every method, from the method table

#: Values tried as right and wrong values of every param.
CANDIDATES: list[Any] = [
    "text", b"bin", 0, 1, 2, 3, -1, 2**40, 1.5, True, False, [], [1], [2, 2], [1.5], ["x"],
    [None], [b"x"], [{}], {}, {"id": "zlib"}, {"x": 1},
]


def _choices(p: Param) -> list[Any]:
    if p.expected.startswith("one of "):
        return list(ast.literal_eval("[" + p.expected[len("one of "):] + "]"))
    return []


def _valid(p: Param) -> Any:
    for v in _choices(p) + CANDIDATES:
        if p.check(v):
            return v
    raise AssertionError(f"no valid candidate for a param expecting {p.expected}")


def _wrong(p: Param) -> list[Any]:
    wrong = [v for v in CANDIDATES if not p.check(v)]
    if p.required and not p.nullable:
        wrong.append(None)
    return wrong


def _param_cases() -> list[tuple[str, str, Any, dict[str, Any]]]:
    table = method_table(Settings(workers=1, test_methods=True))
    cases = []
    for name, method in sorted(table.items()):
        base = {k: _valid(p) for k, p in method.params.items() if p.required}
        for pname, p in method.params.items():
            for bad in _wrong(p):
                cases.append((name, pname, bad, {**base, pname: bad}))
    return cases


def test_wrong_type_in_every_param_of_every_method(sc: SidecarProcess) -> None:
    cases = _param_cases()
    methods = {m for m, _, _, _ in cases}
    assert {"hello", "sleep", "codec.decode", "array.read", "array.write"} <= methods
    ids = [sc.request(m, params) for m, _, _, params in cases]
    failures = []
    for rid, (method, pname, bad, _) in zip(ids, cases):
        reply = sc.response(rid, timeout=30)
        got = reply.error or {}
        if got.get("code") != "invalid_params" or got.get("details", {}).get("param") != pname:
            failures.append(f"{method} {pname}={bad!r}: {reply.error or reply.result}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:20])
    sc.ping()


# --------------------------------------------------------------------------
# Shapes, selections, names and attributes

@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("arrays")
    zarr.create_array(str(root / "a"), shape=(10, 10), chunks=(4, 4), dtype="int32",
                      fill_value=7)
    return root


@pytest.mark.parametrize(("method", "params", "code"), [
    ("array.create", {"path": "n", "shape": [-1], "chunks": [1]}, "invalid_params"),
    ("array.create", {"path": "n", "shape": [4], "chunks": [0]}, "invalid_params"),
    ("array.create", {"path": "n", "shape": [4, 4], "chunks": [2]}, "invalid_params"),
    ("array.read", {"path": "a", "start": [0, -5]}, "invalid_selection"),
    ("array.read", {"path": "a", "start": [2**63]}, "invalid_selection"),
    ("array.read", {"path": "a", "stop": [2**64 - 1, 1]}, "invalid_selection"),
    ("array.read", {"path": "a", "start": [], "stop": []}, "invalid_selection"),
    ("array.read", {"path": "a", "start": [0, 0, 0]}, "invalid_selection"),
    ("array.read", {"path": "a", "start": [5, 5], "stop": [4, 6]}, "invalid_selection"),
    ("array.write", {"path": "a", "shape": [-1, 2], "data": b""}, "invalid_selection"),
    ("array.write", {"path": "a", "shape": [2**62, 2**62], "data": b"\0" * 8},
     "invalid_selection"),
    ("array.write", {"path": "a", "start": [2**63, 0], "shape": [1, 1], "data": b"\0" * 4},
     "invalid_selection"),
    ("array.write", {"path": "a", "shape": [1, 1, 1], "data": b"\0" * 4}, "invalid_selection"),
    ("array.write", {"path": "a", "shape": [10, 10], "data": b"\0" * 12}, "data_size_mismatch"),
    ("codec.decode", {"codec": {"id": "zlib"}, "data": b"x", "shape": [-1]}, "invalid_params"),
    ("codec.encode", {"codec": {"id": "zlib"}, "data": b"\0" * 8, "dtype": "int32",
                      "shape": [2**40]}, "data_size_mismatch"),
    ("codec.pipeline_decode", {"zarr_format": 2, "dtype": "int32", "shape": [2**40],
                               "compressor": None, "filters": None, "order": "C",
                               "data": b"x"}, "data_size_mismatch"),
])
def test_bad_shapes_and_selections(sc: SidecarProcess, arrays: Path, method: str,
                                   params: dict[str, Any], code: str) -> None:
    if method.startswith("array."):
        params = {"store": fs(arrays), **params}
        if method == "array.create":
            params.setdefault("dtype", "int32")
    expect(sc.call(method, params, timeout=30), code)
    # the other arrays are still usable
    data = sc.call("array.read", {"store": fs(arrays), "path": "a", "stop": [1, 2]}).unwrap()
    assert data["data"] == np.full((1, 2), 7, "<i4").tobytes()


def test_huge_arrays_are_too_large_not_internal(sc: SidecarProcess, tmp_path: Path) -> None:
    """Extents past 64 bits of bytes: the error still names them (as text)."""
    params = {"store": fs(tmp_path), "path": "h", "shape": [2**40, 2**40],
              "chunks": [2**20, 2**20], "dtype": "float64"}
    sc.call("array.create", params).unwrap()
    err = expect(sc.call("array.read", {"store": fs(tmp_path), "path": "h"}), "too_large")
    assert str(err["details"]["bytes"]) == str(2**83)
    sc.ping()


@pytest.mark.parametrize(("method", "params", "code"), [
    ("array.create", {"dtype": "float4x"}, "unsupported_dtype"),
    ("array.create", {"dtype": "O"}, "unsupported_dtype"),
    ("array.create", {"dtype": 5}, "unsupported_dtype"),
    ("array.create", {"dtype": [["a", "nope"]]}, "unsupported_dtype"),
    ("array.create", {"dtype": "int8", "compressor": {"id": "no-such-codec"}},
     "codec_unavailable"),
    ("array.create", {"dtype": "int8", "filters": [{"id": "no-such-filter"}]},
     "codec_unavailable"),
    ("array.create", {"dtype": "int8", "codecs": [{"name": "bytes"}, {"name": "nope"}]},
     "codec_unavailable"),
    ("array.create", {"dtype": "int8", "compressor": {"level": 1}}, "invalid_codec_config"),
    ("codec.encode", {"codec": {"id": "no-such-codec"}, "data": b"x"}, "codec_unavailable"),
    ("codec.encode", {"codec": {"id": 5}, "data": b"x"}, "invalid_codec_config"),
    ("codec.decode", {"codec": {"id": "zlib"}, "data": b"x", "dtype": "float4x"},
     "unsupported_dtype"),
    ("codec.pipeline_decode", {"zarr_format": 3, "dtype": "int8", "shape": [1],
                               "codecs": [{"name": "no-such-codec"}], "data": b"x"},
     "codec_unavailable"),
])
def test_names_that_do_not_exist(sc: SidecarProcess, tmp_path: Path, method: str,
                                 params: dict[str, Any], code: str) -> None:
    if method == "array.create":
        params = {"store": fs(tmp_path), "path": "x", "shape": [4], "chunks": [2], **params}
    expect(sc.call(method, params, timeout=30), code)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    sc.ping()


@pytest.mark.parametrize("attributes", [
    {"a": b"bin"},
    {"a": [1, {"b": b"nested"}]},
    {"a": {"b": [[b""]]}},
], ids=["bin", "nested-bin", "deep-bin"])
@pytest.mark.parametrize("method", ["array.put_attributes", "array.update_attributes",
                                    "array.create"])
def test_attributes_that_are_not_json(sc: SidecarProcess, arrays: Path, tmp_path: Path,
                                      method: str, attributes: dict[str, Any]) -> None:
    before = sc.call("array.get_attributes", {"store": fs(arrays), "path": "a"}).unwrap()
    if method == "array.create":
        params = {"store": fs(tmp_path), "path": "c", "shape": [2], "chunks": [2],
                  "dtype": "int8", "attributes": attributes}
    else:
        params = {"store": fs(arrays), "path": "a", "attributes": attributes}
    expect(sc.call(method, params), "invalid_params", param="attributes")
    assert sc.call("array.get_attributes", {"store": fs(arrays), "path": "a"}).unwrap() == before
    assert not (tmp_path / "c").exists()


def test_attributes_with_msgpack_ext_values_are_refused(sc: SidecarProcess,
                                                        arrays: Path) -> None:
    """ext types (including the timestamp) decode to Python objects JSON cannot hold."""
    for ext in (b"\xd4\x05\x00", b"\xd6\xff\x00\x00\x00\x01"):  # fixext 1, timestamp 32
        body = (b"\x94\x00\xcd\x30\x39" + pack("array.put_attributes")
                + b"\x83" + pack("store") + pack(fs(arrays)) + pack("path") + pack("a")
                + pack("attributes") + b"\x81" + pack("t") + ext)
        sc.send_frame(body)
        expect(sc.response(12345), "invalid_params", param="attributes")
    sc.ping()


# --------------------------------------------------------------------------
# Stores: broken metadata, broken chunks, unreadable chunks

V2 = {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<i4", "compressor": None,
      "fill_value": 0, "filters": None, "order": "C"}
V3 = {"zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "int32",
      "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
      "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
      "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
      "attributes": {}}

BROKEN_METADATA: dict[str, tuple[str, bytes]] = {
    "v2-truncated": (".zarray", json.dumps(V2).encode()[:-9]),
    "v3-truncated": ("zarr.json", json.dumps(V3).encode()[:40]),
    "v2-empty": (".zarray", b""),
    "v3-not-utf8": ("zarr.json", b"\xff\xfe{\x00"),
    "v3-not-an-object": ("zarr.json", b"[1, 2, 3]"),
    "v2-shape-is-text": (".zarray", json.dumps({**V2, "shape": "four"}).encode()),
    "v2-chunks-null": (".zarray", json.dumps({**V2, "chunks": None}).encode()),
    "v2-negative-shape": (".zarray", json.dumps({**V2, "shape": [-4]}).encode()),
    "v3-shape-of-floats": ("zarr.json", json.dumps({**V3, "shape": [4.5]}).encode()),
    "v3-codecs-not-a-list": ("zarr.json", json.dumps({**V3, "codecs": "bytes"}).encode()),
    "v3-grid-mismatch": ("zarr.json", json.dumps(
        {**V3, "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}}}
    ).encode()),
    "v3-zarr-format-4": ("zarr.json", json.dumps({**V3, "zarr_format": 4}).encode()),
    "v3-zarr-format-text": ("zarr.json", json.dumps({**V3, "zarr_format": "3"}).encode()),
    "v3-no-zarr-format": ("zarr.json", json.dumps(
        {k: v for k, v in V3.items() if k != "zarr_format"}).encode()),
    "v2-zarr-format-3": (".zarray", json.dumps({**V2, "zarr_format": 3}).encode()),
    "v2-zarr-format-1": (".zarray", json.dumps({**V2, "zarr_format": 1}).encode()),
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one broken node per case, and a good array next to them."""
    root = tmp_path_factory.mktemp("broken")
    good = zarr.create_array(str(root / "good"), shape=(6,), chunks=(3,), dtype="int16")
    good[...] = np.arange(6, dtype="int16")
    for name, (fname, text) in BROKEN_METADATA.items():
        (root / name).mkdir()
        (root / name / fname).write_bytes(text)
    return root


def _good_still_reads(sc: SidecarProcess, root: Path) -> None:
    reply = sc.call("array.read", {"store": fs(root), "path": "good"}, timeout=30)
    assert reply.unwrap()["data"] == np.arange(6, dtype="<i2").tobytes()


@pytest.mark.parametrize("case", sorted(BROKEN_METADATA))
@pytest.mark.parametrize("method", ["array.open", "array.read"])
def test_corrupt_metadata_is_invalid_metadata(sc: SidecarProcess, stores: Path, case: str,
                                              method: str) -> None:
    expect(sc.call(method, {"store": fs(stores), "path": case}, timeout=30), "invalid_metadata")
    _good_still_reads(sc, stores)


def test_metadata_document_that_is_a_directory(sc: SidecarProcess, tmp_path: Path) -> None:
    (tmp_path / "d" / "zarr.json").mkdir(parents=True)
    code = sc.call("array.open", {"store": fs(tmp_path), "path": "d"}).code
    assert code in ("invalid_metadata", "store_error"), code


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("compressor", [
    None,
    {"id": "zstd", "level": 1},
    {"id": "blosc", "cname": "lz4", "clevel": 1, "shuffle": 1},
    {"id": "lz4", "acceleration": 1},
    {"id": "zlib", "level": 1},
], ids=lambda c: c["id"] if c else "none")
def test_corrupt_chunk_bytes_are_decode_failed(sc: SidecarProcess, tmp_path: Path, fmt: int,
                                               compressor: dict[str, Any] | None) -> None:
    st = {"store": fs(tmp_path), "path": "c"}
    sc.call("array.create", {**st, "shape": [64], "chunks": [16], "dtype": "float64",
                             "zarr_format": fmt, "compressor": compressor}).unwrap()
    data = np.arange(64, dtype="<f8")
    sc.call("array.write", {**st, "shape": [64], "data": data.tobytes()}).unwrap()
    chunk = tmp_path / "c" / ("1" if fmt == 2 else "c/1")
    raw = chunk.read_bytes()
    corruptions = [raw[: len(raw) // 2], b"\x00" * 7]
    if compressor is not None and compressor["id"] in ("zstd", "zlib"):
        # Formats with a magic number or checksum: every byte flipped is caught.
        # (blosc and lz4 can decode flipped bytes to garbage without noticing.)
        corruptions.append(bytes(b ^ 0x5A for b in raw))
    for bad in corruptions:
        chunk.write_bytes(bad)
        err = expect(sc.call("array.read", st, timeout=30), "decode_failed")
        assert err["details"].get("chunk") == ("1" if fmt == 2 else "c/1"), err
        # a partial write into that chunk has to decode it too
        expect(sc.call("array.write", {**st, "start": [17], "shape": [1],
                                       "data": b"\0" * 8}), "decode_failed")
        # the chunks around it are fine
        got = sc.call("array.read", {**st, "stop": [16]}).unwrap()["data"]
        assert got == data[:16].tobytes()
    sc.ping()


@pytest.mark.parametrize("fmt", [2, 3])
def test_chunk_that_is_a_directory_is_store_error(sc: SidecarProcess, tmp_path: Path,
                                                  fmt: int) -> None:
    st = {"store": fs(tmp_path), "path": "d"}
    sc.call("array.create", {**st, "shape": [8], "chunks": [4], "dtype": "int32",
                             "zarr_format": fmt, "compressor": None}).unwrap()
    sc.call("array.write", {**st, "shape": [8], "data": bytes(range(32))}).unwrap()
    chunk = tmp_path / "d" / ("0" if fmt == 2 else "c/0")
    chunk.unlink()
    chunk.mkdir()
    expect(sc.call("array.read", st), "store_error")
    expect(sc.call("array.write", {**st, "shape": [8], "data": bytes(32)}), "store_error")
    expect(sc.call("array.write", {**st, "start": [1], "shape": [1], "data": bytes(4)}),
           "store_error")
    assert sc.call("array.read", {**st, "start": [4]}).unwrap()["data"] == bytes(range(16, 32))


def _drop_dac_capabilities() -> None:
    """preexec_fn: lose CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH for good.

    The tests run as root, for whom mode 000 means nothing; without these
    two capabilities root obeys file modes like any user.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _can_drop_capabilities() -> str | None:
    """None when file modes can be enforced on a sidecar here, else why not."""
    if os.geteuid() != 0:
        return None  # not root: file modes apply anyway
    import subprocess

    probe = tempfile.NamedTemporaryFile(delete=False)
    try:
        os.chmod(probe.name, 0)
        done = subprocess.run(["cat", probe.name], preexec_fn=_drop_dac_capabilities,
                              capture_output=True)
    except OSError as e:
        return f"cannot drop capabilities: {e}"
    finally:
        os.unlink(probe.name)
    return None if done.returncode != 0 else "root still reads a mode-000 file"


class _ConfinedSidecar(SidecarProcess):
    """A sidecar without the capabilities that let root ignore file modes."""

    def start(self) -> SidecarProcess:
        import subprocess

        real_popen = subprocess.Popen

        def popen(*args: Any, **kwargs: Any) -> Any:
            kwargs["preexec_fn"] = _drop_dac_capabilities
            return real_popen(*args, **kwargs)

        subprocess.Popen = popen  # type: ignore[misc]
        try:
            return super().start()
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]


def test_permission_denied_chunk_is_store_error(tmp_path: Path) -> None:
    reason = _can_drop_capabilities()
    if reason:
        pytest.skip(reason)
    st = {"store": fs(tmp_path), "path": "p"}
    with _ConfinedSidecar(workers=1) as sc:
        sc.ping(timeout=30)
        sc.call("array.create", {**st, "shape": [8, 8], "chunks": [4, 4], "dtype": "int32",
                                 "compressor": {"id": "zstd", "level": 1}}).unwrap()
        data = np.arange(64, dtype="<i4").reshape(8, 8)
        sc.call("array.write", {**st, "shape": [8, 8], "data": data.tobytes()}).unwrap()
        chunk = tmp_path / "p" / "c" / "0" / "0"
        chunk.chmod(0)
        try:
            for params in ({}, {"stop": [2, 2]}):  # in the sidecar and on the worker path
                err = expect(sc.call("array.read", {**st, **params}, timeout=30),
                             "store_error")
                assert "ermission" in err["message"], err
            expect(sc.call("array.write", {**st, "start": [1, 1], "shape": [1, 1],
                                           "data": b"\0" * 4}), "store_error")
            # the other chunks are still usable
            got = sc.call("array.read", {**st, "start": [4, 4]}).unwrap()["data"]
            assert got == data[4:, 4:].tobytes()
            # a directory the sidecar may not write into
            (tmp_path / "p" / "c" / "1").chmod(0o555)
            expect(sc.call("array.write", {**st, "start": [4, 0], "shape": [4, 4],
                                           "data": bytes(64)}), "store_error")
        finally:
            chunk.chmod(0o644)
            (tmp_path / "p" / "c" / "1").chmod(0o755)
        sc.ping()
