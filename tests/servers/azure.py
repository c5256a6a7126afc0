"""Azure Blob: Azurite (npm), installed under the repository's ``.tools/``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from .base import Endpoint, ServerStartError

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"successfully listens on (http://[0-9.]+:[0-9]+)")


def azurite_binary() -> str:
    """The ``azurite-blob`` executable: ``$AZURITE_BLOB``, ``.tools/``, then ``$PATH``."""
    candidates = [os.environ.get("AZURITE_BLOB", ""), str(_REPO / ".tools/node_modules/.bin/azurite-blob")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise ServerStartError(
        "the Azure test server needs Azurite: run scripts/setup.sh "
        "(npm install --prefix .tools azurite) or set AZURITE_BLOB"
    )


class AzureServer:
    """``azurite-blob`` in memory on 127.0.0.1, port chosen by Azurite."""

    kind = "azure"

    def __init__(self, start_timeout: float = 30.0) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._endpoint: Endpoint | None = None
        self._start_timeout = start_timeout
        self._output: list[str] = []

    def start(self) -> Endpoint:
        cmd = [
            azurite_binary(),
            "--blobHost", "127.0.0.1",
            "--blobPort", "0",
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
        )
        self._proc = proc
        url = self._wait_listening(proc)
        account_url = f"{url}/{ACCOUNT}"
        self._endpoint = Endpoint(
            kind=self.kind,
            url=account_url,
            options={
                "account_name": ACCOUNT,
                "account_key": ACCOUNT_KEY,
                "connection_string": (
                    f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
                    f"AccountKey={ACCOUNT_KEY};BlobEndpoint={account_url};"
                ),
            },
        )
        return self._endpoint

    def _wait_listening(self, proc: subprocess.Popen[str]) -> str:
        found: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._output.append(line.rstrip())
                match = _LISTENING.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, name="azurite-output", daemon=True).start()
        deadline = time.monotonic() + self._start_timeout
        ready.wait(self._start_timeout)
        if not found:
            self.stop()
            tail = "\n".join(self._output[-10:])
            why = "exited" if time.monotonic() < deadline else f"did not listen within {self._start_timeout}s"
            raise ServerStartError(f"Azurite {why}; its output:\n{tail}")
        return found[0]

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise ServerStartError("the Azure test server is not started")
        return self._endpoint

    def reset(self) -> None:
        """Delete every container of the development account."""
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.endpoint.options["connection_string"])
        with client:
            for container in client.list_containers():
                client.delete_container(container.name)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
