"""GCS: ``gcp-storage-emulator`` (PyPI), in memory."""

from __future__ import annotations

import re
from typing import Any

from .base import Endpoint, ServerStartError, wait_for_port

PROJECT = "test-project"

_SUFFIX_RANGE = re.compile(r"^\s*bytes=-(\d+)\s*$")


def _teach_suffix_ranges() -> None:
    """Make the emulator answer ``Range: bytes=-N`` as GCS does.

    gcp-storage-emulator matches only ``bytes=START-[END]`` and otherwise
    sends the whole object with 200, which a client reading a shard index
    (the last N bytes) takes as the suffix. Real GCS honours suffix ranges
    (RFC 9110), so the download handler is wrapped to rewrite a suffix range
    into the absolute range of the same bytes before the emulator sees it.
    """
    from gcp_storage_emulator import server as emu
    from gcp_storage_emulator.handlers import objects

    original = objects.download
    if getattr(original, "_zb_suffix_ranges", False):
        return

    def download(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        header = request.get_header("range", None)
        match = _SUFFIX_RANGE.match(header) if header else None
        if match:
            try:
                size = len(storage.get_file(request.params["bucket_name"], request.params["object_id"]))
            except Exception:  # noqa: BLE001 - let the emulator answer its own 404
                size = None
            if size is not None:
                absolute = f"bytes={max(0, size - int(match.group(1)))}-"
                plain = request.get_header
                request.get_header = lambda key, default=None: (
                    absolute if key.lower() == "range" else plain(key, default)
                )
        return original(request, response, storage, *args, **kwargs)

    download._zb_suffix_ranges = True  # type: ignore[attr-defined]
    for _, methods in emu.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is original:
                methods[method] = download


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
        _teach_suffix_ranges()
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
