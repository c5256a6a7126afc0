"""The in-process Python baselines, each at its library's default settings.

- zarr-python: ``z[...]`` with its default async concurrency (``async.concurrency``
  is left as shipped) and ``z[...] = values`` for writes;
- tensorstore: ``ts.open(spec).result()``, then ``.read().result()``, with a
  default context (no cache pool, its own default concurrency);
- numcodecs: one thread decoding chunk after chunk (Blosc with
  ``set_nthreads(1)``);
- ``python -c 'import zarr, numcodecs'``, the start-up a sidecar cannot avoid.

A baseline is an object with ``warm()`` (one untimed run) and ``once()`` (one
timed run, returning its value). The sections call ``once()`` between the
Elixir side's runs, so the two alternate and share the machine's moods.
Every run is checked against the expected SHA-256 outside the timed region;
a mismatch stops the benchmark.
"""

from __future__ import annotations

import gc
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import CodecItems, Dataset, create_empty_like, sha256_of

__all__ = [
    "Baseline",
    "BenchError",
    "ImportTime",
    "NumcodecsDecode",
    "TensorstoreRead",
    "ZarrRead",
    "ZarrWrite",
    "tensorstore_available",
]


class BenchError(RuntimeError):
    """A result failed its checksum, or a step of the benchmark failed."""


def check_sha(what: str, got: str, want: str) -> None:
    if got != want:
        raise BenchError(f"{what}: checksum mismatch (got {got[:16]}…, want {want[:16]}…)")


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds (all threads of this process) and ``fn()``'s result."""
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return seconds, time.process_time() - c0, out


class Baseline:
    """One in-process measurement, run once at a time."""

    name = "baseline"

    def __init__(self) -> None:
        #: CPU seconds of each timed run (warm-up included), all threads.
        self.cpu: list[float] = []

    def warm(self) -> None:
        self.once()

    def once(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Drop what the baseline holds."""


class _Read(Baseline):
    def __init__(self, ds: Dataset) -> None:
        super().__init__()
        self.ds = ds
        self._read: Callable[[], Any] = lambda: None

    def once(self) -> float:
        seconds, cpu, out = _timed(self._read)
        self.cpu.append(cpu)
        check_sha(f"{self.name} of {self.ds.name}", sha256_of(out), self.ds.sha256)
        return seconds

    def close(self) -> None:
        self._read = lambda: None


class ZarrRead(_Read):
    """zarr-python's full read ``z[...]`` of an opened array (seconds)."""

    name = "zarr-python read"

    def __init__(self, ds: Dataset) -> None:
        import zarr

        super().__init__(ds)
        z = zarr.open_array(str(ds.path), mode="r")
        self._read = lambda: z[...]


def tensorstore_available() -> bool:
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        return False
    return True


class TensorstoreRead(_Read):
    """tensorstore's full read of an opened array, default context (seconds)."""

    name = "tensorstore read"

    def __init__(self, ds: Dataset) -> None:
        import tensorstore as ts

        super().__init__(ds)
        driver = "zarr" if ds.zarr_format == 2 else "zarr3"
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(ds.path)}}
        arr = ts.open(spec, read=True).result()
        self._read = lambda: arr.read().result()


class ZarrWrite(Baseline):
    """zarr-python's full write ``z[...] = values`` into a fresh empty array (seconds).

    Creating the empty array is not timed (the Elixir side gets the same
    pre-created arrays). Each written array is read back, checked and removed.
    """

    name = "zarr-python write"

    def __init__(self, ds: Dataset, scratch: Path) -> None:
        super().__init__()
        self.ds = ds
        self.scratch = scratch
        self.values = np.fromfile(ds.raw_path, dtype="<f8").reshape(ds.shape)
        self._count = 0

    def once(self) -> float:
        import zarr

        target = self.scratch / f"zarr-python-write-{self.ds.name}-{self._count}"
        self._count += 1
        z = create_empty_like(self.ds, target)
        try:
            seconds, cpu, _ = _timed(lambda: z.__setitem__(Ellipsis, self.values))
            self.cpu.append(cpu)
            back = zarr.open_array(str(target), mode="r")[...]
            check_sha(f"zarr-python write of {self.ds.name}", sha256_of(back), self.ds.sha256)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return seconds

    def close(self) -> None:
        del self.values


class NumcodecsDecode(Baseline):
    """Single-thread numcodecs decode of every item (bytes of output per second)."""

    name = "numcodecs decode"

    def __init__(self, items: CodecItems) -> None:
        import numcodecs

        super().__init__()
        self.items = items
        self.codec = numcodecs.get_codec(dict(items.config))

    def once(self) -> float:
        from numcodecs import blosc

        previous = blosc.get_nthreads()
        blosc.set_nthreads(1)
        try:
            seconds, cpu, outs = _timed(
                lambda: [self.codec.decode(e) for e in self.items.encoded])
            self.cpu.append(cpu)
        finally:
            blosc.set_nthreads(previous)
        h = hashlib.sha256()
        for o in outs:
            h.update(memoryview(o).cast("B"))
        check_sha(f"numcodecs {self.items.label}", h.hexdigest(), self.items.sha256)
        return self.items.decoded_bytes / seconds


class ImportTime(Baseline):
    """Wall time of ``python -c 'import zarr, numcodecs'``, process start to exit (seconds)."""

    name = "import zarr, numcodecs"

    def __init__(self, python: str) -> None:
        super().__init__()
        self.cmd = [python, "-c", "import zarr, numcodecs"]

    def once(self) -> float:
        seconds, _, _ = _timed(lambda: subprocess.run(self.cmd, check=True))
        return seconds
