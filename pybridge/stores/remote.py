"""The wire store map of a remote store, and the zarr-python store it opens.

The map (a msgpack map on the wire, a dict here)::

    {"kind": "s3" | "gcs" | "azure" | "azure_blob" | "http" | "url",
     "bucket": str,            # s3/gcs bucket, azure container ("container" also accepted)
     "prefix": str,            # key prefix inside the bucket ("" by default)
     "url": str,               # http and url kinds: https://..., s3://b/p, gs://b/p, az://c/p, file:///p
     "region": str, "endpoint_url": str,
     # credentials (each falls back to the usual environment variables):
     "access_key_id", "secret_access_key", "session_token",           # s3
     "token", "project", "service_account_key",                       # gcs
     "account_name", "account_key", "sas_token", "connection_string", # azure
     "anonymous": bool,        # no credentials, unsigned requests
     "read_only": bool,        # http is always read-only
     "engine": "obstore" | "fsspec",   # override the per-kind default
     "retry": {"max_retries": int, "timeout_s": float, "initial_backoff_s": float},
     "storage_options": {...}}  # passed through to the engine's constructor

Each kind opens on one engine (:data:`DEFAULT_ENGINE`, chosen by
``bench/stores.py``): zarr's ``ObjectStore`` over obstore, or its
``FsspecStore`` over s3fs / gcsfs / adlfs. Retries are the engine's own:
obstore's ``RetryConfig`` (5xx, dropped connections, timeouts of safe
requests, bounded by ``retry_timeout``), and the retry counts of s3fs/gcsfs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from zarr.abc.store import Store

from ..errors import (
    AccessDenied,
    BridgeError,
    ForbiddenPath,
    InvalidParams,
    NoSuchBucket,
    NotFound,
    ReadOnly,
    StoreError,
    StoreUnavailable,
)
from .redact import redact, redacted_map, secret_values

Kind = Literal["s3", "gcs", "azure", "http", "file"]
Engine = Literal["obstore", "fsspec"]

KINDS: tuple[str, ...] = ("s3", "gcs", "azure", "azure_blob", "http", "url")
ENGINES: tuple[Engine, ...] = ("obstore", "fsspec")

# The engine each kind opens on unless the map says otherwise. See the
# measurements in bench/stores.py's docstring; gcs is fsspec because obstore's
# GCS client lists through the XML API, which gcp-storage-emulator lacks, so
# only gcsfs is testable here.
DEFAULT_ENGINE: dict[str, Engine] = {
    "s3": "obstore",
    "gcs": "fsspec",
    "azure": "obstore",
    "http": "obstore",
}

_SCHEMES: dict[str, Kind] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "azure": "azure",
    "http": "http",
    "https": "http",
    "file": "file",
}

_KNOWN_KEYS = frozenset(
    {
        "kind", "bucket", "container", "prefix", "url", "region", "endpoint_url",
        "access_key_id", "secret_access_key", "session_token",
        "token", "project", "service_account_key",
        "account_name", "account_key", "sas_token", "connection_string",
        "anonymous", "read_only", "engine", "retry", "storage_options",
    }
)  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent requests: at most ``max_retries`` and ``timeout_s`` in all."""

    max_retries: int = 5
    timeout_s: float = 30.0
    initial_backoff_s: float = 0.1


@dataclass(frozen=True)
class RemoteSpec:
    """A validated store map. ``repr`` never shows a credential."""

    kind: Kind
    bucket: str
    prefix: str
    url: str
    engine: Engine
    read_only: bool
    anonymous: bool
    region: str | None = None
    endpoint_url: str | None = None
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    project: str | None = None

    @property
    def location(self) -> str:
        """The canonical URL (``s3://bucket/prefix``, ``https://host/path``) for allow-lists and messages."""
        return self.url

    def secrets(self) -> list[str]:
        """Every secret value this spec carries, for :func:`redact`."""
        return [*self.credentials.values(), *secret_values(self.storage_options)]

    def describe(self) -> dict[str, Any]:
        """A loggable view: the map with credentials masked."""
        return redacted_map(
            {
                "kind": self.kind,
                "url": self.url,
                "engine": self.engine,
                "read_only": self.read_only,
                "region": self.region,
                "endpoint_url": self.endpoint_url,
                **self.credentials,
                "storage_options": self.storage_options,
            }
        )


# --- parsing -------------------------------------------------------------------


def parse_spec(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> RemoteSpec:
    """Validate a wire store map, filling credentials from ``env`` (``os.environ``).

    Raises :class:`InvalidParams` (with credentials redacted) for a bad map.
    """
    env = os.environ if env is None else env
    secrets = secret_values(raw)
    try:
        return _parse(raw, env)
    except InvalidParams as exc:
        raise InvalidParams(redact(exc.message, secrets), **exc.details) from None


def _parse(raw: Mapping[str, Any], env: Mapping[str, str]) -> RemoteSpec:
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise InvalidParams(f"unknown store option(s) {unknown}", field="store")
    kind_raw = _opt_str(raw, "kind")
    if kind_raw not in KINDS:
        raise InvalidParams(f"store kind must be one of {list(KINDS)}, got {kind_raw!r}", field="kind")
    kind: Kind
    if kind_raw == "url":
        kind, bucket, prefix, url = _from_url(_req_str(raw, "url"))
    elif kind_raw == "http":
        kind, bucket, prefix, url = _from_url(_req_str(raw, "url"))
        if kind != "http":
            raise InvalidParams("an http store needs an http:// or https:// url", field="url")
    else:
        kind = "azure" if kind_raw == "azure_blob" else kind_raw  # type: ignore[assignment]
        bucket = _opt_str(raw, "bucket") or _opt_str(raw, "container") or ""
        if not bucket:
            raise InvalidParams(f"a {kind_raw} store needs a bucket", field="bucket")
        prefix = (_opt_str(raw, "prefix") or "").strip("/")
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[kind]
        url = f"{scheme}://{bucket}/{prefix}".rstrip("/")
    if kind_raw != "url" and kind_raw != "http" and raw.get("url") is not None:
        raise InvalidParams("url is only for the url and http kinds", field="url")
    engine = _engine(raw, kind)
    read_only = bool(raw.get("read_only", False)) or kind == "http"
    storage_options = raw.get("storage_options") or {}
    if not isinstance(storage_options, Mapping):
        raise InvalidParams("storage_options must be a map", field="storage_options")
    return RemoteSpec(
        kind=kind,
        bucket=bucket,
        prefix=prefix,
        url=url,
        engine=engine,
        read_only=read_only,
        anonymous=bool(raw.get("anonymous", False)),
        region=_opt_str(raw, "region") or _env_region(kind, env),
        endpoint_url=_opt_str(raw, "endpoint_url") or _env_endpoint(kind, env),
        credentials=_credentials(raw, kind, env),
        storage_options=dict(storage_options),
        retry=_retry(raw.get("retry")),
        project=_opt_str(raw, "project") or env.get("GOOGLE_CLOUD_PROJECT") if kind == "gcs" else None,
    )


def _from_url(url: str) -> tuple[Kind, str, str, str]:
    parts = urlsplit(url)
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise InvalidParams(
            f"store url scheme must be one of {sorted(_SCHEMES)}, got {parts.scheme!r}", field="url"
        )
    if parts.query or parts.fragment:
        # A query may carry a signature; do not guess what it means.
        raise InvalidParams("store urls take no query or fragment; use storage_options", field="url")
    if kind == "http":
        if not parts.netloc:
            raise InvalidParams("an http url needs a host", field="url")
        return kind, parts.netloc, parts.path.strip("/"), url.rstrip("/")
    if kind == "file":
        return kind, "", parts.path, url
    bucket = parts.netloc
    if "@" in bucket:  # abfs://container@account.dfs.core.windows.net/path
        bucket = bucket.split("@", 1)[0]
    if not bucket:
        raise InvalidParams(f"a {parts.scheme}:// url needs a bucket", field="url")
    prefix = parts.path.strip("/")
    scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[kind]
    return kind, bucket, prefix, f"{scheme}://{bucket}/{prefix}".rstrip("/")


def _engine(raw: Mapping[str, Any], kind: Kind) -> Engine:
    engine = raw.get("engine")
    if engine is None:
        return DEFAULT_ENGINE.get(kind, "obstore")
    if engine not in ENGINES:
        raise InvalidParams(f"engine must be one of {list(ENGINES)}, got {engine!r}", field="engine")
    return engine  # type: ignore[no-any-return]


def _retry(raw: Any) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    if not isinstance(raw, Mapping) or set(raw) - {"max_retries", "timeout_s", "initial_backoff_s"}:
        raise InvalidParams("retry takes max_retries, timeout_s and initial_backoff_s", field="retry")
    base = RetryPolicy()
    max_retries = raw.get("max_retries", base.max_retries)
    timeout_s = raw.get("timeout_s", base.timeout_s)
    backoff = raw.get("initial_backoff_s", base.initial_backoff_s)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise InvalidParams("retry.max_retries must be an integer >= 0", field="retry")
    for name, value in (("timeout_s", timeout_s), ("initial_backoff_s", backoff)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise InvalidParams(f"retry.{name} must be a number > 0", field="retry")
    return RetryPolicy(max_retries=max_retries, timeout_s=float(timeout_s), initial_backoff_s=float(backoff))


_CREDENTIAL_ENV: dict[str, dict[str, tuple[str, ...]]] = {
    "s3": {
        "access_key_id": ("AWS_ACCESS_KEY_ID",),
        "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
        "session_token": ("AWS_SESSION_TOKEN",),
    },
    "gcs": {
        "token": ("GOOGLE_APPLICATION_CREDENTIALS",),
        "service_account_key": ("GOOGLE_SERVICE_ACCOUNT_KEY",),
    },
    "azure": {
        "account_name": ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"),
        "account_key": ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"),
        "sas_token": ("AZURE_STORAGE_SAS_TOKEN",),
        "connection_string": ("AZURE_STORAGE_CONNECTION_STRING",),
    },
    "http": {},
    "file": {},
}


def _credentials(raw: Mapping[str, Any], kind: Kind, env: Mapping[str, str]) -> dict[str, str]:
    """Credentials from the map, else the environment (unless ``anonymous``)."""
    out: dict[str, str] = {}
    anonymous = bool(raw.get("anonymous", False))
    for name, env_names in _CREDENTIAL_ENV[kind].items():
        value = _opt_str(raw, name)
        if value is None and not anonymous:
            value = next((env[e] for e in env_names if env.get(e)), None)
        if value is not None:
            out[name] = value
    stray = [n for k, names in _CREDENTIAL_ENV.items() if k != kind for n in names if raw.get(n) is not None]
    if stray and not (kind == "azure" and stray == ["token"]):
        raise InvalidParams(f"option(s) {sorted(set(stray))} do not apply to a {kind} store", field="store")
    return out


def _env_region(kind: Kind, env: Mapping[str, str]) -> str | None:
    if kind != "s3":
        return None
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")


def _env_endpoint(kind: Kind, env: Mapping[str, str]) -> str | None:
    if kind == "s3":
        return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if kind == "gcs":
        host = env.get("STORAGE_EMULATOR_HOST")
        if host and "://" not in host:
            host = f"http://{host}"
        return host
    if kind == "azure":
        return env.get("AZURE_STORAGE_ENDPOINT") or env.get("AZURE_STORAGE_BLOB_ENDPOINT")
    return None


def _opt_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParams(f"store option {name} must be a string", field=name)
    return value


def _req_str(raw: Mapping[str, Any], name: str) -> str:
    value = _opt_str(raw, name)
    if not value:
        raise InvalidParams(f"this store kind needs {name}", field=name)
    return value


# --- the allow-list ------------------------------------------------------------


def check_allowed(spec: RemoteSpec, allowed: Sequence[str] | None) -> None:
    """Raise :class:`ForbiddenPath` unless ``spec.location`` is under one of ``allowed``.

    ``allowed`` holds URL prefixes (``s3://bucket``, ``s3://bucket/team/``,
    ``https://data.example.org/zarr``); ``None`` switches the check off (the
    default). A prefix matches at a path boundary: ``s3://data`` allows
    ``s3://data/x`` but not ``s3://database``.
    """
    if allowed is None:
        return
    location = spec.location.rstrip("/")
    for entry in allowed:
        root = _canonical_prefix(entry)
        if location == root or location.startswith(root + "/"):
            return
    raise ForbiddenPath(f"store {location} is outside the allowed object-store prefixes", url=location)


def _canonical_prefix(entry: str) -> str:
    parts = urlsplit(entry)
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind in ("s3", "gcs", "azure"):
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[kind]
        return f"{scheme}://{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    return entry.rstrip("/")


# --- opening -------------------------------------------------------------------


def open_remote_store(
    raw: Mapping[str, Any] | RemoteSpec,
    *,
    allowed: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Store:
    """The zarr-python store for a wire store map (see the module docstring).

    Opening makes no request; :func:`probe` checks the bucket and the
    credentials. ``file://`` urls open a ``LocalStore``: the caller applies
    its ``allowed_roots`` to the path.
    """
    spec = raw if isinstance(raw, RemoteSpec) else parse_spec(raw, env)
    check_allowed(spec, allowed)
    with store_errors(spec):
        builder = _BUILDERS[(spec.kind, spec.engine)]
        store = builder(spec)
    if spec.kind == "file":
        return store
    from .retry import RetryingStore

    return RetryingStore(store, spec, translate_error)


def _client_options(spec: RemoteSpec) -> dict[str, Any]:
    options: dict[str, Any] = {}
    url = spec.endpoint_url or spec.url
    if url.startswith("http://"):
        options["allow_http"] = True
    return options


def _retry_config(spec: RemoteSpec) -> dict[str, Any]:
    return {
        "max_retries": spec.retry.max_retries,
        "retry_timeout": timedelta(seconds=spec.retry.timeout_s),
        "backoff": {
            "init_backoff": timedelta(seconds=spec.retry.initial_backoff_s),
            "max_backoff": timedelta(seconds=max(spec.retry.initial_backoff_s, spec.retry.timeout_s / 4)),
            "base": 2,
        },
    }


def _split_obstore_options(spec: RemoteSpec) -> tuple[Any, Any]:
    """``storage_options`` split into obstore config keys and ``client_options``."""
    config = dict(spec.storage_options)
    client = {**_client_options(spec), **config.pop("client_options", {})}
    return config, client


def _s3_obstore(spec: RemoteSpec) -> Store:
    from obstore.store import S3Store
    from zarr.storage import ObjectStore

    config, client = _split_obstore_options(spec)
    creds = spec.credentials
    if spec.anonymous:
        config.setdefault("skip_signature", True)
    for name in ("access_key_id", "secret_access_key", "session_token"):
        if name in creds:
            config[name] = creds[name]
    if spec.region:
        config["region"] = spec.region
    if spec.endpoint_url:
        config["endpoint"] = spec.endpoint_url
    store = S3Store(
        spec.bucket,
        prefix=spec.prefix or None,
        config=config,
        client_options=client,
        retry_config=_retry_config(spec),  # type: ignore[arg-type]
    )
    return ObjectStore(store, read_only=spec.read_only)


def _azure_obstore(spec: RemoteSpec) -> Store:
    from obstore.store import AzureStore
    from zarr.storage import ObjectStore

    config, client = _split_obstore_options(spec)
    creds = dict(spec.credentials)
    if "connection_string" in creds:
        creds = {**_parse_connection_string(creds.pop("connection_string")), **creds}
    if spec.anonymous:
        config.setdefault("skip_signature", True)
    if "account_name" in creds:
        config["account_name"] = creds["account_name"]
    if "account_key" in creds:
        config["account_key"] = creds["account_key"]
    if "sas_token" in creds:
        config["sas_key"] = creds["sas_token"].lstrip("?")
    endpoint = spec.endpoint_url or creds.get("endpoint")
    if endpoint:
        config["endpoint"] = endpoint
        if endpoint.startswith("http://"):
            client["allow_http"] = True
    store = AzureStore(
        spec.bucket,
        prefix=spec.prefix or None,
        config=config,
        client_options=client,
        retry_config=_retry_config(spec),  # type: ignore[arg-type]
    )
    return ObjectStore(store, read_only=spec.read_only)


def _parse_connection_string(text: str) -> dict[str, str]:
    fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    out: dict[str, str] = {}
    if "AccountName" in fields:
        out["account_name"] = fields["AccountName"]
    if "AccountKey" in fields:
        out["account_key"] = fields["AccountKey"]
    if "SharedAccessSignature" in fields:
        out["sas_token"] = fields["SharedAccessSignature"]
    if "BlobEndpoint" in fields:
        out["endpoint"] = fields["BlobEndpoint"]
    return out


def _http_obstore(spec: RemoteSpec) -> Store:
    from obstore.store import HTTPStore
    from zarr.storage import ObjectStore

    _, client = _split_obstore_options(spec)
    store = HTTPStore(spec.url, client_options=client, retry_config=_retry_config(spec))  # type: ignore[arg-type]
    return ObjectStore(store, read_only=True)


def _s3_fsspec(spec: RemoteSpec) -> Store:
    import s3fs
    from zarr.storage import FsspecStore

    creds = spec.credentials
    options: dict[str, Any] = {"asynchronous": True, "anon": spec.anonymous}
    if "access_key_id" in creds:
        options["key"] = creds["access_key_id"]
    if "secret_access_key" in creds:
        options["secret"] = creds["secret_access_key"]
    if "session_token" in creds:
        options["token"] = creds["session_token"]
    if spec.endpoint_url:
        options["endpoint_url"] = spec.endpoint_url
    client_kwargs: dict[str, Any] = {}
    if spec.region:
        client_kwargs["region_name"] = spec.region
    options["client_kwargs"] = client_kwargs
    options["config_kwargs"] = {
        "retries": {"max_attempts": spec.retry.max_retries + 1, "mode": "standard"},
        "read_timeout": spec.retry.timeout_s,
        "connect_timeout": min(10.0, spec.retry.timeout_s),
    }
    options.update(spec.storage_options)
    fs = s3fs.S3FileSystem(**options)
    fs.retries = spec.retry.max_retries + 1  # s3fs's own retry loop (a class attribute)
    return FsspecStore(fs, path=f"{spec.bucket}/{spec.prefix}".rstrip("/"), read_only=spec.read_only)


def _gcs_fsspec(spec: RemoteSpec) -> Store:
    # gcsfs.core: the plain file system. The package's default class probes
    # each bucket's type over gRPC first (a 60 s stall against an emulator).
    from gcsfs.core import GCSFileSystem
    from zarr.storage import FsspecStore

    creds = spec.credentials
    options: dict[str, Any] = {"asynchronous": True}
    if spec.anonymous:
        options["token"] = "anon"
    elif "service_account_key" in creds:
        import json

        options["token"] = json.loads(creds["service_account_key"])
    elif "token" in creds:
        options["token"] = creds["token"]
    if spec.project:
        options["project"] = spec.project
    if spec.endpoint_url:
        options["endpoint_url"] = spec.endpoint_url
    options.update(spec.storage_options)
    fs = GCSFileSystem(**options)
    fs.retries = spec.retry.max_retries + 1
    return FsspecStore(fs, path=f"{spec.bucket}/{spec.prefix}".rstrip("/"), read_only=spec.read_only)


def _azure_fsspec(spec: RemoteSpec) -> Store:
    from zarr.storage import FsspecStore

    creds = spec.credentials
    options: dict[str, Any] = {"asynchronous": True, "anon": spec.anonymous}
    if "connection_string" in creds:
        options["connection_string"] = creds["connection_string"]
    elif spec.endpoint_url and "account_name" in creds:
        # adlfs builds https://{account_host}; a connection string keeps the
        # endpoint's own scheme (an emulator or a private endpoint over http).
        scheme = urlsplit(spec.endpoint_url).scheme or "https"
        parts = [f"DefaultEndpointsProtocol={scheme}", f"AccountName={creds['account_name']}"]
        if "account_key" in creds:
            parts.append(f"AccountKey={creds['account_key']}")
        if "sas_token" in creds:
            parts.append(f"SharedAccessSignature={creds['sas_token'].lstrip('?')}")
        parts.append(f"BlobEndpoint={spec.endpoint_url}")
        options["connection_string"] = ";".join(parts) + ";"
    else:
        for name, target in (("account_name", "account_name"), ("account_key", "account_key"),
                             ("sas_token", "sas_token")):
            if name in creds:
                options[target] = creds[name]
        if spec.endpoint_url:
            options["account_host"] = urlsplit(spec.endpoint_url).netloc
    options.update(spec.storage_options)
    fs = _suffix_safe_adlfs()(**options)
    return FsspecStore(fs, path=f"{spec.bucket}/{spec.prefix}".rstrip("/"), read_only=spec.read_only)


_ADLFS_CLASS: type[Any] | None = None


def _suffix_safe_adlfs() -> type[Any]:
    """adlfs's file system, reading a suffix (``start < 0``) as an absolute range.

    Azure Blob has no suffix ranges; adlfs passes the negative offset through
    and the service answers without a valid Content-Range (a shard index read
    fails). The subclass asks for the blob's size first, as obstore does.
    """
    global _ADLFS_CLASS
    if _ADLFS_CLASS is None:
        import adlfs

        class SuffixSafeAzureBlobFileSystem(adlfs.AzureBlobFileSystem):  # type: ignore[misc]
            async def _cat_file(self, path: str, start: int | None = None,
                                end: int | None = None, **kwargs: Any) -> bytes:
                if (start is not None and start < 0) or (end is not None and end < 0):
                    size = (await self._info(path))["size"]
                    start = None if start is None else max(0, size + start) if start < 0 else start
                    end = None if end is None else max(0, size + end) if end < 0 else end
                return await super()._cat_file(path, start=start, end=end, **kwargs)  # type: ignore[no-any-return]

        _ADLFS_CLASS = SuffixSafeAzureBlobFileSystem
    return _ADLFS_CLASS


def _http_fsspec(spec: RemoteSpec) -> Store:
    from fsspec.implementations.http import HTTPFileSystem
    from zarr.storage import FsspecStore

    fs = HTTPFileSystem(asynchronous=True, **spec.storage_options)
    return FsspecStore(fs, path=spec.url, read_only=True)


def _file_store(spec: RemoteSpec) -> Store:
    from zarr.storage import LocalStore

    return LocalStore(spec.prefix, read_only=spec.read_only)


_BUILDERS: dict[tuple[str, str], Callable[[RemoteSpec], Store]] = {
    ("s3", "obstore"): _s3_obstore,
    ("s3", "fsspec"): _s3_fsspec,
    ("gcs", "fsspec"): _gcs_fsspec,
    ("azure", "obstore"): _azure_obstore,
    ("azure", "fsspec"): _azure_fsspec,
    ("http", "obstore"): _http_obstore,
    ("http", "fsspec"): _http_fsspec,
    ("file", "obstore"): _file_store,
    ("file", "fsspec"): _file_store,
}


def _gcs_obstore(spec: RemoteSpec) -> Store:
    from obstore.store import GCSStore
    from zarr.storage import ObjectStore

    config, client = _split_obstore_options(spec)
    creds = spec.credentials
    if spec.anonymous:
        config.setdefault("skip_signature", True)
    if "service_account_key" in creds:
        config["service_account_key"] = creds["service_account_key"]
    elif "token" in creds and os.path.exists(creds["token"]):
        config["application_credentials"] = creds["token"]
    if spec.endpoint_url:
        config["base_url"] = spec.endpoint_url
    store = GCSStore(
        spec.bucket,
        prefix=spec.prefix or None,
        config=config,
        client_options=client,
        retry_config=_retry_config(spec),  # type: ignore[arg-type]
    )
    return ObjectStore(store, read_only=spec.read_only)


_BUILDERS[("gcs", "obstore")] = _gcs_obstore


# --- probing and errors ----------------------------------------------------------


def probe(store: Store, spec: RemoteSpec) -> None:
    """One cheap request (a listing of the prefix) that proves the bucket
    exists and the credentials work; raises the mapped wire error."""
    from zarr.core.sync import sync

    async def first_key() -> None:
        inner = getattr(store, "_store", store)
        fs = getattr(inner, "fs", None)
        if fs is not None and spec.bucket and spec.kind in ("s3", "gcs", "azure"):
            # FsspecStore.list_dir reads a missing bucket as an empty listing.
            try:
                await fs._info(spec.bucket)
            except FileNotFoundError:
                raise NoSuchBucket(f"{spec.location}: the bucket {spec.bucket} does not exist",
                                   url=spec.location) from None
        async for _ in store.list_dir(""):
            break

    with store_errors(spec):
        sync(first_key())


@contextmanager
def store_errors(spec: RemoteSpec) -> Iterator[None]:
    """Re-raise a store library's exception as its wire error (credentials redacted)."""
    try:
        yield
    except BridgeError as exc:
        if isinstance(exc, (InvalidParams, ForbiddenPath, ReadOnly, NotFound, AccessDenied, NoSuchBucket)):
            raise
        raise type(exc)(redact(exc.message, spec.secrets()), **exc.details) from None
    except Exception as exc:  # noqa: BLE001 - every store library error is translated
        raise translate_error(exc, spec) from None


_BUCKET_MISSING = ("nosuchbucket", "bucket does not exist", "containernotfound",
                   "container does not exist", "the specified bucket", "no such bucket")
_DENIED = (
    "accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch",
    "authenticationfailed", "authorizationfailure", "unauthorized", "forbidden",
    "permission denied",
)  # fmt: skip
_DENIED_STATUS = re.compile(r"\b(401|403)\b")
_UNAVAILABLE = (
    "error sending request", "connection refused", "connection reset", "cannot connect",
    "connect call failed", "could not connect", "timed out", "timeout", "broken pipe", "server disconnected",
    "body error", "interrupted", "incomplete", "payload", "connection closed", "unexpected eof",
    "service unavailable", "bad gateway", "internal server error", "internalerror",
)  # fmt: skip
_UNAVAILABLE_STATUS = re.compile(r"\b(500|502|503|504)\b")


def translate_error(exc: BaseException, spec: RemoteSpec) -> BridgeError:
    """The wire error for an exception from obstore, s3fs, gcsfs, adlfs or aiohttp.

    Classifies by the library's exception type first, then by the service's
    error code in the message; the message keeps the cause (redacted) and the
    store's location, never a credential.
    """
    text = f"{type(exc).__name__}: {exc}"
    message = redact(text, spec.secrets())
    where = spec.location
    low = text.lower()
    cls = _classify(exc, low)
    return cls(f"{where}: {message}", url=where, cause=type(exc).__name__)


def _classify(exc: BaseException, low: str) -> type[BridgeError]:
    name = type(exc).__name__
    if isinstance(exc, ValueError) and ("read-only" in low or "read only" in low):
        return ReadOnly
    if any(s in low for s in _BUCKET_MISSING):
        return NoSuchBucket
    if name in ("PermissionDeniedError", "UnauthenticatedError") or isinstance(exc, PermissionError):
        return AccessDenied
    if name == "NotFoundError" or isinstance(exc, FileNotFoundError):
        return NotFound
    if isinstance(exc, (ConnectionError, TimeoutError)) or name in (
            "ClientConnectorError", "ServerDisconnectedError", "ClientOSError"):
        return StoreUnavailable
    if any(s in low for s in _DENIED) or _DENIED_STATUS.search(low):
        return AccessDenied
    if any(s in low for s in _UNAVAILABLE) or _UNAVAILABLE_STATUS.search(low):
        return StoreUnavailable
    return StoreError
