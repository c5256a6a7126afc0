"""No read or write succeeds with bytes a chunk did not decode to.

The chunk files are made for real: zarr-python writes an array, then one
chunk file is replaced by a frame of the same codec that is valid but holds
fewer (or more) bytes than a chunk, by an empty gzip/zlib stream, or the
metadata's dtype is widened after the chunks were written. Before every bad
request the sidecar reads (or writes) another array of distinctive values,
so the buffers its worker and handler threads reuse hold those values: a
decode that does not prove it filled its buffer would hand them back as the
bad chunk's data. Every path must answer ``decode_failed`` naming the chunk
and the array, a partial write must leave the chunk file as it was, and
zarr-python must refuse the same chunk.

The last tests document which corruptions each codec detects at all (a
flipped byte in the middle of a stored chunk).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.codecs.numcodecs as zn
from helpers import SidecarProcess, fs

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

N = 4096  # elements of the array
CHUNK = 1024  # elements of a chunk (4 KiB of int32)
SHARD = 2048  # elements of a shard (two inner chunks of CHUNK)
DISTINCT = 0x5A5A0000  # the distinctive array holds DISTINCT + i


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    # one worker, so every chunk task runs where the previous one ran; a low
    # handoff threshold and small stream frames, so that a 16 KiB array takes
    # the handoff and the streamed (pipe) paths
    args = ["--handoff-threshold", "1024", "--stream-frame-bytes", "4096"]
    with SidecarProcess(workers=1, args=args) as proc:
        proc.ping(timeout=30)
        yield proc


# -- the arrays ------------------------------------------------------------

#: name -> (zarr_format, compressors for zarr-python, numcodecs codec of the
#: stored frame or None for raw bytes)
CODECS: dict[str, tuple[int, Callable[[], Any], Callable[[], Any] | None]] = {
    "v2-zstd": (2, lambda: numcodecs.Zstd(level=1), lambda: numcodecs.Zstd(level=1)),
    "v2-lz4": (2, lambda: numcodecs.LZ4(), lambda: numcodecs.LZ4()),
    "v2-gzip": (2, lambda: numcodecs.GZip(level=1), lambda: numcodecs.GZip(level=1)),
    "v2-zlib": (2, lambda: numcodecs.Zlib(level=1), lambda: numcodecs.Zlib(level=1)),
    "v2-blosc": (2, lambda: numcodecs.Blosc(cname="lz4", clevel=1),
                 lambda: numcodecs.Blosc(cname="lz4", clevel=1)),
    "v2-none": (2, lambda: None, None),
    "v3-zstd": (3, lambda: zarr.codecs.ZstdCodec(level=1), lambda: numcodecs.Zstd(level=1)),
    "v3-gzip": (3, lambda: zarr.codecs.GzipCodec(level=1), lambda: numcodecs.GZip(level=1)),
    "v3-zlib": (3, lambda: zn.Zlib(level=1), lambda: numcodecs.Zlib(level=1)),
    "v3-lz4": (3, lambda: zn.LZ4(), lambda: numcodecs.LZ4()),
    "v3-blosc": (3, lambda: zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
                 lambda: numcodecs.Blosc(cname="lz4", clevel=1, shuffle=1)),
    "v3-none": (3, lambda: None, None),
}


def original(n: int = N) -> np.ndarray:
    return (np.arange(n, dtype="<i4") * 3 - 1000).astype("<i4")


def make_array(path: Path, name: str, sharded: bool = False,
               values: np.ndarray | None = None) -> zarr.Array:
    fmt, comp, _ = CODECS[name]
    c = comp()
    kwargs: dict[str, Any] = {"compressors": None if c is None else c}
    if sharded:
        kwargs.update(chunks=(CHUNK,), shards=(SHARD,))
    else:
        kwargs.update(chunks=(CHUNK,))
    z = zarr.create_array(str(path), shape=(N,), dtype="<i4", fill_value=0,
                          zarr_format=fmt, **kwargs)
    z[:] = original() if values is None else values
    return z


def chunk_key(name: str, index: int) -> str:
    return str(index) if CODECS[name][0] == 2 else f"c/{index}"


def frame(name: str, values: np.ndarray) -> bytes:
    """``values`` as a stored frame of the array's own codec (valid, any length)."""
    codec = CODECS[name][2]
    data = np.ascontiguousarray(values, dtype="<i4").tobytes()
    if codec is None:
        return data
    return bytes(codec().encode(data))


def empty_stream(name: str) -> bytes:
    return gzip.compress(b"") if name.endswith("gzip") else zlib.compress(b"")


def replace_inner_chunk(shard_file: Path, k: int, data: bytes) -> None:
    """Rebuild a shard (index at the end, bytes + crc32c) with inner chunk ``k`` replaced."""
    raw = shard_file.read_bytes()
    count = SHARD // CHUNK
    index = np.frombuffer(raw[-(16 * count + 4):-4], dtype="<u8").reshape(count, 2)
    pieces = [raw[int(o):int(o) + int(n)] for o, n in index]
    pieces[k] = data
    body = b""
    new_index = np.empty((count, 2), dtype="<u8")
    for i, piece in enumerate(pieces):
        new_index[i] = (len(body), len(piece))
        body += piece
    head = new_index.tobytes()
    shard_file.write_bytes(body + head + struct.pack("<I", google_crc32c.value(head)))


def inner_chunk(shard_file: Path, k: int) -> bytes:
    """The stored bytes of inner chunk ``k`` (index at the end, bytes + crc32c)."""
    raw = shard_file.read_bytes()
    count = SHARD // CHUNK
    index = np.frombuffer(raw[-(16 * count + 4):-4], dtype="<u8").reshape(count, 2)
    off, n = (int(x) for x in index[k])
    return raw[off:off + n]


def widen_dtype(path: Path, fmt: int) -> None:
    """Say int64 in the metadata of an array whose chunks were written as int32."""
    meta = path / (".zarray" if fmt == 2 else "zarr.json")
    doc = json.loads(meta.read_text())
    doc["dtype" if fmt == 2 else "data_type"] = "<i8" if fmt == 2 else "int64"
    meta.write_text(json.dumps(doc))


# -- the requests ----------------------------------------------------------

def distinctive(sc: SidecarProcess, tmp_path: Path) -> np.ndarray:
    """Read and write an array of distinctive values, over every path the bad
    request may take, so the reused buffers hold them."""
    values = (DISTINCT + np.arange(N)).astype("<i4")
    path = tmp_path / "distinct"
    if not path.exists():
        make_array(path, "v3-zstd", values=values)
    st = {"store": fs(path)}
    for params in ({}, {"handoff": True}, {"start": [100], "stop": [900]},
                   {"start": [1000], "stop": [3100]}):
        reply = sc.call("array.read", {**st, **params})
        res = reply.unwrap()
        if "shm" in res:
            got = Path(res["shm"]["path"]).read_bytes()
            os.unlink(res["shm"]["path"])
        else:
            got = reply.data
        lo = params.get("start", [0])[0]
        assert np.array_equal(np.frombuffer(got, "<i4"), values[lo:lo + len(got) // 4])
    return values


def refused(sc: SidecarProcess, tmp_path: Path, params: dict[str, Any], key: str,
            array: Path, method: str = "array.read") -> dict[str, Any]:
    """The request fails with decode_failed naming ``key`` of ``array``."""
    distinctive(sc, tmp_path)
    reply = sc.call(method, {"store": fs(array), **params})
    if reply.ok:
        res = reply.result or {}
        if "shm" in res:
            os.unlink(res["shm"]["path"])
        raise AssertionError(f"{method} {params} of a bad chunk succeeded")
    err = reply.error
    assert err is not None and err["code"] == "decode_failed", err
    assert err["details"]["chunk"] == key, err
    assert repr(key) in err["message"], err
    assert str(array) in err["message"], err
    return err


READS: list[dict[str, Any]] = [
    {},  # streamed through the pipe, decoded by the worker into a reused band
    {"handoff": False, "start": [0], "stop": [N]},
    {"handoff": True},  # decoded by the worker, written into a handoff file
    {"start": [CHUNK + 10], "stop": [2 * CHUNK - 10]},  # in place, the handler's scratch
    {"start": [CHUNK], "stop": [2 * CHUNK]},  # in place, straight into the result
    {"start": [CHUNK - 5], "stop": [3 * CHUNK + 5]},  # several chunks, partly
]


def check_every_path(sc: SidecarProcess, tmp_path: Path, array: Path, key: str,
                     inside: tuple[int, int]) -> None:
    """Every read of the bad chunk fails, and so does a partial write into it,
    which leaves the chunk file unchanged; zarr-python refuses it too."""
    for params in READS:
        refused(sc, tmp_path, params, key, array)
    chunk_file = array.joinpath(*key.split("/"))
    before = chunk_file.read_bytes()
    a, b = inside
    data = np.full(b - a, 77, dtype="<i4").tobytes()
    refused(sc, tmp_path, {"start": [a], "shape": [b - a], "data": data}, key, array,
            method="array.write")
    assert chunk_file.read_bytes() == before
    z = zarr.open_array(str(array), mode="r")
    with pytest.raises(Exception):  # noqa: B017 - zarr-python raises ValueError or others
        z[:]
    with pytest.raises(Exception):  # noqa: B017
        z[a:b] = 5
    assert chunk_file.read_bytes() == before
    sc.ping()


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("how", ["short", "long"])
def test_a_chunk_of_the_wrong_size_is_refused(sc, tmp_path, name, how):
    array = tmp_path / "bad"
    make_array(array, name)
    key = chunk_key(name, 1)
    n = CHUNK // 2 if how == "short" else CHUNK * 2
    array.joinpath(*key.split("/")).write_bytes(frame(name, original(n)))
    check_every_path(sc, tmp_path, array, key, (CHUNK + 3, CHUNK + 7))


@pytest.mark.parametrize("name", ["v2-gzip", "v3-gzip", "v2-zlib", "v3-zlib"])
def test_an_empty_stream_is_refused(sc, tmp_path, name):
    array = tmp_path / "bad"
    make_array(array, name)
    key = chunk_key(name, 1)
    array.joinpath(*key.split("/")).write_bytes(empty_stream(name))
    check_every_path(sc, tmp_path, array, key, (CHUNK + 3, CHUNK + 7))


@pytest.mark.parametrize("name", ["v2-zstd", "v2-gzip", "v2-none", "v3-zstd", "v3-lz4",
                                  "v3-blosc", "v3-none"])
def test_chunks_written_before_the_dtype_was_widened_are_refused(sc, tmp_path, name):
    array = tmp_path / "bad"
    make_array(array, name)
    widen_dtype(array, CODECS[name][0])
    # every chunk is bad now: reads fail at the first chunk they touch
    for params, key in (({}, chunk_key(name, 0)),
                        ({"start": [CHUNK + 10], "stop": [CHUNK + 20]}, chunk_key(name, 1)),
                        ({"handoff": True, "start": [2 * CHUNK], "stop": [N]},
                         chunk_key(name, 2))):
        refused(sc, tmp_path, params, key, array)
    chunk_file = array.joinpath(*chunk_key(name, 3).split("/"))
    before = chunk_file.read_bytes()
    data = np.full(4, 77, dtype="<i8").tobytes()
    refused(sc, tmp_path, {"start": [3 * CHUNK + 1], "shape": [4], "data": data},
            chunk_key(name, 3), array, method="array.write")
    assert chunk_file.read_bytes() == before
    with pytest.raises(Exception):  # noqa: B017
        zarr.open_array(str(array), mode="r")[:]


@pytest.mark.parametrize("name", ["v3-zstd", "v3-gzip", "v3-blosc", "v3-none"])
@pytest.mark.parametrize("how", ["short", "long", "empty"])
def test_a_bad_inner_chunk_of_a_shard_is_refused(sc, tmp_path, name, how):
    array = tmp_path / "bad"
    make_array(array, name, sharded=True)
    if how == "empty":
        data = empty_stream("gzip") if name == "v3-gzip" else frame(name, original(0))
    else:
        data = frame(name, original(CHUNK // 2 if how == "short" else CHUNK * 2))
    if how == "empty" and name == "v3-none":
        pytest.skip("a zero-length inner chunk is a missing one (zarr-python agrees)")
    replace_inner_chunk(array / "c" / "0", 1, data)
    data_1 = data
    for params in READS:
        err = refused(sc, tmp_path, params, "c/0", array)
        assert err["details"]["inner"] == [1], err
        assert "inner chunk [1]" in err["message"], err
    # a write into part of the shard reads it first (zarr-python does, in the worker)
    shard_file = array / "c" / "0"
    before = shard_file.read_bytes()
    data = np.full(4, 77, dtype="<i4").tobytes()
    refused(sc, tmp_path, {"start": [CHUNK + 3], "shape": [4], "data": data}, "c/0", array,
            method="array.write")
    assert shard_file.read_bytes() == before
    # into its good neighbour it works (as with zarr-python): the bad inner
    # chunk's bytes are kept as they are, never decoded or rewritten
    sc.call("array.write", {"store": fs(array), "start": [3], "shape": [4],
                            "data": data}).unwrap()
    assert inner_chunk(shard_file, 1) == data_1
    assert np.array_equal(zarr.open_array(str(array), mode="r")[:CHUNK],
                          np.concatenate([original()[:3], [77] * 4, original()[7:CHUNK]]))
    with pytest.raises(Exception):  # noqa: B017
        zarr.open_array(str(array), mode="r")[:]
    sc.ping()


# -- what each codec detects -------------------------------------------------
# One byte flipped in the middle of a stored chunk. Only codecs that carry a
# checksum of the data detect it every time: crc32c (v3), gzip (CRC-32),
# zlib (Adler-32), zstd with ``checksum: true``. Without one the read
# succeeds with different values: no compressor at all, and zstd (also lz4
# and blosc) whenever the flipped byte lies in data stored as it is (a raw
# or literal block) rather than in the compressed structure. The values are
# random bytes here, which zstd stores as a raw block: the outcome is certain.

FLIPS: dict[str, tuple[int, Callable[[], Any], bool]] = {
    # name: (zarr_format, compressors, detected)
    "v3-crc32c": (3, lambda: [zarr.codecs.Crc32cCodec()], True),
    "v3-zstd+crc32c": (3, lambda: [zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec()],
                       True),
    "v3-zstd-checksum": (3, lambda: zarr.codecs.ZstdCodec(level=1, checksum=True), True),
    "v2-gzip": (2, lambda: numcodecs.GZip(level=1), True),
    "v2-zlib": (2, lambda: numcodecs.Zlib(level=1), True),
    "v2-zstd": (2, lambda: numcodecs.Zstd(level=1), False),
    "v3-zstd": (3, lambda: zarr.codecs.ZstdCodec(level=1), False),
    "v2-none": (2, lambda: None, False),
    "v3-none": (3, lambda: None, False),
}


@pytest.mark.parametrize("name", sorted(FLIPS))
def test_what_a_flipped_byte_does(sc, tmp_path, name):
    fmt, comp, detected = FLIPS[name]
    values = np.frombuffer(np.random.default_rng(7).bytes(4 * CHUNK), dtype="<i4")
    array = tmp_path / "flip"
    z = zarr.create_array(str(array), shape=(CHUNK,), chunks=(CHUNK,), dtype="<i4",
                          fill_value=0, zarr_format=fmt, compressors=comp())
    z[:] = values
    chunk_file = array / ("0" if fmt == 2 else "c/0")
    stored = bytearray(chunk_file.read_bytes())
    stored[len(stored) // 2] ^= 0xFF
    chunk_file.write_bytes(bytes(stored))
    for params in ({}, {"handoff": True}, {"start": [10], "stop": [CHUNK - 10]}):
        reply = sc.call("array.read", {"store": fs(array), **params})
        if detected:
            assert reply.code == "decode_failed", reply.error
            assert reply.error["details"]["chunk"] == ("0" if fmt == 2 else "c/0")
            continue
        res = reply.unwrap()
        if "shm" in res:
            got = Path(res["shm"]["path"]).read_bytes()
            os.unlink(res["shm"]["path"])
        else:
            got = reply.data
        lo = params.get("start", [0])[0]
        read = np.frombuffer(got, dtype="<i4")
        want = values[lo:lo + len(read)]
        assert len(read) == len(want) and not np.array_equal(read, want)
        assert np.count_nonzero(read != want) == 1  # the one element that holds the byte
    # zarr-python comes to the same verdict
    zr = zarr.open_array(str(array), mode="r")
    if detected:
        with pytest.raises(Exception):  # noqa: B017 - each codec raises its own kind
            zr[:]
    else:
        assert np.count_nonzero(zr[:] != values) == 1


# -- through zarr-python in the sidecar ---------------------------------------

@pytest.mark.parametrize("store", ["filesystem", "memory"])
def test_zarr_python_paths_name_the_chunk_they_cannot_decode(sc, tmp_path, store):
    """Step selections and memory stores are read by zarr-python in the sidecar:
    its refusal of a chunk is decode_failed naming it, not 'internal'."""
    where = fs(tmp_path / "bad") if store == "filesystem" else \
        {"kind": "memory", "name": f"bad-{os.getpid()}-{tmp_path.name}"}
    st = {"store": where}
    sc.call("array.create", {**st, "shape": [N], "chunks": [CHUNK], "dtype": "int32",
                             "compressor": {"id": "zstd", "level": 1}}).unwrap()
    sc.call("array.write", {**st, "shape": [N], "data": original().tobytes()}).unwrap()
    short = numcodecs.Zstd(level=1).encode(original(CHUNK // 2).tobytes())
    sc.call("array.write_chunk_raw", {**st, "key": "c/1", "data": short}).unwrap()
    reads = [{"step": [3]}, {"start": [CHUNK + 1], "stop": [CHUNK + 99], "step": [2]}]
    if store == "memory":
        reads += [{}, {"start": [CHUNK + 1], "stop": [CHUNK + 9]}, {"handoff": True}]
    for params in reads:
        distinctive(sc, tmp_path)
        reply = sc.call("array.read", {**st, **params})
        assert reply.code == "decode_failed", (params, reply.error or "a result")
        assert reply.error["details"]["chunk"] == "c/1", reply.error
        assert "'c/1'" in reply.error["message"], reply.error
    if store == "memory":
        reply = sc.call("array.write", {**st, "start": [CHUNK + 3], "shape": [2],
                                        "data": b"\0" * 8})
        assert reply.code == "decode_failed" and reply.error["details"]["chunk"] == "c/1"
        raw = sc.call("array.read_chunk_raw", {**st, "key": "c/1"}).unwrap()["data"]
        assert raw == short
    # the good chunks still read
    got = sc.call("array.read", {**st, "start": [0], "stop": [CHUNK], "step": [2]}).data
    assert np.array_equal(np.frombuffer(got, "<i4"), original()[:CHUNK:2])
