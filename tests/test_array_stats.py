"""``array.stats``: stored chunk count and sizes, checked against the store itself.

The arrays are written by zarr-python; the expected values are read from the
files (``os.path.getsize``), the zip archive's entries, or zarr-python's own
counts, never from the sidecar.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import SidecarProcess, fs
from zarr.storage import ZipStore

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

_METADATA = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=1) as proc:
        proc.ping(timeout=30)
        yield proc


def _chunk_files(root: Path) -> dict[str, int]:
    """Every file below ``root`` that is not a metadata document: key -> size."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name not in _METADATA:
                full = Path(dirpath) / name
                out[full.relative_to(root).as_posix()] = full.stat().st_size
    return out


def _stats(sc: SidecarProcess, store: dict[str, str], path: str = "") -> dict[str, Any]:
    return sc.call("array.stats", {"store": store, "path": path}).unwrap()


@pytest.mark.parametrize("fmt", [2, 3])
def test_stats_of_a_partly_written_array(sc, tmp_path, fmt):
    z = zarr.create_array(str(tmp_path / "a"), shape=(10, 7), chunks=(4, 3), dtype="float32",
                          zarr_format=fmt, fill_value=0)
    rng = np.random.default_rng(fmt)
    z[0:4, 0:6] = rng.standard_normal((4, 6))  # two chunks
    z[8:10, 6:7] = 5.0  # one edge chunk
    files = _chunk_files(tmp_path / "a")
    assert len(files) == 3 == z.nchunks_initialized
    assert _stats(sc, fs(tmp_path / "a")) == {
        "chunks_stored": 3, "chunks_total": 9, "bytes_stored": sum(files.values()),
        "bytes": z.nbytes}


def test_stats_of_a_sharded_array_count_shards(sc, tmp_path):
    z = zarr.create_array(str(tmp_path / "s"), shape=(16, 16), chunks=(2, 2), shards=(8, 8),
                          dtype="int64")
    z[0:8, 0:16] = np.arange(128).reshape(8, 16)
    files = _chunk_files(tmp_path / "s")
    assert sorted(files) == ["c/0/0", "c/0/1"]
    assert _stats(sc, fs(tmp_path / "s")) == {
        "chunks_stored": 2, "chunks_total": 4, "bytes_stored": sum(files.values()),
        "bytes": 16 * 16 * 8}


def test_stats_in_a_group_in_a_zip_and_an_empty_array(sc, tmp_path):
    path = tmp_path / "g.zip"
    store = ZipStore(str(path), mode="w")
    root = zarr.group(store=store, zarr_format=2)
    a = root.create_array("x/a", shape=(5,), chunks=(2,), dtype="uint8", compressor=None)
    a[:] = np.arange(5, dtype="uint8")
    root.create_array("x/empty", shape=(6, 6), chunks=(3, 3), dtype="int16")
    store.close()
    with zipfile.ZipFile(path) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()
                 if i.filename.startswith("x/a/") and not i.filename.endswith(".zarray")
                 and not i.filename.endswith(".zattrs")}
    assert sorted(sizes) == ["x/a/0", "x/a/1", "x/a/2"]
    zip_store = {"kind": "zip", "path": str(path)}
    assert _stats(sc, zip_store, "x/a") == {
        "chunks_stored": 3, "chunks_total": 3, "bytes_stored": sum(sizes.values()), "bytes": 5}
    assert _stats(sc, zip_store, "x/empty") == {
        "chunks_stored": 0, "chunks_total": 4, "bytes_stored": 0, "bytes": 72}


def test_stats_of_strings_in_memory_and_errors(sc, tmp_path):
    m = {"kind": "memory", "name": "stats"}
    sc.call("array.create", {"store": m, "path": "t", "shape": [3], "chunks": [2],
                             "dtype": "string"}).unwrap()
    sc.call("array.write", {"store": m, "path": "t", "shape": [3],
                            "values": ["a", "bb", "ccc"]}).unwrap()
    got = _stats(sc, m, "t")
    assert got["chunks_stored"] == 2 and got["chunks_total"] == 2
    # the raw chunks, summed, are the stored bytes
    raw = [sc.call("array.read_chunk_raw", {"store": m, "path": "t", "key": k}).unwrap()
           for k in ("c/0", "c/1")]
    assert got["bytes_stored"] == sum(len(r["data"]) for r in raw) > 0
    assert got["bytes"] == 0  # variable-length: no size in memory
    reply = sc.call("array.stats", {"store": fs(tmp_path / "nothing")})
    assert reply.error is not None and reply.error["code"] == "not_found"
    zarr.create_group(str(tmp_path / "grp"))
    reply = sc.call("array.stats", {"store": fs(tmp_path / "grp")})
    assert reply.error is not None and reply.error["code"] == "not_found"
    # the sidecar serves on
    assert _stats(sc, m, "t") == got
