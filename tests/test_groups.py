"""Groups and consolidated metadata through a real sidecar, zarr-python on the other side."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import SidecarProcess, err, fs, ok
from test_arrays import le_bytes, same

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


def stores(tmp_path: Any) -> dict[str, tuple[dict[str, str], Any]]:
    """Each store kind: (wire store, zarr-python store for the same data or None)."""
    return {
        "filesystem": (fs(tmp_path / "fs"), lambda: str(tmp_path / "fs")),
        "zip": ({"kind": "zip", "path": str(tmp_path / "a.zip")},
                lambda: zarr.storage.ZipStore(str(tmp_path / "a.zip"), mode="r")),
        "memory": ({"kind": "memory", "name": f"g-{tmp_path.name}"}, None),
    }


def _build(sc: SidecarProcess, store: dict[str, str], fmt: int) -> None:
    """/ {a:1} with arrays x, sub/y, sub/deeper/z and group empty."""
    ok(sc.call("group.create", {"store": store, "zarr_format": fmt, "attributes": {"a": 1}}))
    ok(sc.call("array.create", {"store": store, "path": "x", "zarr_format": fmt,
                                "shape": [4, 3], "chunks": [2, 3], "dtype": "float32"}))
    ok(sc.call("group.create", {"store": store, "path": "sub", "zarr_format": fmt}))
    ok(sc.call("group.create", {"store": store, "path": "sub/deeper", "zarr_format": fmt,
                                "attributes": {"level": 2}}))
    ok(sc.call("array.create", {"store": store, "path": "sub/y", "zarr_format": fmt,
                                "shape": [5], "chunks": [5], "dtype": "string"}))
    ok(sc.call("array.create", {"store": store, "path": "sub/deeper/z", "zarr_format": fmt,
                                "shape": [], "chunks": [], "dtype": "int64"}))
    ok(sc.call("group.create", {"store": store, "path": "empty", "zarr_format": fmt}))


EXPECTED_TREE = [
    {"path": "empty", "kind": "group"},
    {"path": "sub", "kind": "group"},
    {"path": "sub/deeper", "kind": "group"},
    {"path": "sub/deeper/z", "kind": "array", "shape": [], "dtype": "int64"},
    {"path": "sub/y", "kind": "array", "shape": [5], "dtype": "string"},
    {"path": "x", "kind": "array", "shape": [4, 3], "dtype": "float32"},
]


@pytest.mark.parametrize("kind", ["filesystem", "zip", "memory"])
@pytest.mark.parametrize("fmt", [2, 3])
def test_hierarchy_both_ways(sc, tmp_path, kind, fmt):
    store, zstore = stores(tmp_path)[kind]
    _build(sc, store, fmt)
    info = ok(sc.call("group.open", {"store": store}))["group"]
    assert info == {"path": "", "zarr_format": fmt, "attributes": {"a": 1},
                    "consolidated": False}
    members = ok(sc.call("group.members", {"store": store}))["members"]
    assert members == [{"name": "empty", "path": "empty", "kind": "group"},
                       {"name": "sub", "path": "sub", "kind": "group"},
                       {"name": "x", "path": "x", "kind": "array"}]
    members = ok(sc.call("group.members", {"store": store, "path": "sub"}))["members"]
    assert [(m["name"], m["path"]) for m in members] == [("deeper", "sub/deeper"),
                                                        ("y", "sub/y")]
    assert ok(sc.call("group.tree", {"store": store}))["nodes"] == EXPECTED_TREE
    sub_tree = ok(sc.call("group.tree", {"store": store, "path": "sub/"}))["nodes"]
    assert [n["path"] for n in sub_tree] == ["sub/deeper", "sub/deeper/z", "sub/y"]
    assert ok(sc.call("group.get_attributes", {"store": store, "path": "sub/deeper"}))[
        "attributes"] == {"level": 2}
    # an array inside the hierarchy is opened by its path
    ok(sc.call("array.write", {"store": store, "path": "sub/y", "shape": [5],
                               "values": ["a", "b", "", "é", "z"]}))
    ok(sc.call("array.write", {"store": store, "path": "sub/deeper/z", "shape": [],
                               "data": le_bytes(np.array(-4, "int64"))}))
    if zstore is None:
        return
    g = zarr.open_group(zstore(), mode="r")
    assert g.metadata.zarr_format == fmt and dict(g.attrs) == {"a": 1}
    assert sorted(p for p, _ in g.members(max_depth=None)) == [n["path"] for n in EXPECTED_TREE]
    assert g["sub/y"][...].tolist() == ["a", "b", "", "é", "z"]
    assert g["sub/deeper/z"][()] == -4
    assert dict(g["sub/deeper"].attrs) == {"level": 2}


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_python_hierarchy_read_by_sidecar(sc, tmp_path, fmt):
    g = zarr.create_group(str(tmp_path / "h"), zarr_format=fmt, attributes={"title": "t"})
    g.create_array("b", shape=(3,), dtype="uint8")[...] = [1, 2, 3]
    g.create_group("a").create_array("arr", shape=(2, 2), dtype="complex64")
    g.create_group("a/nested", attributes={"n": [1, None]})
    (tmp_path / "h" / "not-a-node").mkdir()  # a plain directory is no member
    st = {"store": fs(tmp_path / "h")}
    assert ok(sc.call("group.open", st))["group"]["attributes"] == {"title": "t"}
    assert [m["name"] for m in ok(sc.call("group.members", st))["members"]] == ["a", "b"]
    nodes = ok(sc.call("group.tree", st))["nodes"]
    assert nodes == [{"path": "a", "kind": "group"},
                     {"path": "a/arr", "kind": "array", "shape": [2, 2], "dtype": "complex64"},
                     {"path": "a/nested", "kind": "group"},
                     {"path": "b", "kind": "array", "shape": [3], "dtype": "uint8"}]
    assert ok(sc.call("array.read", {**st, "path": "b"}))["data"] == b"\x01\x02\x03"
    err(sc.call("group.open", {**st, "path": "b"}), "not_found")
    err(sc.call("array.open", {**st, "path": "a"}), "not_found")
    err(sc.call("group.members", {**st, "path": "nothing"}), "not_found")
    err(sc.call("group.open", {**st, "path": "../x"}), "forbidden_path")


def test_group_modes_and_attributes(sc, tmp_path):
    st = {"store": fs(tmp_path / "g")}
    err(sc.call("group.open", st), "not_found")
    assert ok(sc.call("group.open", {**st, "mode": "a"}))["group"]["zarr_format"] == 3
    err(sc.call("group.create", st), "already_exists")
    assert ok(sc.call("group.create", {**st, "mode": "a", "zarr_format": 2}))["group"][
        "zarr_format"] == 3  # "a" opens what is there
    info = ok(sc.call("group.create", {**st, "mode": "w", "zarr_format": 2,
                                       "attributes": {"v": 2}}))["group"]
    assert info["zarr_format"] == 2 and info["attributes"] == {"v": 2}
    assert os.path.exists(tmp_path / "g" / ".zgroup")
    assert not os.path.exists(tmp_path / "g" / "zarr.json")
    res = ok(sc.call("group.update_attributes", {**st, "attributes": {"w": [1, 2]}}))
    assert res["attributes"] == {"v": 2, "w": [1, 2]}
    assert dict(zarr.open_group(str(tmp_path / "g"), mode="r").attrs) == {"v": 2, "w": [1, 2]}
    res = ok(sc.call("group.put_attributes", {**st, "attributes": {"only": "this"}}))
    assert res["attributes"] == {"only": "this"}
    assert ok(sc.call("group.get_attributes", st))["attributes"] == {"only": "this"}
    err(sc.call("group.put_attributes", {**st, "mode": "r", "attributes": {}}), "read_only")
    err(sc.call("group.put_attributes", {**st, "attributes": {"b": b"\x00"}}), "invalid_params")
    err(sc.call("group.create", {**st, "path": "x", "zarr_format": 4}), "invalid_params")
    # an array is not a group, and creating a group over one needs "w"
    ok(sc.call("array.create", {**st, "path": "arr", "shape": [1], "chunks": [1],
                                "dtype": "int8"}))
    err(sc.call("group.create", {**st, "path": "arr", "mode": "a"}), "already_exists")
    err(sc.call("group.get_attributes", {**st, "path": "arr"}), "not_found")
    ok(sc.call("group.create", {**st, "path": "arr", "mode": "w"}))
    err(sc.call("array.open", {**st, "path": "arr"}), "not_found")


@pytest.mark.parametrize("kind", ["filesystem", "zip", "memory"])
@pytest.mark.parametrize("fmt", [2, 3])
def test_consolidated_metadata(sc, tmp_path, kind, fmt):
    store, zstore = stores(tmp_path)[kind]
    _build(sc, store, fmt)
    info = ok(sc.call("store.consolidate_metadata", {"store": store}))["group"]
    assert info["consolidated"] is True and info["attributes"] == {"a": 1}
    assert ok(sc.call("group.open", {"store": store}))["group"]["consolidated"] is True
    assert ok(sc.call("group.tree", {"store": store}))["nodes"] == EXPECTED_TREE
    if zstore is not None:
        g = zarr.open_group(zstore(), mode="r")
        assert g.metadata.consolidated_metadata is not None
        assert sorted(p for p, _ in g.members(max_depth=None)) == [n["path"] for n in
                                                                  EXPECTED_TREE]
    if kind != "filesystem":
        return
    root = tmp_path / "fs"
    # a member added behind the consolidated metadata is not listed (zarr-python agrees) ...
    zarr.create_array(str(root), name="later", shape=(1,), dtype="int8", zarr_format=fmt)
    names = [m["name"] for m in ok(sc.call("group.members", {"store": store}))["members"]]
    assert "later" not in names
    assert "later" not in [k for k, _ in zarr.open_group(str(root), mode="r").members()]
    # ... until the metadata is consolidated again
    ok(sc.call("store.consolidate_metadata", {"store": store}))
    names = [m["name"] for m in ok(sc.call("group.members", {"store": store}))["members"]]
    assert "later" in names
    # an array whose own document is gone opens through the consolidated metadata
    data = np.arange(12, dtype="float32").reshape(4, 3)
    ok(sc.call("array.write", {"store": store, "path": "x", "shape": [4, 3],
                               "data": le_bytes(data)}))
    os.unlink(root / "x" / (".zarray" if fmt == 2 else "zarr.json"))
    meta = ok(sc.call("array.open", {"store": store, "path": "x"}))["metadata"]
    assert meta["shape"] == [4, 3] and meta["dtype"] == "float32"
    same(sc.call("array.read", {"store": store, "path": "x"}).data, data)


def test_consolidated_metadata_written_by_zarr_python(sc, tmp_path):
    for fmt in (2, 3):
        path = tmp_path / f"v{fmt}"
        g = zarr.create_group(str(path), zarr_format=fmt)
        g.create_array("m", shape=(2,), dtype="int16")[...] = [7, -7]
        g.create_group("s").create_array("t", shape=(1,), dtype="bool")
        zarr.consolidate_metadata(str(path))
        st = {"store": fs(path)}
        assert ok(sc.call("group.open", st))["group"]["consolidated"] is True
        assert [n["path"] for n in ok(sc.call("group.tree", st))["nodes"]] == ["m", "s", "s/t"]
        assert ok(sc.call("array.read", {**st, "path": "m"}))["data"] == \
            np.array([7, -7], "<i2").tobytes()
    err(sc.call("store.consolidate_metadata", {"store": fs(tmp_path / "v2"), "path": "m"}),
        "not_found")
