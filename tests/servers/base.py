"""The shared shape of a test server: start, stop, endpoint."""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class ServerStartError(RuntimeError):
    """A test server did not come up; the message says why and how to fix it."""


@dataclass(frozen=True)
class Endpoint:
    """Where a started server listens and how to talk to it.

    ``url`` is the base URL (``http://127.0.0.1:PORT``); ``options`` holds the
    kind-specific client settings (credentials of the emulator, the bucket
    the tests use, the directory an HTTP server serves).
    """

    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TestServer(Protocol):
    """What every server class offers."""

    __test__ = False  # not a pytest test class

    kind: str

    def start(self) -> Endpoint: ...

    def stop(self) -> None: ...

    @property
    def endpoint(self) -> Endpoint: ...

    def reset(self) -> None: ...


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    """Block until ``host:port`` accepts a TCP connection, or raise."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise ServerStartError(f"{what} did not accept connections on {host}:{port} within {timeout}s: {last}")
