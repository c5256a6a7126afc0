"""Array operations beyond read and write: resize, append, raw chunk access.

- :func:`resize` and :func:`append` change the shape through zarr-python
  (chunks wholly outside a smaller shape are deleted, as zarr-python does);
  ``append`` checks the data's size first, grows the array, writes the new
  part through the usual write path, and shrinks the array back if that
  write fails. Both run under the array's exclusive extent lock
  (:mod:`pybridge.zarr.extent`, taken by the handlers), on metadata read
  under it, so appends through one sidecar never overlap; an append reports
  the box it wrote (:class:`Appended`).
- :func:`chunk_keys`, :func:`read_chunk_raw` and :func:`write_chunk_raw`
  give a client its stored chunk (or shard) bytes as they are, for an
  implementation of its own. Keys are relative to the array and must be
  keys of its chunk key encoding; a raw write is atomic and holds the
  chunk's lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybridge.errors import (
    Conflict,
    DataSizeMismatch,
    InvalidParams,
    InvalidSelection,
    NotFound,
    StoreError,
)
from pybridge.zarr.chunk_codecs import chunk_limit
from pybridge.zarr.chunk_tasks import out_dtype
from pybridge.zarr.documents import METADATA_KEYS, join
from pybridge.zarr.metadata import ArrayMeta, MetadataCache, open_meta, zarr_array
from pybridge.zarr.write import write_array

if TYPE_CHECKING:
    from pybridge.rpc.call import Call
    from pybridge.zarr.kv import KV

__all__ = ["Appended", "append", "chunk_keys", "parse_chunk_key", "read_chunk_raw", "resize",
           "stats",
           "write_chunk_raw"]

_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")


def _check_shape(meta: ArrayMeta, shape: Sequence[int], param: str) -> tuple[int, ...]:
    if len(shape) != len(meta.shape):
        raise InvalidSelection(f"{param} has {len(shape)} dimensions, the array has "
                               f"{len(meta.shape)}", param=param, ndim=len(meta.shape))
    if any(n < 0 for n in shape):
        raise InvalidSelection(f"negative extent in {param}", param=param)
    return tuple(shape)


def resize(meta: ArrayMeta, kv: KV, shape: Sequence[int], allow_pickle: bool,
           cache: MetadataCache | None = None) -> ArrayMeta:
    """Give the array ``shape``; returns the new metadata.

    ``meta`` must be current: read under the array's exclusive extent lock
    (:mod:`pybridge.zarr.extent`), which the caller holds.
    """
    new = _check_shape(meta, shape, "shape")
    if new != meta.shape:
        try:
            zarr_array(meta, kv).resize(new)
        except OSError as e:
            raise StoreError(f"cannot resize the array: {e}", path=meta.ref.path) from e
    return _reopen(meta, kv, allow_pickle, cache)


def _reopen(meta: ArrayMeta, kv: KV, allow_pickle: bool,
            cache: MetadataCache | None) -> ArrayMeta:
    if cache is not None:
        cache.forget(meta.ref)
    return open_meta(meta.ref, allow_pickle, kv, fresh=True, cache=cache)


@dataclass(frozen=True)
class Appended:
    """What an append did: the array's metadata after it, and the box
    ``[start, stop)`` it wrote."""

    meta: ArrayMeta
    start: tuple[int, ...]
    stop: tuple[int, ...]


def append(call: Call, meta: ArrayMeta, kv: KV, axis: int, shape: Sequence[int], data: Any,
           values: list[Any] | None, allow_pickle: bool,
           pieces: Iterable[Any] | None = None) -> Appended:
    """Append a block of ``shape`` along ``axis``: grow the array, write the
    block at the old end, and shrink the array back if that write fails.

    ``meta`` must be current and the caller must hold the array's exclusive
    extent lock (:mod:`pybridge.zarr.extent`) until this returns, so that
    no other request of this sidecar changes the shape in between.
    ``pieces`` is the upload when the caller took it already. Raises
    :class:`Conflict` when the shape is found changed by someone else.
    """
    ndim = len(meta.shape)
    if ndim == 0:
        raise InvalidParams("a 0-d array cannot be appended to", param="axis",
                            expected="an array with dimensions")
    if not -ndim <= axis < ndim:
        raise InvalidParams(f"axis {axis} is out of range for {ndim} dimensions",
                            param="axis", expected=f"int in [{-ndim}, {ndim})")
    axis %= ndim
    block = _check_shape(meta, shape, "shape")
    for d in range(ndim):
        if d != axis and block[d] != meta.shape[d]:
            raise InvalidSelection(f"the data's extent {block[d]} in dimension {d} differs "
                                   f"from the array's {meta.shape[d]}", param="shape",
                                   dimension=d)
    if pieces is None:
        _check_size(call, meta, block, data, values)
    old = meta.shape
    grown = tuple(n + block[d] if d == axis else n for d, n in enumerate(old))
    start = tuple(old[d] if d == axis else 0 for d in range(ndim))
    cache = call.context.metadata_cache
    new_meta = resize(meta, kv, grown, allow_pickle, cache)
    _check_extent(new_meta, old, grown, "growing it; nothing was written")
    try:
        write_array(call, new_meta, kv, start, block, data, values, pieces)
    except BaseException:
        _shrink_back(new_meta, kv, old, grown, allow_pickle, cache)
        raise
    done = _reopen(new_meta, kv, allow_pickle, cache)
    _check_extent(done, old, grown, f"writing its data at {list(start)}..{list(grown)}, "
                  "which may be lost")
    return Appended(done, start, grown)


def _check_extent(meta: ArrayMeta, old: tuple[int, ...], grown: tuple[int, ...],
                  during: str) -> None:
    """Raise :class:`Conflict` when the array's shape is not the one this append gave it."""
    if meta.shape != grown:
        raise Conflict(
            f"the array's extent changed during the append: this append grew it from "
            f"{list(old)} to {list(grown)}, and another process made it {list(meta.shape)} "
            f"while this append was {during}. Appends are serialized only inside one "
            "sidecar: append to one array through one sidecar at a time",
            path=meta.ref.path, expected_shape=list(grown), shape=list(meta.shape))


def _shrink_back(meta: ArrayMeta, kv: KV, old: tuple[int, ...], grown: tuple[int, ...],
                 allow_pickle: bool, cache: MetadataCache) -> None:
    """Undo a failed append's growth, unless someone else has changed the shape since."""
    try:
        current = _reopen(meta, kv, allow_pickle, cache)
        if current.shape == grown:
            resize(current, kv, old, allow_pickle, cache)
    except Exception:  # noqa: BLE001 - the append's own failure is the one to report
        pass


def _check_size(call: Call, meta: ArrayMeta, shape: Sequence[int], data: Any,
                values: list[Any] | None) -> None:
    n = 1
    for x in shape:
        n *= x
    if meta.variable:
        if values is None:
            raise InvalidParams(f"{meta.wire_dtype!r} data travel as 'values'",
                                param="values", expected="array of str or bin")
        if len(values) != n:
            raise DataSizeMismatch(f"{len(values)} values for a block of {n} elements",
                                   expected=n, got=len(values))
        return
    if values is not None:
        raise InvalidParams(f"{meta.wire_dtype!r} data travel as 'data' or 'stream'",
                            param="values", expected="absent")
    want = n * out_dtype(meta.spec.dtype).itemsize
    got = memoryview(data).nbytes if data is not None else call.upload_bytes
    if got is None:
        raise InvalidParams("give 'data', 'stream' or 'values'", param="data", expected="bin")
    if got != want:
        raise DataSizeMismatch(f"{got} bytes of data for a block of shape {list(shape)} "
                               f"({want} bytes)", expected=want, got=got)


# -- raw chunks ---------------------------------------------------------------

def parse_chunk_key(meta: ArrayMeta, key: str) -> tuple[int, ...]:
    """The grid coordinates a chunk key names (InvalidParams when it names none)."""
    spec = meta.spec
    ndim = len(spec.grid)
    bad = InvalidParams(f"{key!r} is not a chunk key of this array (encoding "
                        f"{spec.key_encoding!r}, separator {spec.separator!r}, {ndim} "
                        "dimensions)", param="key", expected="a chunk key")
    if spec.key_encoding == "default":
        if key == "c" and ndim == 0:
            return ()
        if not key.startswith("c" + spec.separator):
            raise bad
        parts = key[2:].split(spec.separator)
    else:
        if ndim == 0:
            if key != "0":
                raise bad
            return ()
        parts = key.split(spec.separator)
    if len(parts) != ndim or not all(_INDEX.match(p) for p in parts):
        raise bad
    return tuple(int(p) for p in parts)


def _grid_extent(meta: ArrayMeta) -> tuple[int, ...]:
    return tuple(-(-n // g) for n, g in zip(meta.spec.shape, meta.spec.grid))


def chunk_keys(meta: ArrayMeta, kv: KV) -> list[str]:
    """The stored chunk (or shard) keys of the array, relative to it, sorted."""
    prefix = meta.ref.path
    out = []
    for key in kv.keys_under(prefix):
        rel = key[len(prefix) + 1:] if prefix else key
        name = rel.rsplit("/", 1)[-1]
        if name in METADATA_KEYS or name.startswith("."):
            continue
        out.append(rel)
    return sorted(out)


def stats(meta: ArrayMeta, kv: KV) -> dict[str, int]:
    """How much of the array is stored, without reading any chunk.

    ``chunks_stored`` counts the stored chunk (shard) objects, ``chunks_total``
    the chunk (shard) grid's size, ``bytes_stored`` their stored sizes added up
    (metadata documents not included) and ``bytes`` the array's size in memory
    (0 for variable-length dtypes, which have none).
    """
    keys = chunk_keys(meta, kv)
    stored = 0
    for key in keys:
        size = kv.size(join(meta.ref.path, key))
        stored += size or 0
    total = 1
    for n in _grid_extent(meta):
        total *= n
    elements = 1
    for n in meta.spec.shape:
        elements *= n
    nbytes = 0 if meta.variable else elements * out_dtype(meta.spec.dtype).itemsize
    return {"chunks_stored": len(keys), "chunks_total": total, "bytes_stored": stored,
            "bytes": nbytes}


def read_chunk_raw(meta: ArrayMeta, kv: KV, key: str) -> bytes:
    """The stored bytes of the chunk ``key``; NotFound when it is not stored."""
    parse_chunk_key(meta, key)
    raw = kv.get(join(meta.ref.path, key), chunk_limit(meta.spec))
    if raw is None:
        raise NotFound(f"chunk {key!r} is not stored", path=meta.ref.path, chunk=key)
    return raw


def write_chunk_raw(call: Call, meta: ArrayMeta, kv: KV, key: str, data: bytes) -> None:
    """Store ``data`` as the chunk ``key`` (atomically), as it is."""
    coords = parse_chunk_key(meta, key)
    extent = _grid_extent(meta)
    if any(c >= e for c, e in zip(coords, extent)):
        raise InvalidSelection(f"chunk {key!r} is outside the chunk grid {list(extent)}",
                               param="key", grid=list(extent))
    locks = call.context.chunk_locks
    lock = locks.acquire([(meta.spec.dir, coords or (0,))])
    try:
        kv.set(join(meta.ref.path, key), bytes(data))
    finally:
        locks.release(lock)
