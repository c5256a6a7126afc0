"""S3: moto's standalone server (``moto[server]``), as zarr-python's and s3fs's suites use."""

from __future__ import annotations

import urllib.request

from .base import Endpoint, ServerStartError

# moto accepts any credentials unless told otherwise; these are the ones the
# tests pass explicitly (and the wrong-credential tests change).
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


class S3Server:
    """A ``ThreadedMotoServer`` on 127.0.0.1 with a free port."""

    kind = "s3"

    def __init__(self) -> None:
        self._server: object | None = None
        self._endpoint: Endpoint | None = None

    def start(self) -> Endpoint:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ServerStartError(
                f"the S3 test server needs moto[server] (pip install 'moto[server]'): {exc}"
            ) from exc
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._endpoint = Endpoint(
            kind=self.kind,
            url=f"http://{host}:{port}",
            options={
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
                "region": REGION,
            },
        )
        return self._endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise ServerStartError("the S3 test server is not started")
        return self._endpoint

    def reset(self) -> None:
        """Forget every bucket and object (moto's ``/moto-api/reset``)."""
        req = urllib.request.Request(f"{self.endpoint.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
