"""Store failures for real: a full disk, a read-only file system, permission denied.

Each is made for real, as root: a small tmpfs filled to the last byte
(ENOSPC), the same tmpfs remounted read-only (EROFS), and a sidecar run
without CAP_DAC_OVERRIDE on a directory of mode 0555 (EACCES; root ignores
mode bits otherwise). Every failure must be ``store_error`` whose message
names the operation, the reason in words and the full path (details:
``path``, ``operation``, ``errno``); a failed create removes the directories
it made and never one that was there before; and the sidecar goes on
serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import SidecarProcess, fs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def zipref(path: Path | str) -> dict[str, str]:
    return {"kind": "zip", "path": str(path)}


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Mount:
    """A small tmpfs, filled or made read-only on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (in blocks, then the last partial block byte by byte)."""
        with open(self.filler, "ab", buffering=0) as f:
            for size in (65536, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        _run("mount", "-o", "remount,ro", str(self.path))

    def read_write(self) -> None:
        _run("mount", "-o", "remount,rw", str(self.path))


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Mount]:
    path = tmp_path / "mnt"
    path.mkdir()
    try:
        _run("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(path))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield Mount(path)
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=1) as proc:
        proc.ping(timeout=30)
        yield proc


class UnprivilegedSidecar(SidecarProcess):
    """A sidecar still root, but without the capabilities that ignore mode bits."""

    @property
    def command(self) -> list[str]:
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
                *super().command]


def expect_store_error(reply: Any, errno_name: str, words: str, path: Path | str,
                       operation: str) -> dict[str, Any]:
    assert reply.error is not None, f"expected store_error, got {reply.result}"
    err = reply.error
    assert err["code"] == "store_error", err
    assert err["details"]["errno"] == errno_name, err
    assert words in err["message"], err["message"]
    assert repr(str(path)) in err["message"], err["message"]
    assert err["details"]["path"] == str(path), err
    assert operation in err["message"], err["message"]
    return err


def array_params(store: dict[str, str], path: str, **kw: Any) -> dict[str, Any]:
    return {"store": store, "path": path, "shape": [8], "chunks": [4], "dtype": "int32", **kw}


def still_serves(sc: SidecarProcess, tmp_path: Path) -> None:
    """After a fault: a ping, and a whole array round trip elsewhere."""
    assert sc.ping().ok
    d = tmp_path / f"after{sc.next_id()}"
    sc.call("array.create", array_params(fs(d), "ok")).unwrap()
    data = np.arange(8, dtype="<i4").tobytes()
    sc.call("array.write", {"store": fs(d), "path": "ok", "shape": [8], "data": data}).unwrap()
    assert sc.call("array.read", {"store": fs(d), "path": "ok"}).data == data


# -- ENOSPC ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["array", "group"])
@pytest.mark.parametrize("method", ["update_attributes", "put_attributes"])
def test_attribute_writes_on_a_full_disk(sc, mnt, tmp_path, kind, method):
    store = fs(mnt.path)
    if kind == "array":
        sc.call("array.create", array_params(store, "n", attributes={"a": 1})).unwrap()
    else:
        sc.call("group.create", {"store": store, "path": "n", "attributes": {"a": 1}}).unwrap()
    mnt.fill()
    reply = sc.call(f"{kind}.{method}", {"store": store, "path": "n",
                                         "attributes": {"b": "x" * 20000}})
    verb = "update" if method == "update_attributes" else "replace"
    expect_store_error(reply, "ENOSPC", "no space left on device", mnt.path / "n",
                       f"cannot {verb} the attributes of the {kind} at path 'n'")
    mnt.unfill()
    # nothing was lost: the attributes are the old ones
    got = sc.call(f"{kind}.get_attributes", {"store": store, "path": "n"}).unwrap()
    assert got["attributes"] == {"a": 1}
    still_serves(sc, tmp_path)


@pytest.mark.parametrize("method", ["write", "update_attributes"])
def test_zip_writes_on_a_full_disk(sc, mnt, tmp_path, method):
    archive = mnt.path / "z.zip"
    sc.call("array.create", array_params(zipref(archive), "a", shape=[40000], chunks=[40000],
                                         compressor=None, zarr_format=2)).unwrap()
    before = archive.read_bytes()
    # 64 KiB left: room for the session's copy of the archive, not for the new data
    (mnt.path / "reserve").write_bytes(b"\0" * 64 * 1024)
    mnt.fill()
    (mnt.path / "reserve").unlink()
    if method == "write":
        data = np.random.default_rng(0).integers(0, 2**31, 40000).astype("<i4").tobytes()
        reply = sc.call("array.write", {"store": zipref(archive), "path": "a",
                                        "shape": [40000], "data": data})
    else:
        reply = sc.call("array.update_attributes", {"store": zipref(archive), "path": "a",
                                                    "attributes": {"b": os.urandom(100000).hex()}})
    err = expect_store_error(reply, "ENOSPC", "no space left on device", archive, "cannot ")
    assert "zip" in err["message"]
    # the archive is as it was, and no temporary file is left
    assert archive.read_bytes() == before
    assert sorted(p.name for p in mnt.path.iterdir()) == ["filler", "z.zip"]
    still_serves(sc, tmp_path)


@pytest.mark.parametrize("kind", ["array", "group"])
def test_a_failed_create_removes_only_what_it_made(sc, mnt, tmp_path, kind):
    store = fs(mnt.path)
    (mnt.path / "kept").mkdir()
    (mnt.path / "kept" / "mine.txt").write_text("the user's")
    mnt.fill()
    big = {"b": "x" * 20000}
    for path in ["new", "kept/deeper/node", "kept"]:
        if kind == "array":
            reply = sc.call("array.create", array_params(store, path, attributes=big,
                                                         mode="a"))
        else:
            reply = sc.call("group.create", {"store": store, "path": path, "attributes": big,
                                             "mode": "a"})
        assert reply.error is not None and reply.error["code"] == "store_error", reply.error
        assert reply.error["details"]["errno"] == "ENOSPC"
        assert "no space left on device" in reply.error["message"]
        assert f"cannot create the {kind} at path {path!r}" in reply.error["message"]
        assert str(mnt.path / path) in reply.error["message"]
    # the new directories are gone; the one that was there stays, with its file
    assert sorted(p.name for p in mnt.path.iterdir()) == ["filler", "kept"]
    assert sorted(p.name for p in (mnt.path / "kept").iterdir()) == ["mine.txt"]
    still_serves(sc, tmp_path)


def test_failed_creates_leave_nothing_even_when_zarr_writes_race(sc, mnt, tmp_path):
    """zarr-python writes a node's documents concurrently: when one fails, the
    others go on and may make the directory again. 40 tries catch that."""
    mnt.fill()
    for i in range(40):
        reply = sc.call("group.create", {"store": fs(mnt.path), "path": f"g{i}",
                                         "attributes": {"y": "z" * 20000}})
        assert reply.error is not None and reply.error["code"] == "store_error", reply.error
    assert sorted(p.name for p in mnt.path.iterdir()) == ["filler"]
    still_serves(sc, tmp_path)


def test_a_failed_create_in_a_new_store_removes_the_store_directory(sc, mnt, tmp_path):
    mnt.fill()
    store = fs(mnt.path / "fresh" / "store")
    reply = sc.call("array.create", array_params(store, "a/b", attributes={"b": "x" * 20000}))
    assert reply.error is not None and reply.error["code"] == "store_error", reply.error
    assert sorted(p.name for p in mnt.path.iterdir()) == ["filler"]
    still_serves(sc, tmp_path)


# -- EROFS -------------------------------------------------------------------------

def test_read_only_file_system(sc, mnt, tmp_path):
    store = fs(mnt.path)
    sc.call("array.create", array_params(store, "a", attributes={"a": 1})).unwrap()
    sc.call("group.create", {"store": store, "path": "g"}).unwrap()
    data = np.arange(8, dtype="<i4").tobytes()
    sc.call("array.write", {"store": store, "path": "a", "shape": [8], "data": data}).unwrap()
    mnt.read_only()
    a_dir = mnt.path / "a"
    cases = [
        ("array.update_attributes", {"path": "a", "attributes": {"b": 2}},
         "cannot update the attributes of the array at path 'a'", a_dir / "zarr.json"),
        ("array.put_attributes", {"path": "a", "attributes": {"b": 2}},
         "cannot replace the attributes of the array at path 'a'", a_dir / "zarr.json"),
        ("group.update_attributes", {"path": "g", "attributes": {"b": 2}},
         "cannot update the attributes of the group at path 'g'", mnt.path / "g" / "zarr.json"),
        ("array.write", {"path": "a", "shape": [8], "data": data[::-1]},
         "cannot write chunk", a_dir / "c" / "0"),
        # zarr-python may write the implicit root group's zarr.json first
        ("array.create", {**array_params(store, "new"), "path": "new"},
         "cannot create the array at path 'new'", (mnt.path / "new", mnt.path / "zarr.json")),
        ("group.create", {"path": "g2"}, "cannot create the group at path 'g2'",
         (mnt.path / "g2", mnt.path / "zarr.json")),
        ("store.consolidate_metadata", {"path": "g"}, "cannot consolidate the metadata",
         mnt.path / "g" / "zarr.json"),
    ]
    for method, params, operation, path in cases:
        reply = sc.call(method, {"store": store, **params})
        if isinstance(path, tuple):
            assert reply.error is not None, reply.result
            assert reply.error["details"].get("path") in map(str, path), reply.error
            path = reply.error["details"]["path"]
        expect_store_error(reply, "EROFS", "read-only file system", path, operation)
        assert sc.ping().ok
    # nothing changed
    assert sc.call("array.read", {"store": store, "path": "a"}).data == data
    assert sc.call("array.get_attributes", {"store": store, "path": "a"}).unwrap() == {
        "attributes": {"a": 1}}
    still_serves(sc, tmp_path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_overwrite_on_a_read_only_file_system_names_the_full_path(sc, mnt, tmp_path,
                                                                   zarr_format):
    """zarr-python's rmtree reports the bare entry name ('9'): the reply has the full path."""
    store = fs(mnt.path)
    sc.call("array.create", array_params(store, "v", shape=[10], chunks=[1], dtype="int8",
                                         zarr_format=zarr_format)).unwrap()
    sc.call("array.write", {"store": store, "path": "v", "shape": [10],
                            "data": bytes(range(1, 11))}).unwrap()
    mnt.read_only()
    reply = sc.call("array.create", array_params(store, "v", mode="w"))
    err = reply.error
    assert err is not None and err["code"] == "store_error", err
    assert err["details"]["errno"] == "EROFS"
    failed = Path(err["details"]["path"])
    assert failed.is_absolute() and failed.exists(), err
    assert str(failed).startswith(str(mnt.path / "v") + "/"), err
    assert repr(str(failed)) in err["message"]
    assert "cannot create the array at path 'v'" in err["message"]
    # the array is intact
    assert sc.call("array.read", {"store": store, "path": "v"}).data == bytes(range(1, 11))
    still_serves(sc, tmp_path)


# -- EACCES ------------------------------------------------------------------------

@pytest.fixture
def unprivileged(tmp_path: Path) -> Iterator[SidecarProcess]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    with UnprivilegedSidecar(workers=1) as proc:
        proc.ping(timeout=30)
        yield proc


def test_permission_denied(unprivileged, tmp_path):
    sc = unprivileged
    root = tmp_path / "locked"
    store = fs(root)
    sc.call("array.create", array_params(store, "a", attributes={"a": 1})).unwrap()
    sc.call("group.create", {"store": store, "path": "g"}).unwrap()
    try:
        for d in (root, root / "a", root / "g"):
            d.chmod(0o555)
        reply = sc.call("array.update_attributes", {"store": store, "path": "a",
                                                    "attributes": {"b": 2}})
        expect_store_error(reply, "EACCES", "permission denied", reply.error
                           and reply.error["details"].get("path"),
                           "cannot update the attributes of the array at path 'a'")
        assert reply.error["details"]["path"].startswith(str(root / "a") + "/")
        reply = sc.call("group.put_attributes", {"store": store, "path": "g",
                                                 "attributes": {"b": 2}})
        assert reply.error["details"]["errno"] == "EACCES", reply.error
        assert "permission denied" in reply.error["message"]
        reply = sc.call("array.create", array_params(store, "b"))
        # zarr-python writes the implicit root group's zarr.json again
        # before it makes b/: either is the file that really failed
        failed = reply.error and reply.error["details"].get("path")
        assert failed in (str(root / "b"), str(root / "zarr.json")), reply.error
        expect_store_error(reply, "EACCES", "permission denied", failed,
                           "cannot create the array at path 'b'")
        data = np.arange(1, 9, dtype="<i4").tobytes()
        reply = sc.call("array.write", {"store": store, "path": "a", "shape": [8],
                                        "data": data})
        assert reply.error["code"] == "store_error" and "permission denied" in \
            reply.error["message"], reply.error
        assert sc.ping().ok
        assert sc.call("array.get_attributes", {"store": store, "path": "a"}).unwrap() == {
            "attributes": {"a": 1}}
    finally:
        for d in (root, root / "a", root / "g"):
            d.chmod(0o755)
    assert sorted(p.name for p in root.iterdir()) == ["a", "g", "zarr.json"]
    still_serves(sc, tmp_path)
