"""The upload handoff (PROTOCOL.md §3): writes whose data the client put in a
shared-memory file, against a real sidecar, with zarr-python as the reader.

The client side is played here by hand: the file is created exclusively
with mode 0600 under the sidecar's prefix, and ``"shm"`` names it in the
request. Every test checks that the sidecar removed the file once the request
ended: after a success, after an error and after a cancel.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs
from helpers import SidecarProcess, err, fs, ok, wait_for

_names = itertools.count()


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        yield proc


def upload_file(sc: SidecarProcess, data: bytes, *, mode: int = 0o600) -> str:
    """Write ``data`` where a client would: ``/dev/shm/pybridge-<pid>-up-…``."""
    path = f"/dev/shm/pybridge-{sc.pid}-up-test{os.getpid()}.{next(_names)}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def shm(path: str, nbytes: int) -> dict[str, Any]:
    return {"path": path, "bytes": nbytes}


def values(shape: tuple[int, ...], seed: int, dtype: str = "<f8") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(np.prod(shape))) * 100).round(2).astype(dtype).reshape(shape)


def still_serving(sc: SidecarProcess) -> None:
    sc.ping()
    ok(sc.call("codec.list", {}, timeout=30))


# -- data ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["v3", "v2", "sharded", "tiny-chunks"])
def test_write_from_upload_file_equals_zarr_read_back(sc, tmp_path, layout):
    shape = (700, 530)
    if layout == "v3":
        z = zarr.create_array(str(tmp_path / "a"), shape=shape, chunks=(64, 100), dtype="<f8",
                              compressors=zarr.codecs.ZstdCodec(level=3))
    elif layout == "v2":
        import numcodecs

        z = zarr.create_array(str(tmp_path / "a"), shape=shape, chunks=(100, 64), dtype="<f8",
                              zarr_format=2, compressors=numcodecs.Zlib(level=1))
    elif layout == "sharded":
        z = zarr.create_array(str(tmp_path / "a"), shape=shape, chunks=(50, 50),
                              shards=(200, 200), dtype="<f8")
    else:
        z = zarr.create_array(str(tmp_path / "a"), shape=shape, chunks=(7, 9), dtype="<f8")
    a = values(shape, 1)
    a[:64, :100] = 0.0  # a chunk of fill value: not stored, as zarr-python does
    path = upload_file(sc, a.tobytes())
    res = ok(sc.call("array.write", {"store": fs(tmp_path / "a"), "shape": list(shape),
                                     "shm": shm(path, a.nbytes)}, timeout=120))
    assert res == {"bytes": a.nbytes}
    assert not os.path.exists(path)  # removed before the reply went out
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], a)
    if layout == "v3":
        assert not (tmp_path / "a" / "c" / "0" / "0").exists()


def test_write_from_upload_file_into_a_box(sc, tmp_path):
    """A box with partial chunks on every side keeps what was around it."""
    z = zarr.create_array(str(tmp_path / "a"), shape=(300, 200), chunks=(32, 48), dtype="<i4",
                          fill_value=-1)
    before = np.arange(300 * 200, dtype="<i4").reshape(300, 200)
    z[...] = before
    box = np.arange(150 * 111, dtype="<i4").reshape(150, 111) * -7
    path = upload_file(sc, box.tobytes())
    ok(sc.call("array.write", {"store": fs(tmp_path / "a"), "start": [17, 45],
                               "shape": [150, 111], "shm": shm(path, box.nbytes)}, timeout=60))
    assert not os.path.exists(path)
    expected = before.copy()
    expected[17:167, 45:156] = box
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], expected)


def test_small_upload_files_are_written_in_place(sc, tmp_path):
    """One chunk: the sidecar maps the file itself (no worker round trip)."""
    zarr.create_array(str(tmp_path / "a"), shape=(10, 10), chunks=(10, 10), dtype="<u2")
    a = np.arange(100, dtype="<u2").reshape(10, 10)
    path = upload_file(sc, a.tobytes())
    ok(sc.call("array.write", {"store": fs(tmp_path / "a"), "shape": [10, 10],
                               "shm": shm(path, a.nbytes)}))
    assert not os.path.exists(path)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], a)


@pytest.mark.parametrize("kind", ["zip", "memory"])
def test_upload_files_reach_stores_written_in_the_sidecar(sc, tmp_path, kind):
    store = ({"kind": "zip", "path": str(tmp_path / "a.zip")} if kind == "zip"
             else {"kind": "memory", "name": f"handoff-{next(_names)}"})
    ok(sc.call("array.create", {"store": store, "shape": [64, 64], "chunks": [16, 16],
                                "dtype": "float32"}))
    a = values((64, 64), 2, "<f4")
    path = upload_file(sc, a.tobytes())
    ok(sc.call("array.write", {"store": store, "shape": [64, 64],
                               "shm": shm(path, a.nbytes)}, timeout=30))
    assert not os.path.exists(path)
    got = ok(sc.call("array.read", {"store": store}))
    assert got["data"] == a.tobytes()
    if kind == "zip":
        with zarr.storage.ZipStore(str(tmp_path / "a.zip"), mode="r") as zs:
            np.testing.assert_array_equal(zarr.open_array(zs, mode="r")[...], a)


def test_append_and_raw_chunk_writes_take_upload_files(sc, tmp_path):
    z = zarr.create_array(str(tmp_path / "a"), shape=(10, 20), chunks=(10, 20), dtype="<f8",
                          compressors=None)
    z[...] = values((10, 20), 3)
    more = values((25, 20), 4)
    path = upload_file(sc, more.tobytes())
    res = ok(sc.call("array.append", {"store": fs(tmp_path / "a"), "shape": [25, 20],
                                      "shm": shm(path, more.nbytes)}))
    assert res["metadata"]["shape"] == [35, 20]
    assert not os.path.exists(path)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[10:], more)

    raw = (tmp_path / "a" / "c" / "0" / "0").read_bytes()
    (tmp_path / "a" / "c" / "0" / "0").unlink()
    path = upload_file(sc, raw)
    ok(sc.call("array.write_chunk_raw", {"store": fs(tmp_path / "a"), "key": "c/0/0",
                                         "shm": shm(path, len(raw))}))
    assert not os.path.exists(path)
    assert (tmp_path / "a" / "c" / "0" / "0").read_bytes() == raw


# -- bad files and bad params ------------------------------------------------------------

def _array(tmp_path: Path, shape: tuple[int, int] = (64, 64)) -> dict[str, Any]:
    zarr.create_array(str(tmp_path / "a"), shape=shape, chunks=(16, 16), dtype="<f8")
    return {"store": fs(tmp_path / "a"), "shape": list(shape)}


def _untouched(tmp_path: Path) -> None:
    assert not (tmp_path / "a" / "c").exists()


def test_a_file_of_the_wrong_size_is_refused_and_removed(sc, tmp_path):
    params = _array(tmp_path)
    nbytes = 64 * 64 * 8
    path = upload_file(sc, bytes(nbytes - 8))  # shorter than it says
    e = err(sc.call("array.write", {**params, "shm": shm(path, nbytes)}), "data_size_mismatch")
    assert e["details"] == {"expected": nbytes, "got": nbytes - 8}
    assert not os.path.exists(path)
    # declared right, but not the box's size
    path = upload_file(sc, bytes(80))
    err(sc.call("array.write", {**params, "shm": shm(path, 80)}), "data_size_mismatch")
    assert not os.path.exists(path)
    _untouched(tmp_path)
    still_serving(sc)


def test_paths_outside_the_prefix_are_forbidden_and_left_alone(sc, tmp_path):
    params = _array(tmp_path)
    nbytes = 64 * 64 * 8
    elsewhere = tmp_path / "data"
    elsewhere.write_bytes(bytes(nbytes))
    other_pid = f"/dev/shm/pybridge-{sc.pid + 1}-up-test{next(_names)}"
    with open(other_pid, "wb") as f:
        f.write(bytes(nbytes))
    os.chmod(other_pid, 0o600)
    prefix = f"/dev/shm/pybridge-{sc.pid}-"
    try:
        for path in (str(elsewhere), other_pid, f"{prefix}up/../../../{elsewhere}",
                     f"/dev/shm/../dev/shm/pybridge-{sc.pid}-x", prefix, f"{prefix}a/b",
                     "relative", f"/dev/shm/pybridge-{sc.pid}x-up"):
            e = err(sc.call("array.write", {**params, "shm": shm(path, nbytes)}),
                    "forbidden_path")
            assert e["details"]["param"] == "shm"
        assert elsewhere.read_bytes() == bytes(nbytes)
        assert os.path.exists(other_pid)
    finally:
        os.unlink(other_pid)
    _untouched(tmp_path)
    still_serving(sc)


def test_a_symlink_is_forbidden_and_its_target_kept(sc, tmp_path):
    params = _array(tmp_path)
    nbytes = 64 * 64 * 8
    target = upload_file(sc, bytes(nbytes))  # a good file, even under the prefix
    link = f"/dev/shm/pybridge-{sc.pid}-up-link{next(_names)}"
    os.symlink(target, link)
    try:
        err(sc.call("array.write", {**params, "shm": shm(link, nbytes)}), "forbidden_path")
        assert not os.path.lexists(link)  # the link is the request's: removed
        assert os.path.exists(target)  # what it pointed at is not
    finally:
        os.unlink(target)
    _untouched(tmp_path)
    still_serving(sc)


def test_directories_missing_files_and_open_modes_are_refused(sc, tmp_path):
    params = _array(tmp_path)
    nbytes = 64 * 64 * 8
    d = f"/dev/shm/pybridge-{sc.pid}-up-dir{next(_names)}"
    os.mkdir(d, 0o700)
    try:
        e = err(sc.call("array.write", {**params, "shm": shm(d, nbytes)}), "invalid_params")
        assert e["details"]["param"] == "shm"
        assert os.path.isdir(d)  # a directory is never removed
    finally:
        os.rmdir(d)
    missing = f"/dev/shm/pybridge-{sc.pid}-up-missing{next(_names)}"
    err(sc.call("array.write", {**params, "shm": shm(missing, nbytes)}), "invalid_params")
    readable = upload_file(sc, bytes(nbytes), mode=0o644)  # others could read or swap it
    err(sc.call("array.write", {**params, "shm": shm(readable, nbytes)}), "forbidden_path")
    assert not os.path.exists(readable)
    _untouched(tmp_path)
    still_serving(sc)


@pytest.mark.parametrize("bad", [
    {"path": "/dev/shm/x"},
    {"bytes": 8},
    {"path": 7, "bytes": 8},
    {"path": "/dev/shm/x", "bytes": -1},
    {"path": "/dev/shm/x", "bytes": 8, "extra": 1},
])
def test_malformed_shm_params_are_invalid(sc, tmp_path, bad):
    params = _array(tmp_path)
    e = err(sc.call("array.write", {**params, "shm": bad}), "invalid_params")
    assert e["details"]["param"] == "shm"
    still_serving(sc)


def test_shm_with_another_payload_is_invalid_and_still_removed(sc, tmp_path):
    params = _array(tmp_path, (4, 4))
    path = upload_file(sc, bytes(128))
    err(sc.call("array.write", {**params, "data": bytes(128), "shm": shm(path, 128)}),
        "invalid_params")
    assert not os.path.exists(path)
    # a method without the param refuses it before any work
    path = upload_file(sc, bytes(8))
    err(sc.call("array.read", {**params, "shm": shm(path, 8)}), "invalid_params")
    assert os.path.exists(path)  # not taken, so not the sidecar's to remove
    os.unlink(path)
    still_serving(sc)


def test_an_upload_over_the_request_limit_is_too_large(sidecar_factory, tmp_path):
    proc = sidecar_factory(workers=1, args=["--max-request-bytes", "1000"])
    zarr.create_array(str(tmp_path / "a"), shape=(64, 64), chunks=(16, 16), dtype="<f8")
    path = upload_file(proc, bytes(64 * 64 * 8))
    e = err(proc.call("array.write", {"store": fs(tmp_path / "a"), "shape": [64, 64],
                                      "shm": shm(path, 64 * 64 * 8)}), "too_large")
    assert e["details"] == {"bytes": 64 * 64 * 8, "limit": 1000}
    assert not os.path.exists(path)


def test_store_errors_still_remove_the_file(sc, tmp_path):
    params = _array(tmp_path)
    nbytes = 64 * 64 * 8
    (tmp_path / "a" / "c").write_bytes(b"")  # a file where the chunk directory goes
    path = upload_file(sc, values((64, 64), 5).tobytes())
    err(sc.call("array.write", {**params, "shm": shm(path, nbytes)}, timeout=30),
        "store_error")
    assert not os.path.exists(path)
    still_serving(sc)


# -- cancels -------------------------------------------------------------------------

def test_a_cancelled_write_removes_its_file(sc, tmp_path):
    """Cancelled while it runs (a slow codec, many chunks) or before it starts:
    either way no reply comes and the file goes."""
    import numcodecs

    shape = (2048, 1024)
    zarr.create_array(str(tmp_path / "a"), shape=shape, chunks=(64, 64), dtype="<f8",
                      zarr_format=2, compressors=numcodecs.BZ2(level=9))
    path = upload_file(sc, values(shape, 6).tobytes())
    rid = sc.request("array.write", {"store": fs(tmp_path / "a"), "shape": list(shape),
                                     "shm": shm(path, 8 * shape[0] * shape[1])})
    threading.Event().wait(0.3)
    sc.cancel(rid)
    assert wait_for(lambda: not os.path.exists(path), 30)
    still_serving(sc)
    assert not [m for m in sc.pending(0.5) if isinstance(m, list) and m[:2] == [1, rid]]


def test_queued_cancelled_and_refused_requests_remove_their_files(sidecar_factory, tmp_path):
    """A request cancelled before its handler ran never opens its file, and
    still removes it; so does one refused for its params."""
    proc = sidecar_factory(workers=1)
    params = _array(tmp_path, (4, 4))
    path = upload_file(proc, bytes(128))
    rid = proc.request("array.write", {**params, "shm": shm(path, 128)})
    proc.cancel(rid)
    assert wait_for(lambda: not os.path.exists(path), 10)
    path = upload_file(proc, bytes(128))
    err(proc.call("array.write", {**params, "mode": "r", "shm": shm(path, 128)}), "read_only")
    assert not os.path.exists(path)
    proc.ping()


# -- codec methods ----------------------------------------------------------------------

def test_codec_methods_take_upload_files(sc):
    import numcodecs

    raw = values((300_000,), 9).tobytes()
    path = upload_file(sc, raw)
    reply = sc.call("codec.encode", {"codec": {"id": "zstd", "level": 3},
                                     "shm": shm(path, len(raw))}, timeout=60)
    assert reply.ok, reply.error
    packed = reply.data
    assert numcodecs.Zstd().decode(packed) == raw
    assert wait_for(lambda: not os.path.exists(path))

    path = upload_file(sc, packed)
    reply = sc.call("codec.decode", {"codec": {"id": "zstd"}, "shm": shm(path, len(packed)),
                                     "dtype": "float64", "shape": [300_000]}, timeout=60)
    assert reply.ok, reply.error
    assert reply.data == raw
    assert wait_for(lambda: not os.path.exists(path))

    spec = {"zarr_format": 3, "dtype": "float64", "shape": [300_000],
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                       {"name": "zstd", "configuration": {"level": 1}}]}
    path = upload_file(sc, raw)
    reply = sc.call("codec.pipeline_encode", {**spec, "shm": shm(path, len(raw))}, timeout=60)
    assert reply.ok, reply.error
    path = upload_file(sc, reply.data)
    back = sc.call("codec.pipeline_decode", {**spec, "shm": shm(path, len(reply.data))},
                   timeout=60)
    assert back.ok, back.error
    assert back.data == raw
    assert wait_for(lambda: not os.path.exists(path))


def test_codec_upload_files_are_checked_like_array_ones(sc, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"x" * 10)
    err(sc.call("codec.encode", {"codec": {"id": "zlib"}, "shm": shm(str(outside), 10)}),
        "forbidden_path")
    assert outside.read_bytes() == b"x" * 10
    path = upload_file(sc, b"y" * 100)
    err(sc.call("codec.encode", {"codec": {"id": "zlib"}, "shm": shm(path, 99)}),
        "data_size_mismatch")
    assert wait_for(lambda: not os.path.exists(path))
    path = upload_file(sc, b"z" * 10)
    err(sc.call("codec.encode", {"codec": {"id": "zlib"}, "shm": shm(path, 10), "data": b"z"}),
        "invalid_params")
    assert wait_for(lambda: not os.path.exists(path))
    still_serving(sc)
