"""Shards read by hand (:mod:`pybridge.zarr.shards`), with zarr-python as the reference.

zarr-python writes every array here (or the sidecar writes it through
zarr-python); the sidecar reads it back and every result is compared byte
for byte with zarr-python's own read of the same selection. Each array is
read twice: once in place or streamed (small results are decoded in the
sidecar's handler thread), once by handoff (the sidecar of this module has a
handoff threshold of 1 byte, so every handoff read is decoded by the worker
processes). The in-process tests at the end drive the shard reader directly
on real files to reach the paths a selection chooses between (the whole
file, or the index and byte ranges).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs.numcodecs as zn
from helpers import SidecarProcess, fs
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

from pybridge.zarr import shards
from pybridge.zarr.chunks import chunk_parts
from pybridge.zarr.metadata import _v3_plan, open_meta
from pybridge.zarr.store import StoreRef
from pybridge.zarr.chunk_tasks import fill_parts, out_dtype
from pybridge.errors import DecodeFailed, StoreError

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning",
                                        "ignore::zarr.errors.UnstableSpecificationWarning")

EMPTY = 2**64 - 1
LE = {"endian": "little"}


# -- helpers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2, args=["--handoff-threshold", "1"]) as proc:
        proc.ping(timeout=30)
        yield proc


def le_bytes(a: np.ndarray) -> bytes:
    """An array as the wire carries it: little-endian, C order."""
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder in "<>=" else a.dtype
    return np.ascontiguousarray(a, dtype=dt).tobytes()


def same(got: bytes, expected: np.ndarray, what: Any = "") -> None:
    exp = le_bytes(expected)
    assert len(got) == len(exp), what
    if got != exp:
        dt = np.dtype(expected.dtype).newbyteorder("<")
        g = np.frombuffer(got, dt).reshape(expected.shape)
        w = np.asarray(expected, dt)
        bad = np.argwhere(g.view(f"V{dt.itemsize}") != w.view(f"V{dt.itemsize}"))
        raise AssertionError(f"{what}: {len(bad)} elements differ, first at {bad[:3].tolist()}")


def read(sc: SidecarProcess, path: Path, lo: Any = None, hi: Any = None,
         handoff: bool = False) -> bytes:
    """The bytes of ``array.read`` (from its handoff segment, which is then unlinked)."""
    params: dict[str, Any] = {"store": fs(path), "handoff": handoff}
    if lo is not None:
        params.update(start=list(lo), stop=list(hi))
    reply = sc.call("array.read", params, timeout=60)
    res = reply.unwrap()
    if "shm" in res:
        with open(res["shm"]["path"], "rb") as f:
            data = f.read()
        os.unlink(res["shm"]["path"])
        return data
    return reply.data


def read_error(sc: SidecarProcess, path: Path, code: str, lo: Any = None, hi: Any = None,
               handoff: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"store": fs(path), "handoff": handoff}
    if lo is not None:
        params.update(start=list(lo), stop=list(hi))
    reply = sc.call("array.read", params, timeout=60)
    assert reply.error is not None, f"expected {code}, got a result"
    assert reply.error["code"] == code, reply.error
    return reply.error


def spec_of(path: Path) -> Any:
    """The sidecar's chunk spec for the array at ``path`` (opened in this process)."""
    return open_meta(StoreRef("filesystem", str(path), "")).spec


def by_hand(path: Path) -> bool:
    return spec_of(path).shard is not None


def boxes(shape: tuple[int, ...], shard: tuple[int, ...],
          chunk: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Selections of every kind: all, cells, one inner chunk, across shards, edges."""
    n = len(shape)
    out = [((0,) * n, shape),
           ((0,) * n, (1,) * n),
           (tuple(s - 1 for s in shape), shape),
           ((0,) * n, tuple(min(c, s) for c, s in zip(chunk, shape))),
           (tuple(min(c // 2, s - 1) for c, s in zip(chunk, shape)),
            tuple(min(c // 2 + 1, s) for c, s in zip(chunk, shape))),
           ((0,) * n, tuple(min(h, s) for h, s in zip(shard, shape))),
           (tuple(min(h - 1, s - 1) for h, s in zip(shard, shape)),
            tuple(min(h + 1, s) for h, s in zip(shard, shape))),
           (tuple(s // 3 for s in shape), tuple(max(s // 3 + 1, 2 * s // 3 + 1) for s in shape)),
           (tuple(max(0, s - h - 1) for s, h in zip(shape, shard)), shape)]
    return out


def check_reads(sc: SidecarProcess, path: Path, z: Any,
                sels: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
    for lo, hi in sels:
        want = z[tuple(slice(a, b) for a, b in zip(lo, hi))]
        for handoff in (False, True):
            same(read(sc, path, lo, hi, handoff), want, (lo, hi, handoff))


def index_of(path: Path, key: str, count: int, at_end: bool = True, crc: bool = True,
             dtype: str = "<u8") -> np.ndarray:
    """The (offset, nbytes) pairs of a shard file, parsed here independently."""
    raw = (path / key).read_bytes()
    n = 16 * count
    body = raw[len(raw) - n - (4 if crc else 0):len(raw) - (4 if crc else 0)] if at_end \
        else raw[:n]
    return np.frombuffer(body, dtype).reshape(-1, 2)


# -- the matrix: zarr-python writes, the sidecar reads by hand -------------

def _numcodecs(cls: Any, **config: Any) -> Any:
    """A zarr.codecs.numcodecs codec, without its warning at collection time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**config)


#: (id, shape, shard, inner chunk, dtype, inner codecs, index codecs, index
#: location, fill value, zarr.create extras)
CASES: list[tuple[Any, ...]] = [
    ("2d-f8-zstd-end-crc", (37, 29), (16, 12), (4, 6), "<f8",
     [BytesCodec(endian="little"), ZstdCodec(level=3)],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", np.nan, {}),
    ("2d-i2-gzip-start-nocrc", (23, 30), (8, 10), (4, 5), "<i2",
     [BytesCodec(endian="little"), GzipCodec(level=1)],
     [BytesCodec(endian="little")], "start", -3, {}),
    ("1d-u1-blosc-end", (1000,), (256,), (32,), "|u1",
     [BytesCodec(), BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", 0, {}),
    ("3d-f4-raw-start-crc", (9, 10, 11), (4, 6, 4), (2, 3, 2), "<f4",
     [BytesCodec(endian="little")],
     [BytesCodec(endian="little"), Crc32cCodec()], "start", 1.5, {}),
    ("2d-i4-bigendian-everywhere", (20, 21), (8, 7), (4, 7), ">i4",
     [BytesCodec(endian="big"), ZstdCodec(level=1)],
     [BytesCodec(endian="big"), Crc32cCodec()], "end", 7, {}),
    ("2d-bool-zstd", (30, 17), (10, 17), (5, 17), "|b1",
     [BytesCodec(), ZstdCodec(level=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", False, {}),
    ("2d-c16-inner-crc32c", (12, 13), (6, 6), (3, 3), "<c16",
     [BytesCodec(endian="little"), ZstdCodec(level=1), Crc32cCodec()],
     [BytesCodec(endian="little")], "end", 0j, {}),
    ("2d-i4-delta-lz4", (25, 16), (10, 8), (5, 4), "<i4",
     [_numcodecs(zn.Delta, dtype="<i4"), BytesCodec(endian="little"),
      _numcodecs(zn.LZ4, acceleration=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "start", 0, {}),
    ("2d-u8-v2-keys", (19, 19), (8, 8), (4, 4), "<u8",
     [BytesCodec(endian="little"), GzipCodec(level=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", 2**63,
     {"chunk_key_encoding": {"name": "v2", "separator": "."}}),
    ("2d-f8-order-F", (18, 22), (6, 11), (3, 11), "<f8",
     [BytesCodec(endian="little"), ZstdCodec(level=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", -0.0, {"config": {"order": "F"}}),
    ("2d-M8-zstd", (14, 9), (7, 9), (7, 3), "<M8[s]",
     [BytesCodec(endian="little"), ZstdCodec(level=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", np.datetime64("NaT", "s"), {}),
    ("2d-f8-transpose", (21, 26), (8, 12), (4, 6), "<f8",
     [TransposeCodec(order=(1, 0)), BytesCodec(endian="little"), ZstdCodec(level=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "end", 0.5, {}),
    ("3d-i2-transpose-delta", (7, 9, 10), (4, 6, 4), (2, 3, 4), "<i2",
     [TransposeCodec(order=(2, 0, 1)), _numcodecs(zn.Delta, dtype="<i2"),
      BytesCodec(endian="little"), GzipCodec(level=1)],
     [BytesCodec(endian="little")], "start", 11, {}),
    ("4d-f2-zstd-start", (5, 6, 4, 7), (4, 2, 4, 4), (2, 2, 2, 2), "<f2",
     [BytesCodec(endian="little"), ZstdCodec(level=1)],
     [BytesCodec(endian="little"), Crc32cCodec()], "start", 0.25, {}),
]


def sample(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dt.kind in "iu":
        native = dt.newbyteorder("=")
        info = np.iinfo(native)
        values = rng.integers(info.min, info.max, n, dtype=native, endpoint=True)
        return values.astype(dt).reshape(shape)
    if dt.kind == "M":
        return rng.integers(0, 2**40, n).astype(dt).reshape(shape)
    if dt.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt).reshape(shape)
    return (rng.standard_normal(n) * 100).astype(dt).reshape(shape)


def create(path: Path, shape: tuple[int, ...], shard: tuple[int, ...],
           chunk: tuple[int, ...], dtype: str, codecs: list[Any], index: list[Any],
           location: str, fill: Any, extra: dict[str, Any]) -> Any:
    sharding = ShardingCodec(chunk_shape=chunk, codecs=codecs, index_codecs=index,
                             index_location=location)
    return zarr.create(shape=shape, chunks=shard, dtype=dtype, codecs=[sharding],
                       fill_value=fill, store=str(path), zarr_format=3, **extra)


def holes(data: np.ndarray, shard: tuple[int, ...], chunk: tuple[int, ...],
          fill: Any) -> np.ndarray:
    """``data`` with one whole shard (the last one) and one inner chunk at fill."""
    data = data.copy()
    last = tuple(slice((s - 1) // h * h, None) for s, h in zip(data.shape, shard))
    data[last] = fill
    data[tuple(slice(0, c) for c in chunk)] = fill
    return data


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_zarr_python_writes_the_sidecar_reads_by_hand(sc: SidecarProcess, tmp_path: Path,
                                                     case: tuple[Any, ...]) -> None:
    _, shape, shard, chunk, dtype, codecs, index, location, fill, extra = case
    path = tmp_path / "a"
    z = create(path, shape, shard, chunk, dtype, codecs, index, location, fill, extra)
    z[...] = holes(sample(dtype, shape, seed=len(shape)), shard, chunk, fill)
    assert by_hand(path)
    # the layout has a missing shard (the last) and an empty inner chunk (the first)
    sep = extra.get("chunk_key_encoding", {}).get("separator", "/")
    prefix = "c" + sep if "chunk_key_encoding" not in extra else ""
    last = sep.join(str((s - 1) // h) for s, h in zip(shape, shard))
    first = sep.join("0" for _ in shape)
    assert not (path / (prefix + last)).exists()
    per = int(np.prod([h // c for h, c in zip(shard, chunk)]))
    crc = len(index) == 2
    idx = index_of(path, prefix + first, per, location == "end", crc,
                   "<u8" if index[0].endian.value == "little" else ">u8")
    assert tuple(idx[0]) == (EMPTY, EMPTY)
    check_reads(sc, path, z, boxes(shape, shard, chunk))


def test_nan_fill_and_a_shard_of_nothing_but_empty_inner_chunks(sc: SidecarProcess,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "a"
    z = zarr.create_array(str(path), shape=(16, 16), chunks=(4, 4), shards=(8, 8),
                          dtype="<f8", fill_value=np.nan)
    data = sample("<f8", (16, 16), seed=3)
    data[8:, 8:] = np.nan  # a whole shard of fill: zarr-python deletes it
    data[0:4, 4:8] = np.nan  # one inner chunk of fill: an empty index entry
    data[5, 5] = -0.0
    z[...] = data
    assert sorted(os.listdir(path / "c" / "1")) == ["0"]
    assert (index_of(path, "c/0/0", 4)[:, 0] == EMPTY).sum() == 1
    check_reads(sc, path, z, boxes((16, 16), (8, 8), (4, 4)))
    # an array with no shard at all is all fill
    empty = tmp_path / "e"
    ze = zarr.create_array(str(empty), shape=(10, 10), chunks=(5, 5), shards=(10, 10),
                           dtype="<i4", fill_value=-9)
    check_reads(sc, empty, ze, [((0, 0), (10, 10)), ((3, 3), (7, 9))])


def test_big_array_through_the_workers_streamed_and_handed_off(sc: SidecarProcess,
                                                               tmp_path: Path) -> None:
    """Several MiB: bands of whole shard rows, or cut inside a shard row."""
    path = tmp_path / "big"
    shape = (1100, 1500)
    z = zarr.create_array(str(path), shape=shape, chunks=(64, 128), shards=(256, 512),
                          dtype="<f8", compressors=ZstdCodec(level=1), fill_value=0.0)
    data = np.add.outer(np.arange(shape[0], dtype="<f8"), np.arange(shape[1]) / 7.0)
    data[256:512, 0:512] = 0.0  # one shard missing
    data[0:64, 128:256] = 0.0  # one inner chunk empty
    z[...] = data
    assert by_hand(path)
    check_reads(sc, path, z, [((0, 0), shape), ((1, 3), (1099, 1497)),
                              ((300, 100), (900, 1400)), ((1000, 0), (1100, 1500)),
                              ((0, 700), (1100, 701))])


def test_pread_path_on_large_shards(sc: SidecarProcess, tmp_path: Path) -> None:
    """Shards of 512 KiB of incompressible data: small selections read byte ranges."""
    path = tmp_path / "p"
    shape = (600, 700)
    z = zarr.create_array(str(path), shape=shape, chunks=(32, 32), shards=(256, 256),
                          dtype="<f8", compressors=ZstdCodec(level=1), fill_value=1.0)
    data = sample("<f8", shape, seed=8)
    data[32:64, 0:32] = 1.0
    z[...] = data
    assert (path / "c" / "0" / "0").stat().st_size > shards.SMALL_SHARD
    check_reads(sc, path, z, [((40, 5), (70, 80)), ((0, 0), (33, 33)), ((250, 250), (270, 270)),
                              ((511, 0), (513, 700)), ((599, 699), (600, 700)),
                              ((100, 0), (101, 700)), ((0, 0), shape)])


def test_the_sidecar_writes_through_zarr_python_and_reads_by_hand(sc: SidecarProcess,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "w"
    st = {"store": fs(path)}
    sc.call("array.create", {**st, "shape": [30, 40], "chunks": [5, 8], "shards": [10, 16],
                             "dtype": "int32", "fill_value": -1,
                             "compressor": {"id": "zstd", "level": 1}}).unwrap()
    assert by_hand(path)
    data = sample("<i4", (30, 40), seed=5)
    sc.call("array.write", {**st, "shape": [30, 40], "data": le_bytes(data)}).unwrap()
    sc.call("array.write", {**st, "start": [3, 3], "shape": [2, 30],
                            "data": le_bytes(np.full((2, 30), -1, "<i4"))}).unwrap()
    z = zarr.open_array(str(path), mode="r")
    check_reads(sc, path, z, boxes((30, 40), (10, 16), (5, 8)))
    # zarr-python changes it; the sidecar sees the new bytes
    zw = zarr.open_array(str(path), mode="r+")
    zw[0:10, 0:16] = -1  # a whole shard of fill: deleted
    zw[25:30, 35:40] = 12345
    assert not (path / "c" / "0" / "0").exists()
    check_reads(sc, path, z, [((0, 0), (30, 40)), ((8, 14), (27, 38))])


def test_what_is_not_read_by_hand_still_reads_through_zarr_python(sc: SidecarProcess,
                                                                 tmp_path: Path) -> None:
    cases = {
        "nested": [ShardingCodec(chunk_shape=(4, 4), codecs=[
            ShardingCodec(chunk_shape=(2, 2), codecs=[BytesCodec(endian="little")])])],
        "scale-offset": [ShardingCodec(chunk_shape=(4, 4), codecs=[
            _numcodecs(zn.FixedScaleOffset, offset=0, scale=1, dtype="<i4", astype="<i2"),
            BytesCodec(endian="little")])],
    }
    for name, codecs in cases.items():
        path = tmp_path / name
        z = zarr.create(shape=(18, 13), chunks=(8, 8), dtype="<i4", codecs=codecs,
                        fill_value=3, store=str(path), zarr_format=3)
        z[1:17, 2:12] = sample("<i4", (16, 10), seed=1)
        assert not by_hand(path), name
        check_reads(sc, path, z, [((0, 0), (18, 13)), ((5, 3), (11, 12))])


# -- corrupt and odd shard files -------------------------------------------

def _small(path: Path, location: str = "end", crc: bool = True, **kw: Any) -> Any:
    index = [BytesCodec(endian="little")] + ([Crc32cCodec()] if crc else [])
    z = create(path, (16, 16), (8, 8), (4, 4), "<f8", [BytesCodec(endian="little"),
               ZstdCodec(level=1)], index, location, 0.0, {})
    z[...] = sample("<f8", (16, 16), seed=2)
    return z


def _zarr_fails(z: Any, sel: Any = ...) -> None:
    with pytest.raises(Exception):  # noqa: B017 - zarr-python raises many kinds
        z[sel]


def test_index_with_a_wrong_crc32c_is_decode_failed(sc: SidecarProcess, tmp_path: Path) -> None:
    path = tmp_path / "a"
    z = _small(path)
    shard = path / "c" / "0" / "1"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0x01  # a bit of the index's last offset/nbytes pair
    shard.write_bytes(bytes(raw))
    _zarr_fails(z)
    for handoff in (False, True):
        for lo, hi in (((0, 0), (16, 16)), ((1, 9), (2, 10))):
            e = read_error(sc, path, "decode_failed", lo, hi, handoff)
            assert e["details"]["chunk"] == "c/0/1", e
            assert "crc32c" in e["message"], e
    # the other shards are fine and the sidecar serves on
    same(read(sc, path, (0, 0), (16, 8)), z[:, :8])
    same(read(sc, path, (0, 0), (16, 8), handoff=True), z[:, :8])
    # the checksum itself wrong
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0x01
    raw[-1] ^= 0x80
    shard.write_bytes(bytes(raw))
    read_error(sc, path, "decode_failed")


@pytest.mark.parametrize("location", ["start", "end"])
def test_index_without_checksum_pointing_past_the_file_is_decode_failed(
        sc: SidecarProcess, tmp_path: Path, location: str) -> None:
    path = tmp_path / "a"
    z = _small(path, location, crc=False)
    shard = path / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    at = 0 if location == "start" else len(raw) - 16 * 4
    pair = np.frombuffer(bytes(raw[at:at + 16]), "<u8").copy()
    pair[0] = len(raw) - 2  # an offset whose nbytes run past the end
    raw[at:at + 16] = pair.tobytes()
    shard.write_bytes(bytes(raw))
    _zarr_fails(z)
    for handoff in (False, True):
        e = read_error(sc, path, "decode_failed", handoff=handoff)
        assert e["details"]["chunk"] == "c/1/0" and e["details"]["inner"] == [0, 0], e
        assert "past the end of the shard file" in e["message"], e
    same(read(sc, path, (8, 4), (16, 16)), z[8:, 4:])  # inner chunk (0, 0) is not needed


@pytest.mark.parametrize("location", ["start", "end"])
def test_truncated_shard_file_is_decode_failed(sc: SidecarProcess, tmp_path: Path,
                                               location: str) -> None:
    path = tmp_path / "a"
    z = _small(path, location)
    shard = path / "c" / "1" / "1"
    raw = shard.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 1, 20, 0):
        shard.write_bytes(raw[:cut])
        if cut:  # zarr-python reads an empty file as a missing shard; the sidecar refuses it
            _zarr_fails(z, (slice(8, None), slice(8, None)))
        for handoff in (False, True):
            e = read_error(sc, path, "decode_failed", (8, 8), (16, 16), handoff)
            assert e["details"]["chunk"] == "c/1/1", (cut, e)
        same(read(sc, path, (0, 0), (8, 16)), z[:8])
    shard.write_bytes(raw)
    same(read(sc, path), z[...])


def test_corrupt_inner_chunk_names_the_shard_and_the_inner_chunk(sc: SidecarProcess,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "a"
    z = _small(path)
    shard = path / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    idx = index_of(path, "c/0/0", 4)
    off, n = (int(x) for x in idx[3])  # inner chunk (1, 1)
    raw[off:off + n] = b"\x00" * n
    shard.write_bytes(bytes(raw))
    _zarr_fails(z)
    for handoff in (False, True):
        e = read_error(sc, path, "decode_failed", handoff=handoff)
        assert e["details"]["chunk"] == "c/0/0" and e["details"]["inner"] == [1, 1], e
    same(read(sc, path, (0, 0), (4, 8)), z[:4, :8])  # its neighbours decode


def test_a_directory_where_a_shard_should_be_is_store_error(sc: SidecarProcess,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "a"
    z = _small(path)
    shard = path / "c" / "1" / "1"
    shard.unlink()
    shard.mkdir()
    for handoff in (False, True):
        read_error(sc, path, "store_error", handoff=handoff)
    same(read(sc, path, (0, 0), (8, 16)), z[:8])
    sc.ping()


# -- the reader in process, on real files ----------------------------------

def _fill(path: Path, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    spec = spec_of(path)
    out = np.empty(tuple(b - a for a, b in zip(lo, hi)), dtype=out_dtype(spec.dtype))
    fill_parts(out, spec, chunk_parts(spec.shape, spec.grid, lo, hi))
    return out


class _Count:
    """Counts how shard files are read (whole, or index then ranges)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.reads: list[int] = []
        for name in ("read_all", "read_index", "read_ranges"):
            real = getattr(shards._Shard, name)

            def wrap(*a: Any, _real: Any = real, _name: str = name) -> Any:
                self.calls.append(_name)
                return _real(*a)

            monkeypatch.setattr(shards._Shard, name, wrap)
        real_read = shards._read_into

        def read_into(fd: int, buf: Any, offset: int) -> int:
            self.reads.append(len(memoryview(buf)))
            return real_read(fd, buf, offset)

        monkeypatch.setattr(shards, "_read_into", read_into)


@pytest.mark.parametrize("location", ["start", "end"])
def test_few_inner_chunks_read_the_index_and_byte_ranges(tmp_path: Path, location: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a"
    z = create(path, (64, 64), (32, 32), (8, 8), "<f8",
               [BytesCodec(endian="little"), ZstdCodec(level=1)],
               [BytesCodec(endian="little"), Crc32cCodec()], location, 0.0, {})
    data = sample("<f8", (64, 64), seed=4)
    data[8:16, 8:16] = 0.0  # an empty inner chunk among those needed
    z[...] = data
    monkeypatch.setattr(shards, "SMALL_SHARD", 0)
    count = _Count(monkeypatch)
    got = _fill(path, (3, 5), (20, 22))  # 3x3 inner chunks of shard (0, 0)
    np.testing.assert_array_equal(got, z[3:20, 5:22])
    assert count.calls == ["read_index", "read_ranges"]
    idx = index_of(path, "c/0/0", 16, location == "end")
    needed = [4 * r + c for r in range(3) for c in range(3) if (r, c) != (1, 1)]
    assert all(idx[k][0] != EMPTY for k in needed) and idx[5][0] == EMPTY
    size = (path / "c" / "0" / "0").stat().st_size
    assert count.reads[0] == 16 * 16 + 4 and len(count.reads) == 2  # index, then one range
    assert sum(int(idx[k][1]) for k in needed) <= count.reads[1] < size
    # without merging, one read per stored inner chunk (8 of the 9), each its exact bytes
    monkeypatch.setattr(shards, "MERGE_GAP", -1)
    count.calls.clear()
    count.reads.clear()
    np.testing.assert_array_equal(_fill(path, (3, 5), (20, 22)), z[3:20, 5:22])
    assert sorted(count.reads[1:]) == sorted(int(idx[k][1]) for k in needed)
    # every inner chunk of a shard: the file in one read
    count.calls.clear()
    count.reads.clear()
    np.testing.assert_array_equal(_fill(path, (0, 0), (64, 40)), z[:, :40])
    assert count.calls.count("read_all") == 2  # shards (0, 0) and (1, 0)
    assert count.calls.count("read_index") == 2  # (0, 1) and (1, 1): 1 of 4 columns


def test_small_shards_are_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a"
    z = _small(path)
    count = _Count(monkeypatch)
    np.testing.assert_array_equal(_fill(path, (1, 1), (2, 2)), z[1:2, 1:2])
    assert count.calls == ["read_all"]


def test_errors_in_process_carry_the_shard_key(tmp_path: Path) -> None:
    path = tmp_path / "a"
    _small(path)
    (path / "c" / "0" / "0").write_bytes(b"\x01" * 7)
    with pytest.raises(DecodeFailed) as e:
        _fill(path, (0, 0), (4, 4))
    assert e.value.details["chunk"] == "c/0/0"
    (path / "c" / "0" / "0").unlink()
    (path / "c" / "0" / "0").mkdir()
    with pytest.raises(StoreError):
        _fill(path, (0, 0), (4, 4))


def test_layout_is_only_for_what_the_reader_can_do(tmp_path: Path) -> None:
    z = zarr.create_array(str(tmp_path / "plain"), shape=(8,), chunks=(4,), dtype="<i4")
    assert z is not None and spec_of(tmp_path / "plain").shard is None
    zarr.create_array(str(tmp_path / "s"), shape=(8, 8), chunks=(2, 4), shards=(4, 8),
                      dtype="<i4", compressors=BloscCodec(cname="zstd"))
    spec = spec_of(tmp_path / "s")
    assert spec.engine == "zarr"  # writes stay with zarr-python
    layout = spec.shard
    assert layout is not None and layout.chunks == (2, 4) and layout.index_at_end
    assert layout.index_crc and layout.index_dtype == "<u8"
    assert layout.inner.engine == "v3" and layout.inner.grid == (2, 4)
    assert layout.inner.compressors[0]["id"] == "blosc" and layout.transpose is None
    zarr.create(shape=(8, 6, 4), chunks=(4, 6, 4), dtype="<i4", store=str(tmp_path / "t"),
                zarr_format=3, codecs=[ShardingCodec(chunk_shape=(2, 3, 4), codecs=[
                    TransposeCodec(order=(2, 0, 1)), BytesCodec(endian="little")])])
    layout = spec_of(tmp_path / "t").shard
    assert layout is not None and layout.transpose == (2, 0, 1)
    assert layout.inner.grid == (4, 2, 3) and layout.untranspose == (1, 2, 0)
    assert layout.per_shard(spec.grid) == (2, 2) and layout.index_nbytes(4) == 68
    # index codecs other than bytes (+ crc32c) are left to zarr-python
    for index in ([{"name": "bytes"}, {"name": "crc32c"}, {"name": "crc32c"}],
                  [{"name": "bytes"}, {"name": "gzip"}], [{"name": "crc32c"}], []):
        codecs = [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [2, 4], "codecs": [{"name": "bytes"}], "index_codecs": index}}]
        plain = dataclasses.replace(spec, shard=None)
        assert shards.with_shard_layout(plain, codecs, _v3_plan, np.dtype("<i4")) is plain


def test_inner_blosc_frames_cut_short_are_decode_failed(sc: SidecarProcess,
                                                         tmp_path: Path) -> None:
    """blosc trusts its header; the frame length is checked for inner chunks too."""
    path = tmp_path / "a"
    z = create(path, (2048,), (2048,), (1024,), "<u8",
               [BytesCodec(endian="little"), BloscCodec(cname="lz4", clevel=1,
                                                        shuffle="shuffle")],
               [BytesCodec(endian="little")], "end", 0, {})
    values = np.frombuffer(os.urandom(2048 * 8), "<u8")  # blosc stores it uncompressed
    z[...] = values
    shard = path / "c" / "0"
    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(raw[-32:]), "<u8").copy().reshape(2, 2)
    index[1, 1] -= 8  # inner chunk 1 ends 8 bytes early
    raw[-32:] = index.tobytes()
    shard.write_bytes(bytes(raw))
    for handoff in (False, True):
        e = read_error(sc, path, "decode_failed", handoff=handoff)
        assert e["details"]["chunk"] == "c/0" and e["details"]["inner"] == [1], e
        assert "blosc frame" in e["message"], e
    same(read(sc, path, (0,), (1024,)), values[:1024])
