"""Every dtype zarr-python stores, both ways through a real sidecar.

zarr-python writes (with missing chunks and special values: NaN, NaT, empty
strings, non-BMP characters) and the sidecar reads; the sidecar creates and
writes and zarr-python reads. Fixed-size data are compared byte for byte in
the wire layout (little-endian, C order); ``string`` and ``bytes`` travel as
values and are compared as lists. Then the spellings real writers produce
(``<u1``, ``<S5``, big endian, Fortran order) are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
from helpers import SidecarProcess, err, fs, ok


pytestmark = [pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
              pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")]

NAT = -(2**63)

#: wire dtype -> numpy dtype zarr-python is given (None: zarr's own class)
DTYPES: dict[str, Any] = {
    "bool": "bool", "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float16": "float16", "float32": "float32", "float64": "float64",
    "complex64": "complex64", "complex128": "complex128",
    "datetime64[ns]": "datetime64[ns]", "datetime64[D]": "datetime64[D]",
    "datetime64[10ms]": "datetime64[10ms]",
    "timedelta64[s]": "timedelta64[s]", "timedelta64[us]": "timedelta64[us]",
    "S7": "S7", "U5": "U5", "string": None, "bytes": None,
}
STRUCT_WIRE = [["a", "int32"], ["b", "float64"], ["c", "S3"], ["d", "uint8"]]
STRUCT = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "S3"), ("d", "u1")])


def zarr_dtype(wire: Any) -> Any:
    if wire == "string":
        return zarr.core.dtype.VariableLengthUTF8()
    if wire == "bytes":
        return zarr.core.dtype.VariableLengthBytes()
    if isinstance(wire, list):
        return STRUCT
    return np.dtype(DTYPES[wire])


def wire_bytes(a: np.ndarray) -> bytes:
    """Fixed-size data as the wire carries it: every part little-endian, C order."""
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes()


_TEXT = ["", "a", "héllo", "日本", "𝄞x", "zz\u00e9", "end"]


def sample(wire: Any, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Data of the dtype with its special values mixed in."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if isinstance(wire, list):
        a = np.zeros(n, dtype=STRUCT)
        a["a"] = rng.integers(-2**31, 2**31 - 1, n)
        a["b"] = rng.standard_normal(n)
        a["b"][:1] = np.nan
        a["c"] = [bytes(rng.integers(97, 123, int(k))) for k in rng.integers(0, 4, n)]
        a["d"] = rng.integers(0, 255, n)
        return a.reshape(shape)
    if wire == "string":
        return np.array([_TEXT[i % len(_TEXT)] + str(int(x)) * (i % 3)
                         for i, x in enumerate(rng.integers(0, 100, n))],
                        dtype=np.dtypes.StringDType()).reshape(shape)
    if wire == "bytes":
        a = np.empty(n, dtype=object)
        a[:] = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in
                rng.integers(0, 6, n)]
        return a.reshape(shape)
    dt = np.dtype(DTYPES.get(wire, wire))
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, n, dtype=dt, endpoint=True).reshape(shape)
    if dt.kind == "f":
        a = (rng.standard_normal(n) * 100).astype(dt)
        a[:4] = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=dt)[:min(n, 4)]
        return a.reshape(shape)
    if dt.kind == "c":
        a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
        a[:2] = np.array([complex(np.nan, 1.0), complex(-0.0, np.inf)], dtype=dt)[:min(n, 2)]
        return a.reshape(shape)
    if dt.kind in "mM":
        a = rng.integers(-10**9, 10**9, n).astype("i8")
        a[:2] = NAT
        return a.view(dt).reshape(shape)
    if dt.kind == "S":
        return np.array([bytes(rng.integers(1, 256, int(k), dtype=np.uint8)) for k in
                         rng.integers(0, dt.itemsize + 1, n)], dtype=dt).reshape(shape)
    if dt.kind == "U":
        return np.array([_TEXT[int(k) % len(_TEXT)][:dt.itemsize // 4] for k in
                         rng.integers(0, 100, n)], dtype=dt).reshape(shape)
    raise AssertionError(dt)


def fill_for(wire: Any) -> tuple[Any, Any]:
    """(wire fill value, the same for zarr-python)."""
    if isinstance(wire, list):
        rec = np.array([(7, 1.5, b"ab", 3)], dtype=STRUCT)
        return rec.tobytes(), rec[0]
    if wire == "string":
        return "-", "-"
    if wire == "bytes":
        return b"\x00z", b"\x00z"
    dt = np.dtype(DTYPES[wire])
    if dt.kind == "m":
        return 123, np.array(123, "i8").view(dt)[()]
    return {
        "b": (True, True), "i": (-5, -5), "u": (9, 9), "f": (float("nan"), float("nan")),
        "c": ([1.5, -2.0], complex(1.5, -2.0)), "M": (NAT, np.datetime64("NaT")),
        "S": (b"fill", b"fill"), "U": ("fi", "fi"),
    }[dt.kind]


def check(reply: Any, wire: Any, expected: np.ndarray) -> None:
    res = ok(reply)
    assert res["shape"] == list(expected.shape)
    assert res["dtype"] == wire
    if wire in ("string", "bytes"):
        assert "data" not in res
        assert res["values"] == expected.reshape(-1).tolist()
    else:
        assert reply.data == wire_bytes(expected)


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


ALL = [*DTYPES, "struct"]


def _wire(name: str) -> Any:
    return STRUCT_WIRE if name == "struct" else name


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_zarr_python_writes_sidecar_reads(sc, tmp_path, fmt, name):
    wire = _wire(name)
    shape, chunks = (9, 5), (4, 3)
    data = sample(wire, shape, seed=len(name) * fmt)
    wfill, zfill = fill_for(wire)
    z = zarr.create_array(str(tmp_path / "z"), shape=shape, chunks=chunks,
                          dtype=zarr_dtype(wire), zarr_format=fmt, fill_value=zfill)
    z[4:, :] = data[4:, :]  # the first chunk row stays missing: fill value
    expected = z[...]
    meta = ok(sc.call("array.open", {"store": fs(tmp_path / "z")}))["metadata"]
    assert meta["dtype"] == wire
    if isinstance(wfill, float):
        assert np.isnan(meta["fill_value"])
    else:
        assert meta["fill_value"] == wfill
    check(sc.call("array.read", {"store": fs(tmp_path / "z")}), wire, expected)
    # a box with a step
    reply = sc.call("array.read", {"store": fs(tmp_path / "z"), "start": [1, 0],
                                   "stop": [9, 5], "step": [3, 2]})
    check(reply, wire, expected[1:9:3, 0:5:2])


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_sidecar_writes_zarr_python_reads(sc, tmp_path, fmt, name):
    wire = _wire(name)
    shape, chunks = (7, 6), (3, 4)
    data = sample(wire, shape, seed=3 + fmt)
    wfill, zfill = fill_for(wire)
    st = {"store": fs(tmp_path / "s")}
    meta = ok(sc.call("array.create", {**st, "zarr_format": fmt, "shape": list(shape),
                                       "chunks": list(chunks), "dtype": wire,
                                       "fill_value": wfill}))["metadata"]
    assert meta["dtype"] == wire
    box = (slice(2, 7), slice(1, 6))
    part = data[box]
    payload: dict[str, Any]
    if wire in ("string", "bytes"):
        payload = {"values": part.reshape(-1).tolist()}
    else:
        payload = {"data": wire_bytes(part)}
    ok(sc.call("array.write", {**st, "start": [2, 1], "shape": list(part.shape), **payload}))
    z = zarr.open_array(str(tmp_path / "s"), mode="r")
    assert z.metadata.zarr_format == fmt
    got = z[...]
    want = np.full(shape, zfill, dtype=z.dtype) if wire not in ("string", "bytes") else None
    if want is None:
        want = np.empty(shape, dtype=object)
        want[...] = zfill
        want[box] = part
        assert got.tolist() == want.tolist()
    else:
        want[box] = part
        assert wire_bytes(got) == wire_bytes(want)
    # the sidecar reads its own array the same way
    check(sc.call("array.read", st), wire, got)


def test_datetime_nat_and_units_are_kept(sc, tmp_path):
    data = np.array([0, 1, NAT, 2**40], dtype="i8").view("datetime64[ms]")
    ok(sc.call("array.create", {"store": fs(tmp_path / "t"), "shape": [4], "chunks": [3],
                                "dtype": "datetime64[ms]"}))
    meta = ok(sc.call("array.open", {"store": fs(tmp_path / "t")}))["metadata"]
    assert meta["fill_value"] == NAT  # zarr-python's default for datetimes
    ok(sc.call("array.write", {"store": fs(tmp_path / "t"), "shape": [4],
                               "data": data.tobytes()}))
    z = zarr.open_array(str(tmp_path / "t"), mode="r")
    assert z.dtype == np.dtype("datetime64[ms]")
    assert z[...].view("i8").tolist() == [0, 1, NAT, 2**40]
    assert np.isnat(z[2])


def test_fixed_strings_pad_and_truncate_like_numpy(sc, tmp_path):
    ok(sc.call("array.create", {"store": fs(tmp_path / "u"), "shape": [3], "chunks": [2],
                                "dtype": "U3", "zarr_format": 2}))
    raw = np.array(["a", "𝄞é", "xyz"], dtype="<U3")
    ok(sc.call("array.write", {"store": fs(tmp_path / "u"), "shape": [3],
                               "data": raw.tobytes()}))
    assert zarr.open_array(str(tmp_path / "u"), mode="r")[...].tolist() == ["a", "𝄞é", "xyz"]
    reply = sc.call("array.read", {"store": fs(tmp_path / "u")})
    assert reply.data == raw.tobytes() and len(reply.data) == 3 * 12  # UTF-32LE
    err(sc.call("array.write", {"store": fs(tmp_path / "u"), "shape": [3],
                                "values": ["a", "b", "c"]}), "invalid_params")


def test_values_errors(sc, tmp_path):
    st = {"store": fs(tmp_path / "v")}
    ok(sc.call("array.create", {**st, "shape": [4], "chunks": [2], "dtype": "string"}))
    err(sc.call("array.write", {**st, "shape": [4], "values": ["a", "b"]}),
        "data_size_mismatch")
    err(sc.call("array.write", {**st, "shape": [2], "values": ["a", b"b"]}), "invalid_params")
    err(sc.call("array.write", {**st, "shape": [4], "data": b"\0" * 4}), "invalid_params")
    err(sc.call("array.write", {**st, "shape": [1], "values": ["a"], "data": b"a"}),
        "invalid_params")
    ok(sc.call("array.create", {"store": fs(tmp_path / "b"), "shape": [2], "chunks": [2],
                                "dtype": "bytes"}))
    err(sc.call("array.write", {"store": fs(tmp_path / "b"), "shape": [2],
                                "values": ["a", "b"]}), "invalid_params")
    res = ok(sc.call("array.read", {"store": fs(tmp_path / "b")}))
    assert res["values"] == [b"", b""]
    sc.ping()


# --------------------------------------------------------------------------
# Spellings real writers produce

def _write_v2(path: Path, dtype: Any, data: np.ndarray, chunks: tuple[int, ...],
              fill: Any = None, order: str = "C", compressor: Any = None) -> None:
    """A v2 array written by hand, the way another implementation would."""
    path.mkdir(parents=True)
    doc = {"zarr_format": 2, "shape": list(data.shape), "chunks": list(chunks), "dtype": dtype,
           "compressor": compressor.get_config() if compressor else None, "fill_value": fill,
           "filters": None, "order": order}
    (path / ".zarray").write_text(json.dumps(doc))
    grid = [-(-n // c) for n, c in zip(data.shape, chunks)]
    for idx in np.ndindex(*grid):
        block = np.zeros(chunks, dtype=data.dtype)
        src = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, data.shape))
        block[tuple(slice(0, s.stop - s.start) for s in src)] = data[src]
        raw = np.asarray(block).tobytes(order=order)
        if compressor:
            raw = compressor.encode(raw)
        (path / ".".join(map(str, idx))).write_bytes(raw)


@pytest.mark.parametrize("spelling,numpy_dtype,wire", [
    ("<u1", "u1", "uint8"), (">u1", "u1", "uint8"), ("=u1", "u1", "uint8"),
    ("<i1", "i1", "int8"), ("<b1", "?", "bool"), ("<S4", "S4", "S4"), ("u2", "<u2", "uint16"),
    ("=f8", "<f8", "float64"), ("|f4", "<f4", "float32"),
])
def test_tolerant_dtype_spellings(sc, tmp_path, spelling, numpy_dtype, wire):
    data = sample(wire, (5, 3), seed=4) if wire != "S4" else \
        np.array([[b"ab", b"", b"xyzw"]] * 5, dtype="S4")
    _write_v2(tmp_path / "a", spelling, data.astype(numpy_dtype), (2, 2),
              compressor=numcodecs.Zlib(1))
    res = ok(sc.call("array.open", {"store": fs(tmp_path / "a")}))
    assert res["metadata"]["dtype"] == wire
    check(sc.call("array.read", {"store": fs(tmp_path / "a")}), wire, data)
    # and the sidecar writes into it, keeping what other readers expect
    ok(sc.call("array.write", {"store": fs(tmp_path / "a"), "start": [1, 1], "shape": [1, 1],
                               "data": wire_bytes(data[:1, :1])}))
    data[1, 1] = data[0, 0]
    check(sc.call("array.read", {"store": fs(tmp_path / "a")}), wire, data)


def test_tolerant_structured_and_complex_fill(sc, tmp_path):
    dt = np.dtype([("x", "u1"), ("y", ">i2"), ("z", "<f4")])
    data = np.zeros((4,), dtype=dt)
    data["x"] = [1, 2, 3, 4]
    data["y"] = [-1, 300, 7, -30000]
    data["z"] = [0.5, np.nan, -2.0, 1e30]
    _write_v2(tmp_path / "s", [["x", "<u1"], ["y", ">i2"], ["z", "<f4"]], data, (3,))
    res = ok(sc.call("array.read", {"store": fs(tmp_path / "s")}))
    assert res["dtype"] == [["x", "uint8"], ["y", "int16"], ["z", "float32"]]
    assert res["data"] == wire_bytes(data)
    c = (np.arange(6) + 1j).astype("<c8")
    _write_v2(tmp_path / "c", "<c8", c, (4,), fill=0)
    res = ok(sc.call("array.open", {"store": fs(tmp_path / "c")}))
    assert res["metadata"]["fill_value"] == [0.0, 0.0]
    assert sc.call("array.read", {"store": fs(tmp_path / "c")}).data == c.tobytes()


@pytest.mark.parametrize("dtype", [">f8", ">c16", ">M8[ns]", ">U3", ">f2", ">u8", ">m8[s]"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_v2_big_endian_and_fortran_order_both_ways(sc, tmp_path, dtype, order):
    native = np.dtype(dtype).newbyteorder("<")
    wire = {"f8": "float64", "c16": "complex128", "M8[ns]": "datetime64[ns]", "U3": "U3",
            "f2": "float16", "u8": "uint64", "m8[s]": "timedelta64[s]"}[dtype[1:]]
    data = sample(wire, (6, 5), seed=11).astype(native)
    z = zarr.create_array(str(tmp_path / "z"), shape=(6, 5), chunks=(4, 2), dtype=dtype,
                          zarr_format=2, order=order, compressors=numcodecs.Zstd(level=1))
    z[...] = data
    check(sc.call("array.read", {"store": fs(tmp_path / "z"), "start": [1, 1],
                                 "stop": [6, 5]}), wire, data[1:, 1:])
    # the sidecar creates Fortran-order arrays too
    ok(sc.call("array.create", {"store": fs(tmp_path / "s"), "zarr_format": 2, "shape": [6, 5],
                                "chunks": [4, 2], "dtype": wire, "order": order}))
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": [6, 5],
                               "data": wire_bytes(data)}))
    zs = zarr.open_array(str(tmp_path / "s"), mode="r")
    assert zs.metadata.order == order
    assert wire_bytes(zs[...]) == wire_bytes(data)


@pytest.mark.parametrize("dtype", ["float64", "int32", "complex64", "datetime64[us]", "U2",
                                   "float16"])
def test_v3_big_endian_bytes_codec(sc, tmp_path, dtype):
    data = sample(dtype, (5, 4), seed=2)
    z = zarr.create_array(str(tmp_path / "z"), shape=(5, 4), chunks=(2, 3), dtype=dtype,
                          serializer=zarr.codecs.BytesCodec(endian="big"), compressors=None)
    z[...] = data
    check(sc.call("array.read", {"store": fs(tmp_path / "z")}), dtype, data)
    codecs = [{"name": "bytes", "configuration": {"endian": "big"}}]
    ok(sc.call("array.create", {"store": fs(tmp_path / "s"), "shape": [5, 4],
                                "chunks": [2, 3], "dtype": dtype, "codecs": codecs}))
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": [5, 4],
                               "data": wire_bytes(data)}))
    chunk = (tmp_path / "s" / "c" / "0" / "0").read_bytes()
    assert chunk == np.ascontiguousarray(data[:2, :3]).astype(
        data.dtype.newbyteorder(">")).tobytes()
    assert wire_bytes(zarr.open_array(str(tmp_path / "s"), mode="r")[...]) == wire_bytes(data)


def test_tensorstore_spellings(sc, tmp_path):
    ts = pytest.importorskip("tensorstore")
    for drv, dtype in [("zarr", "uint8"), ("zarr", "int8"), ("zarr", "bool"),
                       ("zarr", "float16"), ("zarr3", "uint8"), ("zarr3", "complex64")]:
        path = tmp_path / f"{drv}_{dtype}"
        data = sample(dtype, (6, 4), seed=5)
        t = ts.open({"driver": drv, "kvstore": {"driver": "file", "path": str(path)}},
                    create=True, dtype=dtype, shape=[6, 4]).result()
        t[1:, :].write(data[1:, :]).result()
        want = t.read().result()
        check(sc.call("array.read", {"store": fs(path)}), dtype, np.asarray(want))
    # an older tensorstore's `<u1` and `<b1`
    for dtype, wire in [("uint8", "uint8"), ("bool", "bool")]:
        path = tmp_path / f"old_{dtype}"
        t = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}},
                    create=True, dtype=dtype, shape=[5]).result()
        data = sample(wire, (5,), seed=6)
        t.write(data).result()
        doc = json.loads((path / ".zarray").read_text())
        doc["dtype"] = "<" + doc["dtype"][1:]
        (path / ".zarray").write_text(json.dumps(doc))
        check(sc.call("array.read", {"store": fs(path)}), wire, data)
