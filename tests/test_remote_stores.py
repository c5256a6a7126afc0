"""zarr-python through ``pybridge.stores`` on real S3, GCS, Azure and HTTP servers.

The servers are the ones in ``tests/servers`` (moto, gcp-storage-emulator,
Azurite, a Range-honouring static server), started once per session. Each
round trip writes with one store from the factory and reads back with a
fresh one, so nothing is served from a client-side cache.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from servers import Endpoint, TestServer
from servers.fixtures import azure_server, fresh, gcs_server, http_server, s3_auth_server, s3_server
from servers.s3 import S3Server
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, ZstdCodec

from pybridge.errors import AccessDenied, BridgeError, ForbiddenPath, InvalidParams, NoSuchBucket, ReadOnly, StoreUnavailable
from pybridge.stores import check_allowed, open_remote_store, parse_spec, probe, redact, redacted_map, store_errors

__all__ = ["azure_server", "gcs_server", "http_server", "s3_auth_server", "s3_server"]

BUCKET = "zb-test"
SERVERS = {"s3": "s3_server", "gcs": "gcs_server", "azure": "azure_server"}
WRITABLE = [("s3", "obstore"), ("s3", "fsspec"), ("gcs", "fsspec"), ("azure", "obstore"), ("azure", "fsspec")]


# --- making buckets with each service's own client --------------------------------


def make_bucket(ep: Endpoint, name: str) -> None:
    if ep.kind == "s3":
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=ep.url,
            aws_access_key_id=ep.options["access_key_id"],
            aws_secret_access_key=ep.options["secret_access_key"],
            region_name=ep.options["region"],
        )
        client.create_bucket(Bucket=name)
    elif ep.kind == "gcs":
        from gcsfs.core import GCSFileSystem

        GCSFileSystem(endpoint_url=ep.url, token="anon", project=ep.options["project"]).mkdir(name)
    elif ep.kind == "azure":
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(ep.options["connection_string"]) as client:
            client.create_container(name)
    else:
        raise AssertionError(ep.kind)


def store_map(ep: Endpoint, bucket: str = BUCKET, prefix: str = "", **extra: Any) -> dict[str, Any]:
    """The wire store map for ``ep`` as a client would send it."""
    base: dict[str, Any] = {"kind": ep.kind, "bucket": bucket, "prefix": prefix, "endpoint_url": ep.url}
    if ep.kind == "s3":
        base |= {
            "access_key_id": ep.options["access_key_id"],
            "secret_access_key": ep.options["secret_access_key"],
            "region": ep.options["region"],
        }
    elif ep.kind == "gcs":
        base |= {"anonymous": True, "project": ep.options["project"]}
    elif ep.kind == "azure":
        base |= {"account_name": ep.options["account_name"], "account_key": ep.options["account_key"]}
    return base | extra


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    kind = request.param
    server: TestServer = request.getfixturevalue(SERVERS[kind])
    ep = fresh(server)
    make_bucket(ep, BUCKET)
    yield ep


def open_store(ep: Endpoint, engine: str, **extra: Any) -> Store:
    return open_remote_store(store_map(ep, engine=engine, prefix=f"run-{uuid.uuid4().hex[:8]}", **extra))


# --- round trips -------------------------------------------------------------------

LAYOUTS = ["v2", "v3", "v3-sharded"]


def write_tree(store: Store, layout: str) -> dict[str, np.ndarray]:
    """A group with attributes and two arrays, written by zarr-python through ``store``."""
    fmt = 2 if layout == "v2" else 3
    rng = np.random.default_rng(13)
    data = {"temps": rng.normal(size=(40, 30)).astype("<f8"), "counts": rng.integers(0, 1000, size=(97,), dtype="<i4")}
    root = zarr.open_group(store, mode="w", zarr_format=fmt, attributes={"title": "remote", "n": 2})
    sub = root.create_group("sub", attributes={"level": 1})
    kwargs: dict[str, Any] = {}
    if layout == "v3-sharded":
        kwargs["shards"] = (20, 30)
    compressor: Any = ZstdCodec(level=3) if fmt == 3 else numcodecs.Zstd(level=3)
    temps = root.create_array("temps", shape=(40, 30), chunks=(10, 15), dtype="<f8", compressors=compressor, **kwargs)
    temps[:] = data["temps"]
    temps.attrs["units"] = "K"
    counts = sub.create_array(
        "counts",
        shape=(97,),
        chunks=(10,),
        dtype="<i4",
        compressors=BloscCodec() if fmt == 3 else numcodecs.Blosc(),
        **({"shards": (50,)} if layout == "v3-sharded" else {}),
    )
    counts[:] = data["counts"]
    return data


def check_tree(store: Store, layout: str, data: dict[str, np.ndarray], listing: bool = True) -> None:
    fmt = 2 if layout == "v2" else 3
    root = zarr.open_group(store, mode="r")
    assert root.metadata.zarr_format == fmt
    assert dict(root.attrs) == {"title": "remote", "n": 2}
    temps = root["temps"]
    assert isinstance(temps, zarr.Array)
    assert temps.attrs["units"] == "K"
    if layout == "v3-sharded":
        assert temps.shards == (20, 30)
    np.testing.assert_array_equal(temps[:], data["temps"])
    np.testing.assert_array_equal(temps[7:23, 3:29], data["temps"][7:23, 3:29])
    sub = root["sub"]
    assert isinstance(sub, zarr.Group)
    assert dict(sub.attrs) == {"level": 1}
    counts = sub["counts"]
    assert isinstance(counts, zarr.Array)
    np.testing.assert_array_equal(counts[:], data["counts"])
    if listing:
        assert sorted(root.group_keys()) == ["sub"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("endpoint", "engine"), WRITABLE, indirect=["endpoint"], ids=[f"{k}-{e}" for k, e in WRITABLE]
)
def test_zarr_python_round_trip(endpoint: Endpoint, engine: str, layout: str) -> None:
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    writer = open_remote_store(store_map(endpoint, prefix=prefix, engine=engine))
    data = write_tree(writer, layout)
    reader = open_remote_store(store_map(endpoint, prefix=prefix, engine=engine, read_only=True))
    check_tree(reader, layout, data)


@pytest.mark.parametrize(
    ("endpoint", "engine"), WRITABLE, indirect=["endpoint"], ids=[f"{k}-{e}" for k, e in WRITABLE]
)
def test_url_kind_reaches_the_same_objects(endpoint: Endpoint, engine: str) -> None:
    """``kind: url`` with ``s3://`` / ``gs://`` / ``az://`` opens the same bucket and prefix."""
    writer = open_remote_store(store_map(endpoint, prefix="via/url", engine=engine))
    arr = zarr.create_array(writer, name="a", shape=(12,), chunks=(5,), dtype="<u2")
    arr[:] = np.arange(12, dtype="<u2")
    scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[endpoint.kind]
    spec = store_map(endpoint, engine=engine) | {"kind": "url", "url": f"{scheme}://{BUCKET}/via/url"}
    del spec["bucket"], spec["prefix"]
    reader = open_remote_store(spec)
    np.testing.assert_array_equal(zarr.open_array(reader, path="a", mode="r")[:], np.arange(12, dtype="<u2"))


# --- HTTP (read-only) ------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_http_reads_what_zarr_python_wrote(http_server: TestServer, engine: str, layout: str) -> None:
    ep = fresh(http_server)
    data = write_tree(zarr.storage.LocalStore(ep.options["root"]), layout)
    store = open_remote_store({"kind": "http", "url": ep.url, "engine": engine})
    # obstore's HTTP client lists only over WebDAV; fsspec's parses the
    # server's HTML index pages. Neither is part of plain static hosting.
    check_tree(store, layout, data, listing=engine == "fsspec")


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
def test_http_store_refuses_writes(http_server: TestServer, engine: str) -> None:
    ep = fresh(http_server)
    zarr.create_array(zarr.storage.LocalStore(ep.options["root"]), name="a", shape=(4,), dtype="u1")[:] = 7
    spec = parse_spec({"kind": "url", "url": ep.url, "engine": engine, "read_only": False})
    assert spec.read_only
    store = open_remote_store(spec)
    assert store.read_only
    with pytest.raises(ReadOnly) as err, store_errors(spec):
        zarr.open_array(store, path="a", mode="r+")[:] = 1
    assert err.value.code == "read_only"
    # The served file is untouched.
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], np.full(4, 7, "u1"))


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_http_reads_are_retried_through_5xx_and_dropped_bodies(http_server: TestServer, fault: str) -> None:
    ep = fresh(http_server)
    data = np.arange(600, dtype="<i4")
    zarr.create_array(zarr.storage.LocalStore(ep.options["root"]), name="a", shape=(600,), chunks=(100,), dtype="<i4")[:] = data
    retry = {"max_retries": 4, "timeout_s": 10.0, "initial_backoff_s": 0.01}
    store = open_remote_store({"kind": "http", "url": ep.url, "retry": retry})
    http_server.fail_next(3, fault)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], data)
    assert http_server.faults.injected == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_http_faults_beyond_the_retries_are_store_unavailable(http_server: TestServer, fault: str) -> None:
    ep = fresh(http_server)
    zarr.create_array(zarr.storage.LocalStore(ep.options["root"]), name="a", shape=(10,), chunks=(10,), dtype="u1")[:] = 3
    spec = parse_spec({"kind": "http", "url": ep.url, "retry": {"max_retries": 1, "timeout_s": 5.0, "initial_backoff_s": 0.01}})
    store = open_remote_store(spec)
    http_server.fail_next(100, fault)  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailable) as err, store_errors(spec):
        zarr.open_array(store, path="a", mode="r")
    assert err.value.code == "store_unavailable"
    http_server.faults.clear()  # type: ignore[attr-defined]
    # The server is fine again: the same store reads.
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], np.full(10, 3, "u1"))


def test_http_range_requests_are_partial(http_server: TestServer) -> None:
    import urllib.request

    ep = fresh(http_server)
    (http_server.root / "blob").write_bytes(bytes(range(256)))  # type: ignore[attr-defined]
    for header, body, status in [("bytes=10-19", bytes(range(10, 20)), 206), ("bytes=250-", bytes(range(250, 256)), 206), ("bytes=-3", bytes([253, 254, 255]), 206)]:
        req = urllib.request.Request(f"{ep.url}/blob", headers={"Range": header})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == status
            assert resp.read() == body
    req = urllib.request.Request(f"{ep.url}/blob", headers={"Range": "bytes=300-400"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 416


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "engine"), WRITABLE, indirect=["endpoint"], ids=[f"{k}-{e}" for k, e in WRITABLE]
)
def test_missing_bucket_is_no_such_bucket(endpoint: Endpoint, engine: str) -> None:
    spec = parse_spec(store_map(endpoint, bucket="zb-missing-bucket", engine=engine))
    store = open_remote_store(spec)
    with pytest.raises(NoSuchBucket) as err:
        probe(store, spec)
    assert err.value.code == "no_such_bucket"
    assert "zb-missing-bucket" in err.value.message


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
def test_wrong_azure_key_is_access_denied_and_redacted(azure_server: TestServer, engine: str) -> None:
    ep = fresh(azure_server)
    make_bucket(ep, BUCKET)
    wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    spec = parse_spec(store_map(ep, engine=engine, account_key=wrong))
    store = open_remote_store(spec)
    with pytest.raises(AccessDenied) as err:
        probe(store, spec)
    assert err.value.code == "access_denied"
    text = str(err.value.to_wire())
    assert wrong not in text
    assert ep.options["account_key"] not in text


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
def test_wrong_s3_key_is_access_denied_and_redacted(s3_auth_server: TestServer, engine: str) -> None:
    ep = s3_auth_server.endpoint
    bucket = f"zb-auth-{engine}"
    make_bucket(ep, bucket)
    good = parse_spec(store_map(ep, bucket=bucket, engine=engine))
    probe(open_remote_store(good), good)  # the right key works
    wrong_secret = "WrongSecretWrongSecretWrongSecret0123456"
    for bad in ({"secret_access_key": wrong_secret}, {"access_key_id": "AKIAWRONGWRONGWRONG1", "secret_access_key": wrong_secret}):
        spec = parse_spec(store_map(ep, bucket=bucket, engine=engine, **bad))
        with pytest.raises(AccessDenied) as err:
            probe(open_remote_store(spec), spec)
        assert err.value.code == "access_denied"
        text = str(err.value.to_wire())
        assert wrong_secret not in text and ep.options["secret_access_key"] not in text


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
def test_stopped_server_is_store_unavailable(engine: str) -> None:
    server = S3Server()
    ep = server.start()
    make_bucket(ep, BUCKET)
    spec = parse_spec(store_map(ep, engine=engine, retry={"max_retries": 2, "timeout_s": 2.0, "initial_backoff_s": 0.05}))
    store = open_remote_store(spec)
    probe(store, spec)
    server.stop()
    with pytest.raises(StoreUnavailable) as err:
        probe(store, spec)
    assert err.value.code == "store_unavailable"
    assert ep.options["secret_access_key"] not in str(err.value.to_wire())


@pytest.mark.parametrize(
    ("endpoint", "engine"), [("s3", "obstore"), ("s3", "fsspec")], indirect=["endpoint"], ids=["s3-obstore", "s3-fsspec"]
)
def test_read_only_map_refuses_writes(endpoint: Endpoint, engine: str) -> None:
    spec = parse_spec(store_map(endpoint, engine=engine, read_only=True))
    store = open_remote_store(spec)
    with pytest.raises(ReadOnly), store_errors(spec):
        zarr.create_array(store, name="a", shape=(3,), dtype="u1")


# --- the map, the allow-list, the environment, redaction ------------------------------


def test_env_fallbacks_fill_credentials_and_endpoints() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAENVKEY",
        "AWS_SECRET_ACCESS_KEY": "env-secret-value",
        "AWS_REGION": "eu-west-3",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    spec = parse_spec({"kind": "s3", "bucket": "b"}, env=env)
    assert spec.credentials == {"access_key_id": "AKIAENVKEY", "secret_access_key": "env-secret-value"}
    assert (spec.region, spec.endpoint_url) == ("eu-west-3", "http://127.0.0.1:9")
    assert parse_spec({"kind": "s3", "bucket": "b", "region": "us-west-2"}, env=env).region == "us-west-2"
    assert parse_spec({"kind": "s3", "bucket": "b", "anonymous": True}, env=env).credentials == {}
    az = parse_spec(
        {"kind": "azure_blob", "container": "c"},
        env={"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "azkey1234", "AZURE_STORAGE_ENDPOINT": "http://h:1"},
    )
    assert (az.kind, az.bucket, az.url) == ("azure", "c", "az://c")
    assert az.credentials == {"account_name": "acct", "account_key": "azkey1234"}
    gcs = parse_spec({"kind": "gcs", "bucket": "g"}, env={"STORAGE_EMULATOR_HOST": "127.0.0.1:8", "GOOGLE_CLOUD_PROJECT": "p"})
    assert (gcs.endpoint_url, gcs.project) == ("http://127.0.0.1:8", "p")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "ftp", "bucket": "b"}, "kind"),
        ({"kind": "s3"}, "bucket"),
        ({"kind": "s3", "bucket": "b", "colour": "red"}, "store"),
        ({"kind": "url", "url": "ftp://x/y"}, "url"),
        ({"kind": "http", "url": "s3://b/p"}, "url"),
        ({"kind": "url", "url": "https://h/p?sig=abcdef"}, "url"),
        ({"kind": "s3", "bucket": "b", "engine": "boto"}, "engine"),
        ({"kind": "s3", "bucket": "b", "retry": {"max_retries": -1}}, "retry"),
        ({"kind": "s3", "bucket": "b", "account_key": "zzzz"}, "store"),
    ],
)
def test_bad_maps_are_invalid_params(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParams) as err:
        parse_spec(raw, env={})
    assert err.value.details["field"] == field
    assert "abcdef" not in err.value.message and "zzzz" not in err.value.message


def test_allow_list_matches_at_path_boundaries() -> None:
    spec = parse_spec({"kind": "s3", "bucket": "data", "prefix": "team/a"}, env={})
    check_allowed(spec, None)
    check_allowed(spec, ["s3://data"])
    check_allowed(spec, ["gs://other", "s3://data/team/"])
    check_allowed(spec, ["s3://data/team/a"])
    for denied in (["s3://database"], ["s3://data/team/ab"], ["gs://data"], []):
        with pytest.raises(ForbiddenPath):
            check_allowed(spec, denied)
    http = parse_spec({"kind": "http", "url": "https://cdn.example.org/zarr/x"}, env={})
    check_allowed(http, ["https://cdn.example.org/zarr"])
    with pytest.raises(ForbiddenPath):
        check_allowed(http, ["https://cdn.example.org/zar"])
    with pytest.raises(ForbiddenPath):
        open_remote_store({"kind": "s3", "bucket": "elsewhere"}, allowed=["s3://data"], env={})


def test_redaction_masks_given_secrets_and_known_shapes() -> None:
    secret = "s3cr3t-Value/With+Chars=="
    assert redact(f"failed with key {secret} twice {secret}", [secret]) == "failed with key *** twice ***"
    samples = {
        "https://a.blob.core.windows.net/c/k?sv=2022-11-02&sig=AbC%2Fd12&se=2030": ["AbC%2Fd12", "2022-11-02"],
        "DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=Zm9vYmFy==;BlobEndpoint=x": ["Zm9vYmFy"],
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA123%2F&X-Amz-Signature=deadbeef": ["AKIA123", "deadbeef"],
        "headers={'Authorization': 'SharedKey dev:c2lnbmF0dXJl'}": ["c2lnbmF0dXJl"],
        "S3Config(secret_access_key='hunter22', region='us-east-1')": ["hunter22"],
    }
    for text, hidden in samples.items():
        out = redact(text)
        for value in hidden:
            assert value not in out, (text, out)
    assert "us-east-1" in redact("S3Config(secret_access_key='hunter22', region='us-east-1')")
    assert redacted_map({"kind": "s3", "secret_access_key": "x", "storage_options": {"token": "t"}}) == {
        "kind": "s3",
        "secret_access_key": "***",
        "storage_options": {"token": "***"},
    }


def test_spec_repr_and_description_hide_credentials() -> None:
    spec = parse_spec(
        {
            "kind": "s3",
            "bucket": "b",
            "access_key_id": "AKIAREPRKEY",
            "secret_access_key": "repr-secret-123",
            "storage_options": {"session_token": "sess-tok-456"},
        },
        env={},
    )
    texts = [repr(spec), str(spec.describe())]
    for engine in ("obstore", "fsspec"):
        store = open_remote_store(
            {"kind": "s3", "bucket": "b", "access_key_id": "AKIAREPRKEY", "secret_access_key": "repr-secret-123",
             "endpoint_url": "http://127.0.0.1:9", "engine": engine},
            env={},
        )  # fmt: skip
        texts += [repr(store), str(store), repr(store._store), str(store._store)]  # type: ignore[attr-defined]
    assert "s3://b" in texts[2]
    for text in texts:
        for secret in ("AKIAREPRKEY", "repr-secret-123", "sess-tok-456"):
            assert secret not in text, text


def test_translated_errors_are_bridge_errors_with_wire_codes() -> None:
    spec = parse_spec({"kind": "s3", "bucket": "b", "secret_access_key": "wire-secret-1"}, env={})
    cases: list[tuple[BaseException, str]] = [
        (ConnectionRefusedError("connect call failed"), "store_unavailable"),
        (PermissionError("Forbidden with wire-secret-1"), "access_denied"),
        (FileNotFoundError("The specified bucket does not exist"), "no_such_bucket"),
        (FileNotFoundError("b/zarr.json"), "not_found"),
        (OSError("Server returned non-2xx status code: 503 Service Unavailable"), "store_unavailable"),
        (OSError("at http://127.0.0.1:40312/b something odd"), "store_error"),
    ]
    make: Callable[[BaseException], BridgeError]
    for exc, code in cases:
        with pytest.raises(BridgeError) as err, store_errors(spec):
            raise exc
        assert err.value.code == code, (exc, err.value.code)
        assert "wire-secret-1" not in err.value.message
