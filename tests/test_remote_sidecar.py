"""Remote stores (S3, GCS, Azure, HTTP) through a real sidecar, zarr-python on the other side.

Each server starts once per session (``servers.fixtures``); the sidecar once
per module. zarr-python opens the same bucket through
:func:`pybridge.stores.open_remote_store` (the same store library the
sidecar uses), so "the other side" is zarr-python's own reader and writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import SidecarProcess, err, ok
from servers.base import Endpoint, TestServer
from servers.fixtures import azure_server, fresh, gcs_server, http_server, s3_server
from test_remote_stores import make_bucket, store_map

from pybridge.stores import open_remote_store

__all__ = ["azure_server", "gcs_server", "http_server", "s3_server"]

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

BUCKET = "zb-sidecar"
SERVERS = {"s3": "s3_server", "gcs": "gcs_server", "azure": "azure_server"}


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=1) as proc:
        proc.ping(timeout=30)
        yield proc


@pytest.fixture
def ep(request: pytest.FixtureRequest) -> Endpoint:
    kind = getattr(request, "param", "s3")
    server: TestServer = request.getfixturevalue(SERVERS[kind])
    endpoint = fresh(server)
    make_bucket(endpoint, BUCKET)
    return endpoint


def zp(store: dict[str, Any]) -> Any:
    """zarr-python's store for the wire map ``store``."""
    return open_remote_store(store)


def i32(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(data, "<i4").reshape(shape)


@pytest.mark.parametrize("ep", ["s3", "gcs", "azure"], indirect=True)
@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_python_writes_sidecar_reads(sc: SidecarProcess, ep: Endpoint, fmt: int) -> None:
    m = store_map(ep, BUCKET, "in")
    data = np.arange(30 * 7, dtype="<i4").reshape(30, 7)
    g = zarr.open_group(zp(m), mode="w", zarr_format=fmt, attributes={"who": "zarr-python"})
    a = g.create_array("x", shape=data.shape, chunks=(8, 4), dtype="<i4", fill_value=-1)
    a[:] = data
    a.attrs["unit"] = "m"
    info = ok(sc.call("array.open", {"store": m, "path": "x", "mode": "r"}))["metadata"]
    assert info["shape"] == [30, 7]
    assert i32(sc.call("array.read", {"store": m, "path": "x"}).data, (30, 7)).tolist() == data.tolist()
    part = sc.call("array.read", {"store": m, "path": "x", "start": [5, 2], "stop": [20, 6]}).data
    assert i32(part, (15, 4)).tolist() == data[5:20, 2:6].tolist()
    assert ok(sc.call("array.get_attributes", {"store": m, "path": "x"}))["attributes"] == {"unit": "m"}
    assert ok(sc.call("group.get_attributes", {"store": m}))["attributes"] == {"who": "zarr-python"}
    members = ok(sc.call("group.members", {"store": m}))["members"]
    assert [(x["name"], x["kind"]) for x in members] == [("x", "array")]
    keys = ok(sc.call("array.chunk_keys", {"store": m, "path": "x"}))["keys"]
    assert len(keys) == 4 * 2


@pytest.mark.parametrize("ep", ["s3", "gcs", "azure"], indirect=True)
def test_sidecar_writes_zarr_python_reads(sc: SidecarProcess, ep: Endpoint) -> None:
    m = store_map(ep, BUCKET, "out")
    ok(sc.call("group.create", {"store": m, "attributes": {"who": "sidecar"}}))
    ok(sc.call("array.create", {"store": m, "path": "x", "shape": [30, 7], "chunks": [8, 4],
                                "dtype": "int32", "fill_value": -1,
                                "compressor": {"id": "zstd", "level": 1}}))
    data = np.arange(30 * 7, dtype="<i4").reshape(30, 7)
    ok(sc.call("array.write", {"store": m, "path": "x", "shape": [30, 7], "data": data.tobytes()}))
    ok(sc.call("array.update_attributes", {"store": m, "path": "x", "attributes": {"unit": "s"}}))
    got = zarr.open_array(zp(m), path="x", mode="r")
    np.testing.assert_array_equal(got[:], data)
    assert dict(got.attrs) == {"unit": "s"}
    assert dict(zarr.open_group(zp(m), mode="r").attrs) == {"who": "sidecar"}


def test_every_array_op_on_s3(sc: SidecarProcess, ep: Endpoint) -> None:
    m = store_map(ep, BUCKET, "ops")
    ok(sc.call("group.create", {"store": m}))
    ok(sc.call("group.create", {"store": m, "path": "sub"}))
    ok(sc.call("array.create", {"store": m, "path": "sub/a", "shape": [4, 6], "chunks": [2, 3],
                                "dtype": "int32", "fill_value": 0}))
    ok(sc.call("array.write", {"store": m, "path": "sub/a", "shape": [4, 6],
                               "data": np.arange(24, dtype="<i4").tobytes()}))
    ok(sc.call("array.resize", {"store": m, "path": "sub/a", "shape": [6, 6]}))
    ok(sc.call("array.append", {"store": m, "path": "sub/a", "axis": 0, "shape": [2, 6],
                                "data": np.full(12, 9, "<i4").tobytes()}))
    want = np.concatenate([np.arange(24).reshape(4, 6), np.zeros((2, 6)), np.full((2, 6), 9)]).astype("<i4")
    np.testing.assert_array_equal(zarr.open_array(zp(m), path="sub/a", mode="r")[:], want)
    assert i32(sc.call("array.read", {"store": m, "path": "sub/a"}).data, (8, 6)).tolist() == want.tolist()
    # raw chunks both ways
    raw = sc.call("array.read_chunk_raw", {"store": m, "path": "sub/a", "key": "c/0/0"}).data
    ok(sc.call("array.write_chunk_raw", {"store": m, "path": "sub/a", "key": "c/3/1", "data": raw}))
    np.testing.assert_array_equal(zarr.open_array(zp(m), path="sub/a", mode="r")[6:8, 3:6],
                                  want[0:2, 0:3])
    stats = ok(sc.call("array.stats", {"store": m, "path": "sub/a"}))
    assert stats
    tree = ok(sc.call("group.tree", {"store": m}))["nodes"]
    assert {n["path"] for n in tree} >= {"sub", "sub/a"}
    # consolidated metadata, read back by zarr-python
    ok(sc.call("store.consolidate_metadata", {"store": m}))
    g = zarr.open_consolidated(zp(m), mode="r")
    assert g["sub/a"].shape == (8, 6)


def test_sharded_array_on_s3_both_ways(sc: SidecarProcess, ep: Endpoint) -> None:
    m = store_map(ep, BUCKET, "sh")
    data = np.arange(64, dtype="<u2").reshape(8, 8)
    a = zarr.create_array(zp(m), name="z", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="<u2")
    a[:] = data
    got = np.frombuffer(sc.call("array.read", {"store": m, "path": "z"}).data, "<u2").reshape(8, 8)
    np.testing.assert_array_equal(got, data)
    ok(sc.call("array.write", {"store": m, "path": "z", "start": [2, 2], "shape": [4, 4],
                               "data": np.full(16, 7, "<u2").tobytes()}))
    data[2:6, 2:6] = 7
    np.testing.assert_array_equal(zarr.open_array(zp(m), path="z", mode="r")[:], data)


def test_http_is_read_only(sc: SidecarProcess, http_server: TestServer) -> None:
    endpoint = fresh(http_server)
    zarr.create_array(zarr.storage.LocalStore(endpoint.options["root"]), name="a", shape=(5,),
                      dtype="u1", fill_value=0)[:] = np.arange(5, dtype="u1")
    m = {"kind": "http", "url": endpoint.url}
    assert sc.call("array.read", {"store": m, "path": "a"}).data == bytes(range(5))
    err(sc.call("array.write", {"store": m, "path": "a", "shape": [5], "data": b"\x01" * 5}),
        "read_only")
    err(sc.call("array.create", {"store": m, "path": "b", "shape": [2], "chunks": [2], "dtype": "uint8"}),
        "read_only")


def test_error_codes_carry_no_credentials(sc: SidecarProcess, ep: Endpoint) -> None:
    secret = ep.options["secret_access_key"]
    m = store_map(ep, BUCKET, "err")
    reply = err(sc.call("array.open", {"store": m, "path": "nothing", "mode": "r"}), "not_found")
    assert secret not in str(reply)
    gone = store_map(ep, "no-such-bucket-here")
    reply = err(sc.call("array.create", {"store": gone, "path": "a", "shape": [2], "chunks": [2], "dtype": "uint8"}),
                "no_such_bucket")
    assert secret not in str(reply)
    # a read in a missing bucket looks like a missing key to the store library
    reply = err(sc.call("array.open", {"store": gone, "path": "a", "mode": "r"}), "no_such_bucket")
    assert secret not in str(reply)
    assert ok(sc.call("ping"))["pong"]


def test_allowed_urls_confine_remote_stores(ep: Endpoint) -> None:
    with SidecarProcess(["--allowed-url", f"s3://{BUCKET}/team"], workers=1) as proc:
        inside = store_map(ep, BUCKET, "team/x")
        ok(proc.call("array.create", {"store": inside, "shape": [2], "chunks": [2], "dtype": "uint8"}, timeout=30))
        for prefix in ("teamwork", "other"):
            err(proc.call("array.create", {"store": store_map(ep, BUCKET, prefix), "shape": [2],
                                           "chunks": [2], "dtype": "uint8"}), "forbidden_path")


def _moto(port: int = 0) -> Any:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def test_server_stopped_then_restarted_mid_use(sc: SidecarProcess) -> None:
    server = _moto()
    host, port = server.get_host_and_port()
    endpoint = Endpoint("s3", f"http://{host}:{port}", {
        "access_key_id": "restart-key", "secret_access_key": "restart-secret-value",
        "region": "us-east-1"})
    try:
        make_bucket(endpoint, "zb-restart")
        m = store_map(endpoint, "zb-restart", "", retry={"max_retries": 1, "timeout_s": 1.0,
                                                          "initial_backoff_s": 0.05})
        ok(sc.call("array.create", {"store": m, "path": "a", "shape": [4], "chunks": [4], "dtype": "uint8",
                                    "fill_value": 0}))
        ok(sc.call("array.write", {"store": m, "path": "a", "shape": [4], "data": b"\x01\x02\x03\x04"}))
        server.stop()
        reply = err(sc.call("array.read", {"store": m, "path": "a"}, timeout=30), "store_unavailable")
        assert "restart-secret-value" not in str(reply)
        reply = err(sc.call("array.write", {"store": m, "path": "a", "shape": [4], "data": b"\0" * 4},
                            timeout=30), "store_unavailable")
        assert "restart-secret-value" not in str(reply)
        assert ok(sc.call("ping"))["pong"]
        server = _moto(port)  # moto keeps its buckets in the process: the data is back
        assert sc.call("array.read", {"store": m, "path": "a"}).data == b"\x01\x02\x03\x04"
        ok(sc.call("array.write", {"store": m, "path": "a", "shape": [4], "data": b"\x05\x06\x07\x08"}))
        assert sc.call("array.read", {"store": m, "path": "a"}).data == b"\x05\x06\x07\x08"
    finally:
        server.stop()


def test_allowed_urls_setting_from_flags_and_environment() -> None:
    from pybridge.settings import Settings, SettingsError

    s = Settings.from_argv(["--allowed-url", "s3://a/x", "--allowed-url", "https://h/z"],
                           {"PYBRIDGE_ALLOWED_URLS": "gs://ignored"})
    assert s.allowed_urls == ("s3://a/x", "https://h/z")
    assert s.describe()["allowed_urls"] == ("s3://a/x", "https://h/z")
    env = Settings.from_argv([], {"PYBRIDGE_ALLOWED_URLS": "s3://one gs://two/p"})
    assert env.allowed_urls == ("s3://one", "gs://two/p")
    assert Settings.from_argv([], {}).allowed_urls == ()
    with pytest.raises(SettingsError):
        Settings.from_argv(["--allowed-url", "just-a-bucket"], {})


def test_file_url_is_a_filesystem_store_under_the_allowed_roots(tmp_path: Any) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    for d in (inside, outside):
        zarr.create_array(str(d / "a"), shape=(3,), chunks=(3,), dtype="u1", fill_value=0)[:] = [4, 5, 6]
    with SidecarProcess(["--allowed-root", str(inside)], workers=1) as proc:
        m = {"kind": "url", "url": f"file://{inside}"}
        assert proc.call("array.read", {"store": m, "path": "a"}, timeout=30).data == b"\x04\x05\x06"
        err(proc.call("array.read", {"store": {"kind": "url", "url": f"file://{outside}"}, "path": "a"}),
            "forbidden_path")


def test_one_store_per_map_bounded_and_keyed_without_secrets() -> None:
    from pybridge.zarr.store import RemoteStores

    stores = RemoteStores(limit=2)
    base = {"kind": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:1",
            "access_key_id": "k", "secret_access_key": "very-secret-1"}
    first = stores.get(base, None)
    assert stores.get(dict(base), None) is first  # the same map: the same store (its connections)
    other = stores.get({**base, "secret_access_key": "very-secret-2"}, None)
    assert other is not first  # credentials count in the key
    assert "very-secret" not in RemoteStores.key(base) and "very-secret" not in repr(first)
    stores.get({**base, "prefix": "p"}, None)
    assert len(stores) == 2
    assert stores.get(base, None) is not first  # the least recently used one was dropped
