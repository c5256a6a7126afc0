"""Chunk tasks that run in the workers (and, for small requests, in place).

A task gets a :class:`~pybridge.zarr.chunk_codecs.ChunkSpec`, a band buffer
(a shared-memory segment named by its path, viewed as a C-order array of
the band's shape) and a list of :class:`~pybridge.zarr.chunks.ChunkPart`
whose ``out`` corners are relative to the band.

- :func:`read_parts` decodes each chunk and copies the part into the band
  (missing chunks become the fill value);
- :func:`write_parts` builds each chunk (whole from the band, or
  read-modify-write for a partial chunk), encodes it and writes the file;
  a chunk that ends up all fill value is deleted instead, as zarr-python does
  by default (``write_empty_chunks=False``);
- :func:`write_parts_from` does the same from a band of a client's upload
  handoff file, which it maps read-only.

The caller holds the per-chunk locks for writes.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pybridge.errors import BridgeError, DecodeFailed, StoreError
from pybridge.zarr.chunk_codecs import (
    ChunkSpec,
    blame_chunk,
    can_decode_into,
    chunk_limit,
    decode_chunk,
    encode_chunk,
    is_fill,
    spec_dtype,
)
from pybridge.zarr.chunks import ChunkPart, product
from pybridge.zarr.files import read_chunk_file, remove_chunk_file, write_chunk_file

if TYPE_CHECKING:
    import numpy as np

    from pybridge.handoff.shm import Segment

__all__ = ["band_view", "fill_parts", "read_parts", "read_parts_to_file", "store_parts",
           "write_parts", "write_parts_from", "zarr_read"]

_SEGMENTS: OrderedDict[str, Segment] = OrderedDict()
#: Mappings kept between tasks (band buffers are reused by the sidecar, so
#: their paths recur); old ones are closed beyond either limit.
_SEGMENT_CACHE_SIZE = 8
_SEGMENT_CACHE_BYTES = 96 << 20


def _segment(path: str, keep: bool) -> Segment:
    from pybridge.handoff.shm import Segment

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

        from pybridge.zarr.chunk_codecs import checked_store
        from pybridge.zarr.kv import confined_local_store

        doc = json.loads(spec.meta_json)
        store = checked_store(confined_local_store(spec.root, spec.roots, not writable,
                                                   chunk_limit(spec)), doc)
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

    A sharded array with a :class:`~pybridge.zarr.shards.ShardLayout` is
    read by hand, shard by shard (:func:`~pybridge.zarr.shards.fill_shard`);
    other ``"zarr"``-engine arrays through zarr-python.
    """
    if spec.shard is not None:
        from pybridge.zarr.shards import fill_shard

        for p in parts:
            fill_shard(out[_out_slices(p)], spec, p)
        return len(parts)
    if spec.engine == "zarr":
        z = _zarr_array(spec, writable=False)
        for p in parts:
            out[_out_slices(p)] = zarr_read(z, spec, p)
        return len(parts)
    direct = can_decode_into(spec, out.dtype)
    grid = spec.grid if spec.grid else (1,)
    limit = chunk_limit(spec)
    for p in parts:
        dst = out[_out_slices(p)]
        path = spec.chunk_path(p.coords)
        raw = read_chunk_file(path, limit)
        if raw is None:
            dst[...] = spec.fill
            continue
        try:
            if direct and p.hi == grid and p.full and dst.flags.c_contiguous:
                decode_chunk(spec, raw, into=dst)
                continue
            chunk = _reshape_0d(spec, decode_chunk(spec, raw, reuse=True))
        except BridgeError as e:
            blame_chunk(e, spec, p.coords)
            raise
        dst[...] = chunk[_slices(p.lo, p.hi)]
    return len(parts)


def zarr_read(z: Any, spec: ChunkSpec, part: ChunkPart) -> Any:
    """zarr-python's read (through ``z``) of the piece ``part`` of one chunk.

    The metadata was read already, so anything but a store or a memory
    error means that the chunk cannot be decoded: :class:`DecodeFailed`
    naming it.
    """
    try:
        return z[_array_box(spec, part) if spec.grid else ()]
    except BridgeError as e:
        blame_chunk(e, spec, part.coords)
        raise
    except (OSError, MemoryError):
        raise
    except Exception as e:  # zarr-python and numcodecs raise many kinds
        err = DecodeFailed(f"cannot decode chunk: {type(e).__name__}: {e}")
        blame_chunk(err, spec, part.coords)
        raise err from e


def _check_chunk_decodes(spec: ChunkSpec, part: ChunkPart) -> None:
    """Read the whole chunk (or shard) of ``part``; :class:`DecodeFailed` when
    it cannot be decoded.

    zarr-python's partial writes read the chunk first: when one fails, this
    tells a stored chunk that cannot be read (``decode_failed``, naming it)
    from any other failure (which the caller re-raises).
    """
    import numpy as np

    hi = tuple(min(g, n - i * g) for i, g, n in zip(part.coords, spec.grid, spec.shape))
    whole = ChunkPart(part.coords, (0,) * len(hi), hi, (0,) * len(hi), True)
    if spec.shard is not None:
        from pybridge.zarr.shards import fill_shard

        fill_shard(np.empty(hi, dtype=out_dtype(spec.dtype)), spec, whole)
        return
    zarr_read(_zarr_array(spec, writable=False), spec, whole)


def store_parts(src: np.ndarray, spec: ChunkSpec, parts: Sequence[ChunkPart]) -> int:
    """Write ``parts`` from ``src`` (the band) into the chunks. Returns chunks written."""
    import numpy as np

    if spec.engine == "zarr":
        z = None
        by_hand = getattr(spec, "shard", None) is not None
        for p in parts:
            if by_hand and p.full:
                _store_shard(src[_out_slices(p)], spec, p)
                continue
            if z is None:
                z = _zarr_array(spec, writable=True)
            value = np.ascontiguousarray(src[_out_slices(p)])
            try:
                if spec.grid:
                    z[_array_box(spec, p)] = value
                else:
                    z[()] = value.reshape(())
            except BridgeError as e:
                blame_chunk(e, spec, p.coords)
                raise
            except (OSError, MemoryError):
                raise
            except Exception:
                _check_chunk_decodes(spec, p)  # a stored chunk that cannot be read is to blame
                raise
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
            raw = read_chunk_file(path, chunk_limit(spec))
            if raw is None:
                chunk = np.full(grid, spec.fill, dtype=native)
            else:
                try:
                    chunk = np.array(_reshape_0d(spec, decode_chunk(spec, raw, reuse=True)),
                                     dtype=native, copy=True)
                except BridgeError as e:
                    blame_chunk(e, spec, p.coords)
                    raise
        if not (p.full and tuple(p.hi) == grid):
            chunk[region] = src[_out_slices(p)]
        if _maybe_fill(chunk, spec.fill) and is_fill(chunk, spec.fill):
            remove_chunk_file(path)
            continue
        write_chunk_file(path, encode_chunk(spec, chunk.reshape(spec.grid)))
        written += 1
    return written


def _store_shard(region: np.ndarray, spec: ChunkSpec, part: ChunkPart) -> None:
    """Write one whole shard by hand (``spec.shard`` says how it is laid out).

    ``region`` is the shard's data as far as the array extends; past the
    edge the shard is padded with the fill value. Each inner chunk is encoded
    with the inner codecs; inner chunks that are all fill value are not
    stored, and a shard with none left is deleted, as zarr-python does
    (``write_empty_chunks=False``). The inner chunks are stored in C order
    of the shard's inner grid, followed (or preceded) by the index: an
    (offset, nbytes) pair per inner chunk, then its CRC-32C when the index
    codecs say so. A shard that is only partly written goes through
    zarr-python instead (see :func:`store_parts`).
    """
    import itertools
    import struct

    import numpy as np

    from pybridge.zarr.shards import EMPTY

    layout = spec.shard
    assert layout is not None
    grid = tuple(spec.grid)
    if region.shape != grid:  # an edge shard
        shard = np.full(grid, spec.fill, dtype=region.dtype)
        shard[tuple(slice(0, n) for n in region.shape)] = region
    else:
        shard = region
    per = layout.per_shard(grid)
    count = product(per)
    index = np.full((count, 2), EMPTY, dtype=layout.index_dtype)
    pieces: list[bytes] = []
    offset = 0 if layout.index_at_end else layout.index_nbytes(count)
    try:
        for k, idx in enumerate(itertools.product(*(range(n) for n in per))):
            box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, layout.chunks))
            inner = shard[box]
            if layout.transpose is not None:
                inner = inner.transpose(layout.transpose)
            inner = np.ascontiguousarray(inner)
            if _maybe_fill(inner, spec.fill) and is_fill(inner, spec.fill):
                continue
            data = encode_chunk(layout.inner, inner)
            index[k] = (offset, len(data))
            offset += len(data)
            pieces.append(data)
    except BridgeError as e:
        e.details.setdefault("chunk", spec.chunk_name(part.coords))
        raise
    path = spec.chunk_path(part.coords)
    if not pieces:
        remove_chunk_file(path)
        return
    head = index.tobytes()
    if layout.index_crc:
        import google_crc32c

        head += struct.pack("<I", google_crc32c.value(head))
    if layout.index_at_end:
        pieces.append(head)
    else:
        pieces.insert(0, head)
    write_chunk_file(path, b"".join(pieces))


def _maybe_fill(chunk: np.ndarray, fill: Any) -> bool:
    """False when the chunk's first element already differs from the fill
    value (then the whole-chunk check of :func:`is_fill` is not needed)."""
    return chunk.size == 0 or is_fill(chunk.reshape(-1)[:1], fill)


def read_parts(payload: Any, spec: ChunkSpec, seg_path: str, offset: int,
               band_shape: Sequence[int], parts: Sequence[ChunkPart], keep: bool) -> int:
    """Worker entry: decode ``parts`` into the band at ``offset`` of a segment."""
    return _on_band(seg_path, offset, band_shape, spec, keep,
                    lambda band: fill_parts(band, spec, parts))


def _store_error(e: OSError) -> NoReturn:
    """Raise StoreError for an OSError from store I/O, unless it is a
    BridgeError already (some are OSErrors too): then re-raise it as it is."""
    if isinstance(e, BridgeError):
        raise e
    from pybridge.zarr.oserrors import file_error, reason

    if e.filename is None:
        raise StoreError(f"store I/O failed: {reason(e)}") from e
    raise file_error(e, "access", os.fsdecode(e.filename)) from e


#: A worker keeps its band buffer for the next task up to this size.
_BAND_KEEP_BYTES = 64 << 20
_band_buffer = bytearray()


def read_parts_to_file(payload: Any, spec: ChunkSpec, path: str, offset: int,
                       band_shape: Sequence[int], parts: Sequence[ChunkPart]) -> int:
    """Worker entry: decode ``parts`` (which fill the band) and write the band
    at ``offset`` of the file at ``path`` (a handoff segment).

    The band is decoded into a buffer this worker reuses and written with
    ``pwrite``: the segment's fresh pages are then filled by the kernel,
    which costs less than faulting them in one by one through a mapping.
    Returns chunks read.
    """
    global _band_buffer
    nbytes = product(band_shape) * out_dtype(spec.dtype).itemsize
    if nbytes > _BAND_KEEP_BYTES:
        buf = bytearray(nbytes)
    else:
        if len(_band_buffer) < nbytes:
            _band_buffer = bytearray(nbytes)
        buf = _band_buffer
    view = memoryview(buf)[:nbytes]
    try:
        band = band_view(view, 0, band_shape, spec.dtype)
        try:
            count = fill_parts(band, spec, parts)
        finally:
            del band
        from pybridge.handoff.shm import pwrite_all

        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            pwrite_all(fd, view, offset)
        finally:
            os.close(fd)
        return count
    except OSError as e:
        _store_error(e)
    finally:
        view.release()


def write_parts(payload: Any, spec: ChunkSpec, seg_path: str, offset: int,
                band_shape: Sequence[int], parts: Sequence[ChunkPart], keep: bool) -> int:
    """Worker entry: encode ``parts`` of the band at ``offset`` and write them."""
    return _on_band(seg_path, offset, band_shape, spec, keep,
                    lambda band: store_parts(band, spec, parts))


def write_parts_from(payload: Any, spec: ChunkSpec, path: str, nbytes: int, offset: int,
                     band_shape: Sequence[int], parts: Sequence[ChunkPart]) -> int:
    """Worker entry: encode ``parts`` of the band at ``offset`` of an upload
    handoff file (``nbytes`` long) and write them.

    The file is the client's: it is opened read-only without following a
    symlink, its size is checked again, and only the band's pages are mapped.
    """
    import mmap
    import stat

    from pybridge.errors import DataSizeMismatch, InvalidParams

    band_bytes = product(band_shape) * out_dtype(spec.dtype).itemsize
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:  # the client removed or replaced it meanwhile
        raise InvalidParams(f"cannot open the upload file {path}: {e.strerror or e}",
                            param="shm", expected="a readable regular file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidParams(f"the upload file {path} is not a regular file", param="shm",
                                expected="a regular file")
        if st.st_size != nbytes or offset + band_bytes > nbytes:
            raise DataSizeMismatch(f"the upload file {path} holds {st.st_size} bytes, "
                                   f"{nbytes} were declared", expected=nbytes, got=st.st_size)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(fd, offset + band_bytes - start, access=mmap.ACCESS_READ, offset=start)
    finally:
        os.close(fd)
    try:
        band = band_view(mm, offset - start, band_shape, spec.dtype)
        try:
            return store_parts(band, spec, parts)
        finally:
            del band
    except OSError as e:
        _store_error(e)
    finally:
        try:
            mm.close()
        except BufferError:
            pass  # a view is still exported; the GC unmaps it


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
        _store_error(e)
    finally:
        if not keep:
            seg.close()
