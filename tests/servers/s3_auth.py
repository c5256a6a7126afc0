"""S3 that checks credentials: moto in its own process with IAM enforced.

moto accepts any key unless ``INITIAL_NO_AUTH_ACTION_COUNT`` is set before it
is imported, and that setting is process-wide; so this server runs moto in a
child process (``python -m servers.s3_auth`` from ``tests/``), which lets its
first three requests through unauthenticated to create an IAM user with an
allow-all policy and an access key, then prints the endpoint with that key.
Every later request must be signed with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .base import Endpoint, ServerStartError

_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_TESTS = Path(__file__).resolve().parents[1]


class S3AuthServer:
    """A credential-checking moto server in a child process."""

    kind = "s3_auth"

    def __init__(self, start_timeout: float = 60.0) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._endpoint: Endpoint | None = None
        self._start_timeout = start_timeout

    def start(self) -> Endpoint:
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "servers.s3_auth"],
            cwd=_TESTS,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._proc = proc
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
        reader.start()
        reader.join(self._start_timeout)
        if not line or not line[0].strip():
            self.stop()
            err = proc.stderr.read() if proc.stderr else ""
            raise ServerStartError(f"the credential-checking S3 server did not start: {err[-2000:]}")
        self._endpoint = Endpoint(**json.loads(line[0]))
        return self._endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise ServerStartError("the credential-checking S3 server is not started")
        return self._endpoint

    def reset(self) -> None:
        """Nothing to forget: each test makes its own bucket name."""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _serve() -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    iam.create_user(UserName="zb")
    iam.put_user_policy(UserName="zb", PolicyName="all", PolicyDocument=json.dumps(_POLICY))
    key: dict[str, Any] = iam.create_access_key(UserName="zb")["AccessKey"]
    endpoint = Endpoint(
        kind="s3",
        url=url,
        options={"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "region": "us-east-1"},
    )
    print(json.dumps(endpoint.to_json()), flush=True)
    try:
        while sys.stdin.read(65536):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    _serve()
