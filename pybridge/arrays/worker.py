"""Chunk tasks that run in the workers (and, for small requests, in place).

A task gets a :class:`~pybridge.arrays.pipeline.ChunkSpec`, a band buffer
(a shared-memory segment named by its path, viewed as a C-order array of
the band's shape) and a list of :class:`~pybridge.arrays.chunks.ChunkPart`
whose ``out`` corners are relative to the band.

- :func:`read_parts` decodes each chunk and copies the part into the band
  (missing chunks become the fill value);
- :func:`write_parts` builds each chunk (whole from the band, or
  read-modify-write for a partial chunk), encodes it and writes the file;
  a chunk that ends up all fill value is deleted instead, as zarr-python does
  by default (``write_empty_chunks=False``).

The caller holds the per-chunk locks for writes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pybridge.arrays.chunks import ChunkPart
from pybridge.arrays.pipeline import (
    ChunkSpec,
    can_decode_into,
    decode_chunk,
    encode_chunk,
    is_fill,
    read_chunk_file,
    remove_chunk_file,
    spec_dtype,
    write_chunk_file,
)
from pybridge.errors import BridgeError, StoreError

if TYPE_CHECKING:
    import numpy as np

    from pybridge.shm import Segment

__all__ = ["band_view", "fill_parts", "read_parts", "store_parts", "write_parts"]

_SEGMENTS: OrderedDict[str, Segment] = OrderedDict()
#: Mappings kept between tasks (band buffers are reused by the sidecar, so
#: their paths recur); old ones are closed beyond either limit.
_SEGMENT_CACHE_SIZE = 8
_SEGMENT_CACHE_BYTES = 96 << 20


def _segment(path: str, keep: bool) -> Segment:
    from pybridge.shm import Segment

    seg = _SEGMENTS.get(path)
    if seg is not None:
        _SEGMENTS.move_to_end(path)
        return seg
    seg = Segment.attach(path)
    if keep:
        _SEGMENTS[path] = seg
        while len(_SEGMENTS) > 1 and (
                len(_SEGMENTS) > _SEGMENT_CACHE_SIZE
                or sum(s.size for s in _SEGMENTS.values()) > _SEGMENT_CACHE_BYTES):
            _, old = _SEGMENTS.popitem(last=False)
            old.close()
    return seg


def out_dtype(stored: str) -> np.dtype:
    """The wire dtype of a stored dtype token: the same type, little-endian."""
    from pybridge.dtypes import to_little_endian

    return to_little_endian(spec_dtype(stored))


def band_view(buf: Any, offset: int, shape: Sequence[int], stored: str) -> np.ndarray:
    """A C-order array of ``shape`` over ``buf`` from byte ``offset``."""
    import numpy as np

    return np.ndarray(tuple(shape), dtype=out_dtype(stored), buffer=buf, offset=offset)


def _slices(lo: Sequence[int], hi: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _out_slices(part: ChunkPart) -> tuple[slice, ...]:
    return tuple(slice(o, o + b - a) for o, a, b in zip(part.out, part.lo, part.hi))


def _array_box(spec: ChunkSpec, part: ChunkPart) -> tuple[slice, ...]:
    return tuple(slice(i * g + a, i * g + b)
                 for i, g, a, b in zip(part.coords, spec.grid, part.lo, part.hi))


_ZARR: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_zarr_lock = threading.Lock()


def _zarr_array(spec: ChunkSpec, writable: bool) -> Any:
    """zarr-python's view of the array, cached while its metadata holds."""
    key = (spec.root, spec.path, spec.signature, writable)
    with _zarr_lock:
        z = _ZARR.get(key)
    if z is None:
        import json

        import zarr
        from zarr.core.array import AsyncArray
        from zarr.storage import StorePath

        from pybridge.arrays.kv import confined_local_store
        from pybridge.arrays.pipeline import checked_store

        doc = json.loads(spec.meta_json)
        store = checked_store(confined_local_store(spec.root, spec.roots, not writable), doc)
        z = zarr.Array(AsyncArray(metadata=doc, store_path=StorePath(store, spec.path)))
        with _zarr_lock:
            _ZARR[key] = z
            if len(_ZARR) > 8:
                _ZARR.popitem(last=False)
    return z


def _reshape_0d(spec: ChunkSpec, arr: np.ndarray) -> np.ndarray:
    return arr.reshape(1) if len(spec.grid) == 0 else arr


def fill_parts(out: np.ndarray, spec: ChunkSpec, parts: Sequence[ChunkPart]) -> int:
    """Decode ``parts`` into ``out`` (the band). Returns chunks read.

    A sharded array with a :class:`~pybridge.arrays.shards.ShardLayout` is
    read by hand, shard by shard (:func:`~pybridge.arrays.shards.fill_shard`);
    other ``"zarr"``-engine arrays through zarr-python.
    """
    if spec.shard is not None:
        from pybridge.arrays.shards import fill_shard

        for p in parts:
            fill_shard(out[_out_slices(p)], spec, p)
        return len(parts)
    if spec.engine == "zarr":
        z = _zarr_array(spec, writable=False)
        for p in parts:
            box = _array_box(spec, p) if spec.grid else ()
            out[_out_slices(p)] = z[box]
        return len(parts)
    direct = can_decode_into(spec, out.dtype)
    grid = spec.grid if spec.grid else (1,)
    for p in parts:
        dst = out[_out_slices(p)]
        path = spec.chunk_path(p.coords)
        raw = read_chunk_file(path)
        if raw is None:
            dst[...] = spec.fill
            continue
        try:
            if direct and p.hi == grid and p.full and dst.flags.c_contiguous:
                decode_chunk(spec, raw, into=dst)
                continue
            chunk = _reshape_0d(spec, decode_chunk(spec, raw, reuse=True))
        except BridgeError as e:
            e.details.setdefault("chunk", spec.chunk_name(p.coords))
            raise
        dst[...] = chunk[_slices(p.lo, p.hi)]
    return len(parts)


def store_parts(src: np.ndarray, spec: ChunkSpec, parts: Sequence[ChunkPart]) -> int:
    """Write ``parts`` from ``src`` (the band) into the chunks. Returns chunks written."""
    import numpy as np

    if spec.engine == "zarr":
        z = _zarr_array(spec, writable=True)
        for p in parts:
            value = np.ascontiguousarray(src[_out_slices(p)])
            if spec.grid:
                z[_array_box(spec, p)] = value
            else:
                z[()] = value.reshape(())
        return len(parts)
    grid = spec.grid if spec.grid else (1,)
    native = spec_dtype(spec.dtype).newbyteorder("=")
    written = 0
    for p in parts:
        path = spec.chunk_path(p.coords)
        region = _slices(p.lo, p.hi)
        if p.full and tuple(p.hi) == grid:  # an inner chunk, all new
            chunk = np.ascontiguousarray(src[_out_slices(p)])
        elif p.full:  # an edge chunk, all new: pad with the fill value
            chunk = np.full(grid, spec.fill, dtype=native)
        else:
            raw = read_chunk_file(path)
            if raw is None:
                chunk = np.full(grid, spec.fill, dtype=native)
            else:
                try:
                    chunk = np.array(_reshape_0d(spec, decode_chunk(spec, raw, reuse=True)),
                                     dtype=native, copy=True)
                except BridgeError as e:
                    e.details.setdefault("chunk", spec.chunk_name(p.coords))
                    raise
        if not (p.full and tuple(p.hi) == grid):
            chunk[region] = src[_out_slices(p)]
        if is_fill(chunk, spec.fill):
            remove_chunk_file(path)
            continue
        write_chunk_file(path, encode_chunk(spec, chunk.reshape(spec.grid)))
        written += 1
    return written


def read_parts(payload: Any, spec: ChunkSpec, seg_path: str, offset: int,
               band_shape: Sequence[int], parts: Sequence[ChunkPart], keep: bool) -> int:
    """Worker entry: decode ``parts`` into the band at ``offset`` of a segment."""
    return _on_band(seg_path, offset, band_shape, spec, keep,
                    lambda band: fill_parts(band, spec, parts))


def write_parts(payload: Any, spec: ChunkSpec, seg_path: str, offset: int,
                band_shape: Sequence[int], parts: Sequence[ChunkPart], keep: bool) -> int:
    """Worker entry: encode ``parts`` of the band at ``offset`` and write them."""
    return _on_band(seg_path, offset, band_shape, spec, keep,
                    lambda band: store_parts(band, spec, parts))


def _on_band(seg_path: str, offset: int, band_shape: Sequence[int], spec: ChunkSpec,
             keep: bool, work: Callable[[Any], int]) -> int:
    """Run ``work`` on the band's view of a segment; store I/O errors become StoreError."""
    seg = _segment(seg_path, keep)
    try:
        band = band_view(seg.buf, offset, band_shape, spec.dtype)
        try:
            return work(band)
        finally:
            del band  # the view must go before the segment can close
    except OSError as e:
        if isinstance(e, BridgeError):
            raise
        raise StoreError(f"{type(e).__name__}: {e}") from e
    finally:
        if not keep:
            seg.close()
