"""Fuzzing the sidecar's framing and dispatch with hypothesis (issue 6).

Four targets, each checked against what the protocol promises:

1. :class:`~pybridge.rpc.framing.FrameReader` on arbitrary byte streams, cut
   into arbitrary pieces, against a reference model of the framing:
   the same frames, oversized frames recognised from their header, and a
   truncated stream reported as such.
2. :func:`~pybridge.rpc.protocol.parse` on arbitrary msgpack values and bytes:
   a request, a notification, or ``invalid_message`` (with the request id
   only when one could be read), never another exception.
3. :func:`~pybridge.rpc.params.validate` on arbitrary params for every method
   of the table: a complete dict or ``invalid_params`` naming a param.
4. A real sidecar (confined to a temporary directory) fed structured random
   requests for every method, with params drawn near their declared types:
   every reply is well formed, its code is in the closed set and is never
   ``internal`` (an unhandled exception), and the sidecar keeps serving.

The runs are bounded for ``make test`` (a few seconds in all). For a longer
run, set the number of examples per test::

    PYBRIDGE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from helpers import SidecarProcess, frame, pack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pybridge.errors import InvalidParams
from pybridge.rpc.framing import FrameReader, OversizedFrame, TruncatedFrame
from pybridge.methods import method_table
from pybridge.rpc.params import validate
from pybridge.rpc.protocol import MAX_ID, BadMessage, Notification, Request, parse, peek_request_id
from pybridge.settings import Settings

EXAMPLES = int(os.environ.get("PYBRIDGE_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(max_examples=EXAMPLES or 150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

ERROR_CODES = {
    "invalid_message", "unknown_method", "invalid_params", "frame_too_large", "overloaded",
    "protocol_mismatch", "internal", "worker_crashed", "codec_unavailable", "codec_forbidden",
    "invalid_codec_config", "decode_failed", "encode_failed", "unsupported_dtype", "not_found",
    "already_exists", "read_only", "invalid_selection", "data_size_mismatch",
    "invalid_metadata", "store_error", "forbidden_path", "too_large",
}
TABLE = method_table(Settings(workers=1, test_methods=True))

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=10) | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12,
)


# --------------------------------------------------------------------------
# 1. Framing against a reference model

LIMIT = 300


def reference(stream: bytes, limit: int) -> list[Any]:
    """What a reader must return for ``stream``: bodies, oversized frames, then
    None (clean end) or "truncated"."""
    out: list[Any] = []
    i = 0
    while True:
        if i == len(stream):
            return [*out, None]
        if len(stream) - i < 4:
            return [*out, "truncated"]
        (n,) = struct.unpack_from(">I", stream, i)
        body = stream[i + 4:i + 4 + n]
        if len(body) < n:
            return [*out, "truncated"]
        out.append(OversizedFrame(n, body[:64]) if n > limit else body)
        i += 4 + n


segments = st.one_of(
    st.binary(max_size=LIMIT).map(frame),  # a frame within the limit
    st.binary(min_size=LIMIT + 1, max_size=3 * LIMIT).map(frame),  # an oversized frame
    st.binary(min_size=1, max_size=12),  # junk: whatever its bytes say
)


def _feed(fd: int, data: bytes, cuts: list[int]) -> None:
    try:
        last = 0
        for c in sorted(set(cuts)) + [len(data)]:
            if c > last:
                os.write(fd, data[last:c])
                last = c
    finally:
        os.close(fd)


@FUZZ
@given(parts=st.lists(segments, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=20))
def test_frame_reader_matches_the_reference_model(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    cuts = [c for c in cuts if c < len(stream)]
    r, w = os.pipe()
    writer = threading.Thread(target=_feed, args=(w, stream, cuts))
    writer.start()
    reader = FrameReader(r, LIMIT)
    got: list[Any] = []
    try:
        while True:
            try:
                item = reader.read()
            except TruncatedFrame:
                got.append("truncated")
                break
            got.append(bytes(item) if isinstance(item, memoryview) else item)
            if item is None:
                break
    finally:
        writer.join()
        os.close(r)
    assert got == reference(stream, LIMIT)


# --------------------------------------------------------------------------
# 2. Message shapes


message_like = st.one_of(
    msgpack_values,
    st.tuples(st.sampled_from([0, 1, 2, 3, -1, True, 0.0]),
              st.one_of(st.integers(-5, 2**33), st.text(max_size=3), st.none()),
              st.one_of(st.sampled_from(sorted(TABLE)), msgpack_values),
              msgpack_values).map(list),
    st.lists(msgpack_values, max_size=6),
)


@FUZZ
@given(value=message_like, junk=st.binary(max_size=3))
def test_parse_returns_a_message_or_invalid_message(value: Any, junk: bytes) -> None:
    body = pack(value) + junk
    try:
        msg = parse(body)
    except BadMessage as e:
        assert e.code == "invalid_message"
        if e.request_id is not None:
            assert 0 <= e.request_id <= MAX_ID
            assert isinstance(value, list) and value[0] == 0 and value[1] == e.request_id
        peeked = peek_request_id(body[:64])
        assert peeked is None or 0 <= peeked <= MAX_ID
        return
    assert not junk, "trailing bytes were accepted"
    if isinstance(msg, Request):
        assert type(msg.id) is int and 0 <= msg.id <= MAX_ID
        assert type(msg.method) is str and type(msg.params) is dict
        assert all(type(k) is str for k in msg.params)
    else:
        assert isinstance(msg, Notification)
        assert type(msg.method) is str and type(msg.params) is dict


@FUZZ
@given(body=st.binary(max_size=200))
def test_parse_of_any_bytes_never_raises_anything_else(body: bytes) -> None:
    try:
        parse(body)
    except BadMessage:
        pass


# --------------------------------------------------------------------------
# 3. Params of every method


def _near(name: str) -> st.SearchStrategy[Any]:
    """Values for a param called ``name``: mostly of plausible types."""
    plausible = {
        "store": st.fixed_dictionaries({"kind": st.sampled_from(["filesystem", "zip", "memory",
                                                                 "s3", ""])},
                                       optional={"path": st.text(max_size=8),
                                                 "name": st.text(max_size=4),
                                                 "x": st.integers()}),
        "shape": st.lists(st.integers(-3, 2**64 - 1), max_size=4),
        "chunks": st.lists(st.integers(-3, 2**40), max_size=4),
        "dtype": st.one_of(st.sampled_from(["int8", "float64", "string", "S3", "O", "x", ""]),
                           msgpack_values),
        "codec": st.one_of(st.fixed_dictionaries({"id": st.sampled_from(
            ["zlib", "zstd", "blosc", "pickle", "nope", "vlen-utf8", "delta"])},
            optional={"level": st.integers(-5, 30), "dtype": st.text(max_size=3)}),
            msgpack_values),
        "stream": st.one_of(st.fixed_dictionaries({"bytes": st.integers(-1, 2**40)}),
                            msgpack_values),
    }
    return plausible.get(name, msgpack_values)


@st.composite
def params_for(draw: Any, method: str) -> dict[str, Any]:
    spec = TABLE[method].params
    names = draw(st.lists(st.sampled_from(sorted(spec) + ["bogus"]), unique=True,
                          max_size=len(spec) + 1))
    return {n: draw(_near(n)) for n in names}


@FUZZ
@given(data=st.data(), method=st.sampled_from(sorted(TABLE)))
def test_validate_returns_complete_params_or_names_the_bad_one(data: Any, method: str) -> None:
    spec = TABLE[method].params
    params = data.draw(params_for(method))
    try:
        out = validate(spec, params)
    except InvalidParams as e:
        assert e.details["param"] in set(spec) | set(params)
        return
    assert set(out) == set(spec)


# --------------------------------------------------------------------------
# 4. A real sidecar, random requests for every method


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SidecarProcess, Path]]:
    root = tmp_path_factory.mktemp("fuzz")
    import numpy as np
    import zarr

    z = zarr.create_array(str(root / "a"), shape=(6, 5), chunks=(4, 4), dtype="int16")
    z[...] = np.arange(30, dtype="int16").reshape(6, 5)
    zarr.create_group(str(root / "g"))
    with SidecarProcess(workers=2, args=["--allowed-root", str(root),
                                         "--max-request-bytes", "64MiB"]) as sc:
        sc.ping(timeout=30)
        yield sc, root


@st.composite
def request_for(draw: Any, root: Path) -> tuple[str, dict[str, Any]]:
    method = draw(st.sampled_from(sorted(m for m in TABLE if m not in ("crash", "sleep", "fail"))))
    params = draw(params_for(method))
    spec = TABLE[method].params
    if "store" in spec and draw(st.booleans()):
        # a store that exists, so requests get past the store to the rest
        params["store"] = {"kind": "filesystem", "path": str(root)}
        params["path"] = draw(st.sampled_from(["a", "g", "new", "a/c", "../x", ""]))
    if "stream" in params:
        params.pop("stream")  # uploads are the framing tests' business
    return method, params


def _well_formed(msg: Any) -> None:
    assert isinstance(msg, list) and len(msg) == 4 and msg[0] == 1, msg
    _, rid, error, result = msg
    assert (error is None) != (result is None), msg
    if error is not None:
        assert error["code"] in ERROR_CODES, error
        assert error["code"] != "internal", f"an unhandled exception: {error}"
        assert isinstance(error["message"], str) and isinstance(error["details"], dict)


@FUZZ
@given(data=st.data())
def test_random_requests_for_every_method_get_clean_errors(
        sandbox: tuple[SidecarProcess, Path], data: Any) -> None:
    sc, root = sandbox
    method, params = data.draw(request_for(root))
    assume(msgpack_ok(params))
    reply = sc.call(method, params, timeout=60)
    _well_formed([1, reply.id, reply.error, reply.result])
    for msg in sc.pending():  # anything else that arrived, e.g. errors sent to id 0
        if msg[0] == 1:
            _well_formed(msg)
    sc._inbox.clear()
    sc.ping()


def msgpack_ok(value: Any) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except Exception:  # noqa: BLE001 - e.g. a key hypothesis made that is not a str
        return False
    return True
