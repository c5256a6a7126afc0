"""Session-wide pytest fixtures for the test servers.

Import the ones a test module needs (``from servers.fixtures import s3_server``).
Each server starts once per session and is reset (emptied) before every test
that asks for it; a server that cannot start fails the test with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .base import Endpoint, ServerStartError, TestServer
from .registry import make_server

_started: dict[str, TestServer] = {}


def _session_server(kind: str) -> Iterator[TestServer]:
    try:
        server = make_server(kind)
        server.start()
    except ServerStartError as exc:
        pytest.fail(f"the {kind} test server did not start: {exc}", pytrace=False)
    _started[kind] = server
    try:
        yield server
    finally:
        server.stop()
        _started.pop(kind, None)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[TestServer]:
    yield from _session_server("s3")


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[TestServer]:
    yield from _session_server("gcs")


@pytest.fixture(scope="session")
def azure_server() -> Iterator[TestServer]:
    yield from _session_server("azure")


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[TestServer]:
    """S3 that checks the access key (moto with IAM enforced, own process)."""
    yield from _session_server("s3_auth")


@pytest.fixture(scope="session")
def http_server() -> Iterator[TestServer]:
    yield from _session_server("http")


def fresh(server: TestServer) -> Endpoint:
    """Empty ``server`` and return its endpoint."""
    server.reset()
    return server.endpoint
