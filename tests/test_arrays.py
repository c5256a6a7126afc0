"""The array.* methods through a real sidecar, with zarr-python as the other side.

Every comparison is exact: the bytes the sidecar returns (little-endian,
C order) against zarr-python's array converted to the same layout, so floats
are compared bit for bit (NaN and -0.0 included).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.codecs.numcodecs as zn
from helpers import SidecarProcess, err, fs, ok

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

MiB = 1 << 20

DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float32", "float64", "bool"]

#: numcodecs configs as a client gives them to array.create
COMPRESSORS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "zlib": {"id": "zlib", "level": 1},
    "gzip": {"id": "gzip", "level": 1},
    "zstd": {"id": "zstd", "level": 3},
    "lz4": {"id": "lz4", "acceleration": 1},
    "blosc": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1},
    "bz2": {"id": "bz2", "level": 1},
    "lzma": {"id": "lzma", "preset": 1},
}

#: (shape, chunks) with partial edge chunks, per number of dimensions
GEOMETRY = {
    1: ((37,), (10,)),
    2: ((23, 17), (5, 4)),
    3: ((9, 7, 5), (4, 3, 2)),
    4: ((5, 4, 3, 6), (2, 3, 2, 4)),
}


def zarr_compressor(name: str, fmt: int) -> Any:
    """What zarr-python itself is given, written independently of the sidecar's mapping."""
    cfg = COMPRESSORS[name]
    if cfg is None:
        return None
    if fmt == 2:
        return numcodecs.get_codec(dict(cfg))
    return {
        "zlib": lambda: zn.Zlib(level=1),
        "gzip": lambda: zarr.codecs.GzipCodec(level=1),
        "zstd": lambda: zarr.codecs.ZstdCodec(level=3),
        "lz4": lambda: zn.LZ4(acceleration=1),
        "blosc": lambda: zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
        "bz2": lambda: zn.BZ2(level=1),
        "lzma": lambda: zn.LZMA(preset=1),
    }[name]()


def sample(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, n, dtype=dt, endpoint=True).reshape(shape)
    a = (rng.standard_normal(n) * 1000).astype(dt)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], dtype=dt)
    a[: min(n, 5)] = specials[: min(n, 5)]
    rng.shuffle(a)
    return a.reshape(shape)


def le_bytes(a: np.ndarray) -> bytes:
    """An array as the wire carries it: little-endian, C order."""
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder in "<>=" else a.dtype
    return np.ascontiguousarray(a, dtype=dt).tobytes()


def same(got: bytes, expected: np.ndarray) -> None:
    exp = le_bytes(expected)
    assert len(got) == len(exp)
    if got != exp:
        dt = np.dtype(expected.dtype).newbyteorder("<")
        g = np.frombuffer(got, dt).reshape(expected.shape)
        bad = np.argwhere(g.view(f"u{dt.itemsize}") != np.asarray(expected, dt).view(
            f"u{dt.itemsize}"))
        raise AssertionError(f"{len(bad)} elements differ, first at {bad[:3].tolist()}: "
                             f"got {g[tuple(bad[0])]!r}, expected {expected[tuple(bad[0])]!r}")


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


# --------------------------------------------------------------------------
# The matrix: formats x dtypes x compressors x 1-4 dimensions

def _cases() -> list[tuple[int, str, str, int]]:
    out = []
    for fmt in (2, 3):
        for ci, comp in enumerate(COMPRESSORS):
            for di, dtype in enumerate(DTYPES):
                out.append((fmt, comp, dtype, 1 + (ci + di + fmt) % 4))
    return out


def _fill_for(dtype: str) -> Any:
    kind = np.dtype(dtype).kind
    return {"b": True, "f": float("nan"), "i": -3, "u": 7}[kind]


@pytest.mark.parametrize("fmt,comp,dtype,ndim", _cases(),
                         ids=lambda v: str(v))
def test_matrix_roundtrip(sc, tmp_path, fmt, comp, dtype, ndim):
    shape, chunks = GEOMETRY[ndim]
    data = sample(dtype, shape, seed=hash((fmt, comp, dtype)) % 2**32)
    fill = _fill_for(dtype)

    # zarr-python writes (leaving the first chunk row missing) -> the sidecar reads
    a_path = tmp_path / "by_zarr"
    z = zarr.create_array(str(a_path), shape=shape, chunks=chunks, dtype=dtype, zarr_format=fmt,
                          compressors=zarr_compressor(comp, fmt), fill_value=fill)
    z[chunks[0]:] = data[chunks[0]:]
    expected = z[...]
    reply = sc.call("array.read", {"store": fs(a_path), "path": ""})
    res = ok(reply)
    assert res["shape"] == list(shape) and res["dtype"] == dtype
    same(reply.data, expected)
    # a box with odd corners
    lo = tuple(max(0, n // 3 - 1) for n in shape)
    hi = tuple(n - n // 4 for n in shape)
    reply = sc.call("array.read", {"store": fs(a_path), "start": list(lo), "stop": list(hi)})
    same(reply.data, expected[tuple(slice(a, b) for a, b in zip(lo, hi))])

    # the sidecar creates and writes -> zarr-python reads
    b_path = tmp_path / "by_sidecar"
    meta = ok(sc.call("array.create", {
        "store": fs(b_path), "zarr_format": fmt, "shape": list(shape), "chunks": list(chunks),
        "dtype": dtype, "compressor": COMPRESSORS[comp], "fill_value": fill}))["metadata"]
    assert meta["zarr_format"] == fmt and meta["dtype"] == dtype
    assert meta["shape"] == list(shape) and meta["chunks"] == list(chunks)
    if COMPRESSORS[comp] is None:
        assert meta["compressor"] is None
    else:
        assert meta["compressor"]["id"] == COMPRESSORS[comp]["id"]
    # whole array, then a partial box on top (read-modify-write of edge chunks)
    ok(sc.call("array.write", {"store": fs(b_path), "shape": list(shape),
                               "data": le_bytes(data)}))
    patch = sample(dtype, tuple(b - a for a, b in zip(lo, hi)), seed=1)
    ok(sc.call("array.write", {"store": fs(b_path), "start": list(lo),
                               "shape": list(patch.shape), "data": le_bytes(patch)}))
    want = data.copy()
    want[tuple(slice(a, b) for a, b in zip(lo, hi))] = patch
    zb = zarr.open_array(str(b_path), mode="r")
    assert zb.metadata.zarr_format == fmt
    same(le_bytes(zb[...]), want)
    if COMPRESSORS[comp] is not None and fmt == 2:
        assert zb.metadata.compressor.get_config()["id"] == COMPRESSORS[comp]["id"]


# --------------------------------------------------------------------------
# Filters, separators, order, byte order, fill values

@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("name,dtype,filters", [
    ("delta", "int32", [{"id": "delta", "dtype": "<i4"}]),
    ("quantize", "float64", [{"id": "quantize", "digits": 3, "dtype": "<f8"}]),
    ("shuffle", "float64", [{"id": "shuffle", "elementsize": 8}]),
    ("delta+shuffle", "int64", [{"id": "delta", "dtype": "<i8"},
                                {"id": "shuffle", "elementsize": 8}]),
])
def test_filters(sc, tmp_path, fmt, name, dtype, filters):
    shape, chunks = (30, 11), (8, 4)
    data = sample(dtype, shape, seed=3)
    if dtype.startswith("float"):
        data = np.nan_to_num(data, nan=1.5, posinf=2.5, neginf=-2.5)
    # the sidecar writes with filters, zarr-python reads
    ok(sc.call("array.create", {"store": fs(tmp_path / "s"), "zarr_format": fmt,
                                "shape": list(shape), "chunks": list(chunks), "dtype": dtype,
                                "filters": filters, "compressor": {"id": "zlib", "level": 1}}))
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": list(shape),
                               "data": le_bytes(data)}))
    z = zarr.open_array(str(tmp_path / "s"), mode="r")
    got = z[...]
    if name == "quantize":
        assert np.allclose(got, data, atol=1e-3)
    else:
        same(le_bytes(got), data)
    ids = [f["id"] for f in filters]
    if fmt == 2:
        assert [f.get_config()["id"] for f in z.metadata.filters] == ids
    else:
        names = [c.to_dict()["name"] for c in z.metadata.codecs]
        assert all(f"numcodecs.{i}" in names for i in ids), names
    # and the sidecar reads zarr-python's encoding of the same data
    z2 = zarr.create_array(str(tmp_path / "z"), shape=shape, chunks=chunks, dtype=dtype,
                           zarr_format=fmt, **_zarr_filters(fmt, filters))
    z2[...] = data
    reply = sc.call("array.read", {"store": fs(tmp_path / "z")})
    same(reply.data, z2[...])


def _zarr_filters(fmt: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    if fmt == 2:
        return {"filters": [numcodecs.get_codec(dict(f)) for f in filters],
                "compressors": numcodecs.Zlib(1)}
    aa = [f for f in filters if f["id"] != "shuffle"]
    bb = [f for f in filters if f["id"] == "shuffle"]
    as_v3 = {"delta": zn.Delta, "quantize": zn.Quantize, "shuffle": zn.Shuffle}
    return {"filters": [as_v3[f["id"]](**{k: v for k, v in f.items() if k != "id"}) for f in aa],
            "compressors": [as_v3[f["id"]](**{k: v for k, v in f.items() if k != "id"})
                            for f in bb] + [zn.Zlib(level=1)]}


@pytest.mark.parametrize("fmt,sep", [(2, "/"), (2, "."), (3, "."), (3, "/")])
def test_dimension_separators(sc, tmp_path, fmt, sep):
    shape, chunks = (9, 10, 3), (4, 3, 2)
    data = sample("uint16", shape, seed=5)
    enc = {"name": "v2" if fmt == 2 else "default", "separator": sep}
    z = zarr.create_array(str(tmp_path / "z"), shape=shape, chunks=chunks, dtype="uint16",
                          zarr_format=fmt, chunk_key_encoding=enc)
    z[...] = data
    same(sc.call("array.read", {"store": fs(tmp_path / "z")}).data, data)
    meta = ok(sc.call("array.create", {"store": fs(tmp_path / "s"), "zarr_format": fmt,
                                       "shape": list(shape), "chunks": list(chunks),
                                       "dtype": "uint16", "dimension_separator": sep}))
    assert meta["metadata"]["dimension_separator"] == sep
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": list(shape),
                               "data": le_bytes(data)}))
    same(le_bytes(zarr.open_array(str(tmp_path / "s"), mode="r")[...]), data)
    key = "1" + sep + "2" + sep + "1" if fmt == 2 else sep.join(["c", "1", "2", "1"])
    assert (tmp_path / "s" / key).is_file()


def test_v2_fortran_order_and_big_endian(sc, tmp_path):
    shape, chunks = (13, 9), (5, 4)
    for order, dtype in [("F", "<f8"), ("C", ">f8"), ("F", ">i4"), ("C", ">u2")]:
        data = sample(np.dtype(dtype).newbyteorder("=").str, shape, seed=9).astype(dtype)
        path = tmp_path / f"{order}{dtype[0] == '>'}{dtype[1:]}"
        z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, zarr_format=2,
                              order=order, compressors=numcodecs.Zstd(level=1))
        z[...] = data
        reply = sc.call("array.read", {"store": fs(path), "start": [2, 1], "stop": [13, 8]})
        res = ok(reply)
        assert res["dtype"] == {"f8": "float64", "i4": "int32", "u2": "uint16"}[dtype[1:]]
        same(reply.data, data[2:13, 1:8])
        # writing keeps the stored layout, zarr-python reads it back
        patch = sample(np.dtype(dtype).newbyteorder("=").str, (4, 6), seed=10)
        ok(sc.call("array.write", {"store": fs(path), "start": [3, 2], "shape": [4, 6],
                                   "data": le_bytes(patch)}))
        data[3:7, 2:8] = patch
        same(le_bytes(zarr.open_array(str(path), mode="r")[...]), data)


def test_v3_big_endian_bytes_codec(sc, tmp_path):
    data = sample("float32", (20, 7), seed=2)
    z = zarr.create_array(str(tmp_path / "z"), shape=(20, 7), chunks=(6, 3), dtype="float32",
                          serializer=zarr.codecs.BytesCodec(endian="big"),
                          compressors=[zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec()])
    z[...] = data
    same(sc.call("array.read", {"store": fs(tmp_path / "z")}).data, data)
    ok(sc.call("array.write", {"store": fs(tmp_path / "z"), "start": [4, 1], "shape": [3, 3],
                               "data": le_bytes(data[:3, :3] * 2)}))
    data[4:7, 1:4] = data[:3, :3] * 2
    same(le_bytes(zarr.open_array(str(tmp_path / "z"), mode="r")[...]), data)


@pytest.mark.parametrize("fmt", [2, 3])
def test_missing_chunks_read_as_fill_value(sc, tmp_path, fmt):
    for dtype, fill in [("float64", float("nan")), ("float32", -0.0), ("int16", -7),
                        ("bool", True), ("uint8", 0)]:
        path = tmp_path / dtype
        z = zarr.create_array(str(path), shape=(10, 10), chunks=(4, 4), dtype=dtype,
                              fill_value=fill, zarr_format=fmt)
        z[5:7, 5:7] = np.ones((2, 2), dtype=dtype)
        reply = sc.call("array.read", {"store": fs(path)})
        same(reply.data, z[...])
        want = np.full((10, 10), fill, dtype=dtype)
        want[5:7, 5:7] = 1
        same(reply.data, want)


def test_v2_null_fill_value_reads_as_zero(sc, tmp_path):
    z = zarr.create_array(str(tmp_path / "z"), shape=(6,), chunks=(2,), dtype="int32",
                          zarr_format=2, fill_value=None)
    z[0:2] = [1, 2]
    res = ok(sc.call("array.open", {"store": fs(tmp_path / "z")}))
    assert res["metadata"]["fill_value"] is None
    same(sc.call("array.read", {"store": fs(tmp_path / "z")}).data, z[...])


def test_chunks_equal_to_fill_value_are_not_stored(sc, tmp_path):
    for fmt in (2, 3):
        path = tmp_path / f"v{fmt}"
        ok(sc.call("array.create", {"store": fs(path), "zarr_format": fmt, "shape": [8, 8],
                                    "chunks": [4, 4], "dtype": "float64",
                                    "fill_value": float("nan")}))
        data = np.full((8, 8), np.nan)
        data[0, 0] = 1.0
        ok(sc.call("array.write", {"store": fs(path), "shape": [8, 8], "data": le_bytes(data)}))
        chunk_files = sorted(p.name for p in path.rglob("*")
                             if p.is_file() and not p.name.startswith((".z", "zarr.json")))
        assert chunk_files == ["0"] if fmt == 3 else ["0.0"]
        # writing fill over a stored chunk deletes it
        ok(sc.call("array.write", {"store": fs(path), "start": [0, 0], "shape": [1, 1],
                                   "data": le_bytes(np.array([[np.nan]]))}))
        assert not [p for p in path.rglob("*") if p.is_file() and p.name in ("0", "0.0")]
        same(le_bytes(zarr.open_array(str(path), mode="r")[...]), np.full((8, 8), np.nan))


def test_zero_dimensional_and_empty(sc, tmp_path):
    for fmt in (2, 3):
        path = tmp_path / f"v{fmt}"
        ok(sc.call("array.create", {"store": fs(path), "zarr_format": fmt, "shape": [],
                                    "chunks": [], "dtype": "int64", "fill_value": 5}))
        same(sc.call("array.read", {"store": fs(path)}).data, np.array(5, dtype="int64"))
        ok(sc.call("array.write", {"store": fs(path), "shape": [],
                                   "data": le_bytes(np.array(-9, dtype="int64"))}))
        assert zarr.open_array(str(path), mode="r")[()] == -9
        same(sc.call("array.read", {"store": fs(path)}).data, np.array(-9, dtype="int64"))
    z = zarr.create_array(str(tmp_path / "e"), shape=(0, 4), chunks=(2, 2), dtype="f4")
    res = ok(sc.call("array.read", {"store": fs(tmp_path / "e")}))
    assert res["shape"] == [0, 4] and res["data"] == b""
    assert z.shape == (0, 4)
    ok(sc.call("array.write", {"store": fs(tmp_path / "e"), "shape": [0, 4], "data": b""}))


def test_sharded_v3_falls_back_to_zarr_python(sc, tmp_path):
    data = sample("int32", (40, 30), seed=4)
    z = zarr.create_array(str(tmp_path / "z"), shape=(40, 30), chunks=(5, 5), shards=(10, 15),
                          dtype="int32")
    z[...] = data
    meta = ok(sc.call("array.open", {"store": fs(tmp_path / "z")}))["metadata"]
    assert meta["chunks"] == [5, 5] and meta["shards"] == [10, 15]
    assert meta["compressor"]["id"] == "zstd"
    same(sc.call("array.read", {"store": fs(tmp_path / "z"), "start": [3, 4],
                                "stop": [37, 29]}).data, data[3:37, 4:29])
    ok(sc.call("array.create", {"store": fs(tmp_path / "s"), "shape": [40, 30],
                                "chunks": [5, 5], "shards": [10, 15], "dtype": "int32"}))
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": [40, 30],
                               "data": le_bytes(data)}))
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "start": [7, 7], "shape": [2, 2],
                               "data": le_bytes(np.zeros((2, 2), "int32"))}))
    data[7:9, 7:9] = 0
    same(le_bytes(zarr.open_array(str(tmp_path / "s"), mode="r")[...]), data)


def test_v3_codecs_param_and_metadata(sc, tmp_path):
    codecs = [{"name": "transpose", "configuration": {"order": [1, 0]}},
              {"name": "bytes", "configuration": {"endian": "little"}},
              {"name": "gzip", "configuration": {"level": 2}}]
    meta = ok(sc.call("array.create", {
        "store": fs(tmp_path / "s"), "path": "a/b", "shape": [6, 5], "chunks": [4, 4],
        "dtype": "uint32", "codecs": codecs, "dimension_names": ["y", None],
        "attributes": {"units": "m", "nested": {"x": [1, 2.5, None]}}}))["metadata"]
    assert meta["codecs"] == codecs
    assert meta["compressor"] == {"id": "gzip", "level": 2}
    assert meta["filters"] == [{"id": "transpose", "order": [1, 0]}]
    assert meta["dimension_names"] == ["y", None]
    assert meta["attributes"] == {"units": "m", "nested": {"x": [1, 2.5, None]}}
    data = sample("uint32", (6, 5), seed=8)
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "path": "a/b", "shape": [6, 5],
                               "data": le_bytes(data)}))
    z = zarr.open_array(str(tmp_path / "s"), path="a/b", mode="r")
    same(le_bytes(z[...]), data)
    assert z.metadata.dimension_names == ("y", None)
    same(sc.call("array.read", {"store": fs(tmp_path / "s"), "path": "/a/b/"}).data, data)


def test_open_reports_metadata_like_zarr_python(sc, tmp_path):
    z = zarr.create_array(str(tmp_path / "z"), shape=(100, 50), chunks=(10, 5), dtype=">i2",
                          zarr_format=2, order="F", fill_value=3,
                          filters=[numcodecs.Delta(dtype=">i2")],
                          compressors=numcodecs.Blosc(cname="lz4", clevel=2, shuffle=2),
                          chunk_key_encoding={"name": "v2", "separator": "/"},
                          attributes={"a": 1})
    meta = ok(sc.call("array.open", {"store": fs(tmp_path / "z")}))["metadata"]
    assert meta == {
        "zarr_format": 2, "shape": [100, 50], "chunks": [10, 5], "shards": None,
        "dtype": "int16", "fill_value": 3, "order": "F",
        "compressor": z.metadata.compressor.get_config(),
        "filters": [f.get_config() for f in z.metadata.filters], "codecs": None,
        "dimension_separator": "/", "chunk_key_encoding": {"name": "v2", "separator": "/"},
        "dimension_names": None, "attributes": {"a": 1}}


def test_metadata_cache_sees_changes(sc, tmp_path):
    path = tmp_path / "z"
    zarr.create_array(str(path), shape=(4,), chunks=(2,), dtype="int8", fill_value=1)
    same(sc.call("array.read", {"store": fs(path)}).data, np.ones(4, "int8"))
    zarr.create_array(str(path), shape=(6,), chunks=(4,), dtype="int16", fill_value=2,
                      overwrite=True)
    res = ok(sc.call("array.open", {"store": fs(path)}))
    assert res["metadata"]["shape"] == [6] and res["metadata"]["dtype"] == "int16"
    same(sc.call("array.read", {"store": fs(path)}).data, np.full(6, 2, "int16"))


# --------------------------------------------------------------------------
# Create modes and attributes

def test_create_modes(sc, tmp_path):
    base = {"store": fs(tmp_path / "s"), "shape": [4], "chunks": [2], "dtype": "int8"}
    ok(sc.call("array.create", base))
    err(sc.call("array.create", base), "already_exists")
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": [4],
                               "data": b"\x01\x02\x03\x04"}))
    # "a" opens the existing array (data kept), "w" replaces it
    meta = ok(sc.call("array.create", {**base, "mode": "a", "dtype": "int32"}))["metadata"]
    assert meta["dtype"] == "int8"
    meta = ok(sc.call("array.create", {**base, "mode": "w", "dtype": "int32"}))["metadata"]
    assert meta["dtype"] == "int32"
    same(sc.call("array.read", {"store": fs(tmp_path / "s")}).data, np.zeros(4, "int32"))
    zarr.create_group(str(tmp_path / "g"))
    err(sc.call("array.create", {**base, "store": fs(tmp_path / "g")}), "already_exists")
    err(sc.call("array.create", {**base, "path": "x", "mode": "r+"}), "not_found")


def test_attributes(sc, tmp_path):
    for fmt in (2, 3):
        st = {"store": fs(tmp_path / f"v{fmt}")}
        ok(sc.call("array.create", {**st, "zarr_format": fmt, "shape": [2], "chunks": [2],
                                    "dtype": "uint8", "attributes": {"a": 1, "b": "x"}}))
        assert ok(sc.call("array.get_attributes", st))["attributes"] == {"a": 1, "b": "x"}
        res = ok(sc.call("array.update_attributes", {**st, "attributes": {"b": "y", "c": [1]}}))
        assert res["attributes"] == {"a": 1, "b": "y", "c": [1]}
        assert dict(zarr.open_array(str(tmp_path / f"v{fmt}"), mode="r").attrs) == \
            {"a": 1, "b": "y", "c": [1]}
        res = ok(sc.call("array.put_attributes", {**st, "attributes": {"only": True}}))
        assert res["attributes"] == {"only": True}
        assert ok(sc.call("array.get_attributes", st))["attributes"] == {"only": True}
        assert ok(sc.call("array.open", st))["metadata"]["attributes"] == {"only": True}
        # zarr-python changes them behind the sidecar's back
        zarr.open_array(str(tmp_path / f"v{fmt}"), mode="r+").attrs["z"] = 3
        assert ok(sc.call("array.get_attributes", st))["attributes"] == {"only": True, "z": 3}
        err(sc.call("array.put_attributes", {**st, "attributes": {"bad": b"\x00"}}),
            "invalid_params")
        err(sc.call("array.update_attributes", {**st, "mode": "r", "attributes": {}}),
            "read_only")


def test_concurrent_attribute_updates_lose_nothing(sc, tmp_path):
    st = {"store": fs(tmp_path / "s")}
    ok(sc.call("array.create", {**st, "shape": [1], "chunks": [1], "dtype": "int8"}))
    ids = [sc.request("array.update_attributes", {**st, "attributes": {f"k{i}": i}})
           for i in range(40)]
    for rid in ids:
        ok(sc.response(rid, timeout=30))
    assert ok(sc.call("array.get_attributes", st))["attributes"] == {f"k{i}": i
                                                                     for i in range(40)}


# --------------------------------------------------------------------------
# Errors

def test_errors(sc, tmp_path):
    st = fs(tmp_path)
    err(sc.call("array.open", {"store": st, "path": "missing"}), "not_found")
    err(sc.call("array.read", {"store": fs(tmp_path / "nowhere")}), "not_found")
    zarr.create_group(str(tmp_path / "grp"))
    e = err(sc.call("array.open", {"store": st, "path": "grp"}), "not_found")
    assert "group" in e["message"]
    err(sc.call("array.create", {"store": st, "path": "x", "shape": [2], "chunks": [2],
                                 "dtype": "float128"}), "unsupported_dtype")
    err(sc.call("array.create", {"store": st, "path": "x", "shape": [2], "chunks": [2],
                                 "dtype": "int8", "compressor": {"id": "nonexistent"}}),
        "codec_unavailable")
    err(sc.call("array.create", {"store": st, "path": "x", "shape": [2], "chunks": [2],
                                 "dtype": "int8", "zarr_format": 2,
                                 "compressor": {"id": "pickle"}}), "codec_forbidden")
    err(sc.call("array.create", {"store": st, "path": "x", "shape": [2, 2], "chunks": [2],
                                 "dtype": "int8"}), "invalid_params")
    err(sc.call("array.create", {"store": {"kind": "s3", "path": "/x"}, "shape": [2],
                                 "chunks": [2], "dtype": "int8"}), "invalid_params")
    err(sc.call("array.open", {"store": {"kind": "filesystem", "path": "relative"}}),
        "invalid_params")
    err(sc.call("array.open", {"store": st, "path": "../etc"}), "forbidden_path")
    err(sc.call("array.read", {"store": st, "bogus": 1}), "invalid_params")

    # metadata documents that are broken in each way
    def doc(name: str, text: str, fname: str = ".zarray") -> dict[str, Any]:
        (tmp_path / name).mkdir()
        (tmp_path / name / fname).write_text(text)
        return {"store": st, "path": name}

    v2 = {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<i4", "compressor": None,
          "fill_value": 0, "filters": None, "order": "C"}
    e = err(sc.call("array.open", doc("badcodec", json.dumps(
        {**v2, "compressor": {"id": "nonexistent"}}))), "codec_unavailable")
    assert "nonexistent" in e["message"]
    err(sc.call("array.read", doc("baddtype", json.dumps({**v2, "dtype": "<q9"}))),
        "unsupported_dtype")
    err(sc.call("array.open", doc("corrupt", "{not json")), "invalid_metadata")
    err(sc.call("array.open", doc("noshape", json.dumps(
        {k: v for k, v in v2.items() if k != "shape"}))), "invalid_metadata")
    err(sc.call("array.read", doc("pickled", json.dumps(
        {**v2, "filters": [{"id": "pickle"}]}))), "codec_forbidden")
    v3 = json.loads(json.dumps(zarr.create_array(str(tmp_path / "ok3"), shape=(4,), chunks=(2,),
                                                 dtype="int32").metadata.to_dict()))
    err(sc.call("array.open", doc("v3codec", json.dumps(
        {**v3, "codecs": [{"name": "bytes"}, {"name": "nonexistent"}]}), "zarr.json")),
        "codec_unavailable")
    err(sc.call("array.open", doc("v3dtype", json.dumps({**v3, "data_type": "float4x"}),
                                  "zarr.json")), "unsupported_dtype")

    # selections and sizes
    path = {"store": st, "path": "ok3"}
    for start, stop in [([5], None), ([-1], None), ([0, 0], None), (None, [5]), ([3], [2])]:
        err(sc.call("array.read", {**path, "start": start, "stop": stop}), "invalid_selection")
    err(sc.call("array.write", {**path, "start": [3], "shape": [2], "data": b"\0" * 8}),
        "invalid_selection")
    err(sc.call("array.write", {**path, "shape": [2, 1], "data": b"\0" * 8}),
        "invalid_selection")
    err(sc.call("array.write", {**path, "shape": [4], "data": b"\0" * 15}), "data_size_mismatch")
    err(sc.call("array.write", {**path, "shape": [4], "stream": {"bytes": 17}}),
        "data_size_mismatch")
    err(sc.call("array.write", {**path, "shape": [4]}), "invalid_params")
    err(sc.call("array.write", {**path, "mode": "r", "shape": [4], "data": b"\0" * 16}),
        "read_only")
    # a chunk that is not what its codec says
    (tmp_path / "ok3" / "c").mkdir(exist_ok=True)
    (tmp_path / "ok3" / "c" / "1").write_bytes(b"garbage")
    e = err(sc.call("array.read", path), "decode_failed")
    assert e["details"].get("chunk") == "c/1"
    # a directory where a chunk file should be
    (tmp_path / "ok3" / "c" / "0").mkdir()
    err(sc.call("array.read", {**path, "stop": [2]}), "store_error")
    # the sidecar is still serving
    sc.ping()


def test_allowed_roots(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", inside / "link")
    zarr.create_array(str(tmp_path / "outside" / "a"), shape=(2,), chunks=(2,), dtype="int8")
    zarr.create_array(str(inside / "b"), shape=(2,), chunks=(2,), dtype="int8")
    with SidecarProcess(workers=1, args=["--allowed-root", str(inside)]) as proc:
        ok(proc.call("array.open", {"store": fs(inside / "b")}, timeout=30))
        ok(proc.call("array.open", {"store": fs(inside), "path": "b"}))
        err(proc.call("array.open", {"store": fs(tmp_path / "outside" / "a")}), "forbidden_path")
        err(proc.call("array.open", {"store": fs(inside / "link"), "path": "a"}),
            "forbidden_path")
        err(proc.call("array.open", {"store": fs(str(inside) + "/../outside/a")}),
            "forbidden_path")


# --------------------------------------------------------------------------
# Concurrency

def test_concurrent_partial_chunk_writes_lose_nothing(sc, tmp_path):
    st = {"store": fs(tmp_path / "s")}
    ok(sc.call("array.create", {**st, "shape": [16, 16], "chunks": [8, 8], "dtype": "int32",
                                "fill_value": -1, "compressor": {"id": "zlib", "level": 1}}))
    # one element per request, 256 requests from 8 threads, every chunk hit 64 times
    cells = [(i, j) for i in range(16) for j in range(16)]
    ids: list[int] = []
    lock = threading.Lock()

    def send(part: list[tuple[int, int]]) -> None:
        for i, j in part:
            rid = sc.request("array.write", {**st, "start": [i, j], "shape": [1, 1],
                                             "data": le_bytes(np.array([[i * 16 + j]], "int32"))})
            with lock:
                ids.append(rid)

    threads = [threading.Thread(target=send, args=(cells[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rid in ids:
        ok(sc.response(rid, timeout=60))
    same(le_bytes(zarr.open_array(str(tmp_path / "s"), mode="r")[...]),
         np.arange(256, dtype="int32").reshape(16, 16))

    # overlapping-chunk strips on the worker path: 3 rows x all columns, misaligned
    ok(sc.call("array.create", {**st, "mode": "w", "shape": [60, 40], "chunks": [8, 8],
                                "dtype": "float64"}))
    ids = []
    for r in range(20):
        strip = np.full((3, 40), float(r))
        ids.append(sc.request("array.write", {**st, "start": [3 * r, 0], "shape": [3, 40],
                                              "data": le_bytes(strip)}))
    for rid in ids:
        ok(sc.response(rid, timeout=60))
    want = np.repeat(np.arange(20, dtype="float64"), 3)[:, None] * np.ones((1, 40))
    same(le_bytes(zarr.open_array(str(tmp_path / "s"), mode="r")[...]), want)


# --------------------------------------------------------------------------
# Large data: streams, uploads, handoff

def _big_array(path: Path, rows: int, cols: int, chunks: tuple[int, int]) -> np.ndarray:
    data = np.arange(rows * cols, dtype="float64").reshape(rows, cols) * 0.5
    z = zarr.create_array(str(path), shape=(rows, cols), chunks=chunks, dtype="float64",
                          compressors=zarr.codecs.ZstdCodec(level=1))
    z[...] = data
    return data


def test_streamed_read_of_64_mib(sc, tmp_path):
    data = _big_array(tmp_path / "big", 4096, 2048, (512, 256))
    reply = sc.call("array.read", {"store": fs(tmp_path / "big")}, timeout=120)
    res = ok(reply)
    assert "data" not in res
    assert res["stream"] == {"frames": len(reply.stream), "bytes": 64 * MiB}
    frame_bytes = 256 * 1024
    assert max(len(p) for p in reply.stream) <= frame_bytes
    assert max(reply.frame_sizes) <= frame_bytes + 64
    same(reply.data, data)
    # a box from the middle, streamed too
    reply = sc.call("array.read", {"store": fs(tmp_path / "big"), "start": [100, 300],
                                   "stop": [4000, 1900]}, timeout=120)
    same(reply.data, data[100:4000, 300:1900])


def test_streamed_upload_write(sc, tmp_path):
    st = {"store": fs(tmp_path / "up")}
    ok(sc.call("array.create", {**st, "shape": [3000, 1000], "chunks": [256, 300],
                                "dtype": "float64", "compressor": {"id": "lz4"}}))
    data = np.random.default_rng(1).standard_normal((2990, 997))
    payload = le_bytes(data)
    rid = sc.request("array.write", {**st, "start": [5, 2], "shape": [2990, 997],
                                     "stream": {"bytes": len(payload)}})
    sc.upload(rid, payload)
    assert ok(sc.response(rid, timeout=120)) == {"bytes": len(payload)}
    z = zarr.open_array(str(tmp_path / "up"), mode="r")
    same(le_bytes(z[5:2995, 2:999]), data)
    assert (z[:5] == 0).all() and (z[:, :2] == 0).all()
    # an upload that is too short for the box is refused up front
    err(sc.call("array.write", {**st, "shape": [10, 10], "stream": {"bytes": 80}}),
        "data_size_mismatch")
    sc.ping()


def test_handoff_read(sc, tmp_path):
    data = _big_array(tmp_path / "h", 1024, 1024, (128, 256))  # 8 MiB
    res = ok(sc.call("array.read", {"store": fs(tmp_path / "h"), "handoff": True}, timeout=60))
    shm = res["shm"]
    assert shm["bytes"] == 8 * MiB and "data" not in res and "stream" not in res
    st = os.stat(shm["path"])
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 8 * MiB
    assert os.path.basename(shm["path"]).startswith(f"pybridge-{sc.pid}-")
    with open(shm["path"], "rb") as f:
        same(f.read(), data)
    os.unlink(shm["path"])
    # below the threshold the data comes inline or streamed as usual
    res = ok(sc.call("array.read", {"store": fs(tmp_path / "h"), "handoff": True,
                                    "stop": [8, 1024]}))
    assert "shm" not in res


@pytest.mark.parametrize("rows, cols, chunks, box", [
    # one chunk row of 40 MiB: over the 32 MiB a task may hold, so it is cut
    # inside the chunk row (its chunks decoded by two tasks)
    (80, 65536, (80, 8192), None),
    # many small chunk rows, a box starting and ending inside chunks
    (3000, 700, (7, 300), ([5, 13], [2998, 650])),
])
def test_handoff_read_in_row_runs(sc, tmp_path, rows, cols, chunks, box):
    data = _big_array(tmp_path / "r", rows, cols, chunks)
    params: dict[str, Any] = {"store": fs(tmp_path / "r"), "handoff": True}
    expected = data
    if box is not None:
        params.update(start=box[0], stop=box[1])
        expected = data[box[0][0]:box[1][0], box[0][1]:box[1][1]]
    res = ok(sc.call("array.read", params, timeout=120))
    with open(res["shm"]["path"], "rb") as f:
        got = f.read()
    os.unlink(res["shm"]["path"])
    same(got, expected)


# --------------------------------------------------------------------------
# Measurements (reported, not asserted beyond correctness)

def _vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def test_measure_seed_read(sc, tmp_path, capsys):
    z = zarr.create_array(str(tmp_path / "seed"), shape=(1000, 500), chunks=(100, 50),
                          dtype="float64", zarr_format=2,
                          compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=1))
    data = np.random.default_rng(0).random((1000, 500))
    z[...] = data
    req = {"store": fs(tmp_path / "seed")}
    same(sc.call("array.read", req).data, data)
    side, local = [], []
    for _ in range(15):
        t = time.perf_counter()
        sc.call("array.read", req).data
        side.append(time.perf_counter() - t)
        t = time.perf_counter()
        z[...]
        local.append(time.perf_counter() - t)
    s, loc = float(np.median(side)), float(np.median(local))
    with capsys.disabled():
        print(f"\n[measure] seed read: sidecar {s * 1e3:.1f} ms, zarr-python z[:] "
              f"{loc * 1e3:.1f} ms, ratio {s / loc:.2f}x")


@pytest.mark.slow
def test_measure_rss_256_mib_streamed_read(tmp_path, capsys):
    data = _big_array(tmp_path / "b", 8192, 4096, (256, 1024))  # 2 MiB chunks
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        before = _vm(proc.pid, "VmHWM")
        t = time.perf_counter()
        reply = proc.call("array.read", {"store": fs(tmp_path / "b")}, timeout=300)
        elapsed = time.perf_counter() - t
        ok(reply)
        peak = _vm(proc.pid, "VmHWM")
        same(reply.data, data)
    t = time.perf_counter()
    zarr.open_array(str(tmp_path / "b"), mode="r")[...]
    local = time.perf_counter() - t
    with capsys.disabled():
        print(f"\n[measure] 256 MiB streamed read: sidecar VmHWM {before / MiB:.0f} -> "
              f"{peak / MiB:.0f} MiB, {elapsed * 1e3:.0f} ms (Python test client) vs "
              f"zarr-python z[:] {local * 1e3:.0f} ms")


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("dtype", ["float16", "complex64", "complex128", "datetime64[ns]",
                                   "timedelta64[s]"])
def test_other_fixed_size_dtypes(sc, tmp_path, fmt, dtype):
    np_dtype = np.dtype(dtype)
    rng = np.random.default_rng(6)
    if np_dtype.kind in "mM":
        data = rng.integers(-10**12, 10**12, (11, 6)).astype(np_dtype)
    elif np_dtype.kind == "c":
        data = (rng.standard_normal((11, 6)) + 1j * rng.standard_normal((11, 6))).astype(np_dtype)
    else:
        data = rng.standard_normal((11, 6)).astype(np_dtype)
    z = zarr.create_array(str(tmp_path / "z"), shape=(11, 6), chunks=(4, 4), dtype=np_dtype,
                          zarr_format=fmt)
    z[...] = data
    reply = sc.call("array.read", {"store": fs(tmp_path / "z")})
    assert ok(reply)["dtype"] == dtype
    same(reply.data, data)
    ok(sc.call("array.create", {"store": fs(tmp_path / "s"), "zarr_format": fmt,
                                "shape": [11, 6], "chunks": [4, 4], "dtype": dtype}))
    ok(sc.call("array.write", {"store": fs(tmp_path / "s"), "shape": [11, 6],
                               "data": le_bytes(data)}))
    same(le_bytes(zarr.open_array(str(tmp_path / "s"), mode="r")[...]), data)


def test_cancelled_reads_and_writes_leave_nothing_behind(sc, tmp_path):
    data = _big_array(tmp_path / "c", 2048, 2048, (256, 256))  # 32 MiB
    req = {"store": fs(tmp_path / "c")}

    def read_segments() -> set[str]:
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"pybridge-{sc.pid}-read")}

    before = read_segments()
    # a streamed read cancelled after its first frame
    rid = sc.request("array.read", req)
    deadline = time.monotonic() + 30
    while not any(isinstance(m, list) and m[0] == 2 and m[2].get("id") == rid
                  for m in sc.pending(0.01)):
        assert time.monotonic() < deadline, "no stream.data frame came"
    sc.cancel(rid)
    # a handoff read and an upload write, cancelled at once
    rid2 = sc.request("array.read", {**req, "handoff": True})
    sc.cancel(rid2)
    rid3 = sc.request("array.write", {**req, "shape": [2048, 2048],
                                      "stream": {"bytes": 32 * MiB}})
    sc.upload(rid3, le_bytes(data[:100]))
    sc.cancel(rid3)
    sc.ping()
    # drop whatever was already on its way for them (a handoff reply: unlink its segment)
    time.sleep(0.5)
    sc.pending(0.2)
    for m, _ in list(sc._inbox):
        if isinstance(m, list) and m[0] == 1 and m[1] in (rid, rid2, rid3):
            if m[3] and "shm" in m[3]:
                os.unlink(m[3]["shm"]["path"])
    sc._inbox = [(m, n) for m, n in sc._inbox
                 if not (isinstance(m, list) and (m[0] == 1 and m[1] in (rid, rid2, rid3) or
                                                  m[0] == 2 and m[2].get("id") in (rid, rid2,
                                                                                  rid3)))]
    # the sidecar serves on, left no handoff segment behind, and the data is intact
    same(sc.call("array.read", {**req, "start": [1000, 0], "stop": [1001, 2048]}).data,
         data[1000:1001])
    assert read_segments() <= before
    same(le_bytes(zarr.open_array(str(tmp_path / "c"), mode="r")[...]), data)


# --------------------------------------------------------------------------
# Resize, append, raw chunks, steps, sharding (PROTOCOL.md §8)

@pytest.mark.parametrize("fmt", [2, 3])
def test_resize_and_append(sc, tmp_path, fmt):
    st = {"store": fs(tmp_path / "a")}
    ok(sc.call("array.create", {**st, "zarr_format": fmt, "shape": [5, 4], "chunks": [2, 3],
                                "dtype": "int16", "fill_value": -1}))
    data = sample("int16", (5, 4), seed=1)
    ok(sc.call("array.write", {**st, "shape": [5, 4], "data": le_bytes(data)}))
    # grow: the new cells read as the fill value, in zarr-python too
    meta = ok(sc.call("array.resize", {**st, "shape": [7, 6]}))["metadata"]
    assert meta["shape"] == [7, 6]
    want = np.full((7, 6), -1, "int16")
    want[:5, :4] = data
    z = zarr.open_array(str(tmp_path / "a"), mode="r")
    assert z.shape == (7, 6)
    same(le_bytes(z[...]), want)
    same(sc.call("array.read", st).data, want)
    # shrink: chunks wholly outside are gone
    ok(sc.call("array.resize", {**st, "shape": [2, 3]}))
    keys = ok(sc.call("array.chunk_keys", st))["keys"]
    assert keys == (["0.0"] if fmt == 2 else ["c/0/0"])
    same(sc.call("array.read", st).data, data[:2, :3])
    # append along each axis, and the metadata says the new shape
    block = sample("int16", (3, 3), seed=2)
    meta = ok(sc.call("array.append", {**st, "shape": [3, 3], "data": le_bytes(block)}))
    assert meta["metadata"]["shape"] == [5, 3]
    col = sample("int16", (5, 2), seed=3)
    meta = ok(sc.call("array.append", {**st, "axis": 1, "shape": [5, 2],
                                       "data": le_bytes(col)}))["metadata"]
    assert meta["shape"] == [5, 5]
    want = np.concatenate([np.concatenate([data[:2, :3], block]), col], axis=1)
    same(le_bytes(zarr.open_array(str(tmp_path / "a"), mode="r")[...]), want)
    # a streamed append
    rows = sample("int16", (40, 5), seed=4)
    rid = sc.request("array.append", {**st, "shape": [40, 5],
                                      "stream": {"bytes": rows.nbytes}})
    sc.upload(rid, le_bytes(rows), piece=100)
    assert ok(sc.response(rid))["metadata"]["shape"] == [45, 5]
    same(sc.call("array.read", {**st, "start": [5, 0]}).data, rows)
    # errors leave the array as it was
    err(sc.call("array.append", {**st, "shape": [2, 4], "data": b"\0" * 16}),
        "invalid_selection")
    err(sc.call("array.append", {**st, "shape": [2, 5], "data": b"\0" * 3}),
        "data_size_mismatch")
    err(sc.call("array.append", {**st, "axis": 2, "shape": [2, 5], "data": b"\0" * 20}),
        "invalid_params")
    err(sc.call("array.resize", {**st, "shape": [4]}), "invalid_selection")
    err(sc.call("array.resize", {**st, "mode": "r", "shape": [4, 4]}), "read_only")
    assert ok(sc.call("array.open", st))["metadata"]["shape"] == [45, 5]


def test_append_strings_and_0d(sc, tmp_path):
    st = {"store": fs(tmp_path / "s")}
    ok(sc.call("array.create", {**st, "shape": [2], "chunks": [2], "dtype": "string"}))
    ok(sc.call("array.write", {**st, "shape": [2], "values": ["a", "b"]}))
    meta = ok(sc.call("array.append", {**st, "shape": [3], "values": ["c", "", "é"]}))
    assert meta["metadata"]["shape"] == [5]
    assert zarr.open_array(str(tmp_path / "s"), mode="r")[...].tolist() == \
        ["a", "b", "c", "", "é"]
    ok(sc.call("array.create", {"store": fs(tmp_path / "z"), "shape": [], "chunks": [],
                                "dtype": "int8"}))
    err(sc.call("array.append", {"store": fs(tmp_path / "z"), "shape": [],
                                 "data": b"\0"}), "invalid_params")


@pytest.mark.parametrize("fmt,encoding", [(2, None), (2, {"name": "v2", "separator": "/"}),
                                          (3, None), (3, {"name": "default", "separator": "."}),
                                          (3, {"name": "v2", "separator": "."}),
                                          (3, {"name": "v2", "separator": "/"})])
def test_raw_chunks_round_trip(sc, tmp_path, fmt, encoding):
    params = {"store": fs(tmp_path / "a"), "zarr_format": fmt, "shape": [5, 4],
              "chunks": [2, 3], "dtype": "float32", "compressor": {"id": "zlib", "level": 1}}
    if encoding:
        params["chunk_key_encoding"] = encoding
    meta = ok(sc.call("array.create", params))["metadata"]
    name = encoding["name"] if encoding else ("v2" if fmt == 2 else "default")
    sep = encoding["separator"] if encoding else ("." if fmt == 2 else "/")
    assert meta["chunk_key_encoding"] == {"name": name, "separator": sep}
    st = {"store": fs(tmp_path / "a")}
    data = sample("float32", (5, 4), seed=6)
    ok(sc.call("array.write", {**st, "shape": [5, 4], "data": le_bytes(data)}))

    def key(i: int, j: int) -> str:
        return f"c{sep}{i}{sep}{j}" if name == "default" else f"{i}{sep}{j}"

    keys = ok(sc.call("array.chunk_keys", st))["keys"]
    assert keys == sorted(key(i, j) for i in range(3) for j in range(2))
    z = zarr.open_array(str(tmp_path / "a"), mode="r")
    assert z.metadata.encode_chunk_key((2, 1)) == key(2, 1)  # zarr-python agrees
    raw = ok(sc.call("array.read_chunk_raw", {**st, "key": key(2, 1)}))["data"]
    assert raw == (tmp_path / "a").joinpath(*key(2, 1).split("/")).read_bytes()
    assert np.frombuffer(numcodecs.Zlib().decode(raw), "<f4").tolist() == \
        np.pad(data[4:5, 3:4], ((0, 1), (0, 2))).astype("<f4").reshape(-1).tolist()
    # a chunk written raw is what zarr-python reads
    new = np.arange(6, dtype="<f4").reshape(2, 3) + 100
    ok(sc.call("array.write_chunk_raw", {**st, "key": key(0, 0),
                                         "data": numcodecs.Zlib(1).encode(new.tobytes())}))
    data[0:2, 0:3] = new
    same(le_bytes(zarr.open_array(str(tmp_path / "a"), mode="r")[...]), data)
    same(sc.call("array.read", st).data, data)
    # errors
    err(sc.call("array.read_chunk_raw", {**st, "key": "nonsense"}), "invalid_params")
    err(sc.call("array.read_chunk_raw", {**st, "key": key(0, 0) + sep + "0"}),
        "invalid_params")
    err(sc.call("array.read_chunk_raw", {**st, "key": "../" + key(0, 0)}), "invalid_params")
    err(sc.call("array.write_chunk_raw", {**st, "key": key(3, 0), "data": b"x"}),
        "invalid_selection")
    err(sc.call("array.write_chunk_raw", {**st, "key": ".zarray", "data": b"{}"}),
        "invalid_params")
    err(sc.call("array.write_chunk_raw", {**st, "mode": "r", "key": key(0, 0), "data": b""}),
        "read_only")
    ok(sc.call("array.write", {**st, "start": [2, 0], "shape": [2, 3],
                               "data": le_bytes(np.zeros((2, 3), "float32"))}))
    err(sc.call("array.read_chunk_raw", {**st, "key": key(1, 0)}), "not_found")


def test_step_selections(sc, tmp_path):
    data = sample("int32", (23, 17, 5), seed=7)
    zarr.create_array(str(tmp_path / "a"), shape=data.shape, chunks=(4, 5, 2),
                      dtype="int32")[...] = data
    st = {"store": fs(tmp_path / "a")}
    for start, stop, step in [([0, 0, 0], [23, 17, 5], [1, 1, 1]),
                              ([1, 2, 0], [23, 17, 5], [3, 4, 2]),
                              ([5, 0, 1], [6, 17, 5], [7, 16, 9]),
                              ([0, 0, 0], [23, 17, 5], [23, 17, 5]),
                              ([4, 4, 4], [4, 9, 5], [2, 2, 2])]:
        reply = sc.call("array.read", {**st, "start": start, "stop": stop, "step": step})
        want = data[tuple(slice(a, b, s) for a, b, s in zip(start, stop, step))]
        assert ok(reply)["shape"] == list(want.shape)
        same(reply.data, want)
    err(sc.call("array.read", {**st, "step": [0, 1, 1]}), "invalid_params")
    err(sc.call("array.read", {**st, "step": [1, 1]}), "invalid_selection")
    # a big stepped read streams, and hands off
    big = np.arange(2000 * 1500, dtype="float64").reshape(2000, 1500)
    zarr.create_array(str(tmp_path / "b"), shape=big.shape, chunks=(256, 512),
                      dtype="float64")[...] = big
    reply = sc.call("array.read", {"store": fs(tmp_path / "b"), "step": [1, 2]}, timeout=60)
    assert "stream" in ok(reply)
    same(reply.data, big[:, ::2])
    res = ok(sc.call("array.read", {"store": fs(tmp_path / "b"), "step": [2, 1],
                                    "handoff": True}, timeout=60))
    with open(res["shm"]["path"], "rb") as f:
        same(f.read(), big[::2])
    os.unlink(res["shm"]["path"])


def test_partial_shards_both_ways(sc, tmp_path):
    data = sample("float32", (20, 18), seed=9)
    # zarr-python writes one inner chunk of one shard, and a whole other shard
    z = zarr.create_array(str(tmp_path / "z"), shape=(20, 18), chunks=(4, 3), shards=(8, 9),
                          dtype="float32", fill_value=-2.5, dimension_names=["y", "x"])
    z[0:4, 0:3] = data[0:4, 0:3]
    z[8:16, 9:18] = data[8:16, 9:18]
    want = z[...]
    assert sorted(ok(sc.call("array.chunk_keys", {"store": fs(tmp_path / "z")}))["keys"]) == \
        ["c/0/0", "c/1/1"]
    meta = ok(sc.call("array.open", {"store": fs(tmp_path / "z")}))["metadata"]
    assert meta["shards"] == [8, 9] and meta["chunks"] == [4, 3]
    assert meta["dimension_names"] == ["y", "x"]
    same(sc.call("array.read", {"store": fs(tmp_path / "z")}).data, want)
    same(sc.call("array.read", {"store": fs(tmp_path / "z"), "start": [3, 2],
                                "stop": [17, 15]}).data, want[3:17, 2:15])
    # the sidecar writes single cells into shards (missing inner chunks stay missing)
    st = {"store": fs(tmp_path / "s")}
    ok(sc.call("array.create", {**st, "shape": [20, 18], "chunks": [4, 3], "shards": [8, 9],
                                "dtype": "float32", "fill_value": -2.5,
                                "compressor": {"id": "blosc", "cname": "lz4",
                                               "shuffle": "bitshuffle"}}))
    ok(sc.call("array.write", {**st, "start": [0, 0], "shape": [4, 3],
                               "data": le_bytes(data[0:4, 0:3])}))
    ok(sc.call("array.write", {**st, "start": [8, 9], "shape": [8, 9],
                               "data": le_bytes(data[8:16, 9:18])}))
    ok(sc.call("array.write", {**st, "start": [19, 17], "shape": [1, 1],
                               "data": le_bytes(data[19:20, 17:18])}))
    want[19, 17] = data[19, 17]
    zs = zarr.open_array(str(tmp_path / "s"), mode="r")
    same(le_bytes(zs[...]), want)
    # the first shard holds one inner chunk: its index marks the other three missing
    raw = ok(sc.call("array.read_chunk_raw", {**st, "key": "c/0/0"}))["data"]
    index = np.frombuffer(raw[-(2 * 3 * 2 * 8 + 4):-4], "<u8").reshape(-1, 2)
    assert (index[:, 0] == 2**64 - 1).sum() == 5 and (index[:, 0] != 2**64 - 1).sum() == 1


def test_blosc_frames_cut_short_are_decode_failed(sc, tmp_path):
    """blosc trusts its header and reads past a cut frame: every read path checks it."""
    values = np.frombuffer(os.urandom(2048 * 8), dtype="<u8")  # stored uncompressed by blosc
    blosc = {"id": "blosc", "cname": "lz4", "clevel": 1, "shuffle": 1}
    cases = [({"zarr_format": 2, "compressor": blosc}, "0"),
             ({"compressor": blosc}, "c/0"),
             ({"codecs": [{"name": "transpose", "configuration": {"order": [0]}},
                          {"name": "bytes", "configuration": {"endian": "little"}},
                          {"name": "blosc", "configuration": {
                              "cname": "lz4", "clevel": 1, "shuffle": "shuffle",
                              "typesize": 8, "blocksize": 0}}]}, "c/0")]
    for i, (params, key) in enumerate(cases):
        for store in (fs(tmp_path / f"a{i}"), {"kind": "memory", "name": f"cut{i}"}):
            st = {"store": store}
            ok(sc.call("array.create", {**st, "shape": [2048], "chunks": [2048],
                                        "dtype": "uint64", **params}))
            ok(sc.call("array.write", {**st, "shape": [2048], "data": values.tobytes()}))
            raw = ok(sc.call("array.read_chunk_raw", {**st, "key": key}))["data"]
            ok(sc.call("array.write_chunk_raw", {**st, "key": key, "data": raw[:len(raw) // 2]}))
            for extra in ({}, {"step": [3]}, {"start": [5], "stop": [9]}):
                e = err(sc.call("array.read", {**st, **extra}), "decode_failed")
                assert e["details"].get("chunk", key).endswith(key), e
    sc.ping()


def test_first_request_of_a_fresh_sidecar_can_be_any_create(tmp_path):
    """Nothing may rely on a module an earlier request happened to import."""
    codecs = [{"name": "transpose", "configuration": {"order": [1, 0]}},
              {"name": "bytes", "configuration": {"endian": "big"}}, {"name": "crc32c"}]
    with SidecarProcess(workers=1) as proc:
        meta = ok(proc.call("array.create", {"store": fs(tmp_path / "a"), "shape": [3, 2],
                                             "chunks": [2, 2], "dtype": "int16",
                                             "codecs": codecs}, timeout=30))["metadata"]
        assert [c["name"] for c in meta["codecs"]] == ["transpose", "bytes", "crc32c"]


@pytest.mark.parametrize("endian", ["big", "little"])
def test_a_filter_in_foreign_byte_order_reads_as_zarr_python_reads_it(sc, tmp_path, endian):
    """A big-endian delta filter is left to zarr-python, the reference (its own
    round trip of such arrays is not exact, so the reference is its read)."""
    from numcodecs.zarr3 import Delta

    a = (np.arange(1000, dtype="int32") * 3 - 700).reshape(10, 100)
    path = tmp_path / "d"
    z = zarr.create_array(str(path), shape=a.shape, chunks=(5, 50), dtype="int32",
                          filters=[Delta(dtype=">i4")],
                          serializer=zarr.codecs.BytesCodec(endian=endian), compressors=None)
    z[:] = a
    same(sc.call("array.read", {"store": fs(path)}).data, zarr.open_array(str(path), mode="r")[:])


@pytest.mark.parametrize("dtype, fill", [
    ("int32", "abc"), ("int32", [1, 2]), ("int32", {"a": 1}), ("int32", "NaN"), ("int32", 1.5),
    ("uint8", 300), ("int8", -129), ("float64", "nan?"), ("float64", [1.0]), ("bool", "yes"),
])
def test_a_fill_value_that_does_not_fit_names_the_param(sc, tmp_path, dtype, fill):
    reply = sc.call("array.create", {"store": fs(tmp_path / "f"), "shape": [4], "chunks": [2],
                                     "dtype": dtype, "fill_value": fill})
    assert reply.code == "invalid_params", reply.error
    assert reply.error["details"]["param"] == "fill_value"
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("dtype, fill, expected", [
    ("int32", 7, 7), ("int32", 7.0, 7), ("uint8", 255, 255), ("float64", "NaN", None),
    ("float64", 2, 2.0), ("bool", True, True),
])
def test_fill_values_that_fit_are_kept(sc, tmp_path, dtype, fill, expected):
    ok(sc.call("array.create", {"store": fs(tmp_path / "f"), "shape": [4], "chunks": [2],
                                "dtype": dtype, "fill_value": fill}))
    z = zarr.open_array(str(tmp_path / "f"), mode="r")
    if expected is None:
        assert np.isnan(z.fill_value)
    else:
        assert z.fill_value == expected and (z[:] == expected).all()
