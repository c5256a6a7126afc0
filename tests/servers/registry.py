"""The server kinds by name."""

from __future__ import annotations

from collections.abc import Callable

from .azure import AzureServer
from .base import TestServer
from .gcs import GcsServer
from .http import HttpServer
from .s3 import S3Server
from .s3_auth import S3AuthServer

KINDS: dict[str, Callable[[], TestServer]] = {
    "s3": S3Server,
    "gcs": GcsServer,
    "azure": AzureServer,
    "http": HttpServer,
    "s3_auth": S3AuthServer,
}


def make_server(kind: str) -> TestServer:
    """A new, unstarted server of ``kind`` (one of :data:`KINDS`)."""
    try:
        return KINDS[kind]()
    except KeyError:
        raise ValueError(f"unknown server kind {kind!r}; expected one of {sorted(KINDS)}") from None
