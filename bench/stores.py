"""``python -m bench.stores``: obstore against fsspec under zarr-python, per store.

For each store kind and engine, on the local test servers (``tests/servers``),
zarr-python in process through ``pybridge.stores.open_remote_store``:

- ``write``: a zstd array of ``--mib`` MiB (float32, compressible ramps plus
  noise, 1 MiB chunks) written whole;
- ``read``: the same array read whole;
- ``random``: ``--reads`` single-chunk reads at random chunk positions, from a
  thread pool of ``--threads`` threads (zarr's sync API; one chunk per call).

Each is timed ``--runs`` times; the table gives the median and the spread
(min-max) in seconds, the throughput at the median, and the load average
before and after. HTTP is read-only: its array is written to the served
directory with a ``LocalStore`` first. GCS has one engine (fsspec): obstore's
GCS client lists through the XML API, which gcp-storage-emulator lacks.

    .venv/bin/python -m bench.stores [--kinds s3,azure,http,gcs] [--runs 5] [--mib 64] [--reads 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import Endpoint, make_server  # noqa: E402

from pybridge.stores import open_remote_store  # noqa: E402

ENGINES = {"s3": ["obstore", "fsspec"], "azure": ["obstore", "fsspec"], "http": ["obstore", "fsspec"], "gcs": ["fsspec"]}
BUCKET = "zb-bench"


@dataclass
class Result:
    kind: str
    engine: str
    op: str
    times: list[float]
    nbytes: int

    def row(self) -> str:
        med = statistics.median(self.times)
        rate = self.nbytes / med / 2**20
        return (
            f"| {self.kind} | {self.engine} | {self.op} | {med:.3f} | "
            f"{min(self.times):.3f}-{max(self.times):.3f} | {rate:.0f} |"
        )


def make_data(mib: int) -> np.ndarray:
    rows = mib * 2**20 // (4 * 1024)
    rng = np.random.default_rng(64)
    ramp = np.linspace(0, 100, 1024, dtype="f4")[None, :] + np.arange(rows, dtype="f4")[:, None]
    return (ramp + rng.normal(scale=0.01, size=(rows, 1024)).astype("f4")).round(2)


def store_map(ep: Endpoint, engine: str, prefix: str) -> dict[str, Any]:
    if ep.kind == "http":
        return {"kind": "http", "url": f"{ep.url}/{prefix}", "engine": engine}
    spec: dict[str, Any] = {"kind": ep.kind, "bucket": BUCKET, "prefix": prefix, "endpoint_url": ep.url, "engine": engine}
    if ep.kind == "s3":
        spec |= {k: ep.options[k] for k in ("access_key_id", "secret_access_key")} | {"region": ep.options["region"]}
    elif ep.kind == "azure":
        spec |= {"account_name": ep.options["account_name"], "account_key": ep.options["account_key"]}
    elif ep.kind == "gcs":
        spec |= {"anonymous": True, "project": ep.options["project"]}
    return spec


def make_bucket(ep: Endpoint) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from test_remote_stores import make_bucket as mk

    if ep.kind != "http":
        mk(ep, BUCKET)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_engine(ep: Endpoint, engine: str, data: np.ndarray, args: argparse.Namespace) -> list[Result]:
    chunks = (256, 1024)  # 1 MiB of float32
    results: dict[str, list[float]] = {"write": [], "read": [], "random": []}
    nchunk_rows = data.shape[0] // chunks[0]
    for run in range(args.runs):
        prefix = f"{engine}-{run}-{uuid.uuid4().hex[:6]}"

        def create(store: Any) -> zarr.Array:
            return zarr.create_array(
                store, name="a", shape=data.shape, chunks=chunks, dtype="f4", compressors=ZstdCodec(level=1)
            )

        if ep.kind == "http":
            arr = create(zarr.storage.LocalStore(Path(ep.options["root"]) / prefix))
            arr[:] = data
        else:
            arr = create(open_remote_store(store_map(ep, engine, prefix)))
            results["write"].append(timed(lambda: arr.__setitem__(slice(None), data)))
        reader = zarr.open_array(open_remote_store(store_map(ep, engine, prefix) | {"read_only": True}), path="a", mode="r")
        out: list[np.ndarray] = []
        results["read"].append(timed(lambda: out.append(reader[:])))
        if not np.array_equal(out[0], data):
            raise AssertionError(f"{ep.kind}/{engine}: the full read differs from what was written")
        rng = random.Random(run)
        picks = [rng.randrange(nchunk_rows) for _ in range(args.reads)]

        def one(i: int) -> None:
            block = reader[i * chunks[0] : (i + 1) * chunks[0]]
            if block[0, 0] != data[i * chunks[0], 0]:
                raise AssertionError("a random chunk read differs")

        def many() -> None:
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(one, picks))

        results["random"].append(timed(many))
    nbytes = data.nbytes
    return [
        Result(ep.kind, engine, op, times, nbytes if op != "random" else args.reads * chunks[0] * chunks[1] * 4)
        for op, times in results.items()
        if times
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stores")
    p.add_argument("--kinds", default="s3,azure,http,gcs")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--reads", type=int, default=1000)
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args(argv)
    data = make_data(args.mib)
    print(f"# bench.stores: {args.mib} MiB float32 zstd(1) array, 1 MiB chunks, {args.runs} runs, "
          f"{args.reads} random single-chunk reads on {args.threads} threads")
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    print("| store | engine | op | median s | spread s | MiB/s |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        server = make_server(kind)
        ep = server.start()
        try:
            make_bucket(ep)
            for engine in ENGINES[kind]:
                for result in bench_engine(ep, engine, data, args):
                    print(result.row(), flush=True)
                server.reset()
                make_bucket(ep)
        finally:
            server.stop()
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
