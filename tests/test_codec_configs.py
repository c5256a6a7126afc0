"""Codec configs: the sidecar takes exactly what numcodecs takes.

For every codec numcodecs ships, parameter values are swept (edge ones
included: negative, 0, large). For each config numcodecs is run in this
process first: when it encodes, the sidecar must encode to the same bytes
and decode them to what numcodecs decodes; when numcodecs refuses (in its
constructor or at its first encode), the sidecar must refuse with
``invalid_codec_config``. Decoding is checked separately: a config whose
encode numcodecs refuses (zlib level 10) still decodes in numcodecs, so it
must decode in the sidecar too.

Types are checked at the edge (an int where numcodecs takes an int): those
refusals are tested on their own at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numcodecs
import numcodecs.blosc
import numpy as np
import pytest
from helpers import SidecarProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numcodecs.compat import ensure_ndarray


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    sidecar = SidecarProcess(workers=1)
    try:
        yield sidecar
    finally:
        sidecar.close()


RNG = np.random.default_rng(7)
SMOOTH = np.cumsum(RNG.normal(size=3000)).round(3)
INTS = np.cumsum(RNG.integers(-5, 6, size=3000)).astype("<i8")
BOOLS = RNG.integers(0, 2, size=1001).astype(bool)
LABELS = np.array(["apple", "pear", "fig", "pear", "kiwi"] * 40, dtype="<U5")
GRID = SMOOTH.reshape(30, 100)

#: The wire dtype of each test array.
WIRE = {"float64": SMOOTH, "int64": INTS, "bool": BOOLS, "U5": LABELS}


def raw(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes()


def no_mtime(data: bytes) -> bytes:
    """``data`` with a gzip header's time (bytes 4..7) zeroed."""
    if data[:3] == b"\x1f\x8b\x08":
        return data[:4] + bytes(4) + data[8:]
    return data


def numcodecs_encode(config: dict[str, Any], array: np.ndarray, typed: bool) -> bytes | None:
    """What numcodecs encodes ``array`` to with ``config``, or None when it refuses."""
    try:
        codec = numcodecs.get_codec(dict(config))
        return bytes(ensure_ndarray(codec.encode(array if typed else raw(array))))
    except Exception:  # noqa: BLE001 - any refusal counts
        return None


def numcodecs_decode(config: dict[str, Any], data: bytes) -> bytes | None:
    try:
        out = ensure_ndarray(numcodecs.get_codec(dict(config)).decode(data))
    except Exception:  # noqa: BLE001
        return None
    return raw(out.reshape(-1))


def params(config: dict[str, Any], data: bytes, dtype: str | None,
           shape: list[int] | None) -> dict[str, Any]:
    p: dict[str, Any] = {"codec": config, "data": data}
    if dtype is not None:
        p["dtype"] = dtype
    if shape is not None:
        p["shape"] = shape
    return p


def check_agrees(sc: SidecarProcess, config: dict[str, Any], array: np.ndarray,
                 dtype: str | None, shape: list[int] | None = None) -> str:
    """Run ``config`` through numcodecs and the sidecar; assert they agree.

    Returns "ok" or "refused" (what numcodecs did), so sweeps can check
    that they covered both.
    """
    expected = numcodecs_encode(config, array, dtype is not None)
    reply = sc.call("codec.encode", params(config, raw(array), dtype, shape), timeout=60)
    if expected is None:
        assert reply.code == "invalid_codec_config", (config, reply.error, reply.result)
        assert "rejected its config" in reply.error["message"] or \
            "must be" in reply.error["message"], reply.error
        return "refused"
    assert reply.ok, (config, reply.error)
    assert no_mtime(reply.data) == no_mtime(expected), \
        f"{config}: the sidecar's encoding differs from numcodecs'"
    want = numcodecs_decode(config, expected)
    decoded = sc.call("codec.decode", params(
        config, expected, dtype, shape or ([array.size] if dtype else None)), timeout=60)
    if want is None:
        assert not decoded.ok, config
    else:
        assert decoded.ok, (config, decoded.error)
        assert decoded.data == want, f"{config}: decoded differently from numcodecs"
    return "ok"


def check_decode_agrees(sc: SidecarProcess, config: dict[str, Any], encoded: bytes,
                        dtype: str | None = None, shape: list[int] | None = None) -> None:
    """Decoding ``encoded`` with ``config``: the sidecar succeeds exactly when
    numcodecs does, with the same bytes."""
    try:
        numcodecs.get_codec(dict(config))
    except Exception:  # noqa: BLE001 - refused up front: covered by check_agrees
        return
    want = numcodecs_decode(config, encoded)
    reply = sc.call("codec.decode", params(config, encoded, dtype, shape), timeout=60)
    if want is None:
        assert reply.code in ("decode_failed", "invalid_codec_config", "data_size_mismatch"), \
            (config, reply.error)
    else:
        assert reply.ok, (config, reply.error)
        assert reply.data == want, config


def sweep(sc: SidecarProcess, configs: list[dict[str, Any]], array: np.ndarray,
          dtype: str | None, shape: list[int] | None = None) -> set[str]:
    return {check_agrees(sc, c, array, dtype, shape) for c in configs}


# --------------------------------------------------------------------------
# The issue's cases

@pytest.mark.parametrize("config", [
    {"id": "zlib", "level": -1},
    {"id": "gzip", "level": -1},
    {"id": "lz4", "acceleration": 0},
    {"id": "lz4", "acceleration": -1},
    {"id": "zstd", "level": 23},
    {"id": "zstd", "level": 100},
    {"id": "zstd", "level": -200000},
    {"id": "shuffle", "elementsize": 0},
    {"id": "blosc", "blocksize": -1},
])
def test_issue_configs_are_accepted(sc: SidecarProcess, config: dict[str, Any]) -> None:
    assert numcodecs_encode(config, SMOOTH, True) is not None, "numcodecs takes it"
    assert check_agrees(sc, config, SMOOTH, "float64") == "ok"


# --------------------------------------------------------------------------
# Compressors

LEVELS = [-1000, -2, -1, 0, 1, 5, 9, 10, 100, 2**31 - 1]


@pytest.mark.parametrize("cid", ["zlib", "gzip", "bz2"])
def test_levels(sc: SidecarProcess, cid: str) -> None:
    outcomes = sweep(sc, [{"id": cid, "level": lvl} for lvl in LEVELS], SMOOTH, None)
    assert outcomes == {"ok", "refused"}
    reference = numcodecs_encode({"id": cid}, SMOOTH, False)
    assert reference is not None
    for lvl in LEVELS:
        check_decode_agrees(sc, {"id": cid, "level": lvl}, reference)


def test_lzma(sc: SidecarProcess) -> None:
    configs: list[dict[str, Any]] = [{"id": "lzma", "preset": p} for p in (-1, 0, 6, 9, 10)]
    configs += [{"id": "lzma", "format": f} for f in (-1, 0, 1, 2, 3, 4)]
    configs += [{"id": "lzma", "check": c} for c in (-2, -1, 0, 1, 4, 10, 16)]
    assert sweep(sc, configs, SMOOTH, None) == {"ok", "refused"}


def test_zstd(sc: SidecarProcess) -> None:
    levels = [-(2**31), -200000, -131073, -131072, -7, -1, 0, 1, 19, 22, 23, 1000, 2**31 - 1]
    configs = [{"id": "zstd", "level": lvl, "checksum": c} for lvl in levels
               for c in (False, True)]
    assert "ok" in sweep(sc, configs, SMOOTH, None)
    reference = numcodecs_encode({"id": "zstd"}, SMOOTH, False)
    assert reference is not None
    for lvl in levels:
        check_decode_agrees(sc, {"id": "zstd", "level": lvl}, reference)


def test_lz4(sc: SidecarProcess) -> None:
    values = [-(2**31), -1000, -1, 0, 1, 2, 65537, 2**31 - 1]
    assert "ok" in sweep(sc, [{"id": "lz4", "acceleration": a} for a in values], SMOOTH, None)


@pytest.mark.parametrize("cname", [*numcodecs.blosc.list_compressors(), "snappy", "nope", ""])
def test_blosc_cname_and_shuffle(sc: SidecarProcess, cname: str) -> None:
    configs = [{"id": "blosc", "cname": cname, "clevel": 5, "shuffle": s, "blocksize": 0}
               for s in (-2, -1, 0, 1, 2, 3)]
    outcomes = sweep(sc, configs, SMOOTH, "float64")
    if cname in numcodecs.blosc.list_compressors():
        assert outcomes == {"ok", "refused"}


def test_blosc_clevel_and_blocksize(sc: SidecarProcess) -> None:
    configs: list[dict[str, Any]] = [{"id": "blosc", "clevel": c} for c in (-1, 0, 1, 9, 10, 99)]
    configs += [{"id": "blosc", "blocksize": b} for b in (-(2**31), -1, 0, 1, 7, 4096, 2**31 - 1)]
    assert sweep(sc, configs, SMOOTH, "float64") == {"ok", "refused"}
    reference = numcodecs_encode({"id": "blosc"}, SMOOTH, True)
    assert reference is not None
    for cfg in configs:
        check_decode_agrees(sc, cfg, reference)


def test_pcodec(sc: SidecarProcess) -> None:
    configs: list[dict[str, Any]] = [{"id": "pcodec", "level": lvl} for lvl in (-1, 0, 8, 12, 13)]
    configs += [{"id": "pcodec", "delta_encoding_order": d, "delta_spec": "try_consecutive"}
                for d in (-1, 0, 7, 8)]
    configs += [{"id": "pcodec", "mode_spec": m} for m in ("auto", "classic", "nope")]
    assert sweep(sc, configs, SMOOTH, "float64") == {"ok", "refused"}


_ISOLATED = """
import io, sys, json, numpy as np, numcodecs
cfg = json.loads(sys.argv[1])
arr = np.load(io.BytesIO(sys.stdin.buffer.read()))
try:
    out = numcodecs.get_codec(cfg).encode(arr)
except Exception:
    sys.exit(3)
sys.stdout.buffer.write(bytes(memoryview(np.ascontiguousarray(out)).cast("B")))
"""


def numcodecs_encode_isolated(config: dict[str, Any], array: np.ndarray) -> bytes | str | None:
    """numcodecs' encoding in a child process: bytes, None when it refuses,
    or "crashed" when it takes its process down (zfp does, on some configs)."""
    import io
    import json
    import subprocess
    import sys

    buf = io.BytesIO()
    np.save(buf, array)
    proc = subprocess.run([sys.executable, "-c", _ISOLATED, json.dumps(config)],
                          input=buf.getvalue(), capture_output=True, timeout=60, check=False)
    if proc.returncode == 0:
        return proc.stdout
    return None if proc.returncode == 3 else "crashed" if proc.returncode < 0 else \
        pytest.fail(proc.stderr.decode())


def test_zfpy() -> None:
    # A sidecar of its own: some zfp configs corrupt the worker's heap (see
    # below), which must not crash the tests that share the module's one.
    with SidecarProcess(workers=1) as sc:
        _zfpy_sweep(sc)


def _zfpy_sweep(sc: SidecarProcess) -> None:
    configs: list[dict[str, Any]] = [{"id": "zfpy", "mode": m, "tolerance": 0.01}
                                     for m in (0, 1, 2, 3, 4, 5)]
    configs += [{"id": "zfpy", "mode": 2, "rate": r} for r in (-1.0, 0.0, 8.0, 64.0)]
    configs += [{"id": "zfpy", "mode": 3, "precision": p} for p in (-1, 0, 16, 64, 100)]
    configs += [{"id": "zfpy", "mode": 4, "tolerance": t} for t in (-1.0, 0.0, 1e-9, 1e300)]
    outcomes = set()
    for config in configs:
        expected = numcodecs_encode_isolated(config, GRID)
        reply = sc.call("codec.encode", params(config, raw(GRID), "float64", [30, 100]),
                        timeout=60)
        if expected == "crashed":
            # numcodecs takes it but zfp may crash on it (reading memory it
            # did not set: not always): the sidecar contains that in its
            # worker and keeps serving.
            assert reply.ok or reply.code in ("worker_crashed", "invalid_codec_config"), \
                reply.error
            assert sc.call("ping", {}, timeout=30).ok
            outcomes.add("crashed")
        elif expected is None:
            assert reply.code == "invalid_codec_config", (config, reply.error)
            outcomes.add("refused")
        elif reply.code == "worker_crashed":
            # Some zfp configs corrupt the heap without failing at once (a
            # process running numcodecs alone aborts later, in another
            # encode or at exit), so a worker may die on a good config after
            # earlier ones. The pool replaced it: the same config on the
            # fresh worker must give numcodecs' bytes.
            assert sc.call("ping", {}, timeout=30).ok
            reply = sc.call("codec.encode", params(config, raw(GRID), "float64", [30, 100]),
                            timeout=60)
            assert reply.ok, (config, reply.error)
            assert reply.data == expected, config
            outcomes.add("crashed")
        else:
            assert reply.ok, (config, reply.error)
            assert reply.data == expected, config
            outcomes.add(check_agrees(sc, config, GRID, "float64", [30, 100]))
    assert {"ok", "refused"} <= outcomes


# --------------------------------------------------------------------------
# Filters and checksums

@pytest.mark.parametrize("elementsize", [-1, 0, 1, 2, 3, 4, 8, 16, 1000, 2**31 - 1])
def test_shuffle(sc: SidecarProcess, elementsize: int) -> None:
    check_agrees(sc, {"id": "shuffle", "elementsize": elementsize}, SMOOTH, "float64")
    check_agrees(sc, {"id": "shuffle", "elementsize": elementsize}, SMOOTH, None)


def test_delta_and_astype(sc: SidecarProcess) -> None:
    configs: list[dict[str, Any]] = [{"id": "delta", "dtype": d} for d in ("<i8", "<i4", "<i1")]
    configs += [{"id": "delta", "dtype": "<i8", "astype": a} for a in ("<i8", "<i2", "<u1", "<f8")]
    assert "ok" in sweep(sc, configs, INTS, "int64")
    configs = [{"id": "astype", "encode_dtype": e, "decode_dtype": "<f8"}
               for e in ("<f2", "<f4", "<f8", "<i4", "|u1")]
    assert "ok" in sweep(sc, configs, SMOOTH, "float64")


def test_fixedscaleoffset_quantize_bitround(sc: SidecarProcess) -> None:
    configs: list[dict[str, Any]] = [
        {"id": "fixedscaleoffset", "offset": o, "scale": s, "dtype": "<f8", "astype": a}
        for o in (0, -1e6) for s in (0, -1, 1, 1000, 1e300) for a in ("<i4", "|i1", "<u8")]
    configs += [{"id": "quantize", "digits": d, "dtype": "<f8", "astype": a}
                for d in (-1, 0, 1, 3, 20) for a in ("<f8", "<f4", "<f2")]
    configs += [{"id": "bitround", "keepbits": k} for k in (-1, 0, 1, 23, 52, 53, 64)]
    assert sweep(sc, configs, SMOOTH, "float64") == {"ok", "refused"}


def test_packbits_and_categorize(sc: SidecarProcess) -> None:
    assert check_agrees(sc, {"id": "packbits"}, BOOLS, "bool") == "ok"
    configs = [{"id": "categorize", "labels": labels, "dtype": "<U5", "astype": a}
               for labels in (["apple", "pear", "fig"], [], ["kiwi"] * 3)
               for a in ("|u1", "<u2", "<i8", "<f8")]
    assert "ok" in sweep(sc, configs, LABELS, "U5")


@pytest.mark.parametrize("cid", ["crc32", "adler32", "fletcher32", "crc32c", "base64"])
def test_checksums_and_base64(sc: SidecarProcess, cid: str) -> None:
    assert check_agrees(sc, {"id": cid}, SMOOTH, None) == "ok"
    if cid in ("crc32", "adler32", "crc32c"):
        check_agrees(sc, {"id": cid, "location": "end"}, SMOOTH, None)
        check_agrees(sc, {"id": cid, "location": "nowhere"}, SMOOTH, None)


def test_jenkins_lookup3(sc: SidecarProcess) -> None:
    configs = [{"id": "jenkins_lookup3", "initval": i, "prefix": p}
               for i in (-1, 0, 7, 2**32 - 1, 2**32) for p in (None, b"ab")]
    assert sweep(sc, configs, SMOOTH, None) == {"ok", "refused"}


# --------------------------------------------------------------------------
# Random integer parameters

_SLOW = settings(max_examples=30, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
_ANY_INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_INT_PARAMS = [("zlib", "level"), ("gzip", "level"), ("bz2", "level"), ("zstd", "level"),
               ("lz4", "acceleration"), ("blosc", "clevel"), ("blosc", "blocksize"),
               ("blosc", "shuffle"), ("shuffle", "elementsize"), ("lzma", "preset")]


@_SLOW
@given(which=st.sampled_from(_INT_PARAMS),
       value=st.one_of(_ANY_INT, st.integers(min_value=-3, max_value=25)))
def test_random_int_params(sc: SidecarProcess, which: tuple[str, str], value: int) -> None:
    cid, key = which
    check_agrees(sc, {"id": cid, key: value}, SMOOTH, "float64")


# --------------------------------------------------------------------------
# Types are still checked at the edge

@pytest.mark.parametrize("config,key", [
    ({"id": "zlib", "level": "9"}, "level"),
    ({"id": "zlib", "level": 1.5}, "level"),
    ({"id": "gzip", "level": True}, "level"),
    ({"id": "lz4", "acceleration": None}, "acceleration"),
    ({"id": "zstd", "level": [3]}, "level"),
    ({"id": "zstd", "checksum": "yes"}, "checksum"),
    ({"id": "blosc", "cname": 5}, "cname"),
    ({"id": "blosc", "clevel": "5"}, "clevel"),
    ({"id": "shuffle", "elementsize": 8.0}, "elementsize"),
    ({"id": "zlib", "lvl": 3}, "lvl"),
])
def test_wrong_types_are_refused(sc: SidecarProcess, config: dict[str, Any], key: str) -> None:
    reply = sc.call("codec.encode", {"codec": config, "data": raw(SMOOTH)}, timeout=60)
    assert reply.code == "invalid_codec_config", reply.error
    assert reply.error["details"]["key"] == key


def test_encode_failure_on_data_is_not_a_config_error(sc: SidecarProcess) -> None:
    """A codec that fails on the data (not on zeros of its shape) is encode_failed."""
    config = {"id": "categorize", "labels": ["a"], "dtype": "|O"}
    reply = sc.call("codec.encode", {"codec": config, "values": ["a", {"no": "hash"}]},
                    timeout=60)
    expected = numcodecs_encode_values(config, ["a", {"no": "hash"}])
    if expected is None:
        assert reply.code == "encode_failed", reply.error
    else:
        assert reply.ok and reply.data == expected


def numcodecs_encode_values(config: dict[str, Any], values: list[Any]) -> bytes | None:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    try:
        return bytes(ensure_ndarray(numcodecs.get_codec(dict(config)).encode(arr)))
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------
# categorize with an object dtype (decode only maps integers to its labels)

@pytest.mark.parametrize("allow_pickle", [False, True])
def test_categorize_object_dtype(allow_pickle: bool) -> None:
    config = {"id": "categorize", "labels": ["male", "female"], "dtype": "|O", "astype": "|u1"}
    values = ["male", "female", "female", "male", "unexpected"]
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    codec = numcodecs.get_codec(dict(config))
    expected = bytes(ensure_ndarray(codec.encode(arr)))
    args = ["--allow-pickle"] if allow_pickle else []
    with SidecarProcess(args, workers=1) as sidecar:
        enc = sidecar.call("codec.encode", {"codec": config, "values": values}, timeout=60)
        assert enc.ok, enc.error
        assert enc.data == expected
        dec = sidecar.call("codec.decode", {"codec": config, "data": expected}, timeout=60)
        assert dec.ok, dec.error
        assert dec.result["values"] == codec.decode(expected).tolist()
        # a v2 chunk of a string array stored with categorize as its only filter
        spec = {"zarr_format": 2, "dtype": "string", "shape": [5],
                "filters": [config], "compressor": {"id": "zlib", "level": -1}}
        chunk = numcodecs.Zlib(level=-1).encode(expected)
        out = sidecar.call("codec.pipeline_decode", {**spec, "data": chunk}, timeout=60)
        assert out.ok, out.error
        assert out.result["values"] == ["male", "female", "female", "male", ""]
        # raw object pointers stay refused, with or without the opt-in
        bad = sidecar.call("codec.decode", {"codec": {"id": "astype", "encode_dtype": "<i8",
                                                      "decode_dtype": "|O"}, "data": b"x" * 8},
                           timeout=60)
        assert bad.code == "codec_forbidden", bad.error


# --------------------------------------------------------------------------
# Batches as an upload with sizes (PROTOCOL.md §6)

def test_batch_upload_with_sizes_over_the_frame_limit() -> None:
    rng = np.random.default_rng(5)
    raws = [rng.integers(0, 40, size=300_000, dtype=np.uint8).tobytes() for _ in range(6)]
    codec = numcodecs.Zstd(level=1)
    encs = [bytes(codec.encode(r)) for r in raws]
    with SidecarProcess(["--max-frame-bytes", str(1 << 20)], workers=2) as sidecar:
        for method, items, want in [("codec.decode_many", encs, raws),
                                    ("codec.encode_many", raws, encs)]:
            blob = b"".join(items)
            rid = sidecar.request(method, {"codec": {"id": "zstd", "level": 1},
                                           "sizes": [len(i) for i in items],
                                           "stream": {"bytes": len(blob)}})
            sidecar.upload(rid, blob)
            reply = sidecar.response(rid, timeout=60)
            result = reply.unwrap()
            assert "stream" in result, "results over the frame limit come as a stream"
            out, offset, got = reply.data, 0, []
            for n in result["sizes"]:
                got.append(out[offset:offset + n])
                offset += n
            assert got == want, method
        rid = sidecar.request("codec.decode_many", {"codec": {"id": "zstd"}, "sizes": [1, 2],
                                                    "stream": {"bytes": 4}})
        sidecar.upload(rid, b"abcd")
        assert sidecar.response(rid, timeout=30).code == "data_size_mismatch"
        sidecar.ping()


def test_inline_batch_over_max_request_bytes_is_too_large() -> None:
    with SidecarProcess(["--max-request-bytes", "1000"], workers=1) as sidecar:
        reply = sidecar.call("codec.encode_many", {"codec": {"id": "zlib"},
                                                   "items": [b"x" * 600, b"y" * 600]})
        assert reply.code == "too_large", reply.error
        assert "max_request_bytes" in reply.error["message"]
        assert sidecar.call("codec.encode_many", {"codec": {"id": "zlib"},
                                                  "items": [b"x" * 600]}).ok
