"""Chunk files, decoded and encoded by hand with numcodecs.

This module runs in the workers (and in the sidecar's handler threads for
small requests). It knows one array through a :class:`ChunkSpec`, a small
picklable description built by :mod:`pybridge.arrays.metadata`:

- engine ``"v2"``: Zarr v2 chunks, ``filters`` then ``compressor``, exactly
  as zarr-python's ``V2Codec`` does it;
- engine ``"v3"``: a Zarr v3 pipeline of the simple kind: optional
  dtype-preserving array-to-array numcodecs, the ``bytes`` codec, then
  bytes-to-bytes codecs (``gzip``, ``zstd``, ``blosc``, ``crc32c`` and the
  ``numcodecs.*`` ones);
- engine ``"zarr"``: anything else (sharding, transpose, ...): zarr-python
  itself reads and writes the region, inside the worker.

Chunk files are read straight from the filesystem and written atomically (a
temporary file in the same directory, then :func:`os.replace`).
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybridge.arrays.chunks import chunk_key
from pybridge.errors import DecodeFailed, EncodeFailed, StoreError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ChunkSpec",
    "can_decode_into",
    "decode_chunk",
    "encode_chunk",
    "is_fill",
    "read_chunk_file",
    "remove_chunk_file",
    "write_chunk_file",
]

#: ``id`` used in :attr:`ChunkSpec.compressors` for the v3 ``crc32c`` codec.
CRC32C = "zarr.crc32c"


@dataclass(frozen=True)
class ChunkSpec:
    """What a worker needs to know to read and write an array's chunks.

    ``grid`` is the shape of one stored object (the shard shape for a
    sharded array, else the chunk shape). ``dtype`` is the stored dtype
    string, with its byte order (``"<f8"``, ``">i4"``, ``"|b1"``). ``fill``
    is the fill value that missing chunks read as (never None).
    ``filters`` are numcodecs configs applied first on encode (v2 filters,
    v3 array-to-array codecs); ``compressors`` the bytes stage in encode
    order (v2: the compressor alone; v3: the bytes-to-bytes codecs).
    ``token`` identifies the codec setup, for caches.
    """

    dir: str
    root: str
    path: str
    zarr_format: int
    signature: tuple[Any, ...]
    engine: str
    shape: tuple[int, ...]
    grid: tuple[int, ...]
    dtype: str
    order: str
    fill: Any
    key_encoding: str
    separator: str
    filters: tuple[dict[str, Any], ...]
    compressors: tuple[dict[str, Any], ...]
    token: str

    def chunk_path(self, index: tuple[int, ...]) -> str:
        """The chunk's file (``index`` may carry the 0-d array's extra axis)."""
        key = chunk_key(index[:len(self.grid)], self.key_encoding, self.separator)
        return os.path.join(self.dir, *key.split("/"))

    def chunk_name(self, index: tuple[int, ...]) -> str:
        return chunk_key(index[:len(self.grid)], self.key_encoding, self.separator)


# -- per-thread state -------------------------------------------------------
# Workers run one task at a time, but the sidecar's handler threads also run
# small requests in place, concurrently: codec instances and scratch buffers
# are therefore kept per thread.

_local = threading.local()
_CODEC_CACHE_SIZE = 32


class _Crc32c:
    """The v3 ``crc32c`` codec: a little-endian CRC-32C after the data."""

    def encode(self, buf: Any) -> bytes:
        import google_crc32c

        data = bytes(buf)
        return data + struct.pack("<I", google_crc32c.value(data))

    def decode(self, buf: Any) -> memoryview:
        import google_crc32c

        mv = memoryview(buf).cast("B")
        if len(mv) < 4:
            raise ValueError("chunk shorter than its crc32c checksum")
        body = mv[:-4]
        stored = struct.unpack("<I", mv[-4:])[0]
        if google_crc32c.value(bytes(body)) != stored:
            raise ValueError("crc32c checksum mismatch")
        return body


def _codecs(spec: ChunkSpec) -> tuple[list[Any], list[Any]]:
    """The (filters, compressors) codec instances for ``spec``."""
    cache: OrderedDict[str, tuple[list[Any], list[Any]]] | None = getattr(_local, "codecs", None)
    if cache is None:
        cache = _local.codecs = OrderedDict()
    hit = cache.get(spec.token)
    if hit is not None:
        cache.move_to_end(spec.token)
        return hit
    import numcodecs

    filters = [numcodecs.get_codec(dict(c)) for c in spec.filters]
    compressors = [_Crc32c() if c.get("id") == CRC32C else numcodecs.get_codec(dict(c))
                   for c in spec.compressors]
    cache[spec.token] = (filters, compressors)
    if len(cache) > _CODEC_CACHE_SIZE:
        cache.popitem(last=False)
    return filters, compressors


# -- decode / encode -------------------------------------------------------

def _scratch(nbytes: int) -> Any:
    """A reusable uint8 buffer of ``nbytes`` (one per size, per thread)."""
    buffers: dict[int, Any] | None = getattr(_local, "scratch", None)
    if buffers is None:
        buffers = _local.scratch = {}
    buf = buffers.get(nbytes)
    if buf is None:
        import numpy as np

        if len(buffers) >= 4 or sum(b.nbytes for b in buffers.values()) > 64 << 20:
            buffers.clear()
        buf = buffers[nbytes] = np.empty(nbytes, dtype="u1")
    return buf


def can_decode_into(spec: ChunkSpec, out_dtype: np.dtype[Any]) -> bool:
    """Whether :func:`decode_chunk` can write a whole chunk straight into
    a C-contiguous region of an output of ``out_dtype`` (no filters, C order,
    same byte order, a codec that decodes into a buffer)."""
    import numpy as np

    return (spec.engine in ("v2", "v3") and not spec.filters and bool(spec.compressors)
            and spec.compressors[0].get("id") != CRC32C
            and (spec.order == "C" or len(spec.grid) <= 1)
            and np.dtype(spec.dtype) == out_dtype)


def decode_chunk(spec: ChunkSpec, raw: Any, reuse: bool = False,
                 into: np.ndarray | None = None) -> np.ndarray:
    """Decode one stored chunk into an array of shape ``spec.grid``.

    The result has the stored dtype (its byte order included) and may be
    read-only. With ``reuse`` it may be a view of a scratch buffer that the
    next call overwrites (the caller copies what it needs first). With
    ``into`` (a C-contiguous array of the chunk's size, only when
    :func:`can_decode_into`) the chunk is decoded straight into it. Raises
    :class:`DecodeFailed` on corrupt input.
    """
    import numpy as np
    from numcodecs.compat import ensure_ndarray_like

    filters, compressors = _codecs(spec)
    dtype = np.dtype(spec.dtype)
    try:
        data: Any = raw
        last = len(compressors) - 1
        for i, c in enumerate(reversed(compressors)):
            if i == last and into is not None:
                data = c.decode(data, out=into.reshape(-1).view("u1"))
                return into
            if i == last and reuse and not filters and not isinstance(c, _Crc32c):
                # the final step decodes straight into a reused buffer
                data = c.decode(data, out=_scratch(_nbytes(spec.grid, dtype.itemsize)))
            else:
                data = c.decode(data)
        if spec.engine == "v2":
            for f in reversed(filters):
                data = f.decode(data)
            arr = ensure_ndarray_like(data).view(dtype)
            arr = arr.reshape(-1, order="A").reshape(spec.grid, order=spec.order)
        else:
            arr = np.frombuffer(data, dtype=dtype).reshape(spec.grid)
            if filters:
                native = dtype.newbyteorder("=")
                arr = arr.astype(native, copy=False)
                for f in reversed(filters):
                    arr = np.asarray(f.decode(arr)).reshape(spec.grid)
    except Exception as e:  # numcodecs raises many kinds
        raise DecodeFailed(f"cannot decode chunk: {type(e).__name__}: {e}") from e
    out: np.ndarray = arr
    return out


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    n = itemsize
    for x in shape:
        n *= x
    return n


def encode_chunk(spec: ChunkSpec, arr: np.ndarray) -> bytes:
    """Encode one chunk (an array of shape ``spec.grid``) to stored bytes."""
    import numpy as np
    from numcodecs.compat import ensure_bytes

    filters, compressors = _codecs(spec)
    dtype = np.dtype(spec.dtype)
    try:
        data: Any
        if spec.engine == "v2":
            data = arr.astype(dtype, order=spec.order, copy=False)  # type: ignore[call-overload]
            for f in filters:
                data = f.encode(data)
        else:
            data = np.ascontiguousarray(arr)
            if filters:
                data = data.astype(dtype.newbyteorder("="), copy=False)
                for f in filters:
                    data = np.asarray(f.encode(data))
            data = np.ascontiguousarray(data.astype(dtype, copy=False)).reshape(-1).view("u1")
        for c in compressors:
            data = c.encode(data)
        encoded: bytes = ensure_bytes(data)
        return encoded
    except Exception as e:
        raise EncodeFailed(f"cannot encode chunk: {type(e).__name__}: {e}") from e


def is_fill(arr: np.ndarray, fill: Any) -> bool:
    """Whether every element equals the fill value (zarr-python's rule).

    NaN equals NaN; a float fill of 0.0 compares bit patterns, so -0.0
    is kept as data.
    """
    import numpy as np

    if arr.dtype.kind == "f" and fill == 0.0:
        void = f"V{arr.dtype.itemsize}"
        zero = np.zeros((), dtype=arr.dtype)
        return bool(np.all(np.ascontiguousarray(arr).view(void) == zero.view(void)))
    if arr.dtype.kind in "fc":
        return bool(np.array_equal(arr, np.broadcast_to(np.asarray(fill, arr.dtype), arr.shape),
                                   equal_nan=True))
    return bool(np.all(arr == np.asarray(fill, arr.dtype)))


# -- chunk files -----------------------------------------------------------

_tmp_counter = itertools.count()


def read_chunk_file(path: str) -> bytes | None:
    """The stored bytes of a chunk, or None when the chunk is missing."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read chunk {path!r}: {e.strerror or e}", path=path) from e


def write_chunk_file(path: str, data: bytes) -> None:
    """Write a chunk atomically: a temporary file, then a rename."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    try:
        os.makedirs(d, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StoreError(f"cannot write chunk {path!r}: {e.strerror or e}", path=path) from e


def remove_chunk_file(path: str) -> None:
    """Delete a chunk (it then reads as the fill value). Missing is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StoreError(f"cannot delete chunk {path!r}: {e.strerror or e}", path=path) from e
