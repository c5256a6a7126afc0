"""codec.* methods through a real sidecar, checked against numcodecs and zarr-python.

Every codec of the issue's list is run both ways through the sidecar and
compared with numcodecs in this process: the encoded bytes must be the same,
and so must the decoded data. The pipeline methods are checked against chunk
files that zarr-python itself wrote.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.codecs.numcodecs
from helpers import SidecarProcess, wait_for
from numcodecs.compat import ensure_ndarray

from pybridge import codecs as bridge_codecs
from pybridge import codec_checks, dtypes
from pybridge.pool import codec_tasks as tasks
from pybridge.errors import (
    CodecForbidden,
    CodecUnavailable,
    DataSizeMismatch,
    DecodeFailed,
    InvalidCodecConfig,
    UnsupportedDtype,
)


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    sidecar = SidecarProcess(workers=2)
    try:
        yield sidecar
    finally:
        sidecar.close()


def call(sc: SidecarProcess, method: str, **params: Any) -> Any:
    return sc.call(method, params, timeout=60)


# --------------------------------------------------------------------------
# Data

RNG = np.random.default_rng(42)
SMOOTH = np.cumsum(RNG.normal(size=20_000)).round(3)          # float64, compressible
INTS = np.cumsum(RNG.integers(-5, 6, size=20_000)).astype("<i8")
BOOLS = RNG.integers(0, 2, size=1001).astype(bool)
LABELS = np.array(["apple", "pear", "fig", "pear", "apple"] * 40, dtype="<U5")
TEXT = ["", "a", "héllo", "ünïcode ✓", "x" * 1000]
BLOBS = [b"", b"\x00\xff", bytes(range(256)) * 4]
MIXED = [1, "two", None, [3, 4.5], {"k": "v"}, True]


def raw(a: np.ndarray) -> bytes:
    """Little-endian C-order bytes, as on the wire."""
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes()


def object_array(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


# (test id, config, input array, wire dtype, wire shape or None)
CODEC_CASES: list[tuple[str, dict[str, Any], np.ndarray, Any, list[int] | None]] = [
    ("zlib", {"id": "zlib", "level": 5}, SMOOTH, None, None),
    ("gzip", {"id": "gzip", "level": 5}, SMOOTH, None, None),
    ("bz2", {"id": "bz2", "level": 9}, SMOOTH, None, None),
    ("lzma", {"id": "lzma"}, SMOOTH, None, None),
    ("zstd", {"id": "zstd", "level": 3}, SMOOTH, None, None),
    ("zstd-checksum", {"id": "zstd", "level": 1, "checksum": True}, SMOOTH, None, None),
    ("lz4", {"id": "lz4", "acceleration": 1}, SMOOTH, None, None),
    ("shuffle", {"id": "shuffle", "elementsize": 8}, SMOOTH, "float64", None),
    ("delta", {"id": "delta", "dtype": "<i8"}, INTS, "int64", None),
    ("quantize", {"id": "quantize", "digits": 2, "dtype": "<f8"}, SMOOTH, "float64", None),
    ("fixedscaleoffset", {"id": "fixedscaleoffset", "offset": 0, "scale": 100, "dtype": "<f8",
                          "astype": "<i4"}, SMOOTH, "float64", None),
    ("packbits", {"id": "packbits"}, BOOLS, "bool", None),
    ("categorize", {"id": "categorize", "labels": ["apple", "pear", "fig"], "dtype": "<U5",
                    "astype": "|u1"}, LABELS, "U5", None),
    ("astype", {"id": "astype", "encode_dtype": "<f4", "decode_dtype": "<f8"}, SMOOTH,
     "float64", None),
    ("bitround", {"id": "bitround", "keepbits": 12}, SMOOTH, "float64", None),
    ("crc32", {"id": "crc32"}, SMOOTH, None, None),
    ("adler32", {"id": "adler32"}, SMOOTH, None, None),
    ("fletcher32", {"id": "fletcher32"}, SMOOTH, None, None),
    ("jenkins_lookup3", {"id": "jenkins_lookup3", "initval": 7}, SMOOTH, None, None),
    ("crc32c", {"id": "crc32c"}, SMOOTH, None, None),
    ("pcodec", {"id": "pcodec", "level": 8}, SMOOTH, "float64", None),
    ("zfpy", {"id": "zfpy", "mode": 4, "tolerance": -1}, SMOOTH.reshape(100, 200), "float64",
     [100, 200]),
    ("base64", {"id": "base64"}, SMOOTH, None, None),
]
CODEC_CASES += [
    (f"blosc-{cname}-shuffle{shuffle}",
     {"id": "blosc", "cname": cname, "clevel": 5, "shuffle": shuffle, "blocksize": 0},
     SMOOTH, "float64", None)
    for cname in numcodecs.blosc.list_compressors() for shuffle in (0, 1, 2)
]

# (test id, config, values, wire dtype or None)
VALUE_CASES: list[tuple[str, dict[str, Any], list[Any], str | None]] = [
    ("vlen-utf8", {"id": "vlen-utf8"}, TEXT, "string"),
    ("vlen-bytes", {"id": "vlen-bytes"}, BLOBS, "bytes"),
    ("json2", {"id": "json2"}, MIXED, None),
    ("msgpack2", {"id": "msgpack2"}, MIXED, None),
]


def in_process_decoded(codec: Any, encoded: bytes) -> Any:
    out = codec.decode(encoded)
    if isinstance(out, np.ndarray) and out.dtype == object:
        return out.tolist()
    arr = ensure_ndarray(out)
    return raw(arr.reshape(-1)) if arr.dtype.kind not in "V" else bytes(arr)


@pytest.mark.parametrize("config,array,wire_dtype,shape",
                         [c[1:] for c in CODEC_CASES], ids=[c[0] for c in CODEC_CASES])
def test_codec_round_trip_matches_numcodecs(sc: SidecarProcess, config: dict[str, Any],
                                            array: np.ndarray, wire_dtype: Any,
                                            shape: list[int] | None) -> None:
    codec = numcodecs.get_codec(config)
    expected = bytes(ensure_ndarray(codec.encode(array if wire_dtype else raw(array))))
    params: dict[str, Any] = {"codec": config, "data": raw(array)}
    if wire_dtype is not None:
        params["dtype"] = wire_dtype
    if shape is not None:
        params["shape"] = shape
    reply = sc.call("codec.encode", params, timeout=60)
    assert reply.ok, reply.error
    assert reply.data == expected, "the sidecar's encoding differs from numcodecs'"

    dparams: dict[str, Any] = {"codec": config, "data": expected}
    if wire_dtype is not None:
        dparams["dtype"] = wire_dtype
        dparams["shape"] = shape or [array.size]
    decoded = sc.call("codec.decode", dparams, timeout=60)
    assert decoded.ok, decoded.error
    assert decoded.data == in_process_decoded(codec, expected)
    lossless = config["id"] not in ("quantize", "fixedscaleoffset", "bitround", "astype")
    if lossless:
        assert decoded.data == raw(array)


@pytest.mark.parametrize("config,values,wire_dtype", [c[1:] for c in VALUE_CASES],
                         ids=[c[0] for c in VALUE_CASES])
def test_object_codec_round_trip_matches_numcodecs(sc: SidecarProcess, config: dict[str, Any],
                                                   values: list[Any],
                                                   wire_dtype: str | None) -> None:
    codec = numcodecs.get_codec(config)
    expected = bytes(ensure_ndarray(codec.encode(object_array(values))))
    params: dict[str, Any] = {"codec": config, "values": values}
    if wire_dtype is not None:
        params["dtype"] = wire_dtype
    reply = sc.call("codec.encode", params, timeout=60)
    assert reply.ok, reply.error
    assert reply.data == expected
    dparams: dict[str, Any] = {"codec": config, "data": expected}
    if wire_dtype is not None:
        dparams["dtype"] = wire_dtype
    decoded = sc.call("codec.decode", dparams, timeout=60)
    assert decoded.ok, decoded.error
    assert decoded.result == {"values": codec.decode(expected).tolist()}
    assert decoded.result["values"] == values


def test_vlen_array_round_trip(sc: SidecarProcess) -> None:
    config = {"id": "vlen-array", "dtype": "<i4"}
    items = [np.array([1, 2, 3], "<i4"), np.array([], "<i4"), np.array([-7], "<i4")]
    expected = bytes(numcodecs.get_codec(config).encode(object_array(items)))
    reply = call(sc, "codec.encode", codec=config, values=[a.tobytes() for a in items])
    assert reply.data == expected
    decoded = call(sc, "codec.decode", codec=config, data=expected)
    assert decoded.result == {"values": [a.tobytes() for a in items]}


def test_every_issue_codec_is_covered() -> None:
    covered = {c[1]["id"] for c in CODEC_CASES} | {c[1]["id"] for c in VALUE_CASES}
    issue = {"zlib", "gzip", "bz2", "lzma", "zstd", "lz4", "blosc", "shuffle", "delta",
             "quantize", "fixedscaleoffset", "packbits", "categorize", "astype", "bitround",
             "crc32", "adler32", "fletcher32", "jenkins_lookup3", "crc32c", "pcodec", "zfpy",
             "vlen-utf8", "vlen-bytes", "json2", "msgpack2"}
    assert issue <= covered, issue - covered


# --------------------------------------------------------------------------
# codec.list


def test_codec_list(sc: SidecarProcess) -> None:
    codecs = {c["id"]: c for c in call(sc, "codec.list").unwrap()["codecs"]}
    import numcodecs.registry

    assert set(numcodecs.registry.codec_registry) <= set(codecs)
    for optional in ("pcodec", "zfpy", "crc32c", "blosc", "zstd", "lz4", "msgpack2"):
        assert optional in codecs
    for c in codecs.values():
        assert set(c) == {"id", "available", "reason", "forbidden", "default_config"}
        assert c["available"] == (c["reason"] is None)
    assert codecs["pickle"]["forbidden"] is True
    assert codecs["zstd"]["forbidden"] is False
    assert codecs["zstd"]["default_config"] == {"id": "zstd", "level": 0, "checksum": False}
    assert codecs["delta"]["default_config"] is None  # delta needs a dtype
    # Every default config is accepted back as it is.
    for c in codecs.values():
        if c["available"] and c["default_config"] and not c["forbidden"]:
            assert bridge_codecs.get_codec(c["default_config"], False) is not None


def test_unavailable_optional_codec_is_listed_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import numcodecs.registry

    monkeypatch.delitem(numcodecs.registry.codec_registry, "zfpy")
    monkeypatch.setitem(bridge_codecs.OPTIONAL_CODECS, "zfpy", "pybridge_no_such_module")
    listed = {c["id"]: c for c in bridge_codecs.list_codecs(False)}
    assert listed["zfpy"]["available"] is False
    assert "pybridge_no_such_module" in listed["zfpy"]["reason"]
    with pytest.raises(CodecUnavailable) as info:
        bridge_codecs.get_codec({"id": "zfpy"}, False)
    assert info.value.details["id"] == "zfpy"


# --------------------------------------------------------------------------
# Errors


def test_pickle_is_forbidden_by_default(sc: SidecarProcess) -> None:
    for method, extra in (("codec.encode", {"values": [1, 2]}), ("codec.decode", {"data": b"x"})):
        reply = call(sc, method, codec={"id": "pickle"}, **extra)
        assert reply.code == "codec_forbidden", reply.error
        assert reply.error["details"]["id"] == "pickle"
    nested = call(sc, "codec.decode", codec={"id": "zlib", "extra": {"id": "pickle"}}, data=b"x")
    assert nested.code == "codec_forbidden"
    v2 = call(sc, "codec.pipeline_decode", zarr_format=2, dtype="int8", shape=[1],
              filters=[{"id": "pickle"}], compressor=None, data=b"x")
    assert v2.code == "codec_forbidden"
    objects = call(sc, "codec.decode", codec={"id": "vlen-array", "dtype": "O"}, data=b"x")
    assert objects.code == "codec_forbidden"
    assert objects.error["details"]["key"] == "dtype"


def test_pickle_allowed_with_flag(sidecar_factory: Any) -> None:
    sc = sidecar_factory(args=["--allow-pickle"], workers=1)
    values = [1, "two", [3.0]]
    expected = bytes(numcodecs.Pickle().encode(object_array(values)))
    reply = call(sc, "codec.encode", codec={"id": "pickle"}, values=values)
    assert reply.ok, reply.error
    assert reply.data == expected
    assert call(sc, "codec.decode", codec={"id": "pickle"}, data=expected).result == \
        {"values": values}
    listed = {c["id"]: c for c in call(sc, "codec.list").unwrap()["codecs"]}
    assert listed["pickle"]["forbidden"] is False


def test_unknown_codec_id(sc: SidecarProcess) -> None:
    reply = call(sc, "codec.encode", codec={"id": "no-such-codec"}, data=b"abc")
    assert reply.code == "codec_unavailable"
    assert reply.error["details"]["id"] == "no-such-codec"
    v3 = call(sc, "codec.pipeline_decode", zarr_format=3, dtype="int8", shape=[1],
              codecs=[{"name": "bytes"}, {"name": "no-such-codec"}], data=b"x")
    assert v3.code == "codec_unavailable"
    assert v3.error["details"]["id"] == "no-such-codec"


@pytest.mark.parametrize("config,key", [
    ({"id": "zstd", "lvl": 3}, "lvl"),
    ({"id": "bitround"}, "keepbits"),
    ({"id": "bitround", "keepbits": -1}, "keepbits"),
    ({"id": "blosc", "cname": "nope"}, "cname"),
    ({"id": "blosc", "shuffle": 7}, "shuffle"),
    ({"id": "zlib", "level": "high"}, "level"),
    ({"id": "delta", "dtype": "not-a-dtype"}, "dtype"),
    ({"id": "quantize", "digits": 2, "dtype": "<i4"}, "dtype"),
    ({"id": 3}, "id"),
])
def test_bad_codec_config_names_the_key(sc: SidecarProcess, config: dict[str, Any],
                                        key: str) -> None:
    reply = call(sc, "codec.encode", codec=config, data=b"abcd" * 8)
    assert reply.code == "invalid_codec_config", reply.error
    assert reply.error["details"]["key"] == key


def test_bad_v3_codec_config_names_the_key(sc: SidecarProcess) -> None:
    reply = call(sc, "codec.pipeline_decode", zarr_format=3, dtype="int32", shape=[2],
                 codecs=[{"name": "bytes", "configuration": {"endian": "little"}},
                         {"name": "zstd", "configuration": {"lvl": 3}}], data=b"x")
    assert reply.code == "invalid_codec_config", reply.error
    assert reply.error["details"]["key"] == "lvl"


def worker_pids(sidecar_pid: int) -> set[int]:
    """Live grandchildren of the sidecar (its workers, children of the fork server)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    return {g for c in children.get(sidecar_pid, []) for g in children.get(c, [])}


@pytest.mark.parametrize("config", [{"id": "zstd"}, {"id": "blosc"}, {"id": "zlib"},
                                    {"id": "lz4"}, {"id": "bz2"}, {"id": "lzma"},
                                    {"id": "pcodec"}, {"id": "zfpy"}, {"id": "vlen-utf8"},
                                    {"id": "json2"}, {"id": "msgpack2"}, {"id": "crc32c"}])
def test_corrupt_input_is_decode_failed_and_workers_survive(sc: SidecarProcess,
                                                            config: dict[str, Any]) -> None:
    call(sc, "codec.decode", codec={"id": "zlib"}, data=numcodecs.Zlib().encode(b"warm"))
    before = worker_pids(sc.pid)
    assert len(before) == 2, before
    good = bytes(ensure_ndarray(numcodecs.get_codec(config).encode(
        object_array(TEXT) if config["id"] in ("vlen-utf8", "json2", "msgpack2") else SMOOTH)))
    # Codecs with a checksum or a strict framing must refuse every corruption;
    # the others (zfp, the vlen and object codecs) may take some of them for
    # valid data, but must never fail otherwise than with decode_failed.
    strict = config["id"] in ("zstd", "blosc", "zlib", "lz4", "bz2", "lzma", "crc32c")
    codes = []
    for corrupt in (b"\x00" * 64, os.urandom(300), good[: len(good) // 2],
                    good[:8] + bytes(b ^ 0x5A for b in good[8:64]) + good[64:]):
        reply = call(sc, "codec.decode", codec=config, data=corrupt)
        codes.append(reply.code)
        if strict:
            assert reply.code == "decode_failed", (corrupt[:16], reply.error, reply.result)
        else:
            assert reply.code in (None, "decode_failed"), reply.error
    assert "decode_failed" in codes
    assert worker_pids(sc.pid) == before, "a worker died on corrupt input"
    assert call(sc, "codec.decode", codec={"id": "zlib"},
                data=numcodecs.Zlib().encode(b"ok")).data == b"ok"


def zfp_stream_with(flip: tuple[int, int], **kw: Any) -> bytes:
    """A zfp stream whose header has one bit flipped (found by fuzzing: both crashed zfp)."""
    import zfpy

    data = bytearray(zfpy.compress_numpy(np.arange(20_000, dtype="<f8"), **kw))
    data[flip[0]] ^= 1 << flip[1]
    return bytes(data)


@pytest.mark.parametrize("stream", [
    zfp_stream_with((7, 5), tolerance=-1),  # announces 33 million values
    zfp_stream_with((11, 6), rate=8),       # announces 264 bits per value
], ids=["too-many-values", "too-high-rate"])
def test_corrupt_zfp_header_cannot_crash_a_worker(sc: SidecarProcess, stream: bytes) -> None:
    assert call(sc, "codec.decode", codec={"id": "zlib"},
                data=numcodecs.Zlib().encode(b"up")).data == b"up"
    assert wait_for(lambda: len(worker_pids(sc.pid)) == 2)  # both workers are up
    before = worker_pids(sc.pid)
    reply = call(sc, "codec.decode", codec={"id": "zfpy"}, data=stream)
    assert reply.code == "decode_failed", reply.error
    v2 = call(sc, "codec.pipeline_decode", zarr_format=2, dtype="float64", shape=[20_000],
              filters=None, compressor={"id": "zfpy"}, data=stream)
    assert v2.code == "decode_failed", v2.error
    assert worker_pids(sc.pid) == before


@pytest.mark.parametrize("config", [{"id": "vlen-utf8"}, {"id": "vlen-bytes"},
                                    {"id": "vlen-array", "dtype": "<i4"}])
def test_vlen_header_announcing_too_many_items_is_refused(sc: SidecarProcess,
                                                          config: dict[str, Any]) -> None:
    # numcodecs would first allocate an object array of 4 billion items.
    corrupt = (0xFFFFFFF0).to_bytes(4, "little") + b"\x01\x00\x00\x00a"
    reply = call(sc, "codec.decode", codec=config, data=corrupt)
    assert reply.code == "decode_failed", reply.error
    assert reply.error["details"]["items"] == 0xFFFFFFF0
    v2 = call(sc, "codec.pipeline_decode", zarr_format=2, dtype="string", shape=[1],
              filters=[{"id": "vlen-utf8"}], compressor=None, data=corrupt)
    assert v2.code == "decode_failed"
    v3 = call(sc, "codec.pipeline_decode", zarr_format=3, dtype="string", shape=[1],
              codecs=[{"name": "vlen-utf8"}], data=corrupt)
    assert v3.code == "decode_failed"


def test_decode_size_checks(sc: SidecarProcess) -> None:
    enc = numcodecs.Zstd().encode(SMOOTH)
    wrong = call(sc, "codec.decode", codec={"id": "zstd"}, data=enc, dtype="float64",
                 shape=[SMOOTH.size + 1])
    assert wrong.code == "data_size_mismatch"
    odd = call(sc, "codec.decode", codec={"id": "zlib"}, data=numcodecs.Zlib().encode(b"abc"),
               dtype="int16")
    assert odd.code == "data_size_mismatch"
    ok = call(sc, "codec.decode", codec={"id": "zstd"}, data=enc, dtype="float64",
              shape=[100, 200])
    assert ok.data == raw(SMOOTH)


def test_unsupported_dtype(sc: SidecarProcess) -> None:
    reply = call(sc, "codec.decode", codec={"id": "zlib"}, data=b"x", dtype="float128")
    assert reply.code == "unsupported_dtype"
    assert reply.error["details"]["dtype"] == "float128"


def test_exactly_one_input(sc: SidecarProcess) -> None:
    assert call(sc, "codec.encode", codec={"id": "zlib"}).code == "invalid_params"
    both = call(sc, "codec.encode", codec={"id": "zlib"}, data=b"x", values=["x"])
    assert both.code == "invalid_params"


# --------------------------------------------------------------------------
# Big payloads, streams, many items


def test_large_payloads_stream_both_ways(sc: SidecarProcess) -> None:
    big = np.cumsum(RNG.normal(size=1 << 20)).round(2)  # 8 MiB of float64
    enc = bytes(numcodecs.Zstd(level=1).encode(big))
    rid = sc.request("codec.encode", {"codec": {"id": "zstd", "level": 1},
                                      "stream": {"bytes": big.nbytes}})
    sc.upload(rid, raw(big))
    up = sc.response(rid, timeout=60)
    assert up.ok, up.error
    assert up.data == enc
    down = call(sc, "codec.decode", codec={"id": "zstd"}, data=enc, dtype="float64",
                shape=[big.size])
    assert down.ok, down.error
    assert "stream" in down.result and len(down.stream) > 1
    assert down.data == raw(big)


def test_decode_many_and_encode_many_keep_order(sc: SidecarProcess) -> None:
    arrays = [np.arange(i * 1000, dtype="<f8") * (i + 1) for i in range(1, 13)]
    config = {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1}
    codec = numcodecs.get_codec(config)
    encoded = call(sc, "codec.encode_many", codec=config, items=[raw(a) for a in arrays],
                   dtype="float64").unwrap()["items"]
    assert encoded == [bytes(codec.encode(a)) for a in arrays]
    decoded = call(sc, "codec.decode_many", codec=config, items=encoded).unwrap()["items"]
    assert decoded == [raw(a) for a in arrays]


def test_decode_many_reports_the_failing_index(sc: SidecarProcess) -> None:
    good = bytes(numcodecs.Zstd().encode(SMOOTH))
    reply = call(sc, "codec.decode_many", codec={"id": "zstd"},
                 items=[good, good, b"broken", good])
    assert reply.code == "decode_failed"
    assert reply.error["details"]["index"] == 2


def test_many_result_over_the_frame_limit_is_streamed(sidecar_factory: Any) -> None:
    sc = sidecar_factory(args=["--max-frame-bytes", "1MiB", "--stream-frame-bytes", "64KiB"])
    item = bytes(numcodecs.Zstd().encode(SMOOTH[:50_000]))  # 160 kB decoded
    reply = call(sc, "codec.decode_many", codec={"id": "zstd"}, items=[item] * 8)
    result = reply.unwrap()
    assert result["sizes"] == [SMOOTH[:50_000].nbytes] * 8
    assert reply.data == raw(SMOOTH[:50_000]) * 8
    assert call(sc, "codec.decode_many", codec={"id": "zstd"}, items=[item]).ok


# --------------------------------------------------------------------------
# decode_many through a shared-memory handoff


@pytest.fixture(scope="module")
def small_handoff() -> Iterator[SidecarProcess]:
    """A sidecar that hands results of 64 KiB or more over through /dev/shm."""
    sidecar = SidecarProcess(["--handoff-threshold", "64KiB"], workers=2)
    try:
        yield sidecar
    finally:
        sidecar.close()


def own_segments(sc: SidecarProcess) -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"pybridge-{sc.pid}-read")}


def take_handoff(sc: SidecarProcess, result: dict[str, Any]) -> list[bytes]:
    """Read and remove a decode_many handoff, as a client does; split it by ``sizes``."""
    shm = result["shm"]
    assert "items" not in result
    path = shm["path"]
    assert os.path.basename(path).startswith(f"pybridge-{sc.pid}-")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    assert len(data) == shm["bytes"] == sum(result["sizes"])
    out, offset = [], 0
    for size in result["sizes"]:
        out.append(data[offset:offset + size])
        offset += size
    return out


# (No empty item: numcodecs cannot decode its own zstd, lz4 or blosc encoding of b"".)
ARRAYS = [np.cumsum(RNG.normal(size=n)).round(2) for n in (30_000, 1, 25_000, 70_000)]


@pytest.mark.parametrize("config", [
    {"id": "zstd", "level": 3},                                   # sizes from the header
    {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},   # sizes from the header
    {"id": "lz4"},                                                # sizes from the header
    {"id": "zlib", "level": 1},                                   # copied after decoding
])
def test_decode_many_hands_large_results_over(small_handoff: SidecarProcess,
                                              config: dict[str, Any]) -> None:
    codec = numcodecs.get_codec(config)
    items = [bytes(codec.encode(a)) for a in ARRAYS]
    result = call(small_handoff, "codec.decode_many", codec=config, items=items,
                  handoff=True).unwrap()
    assert take_handoff(small_handoff, result) == [raw(a) for a in ARRAYS]
    assert own_segments(small_handoff) == set()


def test_decode_many_handoff_with_dtype_and_shape(small_handoff: SidecarProcess) -> None:
    a = SMOOTH.reshape(100, 200)
    items = [bytes(numcodecs.Zlib(1).encode(a * k)) for k in range(4)]
    result = call(small_handoff, "codec.decode_many", codec={"id": "zlib"}, items=items,
                  dtype="float64", shape=[100, 200], handoff=True).unwrap()
    assert result["sizes"] == [a.nbytes] * 4
    assert take_handoff(small_handoff, result) == [raw(a * k) for k in range(4)]


def test_decode_many_handoff_small_or_values_stay_inline(small_handoff: SidecarProcess) -> None:
    small = [bytes(numcodecs.Zstd().encode(np.arange(10.0)))] * 3
    result = call(small_handoff, "codec.decode_many", codec={"id": "zstd"}, items=small,
                  handoff=True).unwrap()
    assert result["items"] == [raw(np.arange(10.0))] * 3 and "shm" not in result
    text = [bytes(numcodecs.VLenUTF8().encode(object_array(TEXT * 100)))] * 2
    result = call(small_handoff, "codec.decode_many", codec={"id": "vlen-utf8"}, items=text,
                  handoff=True).unwrap()
    assert result["items"] == [TEXT * 100] * 2
    # Without "handoff" the same large result comes inline.
    items = [bytes(numcodecs.Zstd().encode(SMOOTH))] * 2
    result = call(small_handoff, "codec.decode_many", codec={"id": "zstd"},
                  items=items).unwrap()
    assert result["items"] == [raw(SMOOTH)] * 2


@pytest.mark.parametrize("params, code", [
    # a frame whose header announces a size but whose body is garbage
    ({"codec": {"id": "zstd"}, "items": "corrupt"}, "decode_failed"),
    # the decoded size does not fit the declared dtype and shape
    ({"codec": {"id": "zstd"}, "dtype": "float64", "shape": [999]}, "data_size_mismatch"),
    ({"codec": {"id": "zlib"}, "dtype": "float64", "shape": [999]}, "data_size_mismatch"),
])
def test_a_failed_decode_many_handoff_leaves_no_segment(small_handoff: SidecarProcess,
                                                        params: dict[str, Any],
                                                        code: str) -> None:
    codec = numcodecs.get_codec(params["codec"])
    items = [bytes(codec.encode(SMOOTH))] * 3
    if params.get("items") == "corrupt":
        items[1] = items[1][:20] + bytes(len(items[1]) - 20)
        params = {k: v for k, v in params.items() if k != "items"}
    reply = call(small_handoff, "codec.decode_many", items=items, handoff=True, **params)
    assert reply.code == code, reply.error
    assert reply.error["details"]["index"] in (0, 1, 2)
    assert own_segments(small_handoff) == set()
    # and the sidecar goes on serving
    ok = call(small_handoff, "codec.decode_many", codec={"id": "zstd"},
              items=[bytes(numcodecs.Zstd().encode(SMOOTH))] * 4, handoff=True).unwrap()
    assert take_handoff(small_handoff, ok) == [raw(SMOOTH)] * 4


# --------------------------------------------------------------------------
# Pipelines against zarr-python's own chunks


def chunk_region(z: Any, coords: tuple[int, ...], chunk: tuple[int, ...], fill: Any,
                 dtype: Any) -> np.ndarray:
    """The full chunk at ``coords`` as zarr-python writes it (edges padded with fill)."""
    out = np.full(chunk, fill, dtype=dtype)
    sel = tuple(slice(c * n, min((c + 1) * n, s)) for c, n, s in zip(coords, chunk, z.shape))
    part = z[sel]
    out[tuple(slice(0, s.stop - s.start) for s in sel)] = part
    return out


def v2_array(path: Path, **kw: Any) -> Any:
    return zarr.create_array(str(path), zarr_format=2, **kw)


def v2_params(z: Any, path: Path, wire_dtype: Any) -> dict[str, Any]:
    meta = json.loads((path / ".zarray").read_text())
    return {"zarr_format": 2, "dtype": wire_dtype, "shape": meta["chunks"],
            "filters": meta["filters"], "compressor": meta["compressor"],
            "order": meta["order"],
            "endian": "big" if meta["dtype"].startswith(">") else "little"}


@pytest.mark.parametrize("dtype,order,filters,compressor", [
    (">i4", "F", [numcodecs.Delta(">i4")], numcodecs.Zstd(3)),
    ("<f8", "C", None, numcodecs.Blosc("lz4", 5, 2)),
    ("<u2", "C", [numcodecs.Shuffle(2)], numcodecs.Zlib(4)),
    ("<f4", "F", None, None),
])
def test_v2_pipeline_matches_zarr(sc: SidecarProcess, tmp_path: Path, dtype: str, order: str,
                                  filters: Any, compressor: Any) -> None:
    path = tmp_path / "a.zarr"
    z = v2_array(path, shape=(30, 20), chunks=(16, 8), dtype=dtype, order=order,
                 filters=filters, compressors=compressor, fill_value=0)
    z[:] = (np.arange(600).reshape(30, 20) * 3 % 1000).astype(dtype)
    wire = dtypes.wire_dtype(np.dtype(dtype))
    params = v2_params(z, path, wire)
    for i in range(2):
        for j in range(3):
            stored = (path / f"{i}.{j}").read_bytes()
            expected = chunk_region(z, (i, j), (16, 8), 0, dtype)
            reply = call(sc, "codec.pipeline_decode", **params, data=stored)
            assert reply.ok, reply.error
            assert reply.data == raw(expected), f"chunk {i}.{j}"
            again = call(sc, "codec.pipeline_encode", **params, data=raw(expected))
            assert again.ok, again.error
            assert again.data == stored, f"chunk {i}.{j} re-encoded differently"


def test_v2_string_pipeline_matches_zarr(sc: SidecarProcess, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    z = v2_array(path, shape=(5,), chunks=(3,), dtype=str)
    z[:] = TEXT
    params = v2_params(z, path, "string")
    for i, expected in enumerate([TEXT[:3], TEXT[3:] + [""]]):
        stored = (path / str(i)).read_bytes()
        reply = call(sc, "codec.pipeline_decode", **params, data=stored)
        assert reply.ok, reply.error
        assert reply.result == {"values": expected}
        again = call(sc, "codec.pipeline_encode", **params, values=expected)
        assert again.data == stored


def v3_params(path: Path, wire_dtype: Any, chunk: list[int]) -> dict[str, Any]:
    meta = json.loads((path / "zarr.json").read_text())
    return {"zarr_format": 3, "dtype": wire_dtype, "shape": chunk, "codecs": meta["codecs"],
            "fill_value": meta["fill_value"]}


def _v3_cases() -> list[tuple[str, str, dict[str, Any], Any, Any]]:
    """(test id, dtype, create_array codec arguments, shards, fill value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "numcodecs codecs are not in the v3 spec"
        return [
            ("bytes-zstd", "<f4", {"compressors": [zarr.codecs.ZstdCodec(level=3)]}, None, 0),
            ("transpose-big-gzip-crc32c", "<i2", {
                "filters": [zarr.codecs.TransposeCodec(order=(1, 0))],
                "serializer": zarr.codecs.BytesCodec(endian="big"),
                "compressors": [zarr.codecs.GzipCodec(level=5), zarr.codecs.Crc32cCodec()]},
             None, 7),
            ("blosc-bitshuffle", "<f8", {"compressors": [zarr.codecs.BloscCodec(
                cname="zstd", clevel=3, shuffle="bitshuffle")]}, None, 0),
            ("numcodecs-delta-zlib", "<i4", {
                "filters": [zarr.codecs.numcodecs.Delta(dtype="<i4")],
                "compressors": [zarr.codecs.numcodecs.Zlib(level=3)]}, None, 0),
            ("sharding-blosc", "<f8", {"compressors": [zarr.codecs.BloscCodec(
                cname="lz4", shuffle="shuffle")]}, (16, 12), float("nan")),
        ]


V3_CASES = _v3_cases()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dtype,kw,shards,fill", [c[1:] for c in V3_CASES],
                         ids=[c[0] for c in V3_CASES])
def test_v3_pipeline_matches_zarr(sc: SidecarProcess, tmp_path: Path, dtype: str,
                                  kw: dict[str, Any], shards: Any, fill: Any) -> None:
    path = tmp_path / "a.zarr"
    z = zarr.create_array(str(path), shape=(30, 20), chunks=(8, 6), shards=shards, dtype=dtype,
                          zarr_format=3, fill_value=fill, **kw)
    values = (np.arange(600).reshape(30, 20) * 7 % 500).astype(dtype)
    if shards is None:
        z[:] = values
    else:
        z[:20, :] = values[:20]  # leave some inner chunks empty: they read as fill
    block = shards or (8, 6)
    wire = dtypes.wire_dtype(np.dtype(dtype))
    params = v3_params(path, wire, list(block))
    files = sorted(p for p in (path / "c").rglob("*") if p.is_file())
    assert files
    for f in files:
        coords = tuple(int(x) for x in f.relative_to(path / "c").parts)
        stored = f.read_bytes()
        expected = chunk_region(z, coords, block, fill, dtype)
        reply = call(sc, "codec.pipeline_decode", **params, data=stored)
        assert reply.ok, reply.error
        got = np.frombuffer(reply.data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(block)
        np.testing.assert_array_equal(got, expected, err_msg=str(coords))
        again = call(sc, "codec.pipeline_encode", **params, data=raw(expected))
        assert again.ok, again.error
        gzip = any(isinstance(c, zarr.codecs.GzipCodec) for c in kw.get("compressors", ()))
        if shards is None and not gzip:
            assert again.data == stored, f"chunk {coords} re-encoded differently"
        else:
            # gzip stamps the time into its header, so those chunks (like
            # shards) are compared by what they decode to.
            # zarr-python skips inner chunks that are all fill; so must we.
            back = call(sc, "codec.pipeline_decode", **params, data=again.data)
            assert back.data == reply.data


@pytest.mark.filterwarnings("ignore")
def test_v3_string_pipeline_matches_zarr(sc: SidecarProcess, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    z = zarr.create_array(str(path), shape=(5,), chunks=(3,), dtype=str, zarr_format=3)
    z[:] = TEXT
    params = v3_params(path, "string", [3])
    for i, expected in enumerate([TEXT[:3], TEXT[3:] + [""]]):
        stored = (path / "c" / str(i)).read_bytes()
        reply = call(sc, "codec.pipeline_decode", **params, data=stored)
        assert reply.ok, reply.error
        assert reply.result == {"values": expected}
        again = call(sc, "codec.pipeline_encode", **params, values=expected)
        assert again.data == stored


def test_pipeline_param_errors(sc: SidecarProcess) -> None:
    base = {"dtype": "int32", "shape": [2], "data": b"\x00" * 8}
    assert call(sc, "codec.pipeline_decode", zarr_format=3, **base).code == "invalid_params"
    assert call(sc, "codec.pipeline_decode", zarr_format=2, codecs=[{"name": "bytes"}],
                **base).code == "invalid_params"
    assert call(sc, "codec.pipeline_decode", zarr_format=4, **base).code == "invalid_params"
    short = call(sc, "codec.pipeline_decode", zarr_format=2, filters=None, compressor=None,
                 dtype="int32", shape=[3], data=b"\x00" * 8)
    assert short.code == "data_size_mismatch"
    corrupt = call(sc, "codec.pipeline_decode", zarr_format=3, dtype="int32", shape=[2],
                   codecs=[{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "zstd", "configuration": {"level": 1}}], data=b"garbage")
    assert corrupt.code == "decode_failed"


# --------------------------------------------------------------------------
# In process: the pieces the handlers use


def test_get_codec_caches_instances() -> None:
    a = bridge_codecs.get_codec({"id": "zstd", "level": 3}, False)
    assert bridge_codecs.get_codec({"level": 3, "id": "zstd"}, False) is a
    assert bridge_codecs.get_codec({"id": "zstd", "level": 4}, False) is not a


def test_task_errors_in_process() -> None:
    with pytest.raises(CodecForbidden):
        tasks.decode(b"x", {"id": "pickle"})
    with pytest.raises(CodecUnavailable):
        tasks.decode(b"x", {"id": "nope"})
    with pytest.raises(InvalidCodecConfig):
        tasks.encode(b"x", {"id": "zstd", "bogus": 1})
    with pytest.raises(DecodeFailed):
        tasks.decode(b"x" * 40, {"id": "zstd"})
    with pytest.raises(DataSizeMismatch):
        tasks.encode(b"abc", {"id": "zlib"}, "int16")
    with pytest.raises(UnsupportedDtype):
        tasks.encode(b"abc", {"id": "zlib"}, "string")


def test_decoded_size_from_headers() -> None:
    data = SMOOTH.tobytes()
    for cid, codec in (("zstd", numcodecs.Zstd()), ("blosc", numcodecs.Blosc()),
                       ("lz4", numcodecs.LZ4())):
        assert codec_checks.decoded_size(cid, codec.encode(data)) == len(data)
    assert codec_checks.decoded_size("zlib", numcodecs.Zlib().encode(data)) is None
    assert codec_checks.decoded_size("zstd", b"\x00" * 10) is None


def test_dtypes_round_trip() -> None:
    names = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "complex64", "complex128", "datetime64[ns]",
             "timedelta64[10s]", "S7", "U3", "string", [["a", "int32"], ["b", "float64"]]]
    for wire in names:
        dt = dtypes.parse_dtype(wire)
        assert dtypes.wire_dtype(dt) == wire
        assert not dt.isnative or dt.byteorder in "=|<"
    assert dtypes.wire_dtype(np.dtype(">f8")) == "float64"
    assert dtypes.parse_dtype("bytes") == np.dtype(object)
    assert dtypes.wire_dtype(np.dtype(object), object_as="bytes") == "bytes"
    for bad in ("float128", "S0", "datetime64", [["a", "string"]], [["a", "i1"], ["a", "i1"]], 7):
        with pytest.raises(UnsupportedDtype):
            dtypes.parse_dtype(bad)


def test_the_chunk_pipeline_and_the_codec_tasks_share_one_codec_cache() -> None:
    # One codec instance per config in the sidecar: the chunk codec pipeline of
    # arrays takes its instances from the cache the codec tasks use.
    from pybridge.zarr import chunk_codecs

    zstd = {"id": "zstd", "level": 3, "checksum": False}
    delta = {"id": "delta", "dtype": "<i4"}
    spec = chunk_codecs.ChunkSpec(
        dir="/nowhere", root="/nowhere", path="", zarr_format=2, signature=(), engine="v2",
        shape=(4,), grid=(4,), dtype="<i4", order="C", fill=0, key_encoding="v2",
        separator=".", filters=(delta,), compressors=(zstd,),
        token="test_one_codec_cache")
    filters, compressors = chunk_codecs._codecs(spec)
    assert compressors[0] is bridge_codecs.get_codec(zstd, False)
    assert filters[0] is bridge_codecs.get_codec(delta, False)
    data = np.arange(4, dtype="<i4")
    raw = compressors[0].encode(filters[0].encode(data))
    assert np.array_equal(chunk_codecs.decode_chunk(spec, raw), data)
