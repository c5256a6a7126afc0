"""The first requests of a fresh sidecar, sent all at once, must all succeed.

zarr and numcodecs are imported lazily, on the first request that needs them
(start-up stays fast). Two handler threads importing zarr at the same time
used to meet inside its import cycles: Python then raises ``_DeadlockError``
or hands one thread a partially initialised module, and the request failed
with ``internal``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from helpers import SidecarProcess

FIRST_REQUESTS = 8
FRESH_SIDECARS = 6


def _first_requests(tmp: Path, n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        store = {"kind": "filesystem", "path": str(tmp / f"s{i}")}
        if i % 4 == 0:
            out.append(("group.create", {"store": store, "zarr_format": 2 + i % 2}))
        elif i % 4 == 1:
            # a zip store enters zarr-python through zarr.abc.store
            out.append(("group.create", {"store": {"kind": "zip", "path": str(tmp / f"z{i}.zip")},
                                         "zarr_format": 3}))
        elif i % 4 == 2:
            out.append(("array.create", {"store": store, "zarr_format": 2, "shape": [4],
                                         "chunks": [2], "dtype": "int32"}))
        else:
            out.append(("codec.encode", {"codec": {"id": "zstd", "level": 1},
                                         "data": b"x" * 100}))
    return out


def test_concurrent_first_requests_all_succeed(
        tmp_path: Path, sidecar_factory: Callable[..., SidecarProcess]) -> None:
    for round_ in range(FRESH_SIDECARS):
        sc = sidecar_factory()
        reqs = _first_requests(tmp_path / f"r{round_}", FIRST_REQUESTS)
        ids = [sc.request(method, params) for method, params in reqs]
        for rid, (method, _) in zip(ids, reqs):
            reply = sc.response(rid, timeout=60)
            assert reply.ok, f"round {round_}: {method} failed: {reply.error}"
        sc.close()
