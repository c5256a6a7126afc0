"""HTTP: a threaded static file server that honours ``Range`` requests.

It serves a directory read-only (GET and HEAD only); the tests write Zarr data
into that directory with zarr-python's ``LocalStore`` and read it back over
HTTP.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .base import Endpoint, ServerStartError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single byte ranges (``206``/``416``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        return

    # Set by HttpServer: the faults still to inject (shared by all handlers).
    faults: _Faults

    def send_head(self) -> Any:
        fault = self.faults.take()
        if fault == "503":
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Content-Length", "0")
            self.send_header("Retry-After", "0")
            self.end_headers()
            return None
        if fault == "drop":
            # Promise a body, send part of it, and hang up.
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"\0" * 1000)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        if header is None or os.path.isdir(path):
            return super().send_head()
        match = _RANGE.match(header.strip())
        if not os.path.isfile(path):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = os.path.getsize(path)
        span = _parse_range(match, size)
        if span is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start, end = span
        f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        f.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source: Any, outputfile: Any) -> None:
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            shutil.copyfileobj(source, outputfile)
            return
        self._remaining = None
        while remaining > 0:
            block = source.read(min(remaining, 1 << 20))
            if not block:
                break
            outputfile.write(block)
            remaining -= len(block)

    def end_headers(self) -> None:
        if not self.headers.get("Range"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class _Faults:
    """Faults to inject into the next GET/HEAD requests, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[str] = []
        self.injected = 0

    def add(self, fault: str, count: int) -> None:
        with self._lock:
            self._queue.extend([fault] * count)

    def take(self) -> str | None:
        with self._lock:
            if not self._queue:
                return None
            self.injected += 1
            return self._queue.pop(0)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.injected = 0


def _parse_range(match: re.Match[str] | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as inclusive ``(start, end)``, or None."""
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        return None
    return start, end


class HttpServer:
    """Serves ``root`` (a fresh temporary directory by default) on 127.0.0.1."""

    kind = "http"

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="zb-http-"))
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint: Endpoint | None = None
        self.faults = _Faults()

    def fail_next(self, count: int, fault: str = "503") -> None:
        """Answer the next ``count`` requests with ``fault``: ``"503"`` (an empty
        503) or ``"drop"`` (a 200 whose body stops early)."""
        if fault not in ("503", "drop"):
            raise ValueError(f"unknown fault {fault!r}")
        self.faults.add(fault, count)

    def start(self) -> Endpoint:
        root = str(self.root)
        faults = self.faults

        class Handler(RangeRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=root, **kwargs)

        Handler.faults = faults

        try:
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        except OSError as exc:
            raise ServerStartError(f"the HTTP test server could not bind 127.0.0.1: {exc}") from exc
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="zb-http", daemon=True)
        self._thread.start()
        host, port = httpd.server_address[:2]
        self._endpoint = Endpoint(kind=self.kind, url=f"http://{host}:{port}", options={"root": root})
        return self._endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise ServerStartError("the HTTP test server is not started")
        return self._endpoint

    def reset(self) -> None:
        """Empty the served directory and forget pending faults."""
        self.faults.clear()
        for child in self.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
