"""The both-ways interop matrix, Python side.

{v2, v3} x every dtype x every numcodecs compressor and filter that applies
x {filesystem, zip, memory} x (v3) {plain, sharded, transposed, dimension
names, other chunk key encodings} / (v2) {C order, F order, "/" separator}.
The product is sampled: every codec appears with at least two dtypes in
each format, every dtype with a rotating codec in each format, and the
stores and layouts rotate through the cases. Each case runs both ways:

- zarr-python writes, the sidecar reads;
- the sidecar writes; zarr-python reads, and tensorstore too where it
  supports the dtype, codecs and layout (v2: bool/int/float/complex with
  zlib, gzip, bz2, blosc, zstd or none; v3: the same dtypes with the core
  codecs, sharding and transpose).

zarr-python cannot see the sidecar's memory stores, so memory cases move
the chunks through ``array.read_chunk_raw`` / ``array.write_chunk_raw``
into and out of a zarr-python ``MemoryStore`` with the same metadata.

Comparisons are exact: fixed-size data byte for byte in the wire layout,
``string``/``bytes`` values as lists. For lossy codecs the expectation is
zarr-python's own round trip of the same data with the same codec; the
codec lists of the two arrays must match too, so the sidecar really used
the codec it was given.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.codecs.numcodecs as zn
from helpers import SidecarProcess, fs, ok

from test_dtypes_arrays import DTYPES, STRUCT_WIRE, sample, wire_bytes, zarr_dtype

pytestmark = [pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
              pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

SHAPE, CHUNKS, SHARDS = (11, 7), (4, 3), (8, 6)
ALL_DTYPES: list[Any] = [*DTYPES, "struct"]


def np_dtype(d: Any) -> np.dtype[Any]:
    if d == "struct":
        return np.dtype([(n, {"int32": "<i4", "float64": "<f8", "S3": "S3", "uint8": "u1"}[t])
                         for n, t in STRUCT_WIRE])
    if d == "string":
        return np.dtypes.StringDType()
    if d == "bytes":
        return np.dtype(object)
    return np.dtype(DTYPES[d])


def wire_name(d: Any) -> Any:
    return STRUCT_WIRE if d == "struct" else d


def variable(d: Any) -> bool:
    return d in ("string", "bytes")


# --------------------------------------------------------------------------
# The codecs: what the sidecar is given, and (independently) what zarr-python is given

Params = dict[str, Any]


@dataclass(frozen=True)
class Codec:
    """One numcodecs codec as both sides spell it.

    ``side(fmt, dtype)`` gives the sidecar's create params; ``zarr(fmt, dtype)``
    zarr-python's create_array keyword arguments; ``applies(dtype)`` says
    which dtypes it takes; ``ts`` the formats tensorstore reads it in.
    """

    name: str
    side: Callable[[int, np.dtype[Any]], Params]
    zarr: Callable[[int, np.dtype[Any]], Params]
    applies: Callable[[Any], bool] = lambda d: True
    formats: tuple[int, ...] = (2, 3)
    ts: tuple[int, ...] = ()
    lossy: bool = False


def _compressor(cfg: dict[str, Any], v3: Callable[[np.dtype[Any]], Any],
                ts: tuple[int, ...] = (), formats: tuple[int, ...] = (2, 3)) -> Codec:
    """A bytes-to-bytes codec given as ``compressor``."""
    return Codec(
        name=cfg["id"] if cfg["id"] != "blosc" else f"blosc-{cfg['cname']}-{cfg['shuffle']}",
        side=lambda fmt, dt: {"compressor": dict(cfg)},
        zarr=lambda fmt, dt: ({"compressors": numcodecs.get_codec(dict(cfg)), "filters": None}
                              if fmt == 2 else {"compressors": [v3(dt)], "filters": None}),
        formats=formats, ts=ts)


_FIXED = lambda d: not variable(d)  # noqa: E731
_NUMERIC = lambda d: d not in ("string", "bytes", "struct") and np_dtype(d).kind in "iuf"  # noqa: E731
_FLOAT = lambda d: d in ("float32", "float64")  # noqa: E731


def _filter(cfgs: Callable[[np.dtype[Any]], list[dict[str, Any]]],
            v3: Callable[[np.dtype[Any]], list[Any]], applies: Callable[[Any], bool],
            name: str, lossy: bool = False, bb: bool = False) -> Codec:
    """Filters (array-to-array, or bytes-to-bytes with ``bb``), then zlib."""
    def zarr_kw(fmt: int, dt: np.dtype[Any]) -> Params:
        if fmt == 2:
            return {"filters": [numcodecs.get_codec(dict(c)) for c in cfgs(dt)],
                    "compressors": numcodecs.Zlib(level=1)}
        if bb:
            return {"filters": None, "compressors": [*v3(dt), zn.Zlib(level=1)]}
        return {"filters": v3(dt), "compressors": [zn.Zlib(level=1)]}

    return Codec(name, lambda fmt, dt: {"filters": cfgs(dt), "compressor": {"id": "zlib",
                                                                            "level": 1}},
                 zarr_kw, applies, lossy=lossy)


def _serializer(cfg: dict[str, Any], v3: Callable[[], Any], applies: Callable[[Any], bool],
                name: str, lossy: bool = False) -> Codec:
    """An array-to-bytes codec: the v2 compressor, or the v3 serializer (an explicit codec list)."""
    def side(fmt: int, dt: np.dtype[Any]) -> Params:
        if fmt == 2:
            return {"compressor": dict(cfg)}
        return {"codecs": [v3().to_dict()]}

    def zarr_kw(fmt: int, dt: np.dtype[Any]) -> Params:
        if fmt == 2:
            return {"compressors": numcodecs.get_codec(dict(cfg)), "filters": None}
        return {"serializer": v3(), "compressors": None, "filters": None}

    return Codec(name, side, zarr_kw, applies, lossy=lossy)


def _blosc(cname: str, shuffle: int) -> Codec:
    names = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
    return _compressor({"id": "blosc", "cname": cname, "clevel": 3, "shuffle": shuffle},
                       lambda dt: zarr.codecs.BloscCodec(cname=cname, clevel=3,
                                                         shuffle=names[shuffle]),
                       ts=(2, 3))


CODECS: list[Codec] = [
    Codec("none", lambda fmt, dt: {"compressor": None},
          lambda fmt, dt: {"compressors": None, "filters": None}, ts=(2, 3)),
    _compressor({"id": "zlib", "level": 1}, lambda dt: zn.Zlib(level=1), ts=(2,)),
    _compressor({"id": "gzip", "level": 1}, lambda dt: zarr.codecs.GzipCodec(level=1),
                ts=(2, 3)),
    _compressor({"id": "bz2", "level": 1}, lambda dt: zn.BZ2(level=1), ts=(2,)),
    _compressor({"id": "lzma", "preset": 1}, lambda dt: zn.LZMA(preset=1)),
    _compressor({"id": "lz4", "acceleration": 1}, lambda dt: zn.LZ4(acceleration=1)),
    _compressor({"id": "zstd", "level": 3}, lambda dt: zarr.codecs.ZstdCodec(level=3),
                ts=(2, 3)),
    _blosc("lz4", 1), _blosc("zstd", 2), _blosc("blosclz", 0), _blosc("zlib", 1),
    _blosc("lz4hc", 2),
    _compressor({"id": "base64"}, lambda dt: None, formats=(2,)),
    _compressor({"id": "crc32"}, lambda dt: zn.CRC32()),
    _compressor({"id": "crc32c"}, lambda dt: zn.CRC32C()),
    _compressor({"id": "adler32"}, lambda dt: zn.Adler32()),
    _compressor({"id": "fletcher32"}, lambda dt: zn.Fletcher32()),
    _compressor({"id": "jenkins_lookup3"}, lambda dt: zn.JenkinsLookup3()),
    Codec("zarr-crc32c",  # the v3 core checksum, given in a codec list
          lambda fmt, dt: {"codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                      {"name": "crc32c"}]},
          lambda fmt, dt: {"compressors": [zarr.codecs.Crc32cCodec()], "filters": None},
          _FIXED, formats=(3,), ts=(3,)),
    _filter(lambda dt: [{"id": "shuffle", "elementsize": dt.itemsize}],
            lambda dt: [zn.Shuffle(elementsize=dt.itemsize)], _FIXED, "shuffle", bb=True),
    _filter(lambda dt: [{"id": "delta", "dtype": dt.str}],
            lambda dt: [zn.Delta(dtype=dt.str)], _NUMERIC, "delta"),
    _filter(lambda dt: [{"id": "fixedscaleoffset", "offset": 1.5, "scale": 10,
                         "dtype": dt.str, "astype": "<i4"}],
            lambda dt: [zn.FixedScaleOffset(offset=1.5, scale=10, dtype=dt.str,
                                            astype="<i4")],
            _FLOAT, "fixedscaleoffset", lossy=True),
    _filter(lambda dt: [{"id": "quantize", "digits": 2, "dtype": dt.str}],
            lambda dt: [zn.Quantize(digits=2, dtype=dt.str)], _FLOAT, "quantize", lossy=True),
    _filter(lambda dt: [{"id": "bitround", "keepbits": 6}],
            lambda dt: [zn.BitRound(keepbits=6)], _FLOAT, "bitround", lossy=True),
    _filter(lambda dt: [{"id": "packbits"}], lambda dt: [zn.PackBits()],
            lambda d: d == "bool", "packbits"),
    _filter(lambda dt: [{"id": "astype", "encode_dtype": "<f4", "decode_dtype": "<f8"}],
            lambda dt: [zn.AsType(encode_dtype="<f4", decode_dtype="<f8")],
            lambda d: d == "float64", "astype", lossy=True),
    _serializer({"id": "pcodec"}, lambda: zn.PCodec(),
                lambda d: d in ("int32", "int64", "uint32", "uint64", "float32", "float64",
                                "int16", "uint16", "float16"), "pcodec"),
    _serializer({"id": "zfpy", "mode": 4, "tolerance": 0.01},
                lambda: zn.ZFPY(mode=4, tolerance=0.01),
                lambda d: d in ("float32", "float64", "int32", "int64"), "zfpy", lossy=True),
]
_BY_NAME = {c.name: c for c in CODECS}

TS_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "complex64", "complex128", "struct"}

LAYOUTS = {2: ["C", "F", "slash"],
           3: ["plain", "sharded", "transposed", "dimnames", "v2keys", "dotkeys"]}
STORES = ["filesystem", "zip", "memory"]


@dataclass(frozen=True)
class Case:
    fmt: int
    codec: str
    dtype: Any
    store: str
    layout: str
    consolidated: bool = False

    def __str__(self) -> str:
        tail = "-consolidated" if self.consolidated else ""
        return f"v{self.fmt}-{self.codec}-{self.dtype}-{self.store}-{self.layout}{tail}"


def _layout_ok(codec: str, dtype: Any, layout: str) -> bool:
    if variable(dtype) and layout in ("F", "transposed"):
        return False
    if dtype == "struct" and layout == "sharded":
        return False  # zarr-python 3.1 cannot shard structured arrays
    return not (codec == "zfpy" and layout == "F")  # zarr-python cannot write that


def cases() -> list[Case]:
    combos: list[tuple[int, str, Any]] = []
    for fmt in (2, 3):
        # every codec, with two of the dtypes it takes (rotating)
        for k, codec in enumerate(CODECS):
            if fmt not in codec.formats:
                continue
            dts = [d for d in ALL_DTYPES if codec.applies(d)]
            for j in range(min(2, len(dts))):
                combos.append((fmt, codec.name, dts[(k * 3 + j * 5 + fmt) % len(dts)]))
        # every dtype, with a rotating general-purpose codec
        general = ["zstd", "blosc-lz4-1", "gzip", "zlib", "none", "lz4", "bz2"]
        for k, d in enumerate(ALL_DTYPES):
            combos.append((fmt, general[(k + fmt) % len(general)], d))
    combos = list(dict.fromkeys(combos))
    return [_case(fmt, codec, d, i) for i, (fmt, codec, d) in enumerate(combos)]


def _case(fmt: int, codec: str, dtype: Any, i: int) -> Case:
    """The ``i``-th case: stores rotate fastest, layouts every third case."""
    layouts = [lay for lay in LAYOUTS[fmt] if _layout_ok(codec, dtype, lay)]
    return Case(fmt, codec, dtype, STORES[i % 3], layouts[(i // 3) % len(layouts)],
                consolidated=(i // 2) % 4 == 0)


# --------------------------------------------------------------------------
# Building both sides

def side_params(case: Case, dt: np.dtype[Any]) -> Params:
    codec = _BY_NAME[case.codec]
    p: Params = {"zarr_format": case.fmt, "shape": list(SHAPE), "chunks": list(CHUNKS),
                 "dtype": wire_name(case.dtype), **codec.side(case.fmt, dt)}
    if case.layout == "F":
        p["order"] = "F"
    elif case.layout == "slash":
        p["dimension_separator"] = "/"
    elif case.layout == "sharded":
        p["shards"] = list(SHARDS)
    elif case.layout == "dimnames":
        p["dimension_names"] = ["rows", None]
    elif case.layout == "v2keys":
        p["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    elif case.layout == "dotkeys":
        p["chunk_key_encoding"] = {"name": "default", "separator": "."}
    elif case.layout == "transposed":
        # a full codec list, from zarr-python's own JSON of the same codecs
        zkw = zarr_kwargs(case, dt)
        serializer = zkw.get("serializer") or zarr.codecs.BytesCodec()
        bbs = zkw.get("compressors") or []
        for name in ("compressor", "filters"):
            p.pop(name, None)
        # (zarr_kwargs already put the transpose first among the filters)
        p["codecs"] = [*[f.to_dict() for f in (zkw.get("filters") or [])],
                       _json(serializer, dt), *[_json(c, dt) for c in bbs]]
    return p


def _json(codec: Any, dt: np.dtype[Any]) -> Any:
    if isinstance(codec, zarr.codecs.BloscCodec) and codec.typesize is None:
        codec = zarr.codecs.BloscCodec(typesize=dt.itemsize, cname=codec.cname,
                                       clevel=codec.clevel, shuffle=codec.shuffle)
    return codec.to_dict()


def zarr_kwargs(case: Case, dt: np.dtype[Any]) -> Params:
    kw: Params = {"shape": SHAPE, "chunks": CHUNKS, "dtype": zarr_dtype(wire_name(case.dtype)),
                  "zarr_format": case.fmt, **_BY_NAME[case.codec].zarr(case.fmt, dt)}
    if case.fmt == 2 and variable(case.dtype):
        obj = numcodecs.VLenUTF8() if case.dtype == "string" else numcodecs.VLenBytes()
        kw["filters"] = [obj, *(kw.get("filters") or [])]
    if case.layout == "F":
        kw["order"] = "F"
    elif case.layout == "slash":
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    elif case.layout == "sharded":
        kw["shards"] = SHARDS
    elif case.layout == "dimnames":
        kw["dimension_names"] = ["rows", None]
    elif case.layout == "v2keys":
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    elif case.layout == "dotkeys":
        kw["chunk_key_encoding"] = {"name": "default", "separator": "."}
    elif case.layout == "transposed":
        kw["filters"] = [zarr.codecs.TransposeCodec(order=[1, 0]), *(kw.get("filters") or [])]
    if case.fmt == 3 and variable(case.dtype) and kw.get("filters") is None:
        kw.pop("filters")
    return kw


def data_for(case: Case) -> np.ndarray:
    d = sample(wire_name(case.dtype), SHAPE, seed=zlib.crc32(str(case).encode()))
    codec = _BY_NAME[case.codec]
    if (codec.lossy or codec.name == "pcodec") and d.dtype.kind == "f":
        d = np.nan_to_num(d, nan=0.25, posinf=300.0, neginf=-300.0)
    return d


def payload(d: np.ndarray) -> Params:
    if d.dtype.kind in "OT":
        return {"values": d.reshape(-1).tolist()}
    return {"data": wire_bytes(d)}


def same_data(got: np.ndarray, want: np.ndarray) -> None:
    if want.dtype.kind in "OT":
        assert np.asarray(got).tolist() == want.tolist()
    else:
        assert wire_bytes(np.asarray(got)) == wire_bytes(want)


def check_reply(reply: Any, want: np.ndarray) -> None:
    res = ok(reply)
    assert res["shape"] == list(want.shape)
    if want.dtype.kind in "OT":
        assert res["values"] == want.reshape(-1).tolist()
    else:
        assert reply.data == wire_bytes(want)


def codec_names(z: Any) -> list[Any]:
    md = z.metadata
    if md.zarr_format == 2:
        return [f.codec_id for f in (md.filters or [])] + \
            ([md.compressor.codec_id] if md.compressor is not None else [])
    out = []
    for c in md.codecs:
        d = c.to_dict()
        out.append(d["name"])
        if d["name"] == "sharding_indexed":
            out.append([x["name"] for x in d["configuration"]["codecs"]])
    return out


# --------------------------------------------------------------------------
# Stores

@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


def wire_store(case: Case, tmp_path: Any, tag: str) -> dict[str, str]:
    if case.store == "zip":
        return {"kind": "zip", "path": str(tmp_path / f"{tag}.zip")}
    if case.store == "memory":
        return {"kind": "memory", "name": f"{tmp_path.name}-{tag}"}
    return fs(tmp_path / tag)


def copy_chunks_in(sc: SidecarProcess, src: Any, store: dict[str, str], node: str) -> None:
    """Put the chunks of a zarr-python array (a filesystem one) into the sidecar's store."""
    for key in ok(sc.call("array.chunk_keys", {"store": fs(src)}))["keys"]:
        data = ok(sc.call("array.read_chunk_raw", {"store": fs(src), "key": key}))["data"]
        ok(sc.call("array.write_chunk_raw", {"store": store, "path": node, "key": key,
                                             "data": data}))


def memory_copy_out(sc: SidecarProcess, store: dict[str, str], node: str,
                    kw: Params) -> Any:
    """A zarr-python MemoryStore array with ``kw`` holding the sidecar's raw chunks."""
    mstore = zarr.storage.MemoryStore()
    z = zarr.create_array(mstore, **kw)
    proto = zarr.core.buffer.default_buffer_prototype()
    keys = ok(sc.call("array.chunk_keys", {"store": store, "path": node}))["keys"]
    assert keys, "the sidecar stored no chunk"
    for key in keys:
        raw = ok(sc.call("array.read_chunk_raw", {"store": store, "path": node, "key": key}))
        mstore._store_dict[key] = proto.buffer.from_bytes(raw["data"])
    return z


def tensorstore_reads(case: Case, store: dict[str, str], node: str) -> Any:
    """The sidecar-written array through tensorstore (None: not supported)."""
    codec = _BY_NAME[case.codec]
    if case.store == "memory" or case.fmt not in codec.ts or case.dtype not in TS_DTYPES:
        return None
    try:
        import tensorstore as ts
    except ImportError:
        return None
    if case.store == "zip":
        kvstore: Any = {"driver": "zip", "base": "file://" + store["path"], "path": node + "/"}
    else:
        kvstore = {"driver": "file", "path": store["path"] + "/" + node}
    spec = {"driver": "zarr" if case.fmt == 2 else "zarr3", "kvstore": kvstore}
    if case.dtype == "struct":
        if case.fmt == 3:  # tensorstore has no null_terminated_bytes field type
            return None
        return {name: ts.open({**spec, "field": name}, open=True).result().read().result()
                for name, t in STRUCT_WIRE if not t.startswith("S")}
    return ts.open(spec, open=True).result().read().result()


# --------------------------------------------------------------------------
# The matrix

def _is_sorted_unique(keys: list[str]) -> bool:
    return keys == sorted(set(keys))


@pytest.mark.parametrize("case", cases(), ids=str)
def test_matrix(sc, tmp_path, case):
    dt = np_dtype(case.dtype)
    data = data_for(case)
    kw = zarr_kwargs(case, dt)
    node = "grp/arr"

    # --- zarr-python writes, the sidecar reads ---------------------------------
    if case.store == "zip":
        zpath = tmp_path / "z.zip"
        with zarr.storage.ZipStore(str(zpath), mode="w") as zs:
            z = zarr.create_array(zs, name=node, **kw)
            z[4:, :] = data[4:, :]
            expected = z[...]
            names_z = codec_names(z)
            if case.consolidated:
                zarr.consolidate_metadata(zs)
        read_store: dict[str, str] = {"kind": "zip", "path": str(zpath)}
    else:
        z = zarr.create_array(str(tmp_path / "z"), name=node, **kw)
        z[4:, :] = data[4:, :]
        expected = z[...]
        names_z = codec_names(z)
        if case.consolidated:
            zarr.consolidate_metadata(str(tmp_path / "z"))
        read_store = fs(tmp_path / "z")
        if case.store == "memory":
            read_store = wire_store(case, tmp_path, "in")
            ok(sc.call("array.create", {"store": read_store, "path": node,
                                        **side_params(case, dt)}))
            copy_chunks_in(sc, tmp_path / "z" / "grp" / "arr", read_store, node)
    check_reply(sc.call("array.read", {"store": read_store, "path": node}), expected)
    check_reply(sc.call("array.read", {"store": read_store, "path": node, "start": [1, 2],
                                       "stop": [11, 7], "step": [3, 2]}),
                expected[1:11:3, 2:7:2])
    keys = ok(sc.call("array.chunk_keys", {"store": read_store, "path": node}))["keys"]
    assert keys and _is_sorted_unique(keys)
    if case.consolidated and case.store != "memory":
        info = ok(sc.call("group.open", {"store": read_store}))["group"]
        assert info["consolidated"] is True and info["zarr_format"] == case.fmt
        nodes = ok(sc.call("group.tree", {"store": read_store}))["nodes"]
        assert nodes[-1] == {"path": node, "kind": "array", "shape": list(SHAPE),
                             "dtype": wire_name(case.dtype)}

    # --- the sidecar writes; zarr-python (and tensorstore) read ---------------------
    store = wire_store(case, tmp_path, "s")
    meta = ok(sc.call("array.create", {"store": store, "path": node,
                                       **side_params(case, dt)}))["metadata"]
    assert meta["dtype"] == wire_name(case.dtype) and meta["zarr_format"] == case.fmt
    ok(sc.call("array.write", {"store": store, "path": node, "shape": list(SHAPE),
                               **payload(data)}))
    patch = data[:3, :2].copy()
    ok(sc.call("array.write", {"store": store, "path": node, "start": [5, 4],
                               "shape": [3, 2], **payload(patch)}))
    want_store = zarr.storage.MemoryStore()
    zw = zarr.create_array(want_store, **kw)
    zw[...] = data
    zw[5:8, 4:6] = patch
    want = zw[...]
    if case.consolidated:
        assert ok(sc.call("store.consolidate_metadata", {"store": store}))["group"][
            "consolidated"] is True
    if case.store == "memory":
        got_z = memory_copy_out(sc, store, node, kw)
    else:
        root = zarr.open_group(zarr.storage.ZipStore(store["path"], mode="r")
                               if case.store == "zip" else store["path"], mode="r")
        assert (root.metadata.consolidated_metadata is not None) == case.consolidated
        got_z = root[node]
    assert codec_names(got_z) == names_z
    if case.layout == "dimnames":
        assert got_z.metadata.dimension_names == ("rows", None)
        assert meta["dimension_names"] == ["rows", None]
    if case.fmt == 3:
        assert got_z.metadata.chunk_key_encoding.to_dict() == \
            zw.metadata.chunk_key_encoding.to_dict()
    same_data(got_z[...], want)
    check_reply(sc.call("array.read", {"store": store, "path": node}), want)
    t = tensorstore_reads(case, store, node)
    if isinstance(t, dict):
        for name, arr in t.items():
            assert wire_bytes(np.asarray(arr)) == wire_bytes(np.ascontiguousarray(want[name]))
    elif t is not None:
        same_data(np.asarray(t), want)


def test_matrix_covers_everything():
    """Every codec in each format it exists in, every dtype in both formats."""
    cs = cases()
    for codec in CODECS:
        for fmt in codec.formats:
            assert any(c.codec == codec.name and c.fmt == fmt for c in cs), (codec.name, fmt)
    for d in ALL_DTYPES:
        for fmt in (2, 3):
            assert any(c.dtype == d and c.fmt == fmt for c in cs), (d, fmt)
    for fmt in (2, 3):
        for layout in LAYOUTS[fmt]:
            assert any(c.layout == layout and c.fmt == fmt for c in cs), (layout, fmt)
        for store in STORES:
            assert any(c.store == store and c.fmt == fmt for c in cs), (store, fmt)
            assert any(c.store == store and c.fmt == fmt and c.consolidated for c in cs), \
                (store, fmt, "consolidated")
