"""``array.read``: decode a selection, then send it inline, streamed or by handoff.

Three paths, chosen by the result's size:

- *in place*: a selection touching one or two small chunks is decoded in the
  handler thread (no worker round trip);
- *streamed*: the selection is cut into bands of whole chunk rows along
  axis 0 (a few MiB each). The workers decode one band into a reused
  shared-memory buffer while the handler sends the previous band as
  ``stream.data`` frames, straight from the buffer's file with
  ``sendfile``: at most two bands are in flight, and the band's pages never
  enter the sidecar's own memory, whatever the selection's size;
- *handoff*: with ``handoff: true`` and a result of at least the handoff
  threshold, the workers decode runs of whole rows and write them into one
  fresh segment, which is handed to the client (who reads and unlinks it).

Data is always little-endian C order of the selection's shape. Arrays in zip
and memory stores, selections with a step, and the variable-length dtypes
are read through zarr-python in the sidecar (:mod:`pybridge.zarr.inprocess`).

A handoff segment is unlinked on every path the sidecar controls
(:func:`pybridge.handoff.results.result_handoff`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from pybridge.errors import InvalidSelection
from pybridge.handoff.results import MAX_HANDOFF_BYTES, HandoffUnavailable, result_handoff
from pybridge.zarr.buffers import split
from pybridge.zarr.chunk_tasks import fill_parts, out_dtype, read_parts, read_parts_to_file
from pybridge.zarr.chunks import (
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
    from pybridge.rpc.call import Call
    from pybridge.zarr.kv import KV

__all__ = ["MAX_HANDOFF_BYTES", "result_handoff", "read_array"]

MiB = 1 << 20
#: A band holds at least this much (and at least 2 chunks per worker) ...
BAND_TARGET_BYTES = 4 * MiB
#: ... and at most this much, unless one chunk row is bigger.
BAND_MAX_BYTES = 32 * MiB
#: Selections touching at most this many chunks, of at most this many
#: decoded bytes in all, are decoded in the handler thread.
IN_PLACE_CHUNKS = 2
IN_PLACE_BYTES = 4 * MiB
#: A handoff task decodes about this much (whole chunk rows).
TASK_TARGET_BYTES = 2 * MiB
#: A band's chunks are cut into this many tasks per worker (each task costs a
#: round trip to a worker, and on few cores the sidecar competes for the CPU).
TASKS_PER_WORKER = 1


def _steps(meta: ArrayMeta, step: Sequence[int] | None) -> tuple[int, ...]:
    ndim = len(meta.shape)
    if step is None:
        return (1,) * ndim
    if len(step) != ndim:
        raise InvalidSelection(f"step has {len(step)} dimensions, the array has {ndim}",
                               param="step", ndim=ndim)
    if any(s < 1 for s in step):
        raise InvalidSelection("steps must be at least 1", param="step")
    return tuple(step)


def read_array(call: Call, meta: ArrayMeta, kv: KV, start: Sequence[int] | None,
               stop: Sequence[int] | None, step: Sequence[int] | None,
               handoff: bool) -> dict[str, Any]:
    """The ``array.read`` result for ``[start, stop)`` (every ``step``) of ``meta``."""
    import numpy as np

    from pybridge.zarr import inprocess

    spec = meta.spec
    lo, hi = normalize_selection(meta.shape, start, stop)
    steps = _steps(meta, step)
    sel_shape = inprocess.selection_shape(lo, hi, steps)
    result: dict[str, Any] = {"shape": list(sel_shape), "dtype": meta.wire_dtype}
    if meta.variable:
        result["values"] = inprocess.read_values(call, meta, kv, lo, hi, steps)
        return result
    dtype = out_dtype(spec.dtype)
    nbytes = product(sel_shape) * dtype.itemsize
    if nbytes == 0:
        result["data"] = b""
        return result
    check_request_size(call.context.settings, nbytes)
    if not meta.by_hand or any(s != 1 for s in steps):
        result.update(inprocess.read_bytes(call, meta, kv, lo, hi, steps, handoff))
        return result
    shape, grid, blo, bhi = as_banded(spec.shape, spec.grid, lo, hi)
    band_sel = tuple(b - a for a, b in zip(blo, bhi))
    nchunks = count_chunks(blo, bhi, grid)

    way = call.way_back(nbytes, handoff)
    if way == "handoff":
        try:
            result["shm"] = _handoff(call, meta, shape, grid, blo, bhi, nbytes)
            return result
        except HandoffUnavailable:
            way = call.way_back(nbytes, False)  # /dev/shm cannot hold it: by the pipe

    chunk_bytes = product(grid) * out_dtype(spec.dtype).itemsize
    if nchunks <= IN_PLACE_CHUNKS and nchunks * chunk_bytes + nbytes <= IN_PLACE_BYTES:
        out = np.empty(band_sel, dtype=dtype)
        fill_parts(out, spec, chunk_parts(shape, grid, blo, bhi))
        if way == "inline":
            result["data"] = out.tobytes()
        else:
            call.send_data(out.data)
        return result

    result.update(_banded(call, meta, shape, grid, blo, bhi, nbytes, way == "inline"))
    return result


def _band_rows(call: Call, shape: tuple[int, ...], grid: tuple[int, ...],
               blo: tuple[int, ...], bhi: tuple[int, ...], itemsize: int) -> int:
    band_sel = tuple(b - a for a, b in zip(blo, bhi))
    row_bytes = product(band_sel[1:]) * itemsize
    per_row = count_chunks((0, *blo[1:]), (1, *bhi[1:]), (1, *grid[1:]))
    return rows_per_band(grid[0], band_sel[0], row_bytes, per_row, call.context.pool.size,
                         BAND_TARGET_BYTES, BAND_MAX_BYTES)


def _submit(call: Call, meta: ArrayMeta, seg: Segment, offset: int,
            band_shape: tuple[int, ...], parts: list[Any], keep: bool,
            futures: list[Future[Any]]) -> None:
    """Submit the band's decode tasks into ``futures`` (as they go, for cleanup)."""
    pool = call.context.pool
    for group in split(parts, TASKS_PER_WORKER * pool.size):
        futures.append(pool.submit(read_parts, meta.spec, seg.path, offset, band_shape,
                                   group, keep))


def _settle(futures: list[Future[Any]]) -> None:
    """Wait for every future; then raise the first failure, if any."""
    wait(futures)
    for f in futures:
        f.result()


def _banded(call: Call, meta: ArrayMeta, shape: tuple[int, ...], grid: tuple[int, ...],
            blo: tuple[int, ...], bhi: tuple[int, ...], nbytes: int,
            inline: bool) -> dict[str, Any]:
    """Read the box band by band through the workers: ``{"data": ...}`` when
    ``inline``, else streamed (``{}``)."""
    itemsize = out_dtype(meta.spec.dtype).itemsize
    rows = _band_rows(call, shape, grid, blo, bhi, itemsize)
    row_bytes = product(tuple(b - a for a, b in zip(blo[1:], bhi[1:]))) * itemsize
    band_bytes = min(rows * row_bytes, nbytes)
    pieces: list[bytes] = []
    free: list[Segment] = []
    taken: list[Segment] = []
    pending: deque[tuple[Segment, int, list[Future[Any]]]] = deque()

    def flush() -> None:
        seg, size, futures = pending.popleft()
        _settle(futures)
        if inline:
            pieces.append(bytes(seg.buf[:size]))
        else:
            call.send_file(seg.path, 0, size)
        free.append(seg)

    try:
        for a, b in band_ranges(blo[0], bhi[0], grid[0], rows):
            call.check_cancelled()
            band_shape = (b - a, *(y - x for x, y in zip(blo[1:], bhi[1:])))
            if not free:
                seg = call.context.band_buffers.take(band_bytes)
                taken.append(seg)
                free.append(seg)
            seg = free.pop()
            parts = chunk_parts(shape, grid, (a, *blo[1:]), (b, *bhi[1:]))
            futures: list[Future[Any]] = []
            pending.append((seg, (b - a) * row_bytes, futures))
            _submit(call, meta, seg, 0, band_shape, parts, True, futures)
            if len(pending) == 2:
                flush()
        while pending:
            flush()
    finally:
        for _, _, futures in pending:
            for f in futures:
                f.cancel()
            wait(futures)
        for seg in taken:
            call.context.band_buffers.give(seg)
    return {"data": b"".join(pieces)} if inline else {}


def _handoff(call: Call, meta: ArrayMeta, shape: tuple[int, ...], grid: tuple[int, ...],
             blo: tuple[int, ...], bhi: tuple[int, ...], nbytes: int) -> dict[str, Any]:
    """Decode the selection into one fresh segment, a task per run of whole rows.

    Each task's rows are one contiguous range of the result, which its
    worker decodes into a buffer of its own and writes into the segment
    with ``pwrite`` (:func:`~pybridge.zarr.chunk_tasks.read_parts_to_file`).
    """
    itemsize = out_dtype(meta.spec.dtype).itemsize
    inner = tuple(b - a for a, b in zip(blo[1:], bhi[1:]))
    row_bytes = product(inner) * itemsize
    rows = _task_rows(grid[0], bhi[0] - blo[0], row_bytes, call.context.pool.size)
    pool = call.context.pool
    with result_handoff(call, nbytes) as seg:
        futures: list[Future[Any]] = []
        try:
            for a, b in band_ranges(blo[0], bhi[0], grid[0], rows):
                call.check_cancelled()
                parts = chunk_parts(shape, grid, (a, *blo[1:]), (b, *bhi[1:]))
                futures.append(pool.submit(read_parts_to_file, meta.spec, seg.path,
                                           (a - blo[0]) * row_bytes, (b - a, *inner), parts))
            _settle(futures)
        except BaseException:
            for f in futures:
                f.cancel()
            wait(futures)
            raise
    return {"path": seg.path, "bytes": nbytes}


def _task_rows(chunk0: int, sel_rows: int, row_bytes: int, workers: int) -> int:
    """Rows per handoff task: whole chunk rows, about :data:`TASK_TARGET_BYTES`
    each, but enough tasks to keep every worker busy (and never more than
    :data:`BAND_MAX_BYTES`, cutting inside a chunk row if one is bigger)."""
    row_bytes = max(row_bytes, 1)
    chunk_row_bytes = min(chunk0, sel_rows) * row_bytes
    if chunk_row_bytes > BAND_MAX_BYTES:
        return max(1, BAND_MAX_BYTES // row_bytes)
    chunk_rows = -(-sel_rows // chunk0)
    k = max(1, -(-TASK_TARGET_BYTES // chunk_row_bytes))
    k = min(k, max(1, chunk_rows // (2 * workers)), max(1, BAND_MAX_BYTES // chunk_row_bytes))
    return k * chunk0
