"""Store files that could block or exhaust the sidecar, and metadata that
used to open and then break, through a real sidecar.

A FIFO, a socket, a directory or a device where a chunk, a shard, a
metadata document or a zip archive should be must give a clear error at
once (not hang a worker or a handler thread), and the sidecar must keep
serving afterwards. Files far larger than they can be (sparse files made
with ``os.truncate``) are refused by size without being read.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from helpers import SidecarProcess, err, fs, ok
from test_arrays import same

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

#: An error must come back within this many seconds (a blocked open never does).
FAST = 5.0
GiB = 1 << 30


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


def _fast(sc: SidecarProcess, method: str, params: dict[str, Any], code: str) -> dict[str, Any]:
    """The error ``code`` for the call, within :data:`FAST` seconds."""
    t0 = time.monotonic()
    e = err(sc.call(method, params, timeout=FAST), code)
    assert time.monotonic() - t0 < FAST
    return e


def _still_serving(sc: SidecarProcess, tmp_path: Path) -> None:
    """Ping answers and every worker still reads real chunks."""
    sc.ping(timeout=FAST)
    root = tmp_path / "healthy"
    if not root.exists():
        z = zarr.create_array(str(root), shape=(64, 64), chunks=(8, 8), dtype="int32",
                              fill_value=0)
        z[:] = np.arange(64 * 64, dtype="int32").reshape(64, 64)
    want = np.arange(64 * 64, dtype="int32").reshape(64, 64)
    rids = [sc.request("array.read", {"store": fs(root)}) for _ in range(6)]
    for rid in rids:
        same(sc.response(rid, timeout=FAST).data, want)


def _array(path: Path, fmt: int = 3, **kw: Any) -> zarr.Array:
    args: dict[str, Any] = {"shape": (8,), "chunks": (4,), "dtype": "int32", "fill_value": 0}
    args.update(kw)
    z = zarr.create_array(str(path), zarr_format=fmt, **args)
    z[:] = np.arange(8, dtype="int32")
    return z


def _replace_with_fifo(path: Path) -> None:
    if path.is_dir():
        path.rmdir()
    elif path.exists():
        path.unlink()
    os.mkfifo(path)


# --------------------------------------------------------------------------
# FIFOs

@pytest.mark.parametrize("fmt", [2, 3])
def test_fifo_chunk_is_store_error_and_workers_keep_serving(sc, tmp_path, fmt):
    _array(tmp_path / "a", fmt)
    _replace_with_fifo(tmp_path / "a" / ("1" if fmt == 2 else "c/1"))
    for _ in range(3):  # more reads than workers: none may be left blocked
        e = _fast(sc, "array.read", {"store": fs(tmp_path / "a")}, "store_error")
        assert "FIFO" in e["message"], e
        assert e["details"]["file_type"] == "FIFO"
    # the other chunk still reads
    r = ok(sc.call("array.read", {"store": fs(tmp_path / "a"), "stop": [4]}, timeout=FAST))
    assert r is not None
    _still_serving(sc, tmp_path)


def test_fifo_chunk_read_by_zarr_python(sc, tmp_path):
    # a transpose codec makes zarr-python itself read the chunks (its LocalStore)
    z = zarr.create_array(str(tmp_path / "t"), shape=(4, 4), chunks=(2, 2), dtype="int16",
                          filters=[zarr.codecs.TransposeCodec(order=(1, 0))], fill_value=0)
    z[:] = np.arange(16, dtype="int16").reshape(4, 4)
    _replace_with_fifo(tmp_path / "t" / "c" / "1" / "1")
    for _ in range(3):
        e = _fast(sc, "array.read", {"store": fs(tmp_path / "t")}, "store_error")
        assert "FIFO" in e["message"], e
    _still_serving(sc, tmp_path)


def test_fifo_shard_is_store_error(sc, tmp_path):
    _array(tmp_path / "s", shards=(8,))
    _replace_with_fifo(tmp_path / "s" / "c" / "0")
    for _ in range(3):
        e = _fast(sc, "array.read", {"store": fs(tmp_path / "s")}, "store_error")
        assert "FIFO" in e["message"], e
        assert e["details"].get("chunk") == "c/0"
    _still_serving(sc, tmp_path)


@pytest.mark.parametrize("name", ["zarr.json", ".zarray", ".zattrs"])
def test_fifo_metadata_document_is_store_error(sc, tmp_path, name):
    fmt = 3 if name == "zarr.json" else 2
    _array(tmp_path / "m", fmt)
    if name == ".zattrs":
        (tmp_path / "m" / ".zattrs").write_text("{}")
    _replace_with_fifo(tmp_path / "m" / name)
    for method in ("array.open", "array.read", "group.open"):
        e = _fast(sc, method, {"store": fs(tmp_path / "m")}, "store_error")
        assert "FIFO" in e["message"] and name in e["message"], e
    _still_serving(sc, tmp_path)


def test_forty_opens_of_a_fifo_zarr_json_fail_fast(sc, tmp_path):
    _array(tmp_path / "f")
    _replace_with_fifo(tmp_path / "f" / "zarr.json")
    t0 = time.monotonic()
    rids = [sc.request("array.open", {"store": fs(tmp_path / "f")}) for _ in range(40)]
    for rid in rids:
        err(sc.response(rid, timeout=FAST), "store_error")
    assert time.monotonic() - t0 < 2 * FAST
    _still_serving(sc, tmp_path)


def test_fifo_consolidated_metadata_is_store_error(sc, tmp_path):
    g = zarr.open_group(str(tmp_path / "g"), mode="w", zarr_format=2)
    g.create_array("x", shape=(4,), chunks=(2,), dtype="int8")
    zarr.consolidate_metadata(str(tmp_path / "g"))
    _replace_with_fifo(tmp_path / "g" / ".zmetadata")
    _fast(sc, "group.members", {"store": fs(tmp_path / "g")}, "store_error")
    _still_serving(sc, tmp_path)


# --------------------------------------------------------------------------
# devices, sockets, directories

def test_dev_zero_symlink_as_chunk_is_store_error(sc, tmp_path):
    _array(tmp_path / "z")
    os.unlink(tmp_path / "z" / "c" / "1")
    os.symlink("/dev/zero", tmp_path / "z" / "c" / "1")
    e = _fast(sc, "array.read", {"store": fs(tmp_path / "z")}, "store_error")
    assert "character device" in e["message"], e
    e = _fast(sc, "array.read_chunk_raw", {"store": fs(tmp_path / "z"), "key": "c/1"},
              "store_error")
    assert "character device" in e["message"], e
    _still_serving(sc, tmp_path)


def test_socket_as_chunk_is_store_error(sc, tmp_path):
    _array(tmp_path / "k")
    os.unlink(tmp_path / "k" / "c" / "1")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "k" / "c" / "1"))
        e = _fast(sc, "array.read", {"store": fs(tmp_path / "k")}, "store_error")
        assert "socket" in e["message"], e
    finally:
        s.close()


def test_directory_as_chunk_is_store_error_on_every_path(sc, tmp_path):
    # read by hand (v3 simple codecs), and by zarr-python (transpose): both agree
    _array(tmp_path / "d")
    os.unlink(tmp_path / "d" / "c" / "1")
    os.mkdir(tmp_path / "d" / "c" / "1")
    e = _fast(sc, "array.read", {"store": fs(tmp_path / "d")}, "store_error")
    assert "directory" in e["message"], e
    z = zarr.create_array(str(tmp_path / "t"), shape=(4, 4), chunks=(2, 2), dtype="int16",
                          filters=[zarr.codecs.TransposeCodec(order=(1, 0))], fill_value=0)
    z[:] = np.ones((4, 4), dtype="int16")
    os.unlink(tmp_path / "t" / "c" / "1" / "1")
    os.mkdir(tmp_path / "t" / "c" / "1" / "1")
    e = _fast(sc, "array.read", {"store": fs(tmp_path / "t")}, "store_error")
    assert "directory" in e["message"], e


def test_fifo_or_device_as_zip_archive_is_store_error(sc, tmp_path):
    os.mkfifo(tmp_path / "a.zip")
    os.symlink("/dev/zero", tmp_path / "b.zip")
    for name in ("a.zip", "b.zip"):
        z = {"kind": "zip", "path": str(tmp_path / name)}
        _fast(sc, "array.open", {"store": z}, "store_error")
        _fast(sc, "group.create", {"store": z, "zarr_format": 3}, "store_error")
    _still_serving(sc, tmp_path)


# --------------------------------------------------------------------------
# sizes

def test_sparse_giant_chunk_is_refused_without_reading(sc, tmp_path):
    _array(tmp_path / "g")
    os.truncate(tmp_path / "g" / "c" / "1", 10 * GiB)
    e = _fast(sc, "array.read", {"store": fs(tmp_path / "g")}, "decode_failed")
    assert e["details"]["bytes"] == 10 * GiB and e["details"]["limit"] < GiB, e
    _fast(sc, "array.read_chunk_raw", {"store": fs(tmp_path / "g"), "key": "c/1"},
          "decode_failed")
    # a write into that chunk needs to read it first: refused too, nothing written
    _fast(sc, "array.write", {"store": fs(tmp_path / "g"), "start": [5], "shape": [1],
                              "data": b"\1\0\0\0"}, "decode_failed")
    assert os.path.getsize(tmp_path / "g" / "c" / "1") == 10 * GiB
    _still_serving(sc, tmp_path)


def test_sparse_giant_shard_is_refused_without_reading(sc, tmp_path):
    _array(tmp_path / "s", shards=(8,))
    os.truncate(tmp_path / "s" / "c" / "0", 10 * GiB)
    e = _fast(sc, "array.read", {"store": fs(tmp_path / "s")}, "decode_failed")
    assert e["details"]["bytes"] == 10 * GiB, e


@pytest.mark.parametrize("name", ["zarr.json", ".zarray", ".zattrs"])
def test_sparse_giant_metadata_is_invalid_metadata(sc, tmp_path, name):
    _array(tmp_path / "m", 3 if name == "zarr.json" else 2)
    os.truncate(tmp_path / "m" / name, 10 * GiB)
    e = _fast(sc, "array.open", {"store": fs(tmp_path / "m")}, "invalid_metadata")
    assert e["details"]["bytes"] == 10 * GiB and e["details"]["limit"] == 64 << 20, e
    _still_serving(sc, tmp_path)


def test_compressed_chunks_near_their_raw_size_still_read(sc, tmp_path):
    # random data does not compress: the stored chunks exceed their raw size a little
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, size=(64,), dtype="uint8")
    for fmt in (2, 3):
        z = zarr.create_array(str(tmp_path / f"r{fmt}"), zarr_format=fmt, shape=(64,),
                              chunks=(64,), dtype="uint8",
                              compressors=zarr.codecs.GzipCodec(level=9) if fmt == 3
                              else numcodecs.Zlib(level=9))
        z[:] = data
        assert os.path.getsize(tmp_path / f"r{fmt}" / ("0" if fmt == 2 else "c/0")) > 64
        same(sc.call("array.read", {"store": fs(tmp_path / f"r{fmt}")}).data, data)


# --------------------------------------------------------------------------
# metadata that opened, then broke

def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _v2_doc(**kw: Any) -> dict[str, Any]:
    doc = {"zarr_format": 2, "shape": [8], "chunks": [4], "dtype": "<i4", "compressor": None,
           "fill_value": 0, "order": "C", "filters": None}
    doc.update(kw)
    return doc


def _v3_doc(shape: list[int], chunks: list[int]) -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "int32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes",
                                         "configuration": {"endian": "little"}}]}


@pytest.mark.parametrize("fmt", [2, 3])
def test_zero_chunk_length_is_invalid_metadata_at_open(sc, tmp_path, fmt):
    if fmt == 2:
        _write_json(tmp_path / "a" / ".zarray", _v2_doc(chunks=[0]))
    else:
        _write_json(tmp_path / "a" / "zarr.json", _v3_doc([8], [0]))
    e = _fast(sc, "array.open", {"store": fs(tmp_path / "a")}, "invalid_metadata")
    assert "chunk" in e["message"], e
    _fast(sc, "array.read", {"store": fs(tmp_path / "a")}, "invalid_metadata")


@pytest.mark.parametrize("fmt", [2, 3])
def test_huge_shape_is_invalid_metadata(sc, tmp_path, fmt):
    if fmt == 2:
        _write_json(tmp_path / "a" / ".zarray", _v2_doc(shape=[2**70], chunks=[4]))
    else:
        _write_json(tmp_path / "a" / "zarr.json", _v3_doc([2**70], [4]))
    e = _fast(sc, "array.open", {"store": fs(tmp_path / "a")}, "invalid_metadata")
    assert "shape" in e["message"], e


def test_huge_chunks_are_invalid_metadata(sc, tmp_path):
    _write_json(tmp_path / "a" / "zarr.json", _v3_doc([8], [2**70]))
    e = _fast(sc, "array.open", {"store": fs(tmp_path / "a")}, "invalid_metadata")
    assert "chunk" in e["message"], e


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("name", ["zarr.json", ".zattrs", ".zarray"])
def test_deeply_nested_metadata_is_invalid_metadata(sc, tmp_path, name):
    deep = _deep(100_000)
    if name == "zarr.json":
        doc = json.dumps(_v3_doc([8], [4]))
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / name).write_text(doc[:-1] + ', "attributes": {"deep": ' + deep + "}}")
    else:
        _write_json(tmp_path / "a" / ".zarray", _v2_doc())
        (tmp_path / "a" / name).write_text('{"deep": ' + deep + "}")
    for method in ("array.open", "group.open"):
        e = _fast(sc, method, {"store": fs(tmp_path / "a")}, "invalid_metadata")
        assert "deep" in e["message"], e
    # moderately nested attributes are fine
    _write_json(tmp_path / "b" / ".zarray", _v2_doc())
    (tmp_path / "b" / ".zattrs").write_text('{"deep": ' + _deep(50) + "}")
    meta = ok(sc.call("array.open", {"store": fs(tmp_path / "b")}))
    assert "deep" in meta["metadata"]["attributes"]


@pytest.mark.parametrize("fmt", [2, 3])
def test_create_with_zero_or_huge_dims_is_invalid_params(sc, tmp_path, fmt):
    base = {"store": fs(tmp_path / "c"), "zarr_format": fmt, "dtype": "int8"}
    e = err(sc.call("array.create", {**base, "shape": [8], "chunks": [0]}), "invalid_params")
    assert e["details"]["param"] == "chunks", e
    e = err(sc.call("array.create", {**base, "shape": [2**64 - 1], "chunks": [4]}),
            "invalid_params")
    assert e["details"]["param"] == "shape", e
    e = err(sc.call("array.create", {**base, "shape": [8], "chunks": [2**63]}),
            "invalid_params")
    assert e["details"]["param"] == "chunks", e
    assert not (tmp_path / "c").exists() or not os.listdir(tmp_path / "c")


# --------------------------------------------------------------------------
# not Zarr at all

def _n5(root: Path) -> None:
    _write_json(root / "attributes.json", {"n5": "2.5.1"})
    _write_json(root / "vol" / "attributes.json",
                {"dimensions": [8], "blockSize": [4], "dataType": "int32",
                 "compression": {"type": "raw"}})


@pytest.mark.parametrize("path", ["", "vol"])
def test_n5_container_says_what_it_is(sc, tmp_path, path):
    _n5(tmp_path / "n5")
    for method in ("array.open", "group.open"):
        e = err(sc.call(method, {"store": fs(tmp_path / "n5"), "path": path}), "not_found")
        assert "N5" in e["message"] and "Zarr v2 and v3" in e["message"], e
        assert e["details"].get("found") == "n5", e
    # a Zarr node that is missing in a plain directory keeps the plain message
    (tmp_path / "plain").mkdir()
    e = err(sc.call("array.open", {"store": fs(tmp_path / "plain")}), "not_found")
    assert "N5" not in e["message"] and "found" not in e["details"]


def test_hdf5_or_zip_file_as_filesystem_store_says_what_it_is(sc, tmp_path):
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    e = err(sc.call("array.open", {"store": fs(tmp_path / "x.h5")}), "not_found")
    assert "HDF5" in e["message"] and e["details"]["found"] == "hdf5", e
    zarr.create_array(zarr.storage.ZipStore(str(tmp_path / "a.zip"), mode="w"), shape=(2,),
                      dtype="int8").store.close()
    e = err(sc.call("group.open", {"store": fs(tmp_path / "a.zip")}), "not_found")
    assert "zip" in e["message"] and e["details"]["found"] == "zip", e


def _zip_with(path: Path, entries: dict[str, Any]) -> None:
    """A zip archive whose entries are deflated (a huge entry of zeros stays small)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            if callable(data):
                with zf.open(name, "w", force_zip64=True) as f:
                    data(f)
            else:
                zf.writestr(name, data)


def test_zip_entries_over_their_limits_are_refused_before_reading(sc, tmp_path):
    doc = json.dumps(_v3_doc([8], [4]))
    zeros = b"\0" * (1 << 20)

    def big_chunk(f: Any) -> None:
        for _ in range(200):
            f.write(zeros)

    def big_doc(f: Any) -> None:
        f.write(doc[:-1].encode())
        for _ in range(65):
            f.write(b" " * (1 << 20))
        f.write(b"}")

    _zip_with(tmp_path / "c.zip", {"zarr.json": doc, "c/1": big_chunk})
    z = {"kind": "zip", "path": str(tmp_path / "c.zip")}
    e = _fast(sc, "array.read", {"store": z}, "decode_failed")
    assert e["details"]["bytes"] == 200 << 20, e
    _fast(sc, "array.read_chunk_raw", {"store": z, "key": "c/1"}, "decode_failed")
    _zip_with(tmp_path / "m.zip", {"zarr.json": big_doc})
    e = _fast(sc, "array.open", {"store": {"kind": "zip", "path": str(tmp_path / "m.zip")}},
              "invalid_metadata")
    assert e["details"]["limit"] == 64 << 20, e
    _still_serving(sc, tmp_path)
