"""Reads and writes through zarr-python inside the sidecar.

The workers decode filesystem chunks themselves (:mod:`pybridge.zarr.read`
and :mod:`pybridge.zarr.write`). Everything else goes through zarr-python
here, in the handler thread:

- zip and memory stores (the workers cannot see them);
- selections with a ``step`` other than 1;
- the variable-length dtypes ``string`` and ``bytes``, whose data travel
  as ``values`` (one list in the response, so at most one frame).

Byte results are produced a band of rows (along axis 0) at a time, each band
a whole number of chunks (or shards) high and a few MiB big, and streamed
as they come, so memory stays bounded. Writes go band by band too, each
band holding the per-chunk locks of the chunks it touches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pybridge.errors import BridgeError, DataSizeMismatch, InvalidParams, TooLarge
from pybridge.rpc.protocol import MAX_FRAME_ELEMENTS
from pybridge.zarr.chunk_tasks import out_dtype, zarr_read
from pybridge.zarr.chunks import chunk_parts, product
from pybridge.zarr.metadata import ArrayMeta, zarr_array

if TYPE_CHECKING:
    import numpy as np

    from pybridge.rpc.call import Call
    from pybridge.zarr.kv import KV

__all__ = ["read_bytes", "read_values", "selection_shape", "write_bytes", "write_values"]

MiB = 1 << 20
BAND_BYTES = 4 * MiB
T = TypeVar("T")


def selection_shape(lo: Sequence[int], hi: Sequence[int], step: Sequence[int]) -> tuple[int, ...]:
    return tuple(len(range(a, b, s)) for a, b, s in zip(lo, hi, step))


def _slices(lo: Sequence[int], hi: Sequence[int], step: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(a, b, s) for a, b, s in zip(lo, hi, step))


def _bands(meta: ArrayMeta, lo: Sequence[int], hi: Sequence[int], step: Sequence[int],
           row_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut the selection's axis 0 into bands: ``(first row, end row)`` in array rows.

    With step 1 the cuts fall on chunk (or shard) boundaries; a band holds
    about :data:`BAND_BYTES` of output.
    """
    if not meta.shape:
        yield 0, 0
        return
    a, b, s = lo[0], hi[0], step[0]
    grid0 = meta.spec.grid[0]
    rows = max(1, BAND_BYTES // max(row_bytes, 1))  # output rows per band
    span = rows * s
    if s == 1:
        span = max(grid0, (span // grid0) * grid0)
    start = a
    while start < b:
        end = min(b, (start // grid0) * grid0 + span if s == 1 else start + span)
        if end <= start:
            end = min(b, start + span)
        yield start, end
        start = end


def _checked(meta: ArrayMeta, z: Any, lo: Sequence[int], hi: Sequence[int],
             work: Callable[[], T]) -> T:
    """``work()``, a zarr-python read or write of the box ``[lo, hi)``.

    When it fails with anything but a store or a memory error, the chunks
    the box touches are read one by one: the first that zarr-python cannot
    decode is :class:`~pybridge.errors.DecodeFailed`, naming it. A failure
    that no chunk explains is raised as it came.
    """
    try:
        return work()
    except (BridgeError, OSError, MemoryError):
        raise
    except Exception:
        from pybridge.zarr.chunks import as_banded

        shape, grid, blo, bhi = as_banded(meta.spec.shape, meta.spec.grid, lo, hi)
        for part in chunk_parts(shape, grid, blo, bhi):
            zarr_read(z, meta.spec, part)
        raise


def _band_box(meta: ArrayMeta, lo: Sequence[int], hi: Sequence[int], step: Sequence[int],
              a: int, b: int) -> tuple[slice, ...] | tuple[()]:
    if not meta.shape:
        return ()
    return (slice(a, b, step[0]), *_slices(lo[1:], hi[1:], step[1:]))


def _read_band(meta: ArrayMeta, z: Any, lo: Sequence[int], hi: Sequence[int],
               step: Sequence[int], a: int, b: int) -> Any:
    """zarr-python's read of the band of rows ``[a, b)`` of the selection."""
    box = _band_box(meta, lo, hi, step, a, b)
    if not meta.shape:
        return _checked(meta, z, (), (), lambda: z[box])
    return _checked(meta, z, (a, *lo[1:]), (b, *hi[1:]), lambda: z[box])


def read_bytes(call: Call, meta: ArrayMeta, kv: KV, lo: Sequence[int], hi: Sequence[int],
               step: Sequence[int], handoff: bool) -> dict[str, Any]:
    """The selection's bytes, the way :meth:`~pybridge.rpc.call.Call.way_back`
    picks: ``{"data": ...}`` inline, ``{"shm": ...}`` handed off, ``{}``
    streamed."""
    import numpy as np

    dtype = out_dtype(meta.spec.dtype)
    shape = selection_shape(lo, hi, step)
    nbytes = product(shape) * dtype.itemsize
    z = zarr_array(meta, kv)
    row_bytes = product(shape[1:]) * dtype.itemsize
    way = call.way_back(nbytes, handoff)
    if way == "handoff":
        from pybridge.handoff.results import HandoffUnavailable

        try:
            return _read_handoff(call, meta, z, lo, hi, step, shape, dtype, nbytes)
        except HandoffUnavailable:
            way = call.way_back(nbytes, False)  # /dev/shm cannot hold it: by the pipe
    inline = way == "inline"
    pieces = []
    for a, b in _bands(meta, lo, hi, step, row_bytes):
        call.check_cancelled()
        band = np.ascontiguousarray(_read_band(meta, z, lo, hi, step, a, b), dtype=dtype)
        if inline:
            pieces.append(band.tobytes())
        else:
            call.send_data(memoryview(band.reshape(-1).view("u1").data))
    return {"data": b"".join(pieces)} if inline else {}


def _read_handoff(call: Call, meta: ArrayMeta, z: Any, lo: Sequence[int], hi: Sequence[int],
                  step: Sequence[int], shape: tuple[int, ...], dtype: Any,
                  nbytes: int) -> dict[str, Any]:
    """Read the selection into a fresh handoff segment: ``{"shm": ...}``."""
    import numpy as np

    from pybridge.handoff.results import result_handoff

    row_bytes = product(shape[1:]) * dtype.itemsize
    with result_handoff(call, nbytes) as seg:
        out = np.ndarray(shape, dtype=dtype, buffer=seg.buf)
        try:
            for a, b in _bands(meta, lo, hi, step, row_bytes):
                call.check_cancelled()
                band = np.asarray(_read_band(meta, z, lo, hi, step, a, b))
                if shape:
                    first = (a - lo[0]) // step[0]
                    out[first:first + band.shape[0]] = band
                else:
                    out[...] = band
        finally:
            del out
    return {"shm": {"path": seg.path, "bytes": nbytes}}


#: The most values one read answers: a frame's element limit, less room for
#: the rest of the reply (the shape, the envelope).
_MAX_VALUES = MAX_FRAME_ELEMENTS - 1024


def read_values(call: Call, meta: ArrayMeta, kv: KV, lo: Sequence[int], hi: Sequence[int],
                step: Sequence[int]) -> list[Any]:
    """The selection of a ``string``/``bytes`` array as a flat C-order list."""
    import numpy as np

    shape = selection_shape(lo, hi, step)
    n = product(shape)
    limit = call.context.settings.max_frame_bytes
    if n > limit:
        raise TooLarge(f"{n} values cannot fit in one frame of {limit} bytes: read a smaller "
                       "selection", bytes=n, limit=limit)
    if n > _MAX_VALUES:
        raise TooLarge(f"{n} values are more than one frame may hold ({_MAX_VALUES}): read a "
                       "smaller selection", values=n, limit=_MAX_VALUES)
    z = zarr_array(meta, kv)
    arr = np.asarray(_checked(meta, z, lo, hi,
                              lambda: z[_slices(lo, hi, step)] if shape else z[()]))
    want = bytes if meta.dtype.kind == "O" else str
    values = [v if isinstance(v, want) else want(v) for v in arr.reshape(-1).tolist()]
    total = sum(len(v) for v in values) + 5 * n
    if total > limit - 1024:
        raise TooLarge(f"the values take about {total} bytes, over the frame limit of {limit}: "
                       "read a smaller selection", bytes=total, limit=limit)
    return values


def _chunk_keys(meta: ArrayMeta, lo: Sequence[int], hi: Sequence[int]) -> list[Any]:
    from pybridge.zarr.chunks import as_banded

    shape, grid, blo, bhi = as_banded(meta.spec.shape, meta.spec.grid, lo, hi)
    return [(meta.spec.dir, p.coords) for p in chunk_parts(shape, grid, blo, bhi)]


def _store(call: Call, meta: ArrayMeta, z: Any, lo: Sequence[int], hi: Sequence[int],
           arr: Any) -> None:
    locks = call.context.chunk_locks
    keys = locks.acquire(_chunk_keys(meta, lo, hi))
    try:
        _checked(meta, z, lo, hi, lambda: _assign(meta, z, lo, hi, arr))
    finally:
        locks.release(keys)


def _assign(meta: ArrayMeta, z: Any, lo: Sequence[int], hi: Sequence[int], arr: Any) -> None:
    if meta.shape:
        z[_slices(lo, hi, [1] * len(lo))] = arr
    else:
        z[()] = arr.reshape(())


def write_bytes(call: Call, meta: ArrayMeta, kv: KV, lo: Sequence[int], hi: Sequence[int],
                source: Any) -> None:
    """Write the box ``[lo, hi)`` from ``source`` (a ``readinto`` reader), band by band."""
    import numpy as np

    dtype = out_dtype(meta.spec.dtype)
    shape = tuple(b - a for a, b in zip(lo, hi))
    row_bytes = product(shape[1:]) * dtype.itemsize
    z = zarr_array(meta, kv)
    ones = [1] * len(lo)
    for a, b in _bands(meta, lo, hi, ones, row_bytes):
        call.check_cancelled()
        band_shape = (b - a, *shape[1:]) if shape else ()
        band = np.empty(band_shape, dtype=dtype)
        source.readinto(band.reshape(-1).view("u1").data)
        if shape:
            _store(call, meta, z, (a, *lo[1:]), (b, *hi[1:]), band)
        else:
            _store(call, meta, z, (), (), band)


def values_array(meta: ArrayMeta, values: Iterable[Any], shape: Sequence[int]) -> np.ndarray:
    """``values`` checked against the dtype, as an array of ``shape``."""
    import numpy as np

    values = list(values)
    n = product(shape)
    if len(values) != n:
        raise DataSizeMismatch(f"{len(values)} values for a box of shape {list(shape)} "
                               f"({n} elements)", expected=n, got=len(values))
    if meta.dtype.kind == "O":
        if not all(isinstance(v, (bytes, bytearray)) for v in values):
            raise InvalidParams("a 'bytes' array takes bin values", param="values",
                                expected="array of bin")
        arr = np.empty(n, dtype=object)
        arr[:] = [bytes(v) for v in values]
        return arr.reshape(tuple(shape))
    if not all(isinstance(v, str) for v in values):
        raise InvalidParams("a 'string' array takes str values", param="values",
                            expected="array of str")
    return np.array(values, dtype=meta.dtype).reshape(tuple(shape))


def write_values(call: Call, meta: ArrayMeta, kv: KV, lo: Sequence[int], hi: Sequence[int],
                 values: list[Any]) -> None:
    """Write the box ``[lo, hi)`` of a ``string``/``bytes`` array from ``values``."""
    arr = values_array(meta, values, tuple(b - a for a, b in zip(lo, hi)))
    _store(call, meta, zarr_array(meta, kv), lo, hi, arr)
