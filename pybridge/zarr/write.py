"""``array.write``: encode a box of data into the chunks it covers.

The data (inline, an upload stream read piece by piece, or an upload
handoff file) is C-order, little-endian, of the box's shape. It is cut into
bands of whole chunk rows of the target array along axis 0, and each band's
chunks are encoded in parallel by the workers, which write the chunk files
themselves. A band's chunks are cut into tasks of about
:data:`TASK_BYTES`, so that a worker never idles while another works
through a long task.

- *Streamed or inline*: a band is copied into a band buffer (a reused
  shared-memory segment) as its bytes arrive, and its tasks are submitted
  at once. A small ring of buffers (:data:`RING_BUFFERS`, at most
  :data:`RING_BYTES` together) lets the upload go on into the next bands
  while earlier ones are encoded, so memory stays bounded whatever the
  data's size and neither the upload nor the workers wait for the other
  more than they must.
- *Handoff* (``"shm"``): the workers map the client's file themselves and
  encode straight from it; every task is submitted up front and nothing is
  copied in the sidecar.

Partial chunks are read-modify-write. Every chunk is locked (per array and
chunk, inside this sidecar) from before its task is submitted until the task
is done, so concurrent writes touching the same chunk never lose each
other's updates.

Arrays in zip and memory stores and the variable-length dtypes (whose data
come as ``values``) are written through zarr-python in the sidecar
(:mod:`pybridge.zarr.inprocess`), under the same locks.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from pybridge.errors import DataSizeMismatch, InvalidParams, InvalidSelection
from pybridge.zarr.buffers import split
from pybridge.zarr.chunk_tasks import out_dtype, store_parts, write_parts, write_parts_from
from pybridge.zarr.chunks import (
    ChunkPart,
    as_banded,
    band_ranges,
    check_request_size,
    chunk_parts,
    count_chunks,
    normalize_selection,
    product,
    rows_per_band,
)
from pybridge.zarr.metadata import ArrayMeta

if TYPE_CHECKING:
    from pybridge.handoff.shm import Segment
    from pybridge.rpc.call import Call, UploadHandoff
    from pybridge.zarr.kv import KV
    from pybridge.zarr.locks import LockTable

__all__ = ["write_array"]

MiB = 1 << 20
#: A band holds at least this much (and at least 2 chunks per worker) ...
BAND_TARGET_BYTES = 4 * MiB
#: ... and at most this much, unless one chunk row is bigger. A chunk row up
#: to this size is kept whole: a band cut inside a chunk row makes every
#: chunk of that row a read-modify-write (for a shard, of every inner chunk).
BAND_MAX_BYTES = 64 * MiB
#: Band buffers in the ring of a streamed write, and the most bytes they may
#: hold together (never fewer than 2 buffers).
RING_BUFFERS = 4
RING_BYTES = 64 * MiB
#: Chunk data per task, about: big enough that the round trip to the worker
#: is cheap, small enough that the work spreads evenly over the workers.
TASK_BYTES = 2 * MiB
#: The same for a write from an upload handoff file, except in its last bands.
#: Each task maps its band of the file afresh, and the page faults cost per
#: row of the band it touches: bigger tasks touch each row fewer times. The
#: last bands are cut into :data:`TASK_BYTES` tasks so that the workers
#: finish together.
FILE_TASK_BYTES = 64 * MiB
IN_PLACE_CHUNKS = 2
IN_PLACE_BYTES = 4 * MiB


def _lock_keys(meta: ArrayMeta, parts: Sequence[ChunkPart]) -> list[Hashable]:
    return [(meta.spec.dir, p.coords) for p in parts]


class _Source:
    """Reads exactly the bytes asked for from a sequence of pieces."""

    def __init__(self, pieces: Iterable[Any]) -> None:
        self._it: Iterator[Any] = iter(pieces)
        self._rest = memoryview(b"")

    def readinto(self, dst: memoryview) -> None:
        n = 0
        total = dst.nbytes
        while n < total:
            if not self._rest.nbytes:
                try:
                    piece = next(self._it)
                except StopIteration:
                    raise DataSizeMismatch("the data ended before the box was filled",
                                           expected=total, got=n) from None
                self._rest = memoryview(piece).cast("B")
                continue
            k = min(self._rest.nbytes, total - n)
            dst[n:n + k] = self._rest[:k]
            self._rest = self._rest[k:]
            n += k


def write_box(meta: ArrayMeta, start: Sequence[int] | None,
              shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The box ``[lo, hi)`` that ``shape`` at ``start`` covers, checked."""
    ndim = len(meta.shape)
    if len(shape) != ndim:
        raise InvalidSelection(f"shape has {len(shape)} dimensions, the array has {ndim}",
                               param="shape", ndim=ndim)
    if any(n < 0 for n in shape):
        raise InvalidSelection("negative extent in shape", param="shape")
    begin = tuple(start) if start is not None else (0,) * ndim
    if len(begin) != ndim:
        raise InvalidSelection(f"start has {len(begin)} dimensions, the array has {ndim}",
                               param="start", ndim=ndim)
    return normalize_selection(meta.shape, begin, tuple(a + n for a, n in zip(begin, shape)))


def write_array(call: Call, meta: ArrayMeta, kv: KV, start: Sequence[int] | None,
                shape: Sequence[int], data: Any, values: list[Any] | None = None,
                pieces: Iterable[Any] | None = None) -> dict[str, Any]:
    """Write ``data`` (bytes, or None for the call's upload) or ``values`` at ``start``.

    ``pieces`` replaces the call's upload when the caller has already taken
    it (see :func:`spool_upload`).
    """
    import numpy as np

    from pybridge.zarr import inprocess

    spec = meta.spec
    lo, hi = write_box(meta, start, shape)
    if meta.variable:
        if values is None:
            raise InvalidParams(f"{meta.wire_dtype!r} data travel as 'values'",
                                param="values", expected="array of str or bin")
        inprocess.write_values(call, meta, kv, lo, hi, values)
        return {"bytes": sum(len(v.encode()) if isinstance(v, str) else len(v)
                             for v in values)}
    if values is not None:
        raise InvalidParams(f"{meta.wire_dtype!r} data travel as 'data' or 'stream'",
                            param="values", expected="absent")
    dtype = out_dtype(spec.dtype)
    nbytes = product(shape) * dtype.itemsize
    if data is not None:
        got = memoryview(data).nbytes
    else:
        declared = call.upload_bytes
        if declared is None:
            raise InvalidParams("array.write needs 'data', 'stream' or 'shm'", param="data",
                                expected="bin")
        got = declared
    check_request_size(call.context.settings, got)
    if got != nbytes:
        raise DataSizeMismatch(
            f"{got} bytes of data for a box of shape {list(shape)} of {meta.wire_dtype!r} "
            f"({nbytes} bytes)", expected=nbytes, got=got)
    if nbytes == 0:
        return {"bytes": 0}
    if not meta.by_hand:
        source = _Source([data] if data is not None else
                         pieces if pieces is not None else call.upload())
        inprocess.write_bytes(call, meta, kv, lo, hi, source)
        return {"bytes": nbytes}
    bshape, grid, blo, bhi = as_banded(spec.shape, spec.grid, lo, hi)
    band_sel = tuple(b - a for a, b in zip(blo, bhi))
    nchunks = count_chunks(blo, bhi, grid)
    chunk_bytes = product(grid) * dtype.itemsize
    upload = call.upload_handoff() if data is None and pieces is None and \
        call.has_upload_handoff else None
    small = nchunks <= IN_PLACE_CHUNKS and nchunks * chunk_bytes <= IN_PLACE_BYTES
    if upload is not None and not small:
        _from_file(call, meta, bshape, grid, blo, bhi, upload)
        return {"bytes": nbytes}
    if upload is not None:
        data = upload.segment().buf
    if data is not None and small:
        src = np.frombuffer(data, dtype=dtype).reshape(band_sel)
        parts = chunk_parts(bshape, grid, blo, bhi)
        keys = call.context.chunk_locks.acquire(_lock_keys(meta, parts))
        try:
            store_parts(src, spec, parts)
        finally:
            call.context.chunk_locks.release(keys)
        return {"bytes": nbytes}
    source = _Source([data] if data is not None else
                     pieces if pieces is not None else call.upload())
    _banded(call, meta, bshape, grid, blo, bhi, source)
    return {"bytes": nbytes}


def spool_upload(call: Call, expected: int) -> Iterator[bytes]:
    """Take the call's whole upload now (into memory, or a temporary file past
    16 MiB) and give it back as pieces.

    Used before waiting for a zip archive's write session: a request that
    waits with its upload unread would stop the reader thread once its
    queue is full, and the session's holder might need that thread. The
    declared size is checked against ``expected`` first.
    """
    import tempfile

    declared = call.upload_bytes
    if declared is None:
        raise InvalidParams("this request carries no upload stream", param="stream",
                            expected="map")
    check_request_size(call.context.settings, declared)
    if declared != expected:
        raise DataSizeMismatch(f"{declared} bytes of data for a box of {expected} bytes",
                               expected=expected, got=declared)
    spool = tempfile.SpooledTemporaryFile(max_size=16 * MiB)  # noqa: SIM115 -- read() closes it
    for piece in call.upload():
        spool.write(piece)
    spool.seek(0)

    def read() -> Iterator[bytes]:
        with spool:
            while True:
                piece = spool.read(MiB)
                if not piece:
                    return
                yield piece

    return read()


def _releaser(locks: LockTable, keys: list[Hashable]) -> Callable[[Future[Any]], None]:
    """A done-callback that releases ``keys``."""
    def release(_: Future[Any]) -> None:
        locks.release(keys)
    return release


def _task_groups(parts: list[ChunkPart], chunk_bytes: int,
                 task_bytes: int = TASK_BYTES) -> list[Sequence[ChunkPart]]:
    """Cut a band's chunks into tasks of about ``task_bytes`` each."""
    per_task = max(1, task_bytes // max(chunk_bytes, 1))
    return split(parts, -(-len(parts) // per_task))


def _submit_locked(call: Call, meta: ArrayMeta, groups: Iterable[Sequence[ChunkPart]],
                   futures: list[Future[Any]], fn: Callable[..., Any],
                   args: Callable[[Sequence[ChunkPart]], tuple[Any, ...]]) -> None:
    """Submit ``fn(*args(group))`` for each group of chunk parts into
    ``futures``, each task holding its chunks' locks until it is done."""
    pool, locks = call.context.pool, call.context.chunk_locks
    for group in groups:
        keys = locks.acquire(_lock_keys(meta, group))
        try:
            f = pool.submit(fn, *args(group))
        except BaseException:
            locks.release(keys)
            raise
        f.add_done_callback(_releaser(locks, keys))
        futures.append(f)


def _settle(futures: list[Future[Any]]) -> None:
    """Wait for every future; then raise the first failure, if any."""
    wait(futures)
    for f in futures:
        f.result()


def _abandon(futures: Iterable[Future[Any]]) -> None:
    """Cancel what has not started and wait for the rest (their locks go with them)."""
    futures = list(futures)
    for f in futures:
        f.cancel()
    wait(futures)


def _band_rows(call: Call, grid: tuple[int, ...], blo: tuple[int, ...], bhi: tuple[int, ...],
               row_bytes: int) -> int:
    per_row = count_chunks((0, *blo[1:]), (1, *bhi[1:]), (1, *grid[1:]))
    return rows_per_band(grid[0], bhi[0] - blo[0], row_bytes, per_row, call.context.pool.size,
                         BAND_TARGET_BYTES, BAND_MAX_BYTES)


def _banded(call: Call, meta: ArrayMeta, shape: tuple[int, ...], grid: tuple[int, ...],
            blo: tuple[int, ...], bhi: tuple[int, ...], source: _Source) -> None:
    """Copy the data band by band into a ring of band buffers; encode each band
    as soon as it is complete."""
    itemsize = out_dtype(meta.spec.dtype).itemsize
    inner = tuple(b - a for a, b in zip(blo[1:], bhi[1:]))
    row_bytes = product(inner) * itemsize
    chunk_bytes = product(grid) * itemsize
    rows = _band_rows(call, grid, blo, bhi, row_bytes)
    band_bytes = min(rows, bhi[0] - blo[0]) * row_bytes
    ring = max(2, min(RING_BUFFERS, RING_BYTES // max(band_bytes, 1)))
    taken: list[Segment] = []
    free: list[Segment] = []
    pending: deque[tuple[Segment, list[Future[Any]]]] = deque()
    try:
        for a, b in band_ranges(blo[0], bhi[0], grid[0], rows):
            call.check_cancelled()
            if not free:
                if len(taken) < ring:
                    taken.append(call.context.band_buffers.take(band_bytes))
                    free.append(taken[-1])
                else:
                    seg, futures = pending.popleft()
                    _settle(futures)
                    free.append(seg)
            seg = free.pop()
            source.readinto(seg.buf[:(b - a) * row_bytes])
            parts = chunk_parts(shape, grid, (a, *blo[1:]), (b, *bhi[1:]))
            futures = []
            pending.append((seg, futures))
            band_shape = (b - a, *inner)

            def band_args(g: Sequence[ChunkPart], p: str = seg.path,
                          s: tuple[int, ...] = band_shape) -> tuple[Any, ...]:
                return (meta.spec, p, 0, s, g, True)

            _submit_locked(call, meta, _task_groups(parts, chunk_bytes), futures,
                           write_parts, band_args)
        while pending:
            _settle(pending[0][1])
            pending.popleft()
    finally:
        _abandon(f for _, futures in pending for f in futures)
        for seg in taken:
            call.context.band_buffers.give(seg)


def _from_file(call: Call, meta: ArrayMeta, shape: tuple[int, ...], grid: tuple[int, ...],
               blo: tuple[int, ...], bhi: tuple[int, ...], upload: UploadHandoff) -> None:
    """Encode straight from an upload handoff file: the workers map it
    themselves, every task is submitted at once, nothing is copied here."""
    itemsize = out_dtype(meta.spec.dtype).itemsize
    inner = tuple(b - a for a, b in zip(blo[1:], bhi[1:]))
    row_bytes = product(inner) * itemsize
    chunk_bytes = product(grid) * itemsize
    rows = _band_rows(call, grid, blo, bhi, row_bytes)
    bands = list(band_ranges(blo[0], bhi[0], grid[0], rows))
    fine_from = len(bands) - call.context.pool.size
    futures: list[Future[Any]] = []
    failed = threading.Event()

    def on_done(f: Future[Any]) -> None:
        if not f.cancelled() and f.exception() is not None:
            failed.set()

    try:
        for k, (a, b) in enumerate(bands):
            call.check_cancelled()
            if failed.is_set():
                break  # a task failed: the error is raised below
            first = len(futures)
            parts = chunk_parts(shape, grid, (a, *blo[1:]), (b, *bhi[1:]))
            offset, band_shape = (a - blo[0]) * row_bytes, (b - a, *inner)
            groups = _task_groups(parts, chunk_bytes,
                                  TASK_BYTES if k >= fine_from else FILE_TASK_BYTES)

            def file_args(g: Sequence[ChunkPart], o: int = offset,
                          s: tuple[int, ...] = band_shape) -> tuple[Any, ...]:
                return (meta.spec, upload.path, upload.size, o, s, g)

            _submit_locked(call, meta, groups, futures, write_parts_from, file_args)
            for f in futures[first:]:
                f.add_done_callback(on_done)
        _settle(futures)
    except BaseException:
        _abandon(futures)
        raise
