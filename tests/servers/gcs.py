"""GCS: ``gcp-storage-emulator`` (PyPI), in memory."""

from __future__ import annotations

from typing import Any

from .base import Endpoint, ServerStartError, wait_for_port

PROJECT = "test-project"


class GcsServer:
    """The emulator's HTTP server on 127.0.0.1 with a free port."""

    kind = "gcs"

    def __init__(self) -> None:
        self._server: Any = None
        self._endpoint: Endpoint | None = None

    def start(self) -> Endpoint:
        try:
            from gcp_storage_emulator.server import create_server
        except ImportError as exc:
            raise ServerStartError(
                f"the GCS test server needs gcp-storage-emulator (pip install gcp-storage-emulator): {exc}"
            ) from exc
        server = create_server("127.0.0.1", 0, in_memory=True)
        server.start()
        # The emulator binds port 0 itself and keeps the HTTPServer private.
        httpd = server._api._httpd
        if httpd is None:
            raise ServerStartError("gcp-storage-emulator started without an HTTP server")
        host, port = httpd.server_address[:2]
        wait_for_port(host, port, 10.0, "gcp-storage-emulator")
        self._server = server
        self._endpoint = Endpoint(
            kind=self.kind, url=f"http://{host}:{port}", options={"project": PROJECT, "token": "anon"}
        )
        return self._endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise ServerStartError("the GCS test server is not started")
        return self._endpoint

    def reset(self) -> None:
        """Forget every bucket and object."""
        if self._server is not None:
            self._server.wipe()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
