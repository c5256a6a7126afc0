"""Chunk files, decoded and encoded by hand with numcodecs.

This module runs in the workers (and in the sidecar's handler threads for
small requests). It knows one array through a :class:`ChunkSpec`, a small
picklable description built by :mod:`pybridge.zarr.metadata`:

- engine ``"v2"``: Zarr v2 chunks, ``filters`` then ``compressor``, exactly
  as zarr-python's ``V2Codec`` does it;
- engine ``"v3"``: a Zarr v3 pipeline of the simple kind: optional
  dtype-preserving array-to-array numcodecs, the ``bytes`` codec, then
  bytes-to-bytes codecs (``gzip``, ``zstd``, ``blosc``, ``crc32c`` and the
  ``numcodecs.*`` ones);
- engine ``"zarr"``: anything else (sharding, transpose, ...): zarr-python
  itself reads and writes the region, inside the worker. A sharded array
  whose inner chunks are of the simple v3 kind also carries a
  :class:`~pybridge.zarr.shards.ShardLayout`: its reads are done by hand
  (:mod:`pybridge.zarr.shards`), its writes by zarr-python.

Chunk files are read straight from the filesystem, through
:mod:`pybridge.zarr.files` (nothing but a regular file is read, and one
larger than its chunk can be is refused unread: :func:`chunk_limit`), and
written atomically (a temporary file in the same directory, then
:func:`os.replace`). When the
sidecar has allowed roots, each chunk file must resolve inside them (a
symlink inside the array pointing outside is ``forbidden_path``).
"""

from __future__ import annotations

import functools
import json
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from pybridge.codec_checks import HEADER_CHECKED, check_blosc_frame, decoded_size
from pybridge.errors import BridgeError, DecodeFailed, EncodeFailed
from pybridge.zarr.chunks import chunk_key
from pybridge.zarr.store import check_inside

if TYPE_CHECKING:
    import numpy as np

    from pybridge.zarr.shards import ShardLayout

__all__ = [
    "ChunkSpec",
    "blame_chunk",
    "can_decode_into",
    "chunk_limit",
    "decode_chunk",
    "dtype_token",
    "spec_dtype",
    "encode_chunk",
    "is_fill",
]

#: ``id`` used in :attr:`ChunkSpec.compressors` for the v3 ``crc32c`` codec.
CRC32C = "zarr.crc32c"
#: Codecs whose output lands in a plain byte buffer (others, such as
#: ``zfpy`` and ``pcodec``, decode to a typed array of their own): straight
#: from ``decode(buf, out=...)`` for :data:`HEADER_CHECKED`, copied in after
#: its size is checked for the rest (see :func:`_decode_exact`).
DECODES_INTO = frozenset({"zlib", "gzip", "bz2", "lzma", "lz4", "zstd", "blosc"})


@dataclass(frozen=True)
class ChunkSpec:
    """What a worker needs to know to read and write an array's chunks.

    ``grid`` is the shape of one stored object (the shard shape for a
    sharded array, else the chunk shape). ``dtype`` is the stored dtype as a
    :func:`dtype_token`, with its byte order (``"<f8"``, ``">i4"``,
    ``"|b1"``, or a JSON ``descr`` for a structured dtype). ``fill``
    is the fill value that missing chunks read as (never None).
    ``filters`` are numcodecs configs applied first on encode (v2 filters,
    v3 array-to-array codecs); ``compressors`` the bytes stage in encode
    order (v2: the compressor alone; v3: the bytes-to-bytes codecs).
    ``token`` identifies the codec setup, for caches. ``roots`` are the
    allowed roots (resolved; empty when unconfined) and ``meta_json`` the
    array's metadata document, for zarr-python in the workers. ``shard``,
    for an engine ``"zarr"`` sharded array, says how to read its shards by
    hand (None: zarr-python reads them).
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
    roots: tuple[str, ...] = ()
    meta_json: str = "{}"
    shard: ShardLayout | None = None

    def chunk_path(self, index: tuple[int, ...]) -> str:
        """The chunk's file (``index`` may carry the 0-d array's extra axis).

        Raises ``ForbiddenPath`` when it resolves outside the allowed roots.
        """
        key = chunk_key(index[:len(self.grid)], self.key_encoding, self.separator)
        path = os.path.join(self.dir, *key.split("/"))
        check_inside(path, self.roots)
        return path

    def chunk_name(self, index: tuple[int, ...]) -> str:
        return chunk_key(index[:len(self.grid)], self.key_encoding, self.separator)


def dtype_token(dtype: np.dtype[Any]) -> str:
    """A str that :func:`spec_dtype` turns back into ``dtype`` (byte order kept)."""
    if dtype.fields is not None:
        return json.dumps(dtype.descr)
    return str(dtype.str)


def _descr(items: Any) -> Any:
    if isinstance(items, str):
        return items
    return [(f[0], _descr(f[1]), *(tuple(x) if isinstance(x, list) else x for x in f[2:]))
            for f in items]


@functools.lru_cache(maxsize=256)
def spec_dtype(token: str) -> np.dtype[Any]:
    """The numpy dtype of a :func:`dtype_token`."""
    import numpy as np

    dtype: np.dtype[Any] = np.dtype(_descr(json.loads(token)) if token.startswith("[") else token)
    return dtype


# -- per-thread state -------------------------------------------------------
# Workers run one task at a time, but the sidecar's handler threads also run
# small requests in place, concurrently: scratch buffers are therefore kept
# per thread. Codec instances are shared, as the codec tasks share them.

_local = threading.local()
_CHAINS_PER_THREAD = 32


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
    """The (filters, compressors) codec instances for ``spec``.

    The instances come from the sidecar's one codec cache
    (:func:`pybridge.codecs.stored_codec`); this per-thread table only
    remembers which ones a spec's token names, so that a chunk costs one
    dict lookup, not a key built from each config.
    """
    chains: OrderedDict[str, tuple[list[Any], list[Any]]] | None = getattr(_local, "chains", None)
    if chains is None:
        chains = _local.chains = OrderedDict()
    hit = chains.get(spec.token)
    if hit is not None:
        chains.move_to_end(spec.token)
        return hit
    from pybridge.codecs import stored_codec

    filters = [stored_codec(c) for c in spec.filters]
    compressors = [_Crc32c() if c.get("id") == CRC32C else stored_codec(c)
                   for c in spec.compressors]
    chains[spec.token] = (filters, compressors)
    if len(chains) > _CHAINS_PER_THREAD:
        chains.popitem(last=False)
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
    return (spec.engine in ("v2", "v3") and not spec.filters and bool(spec.compressors)
            and spec.compressors[0].get("id") in DECODES_INTO
            and (spec.order == "C" or len(spec.grid) <= 1)
            and spec_dtype(spec.dtype) == out_dtype)


def decode_chunk(spec: ChunkSpec, raw: Any, reuse: bool = False,
                 into: np.ndarray | None = None) -> np.ndarray:
    """Decode one stored chunk into an array of shape ``spec.grid``.

    The result has the stored dtype (its byte order included) and may be
    read-only. With ``reuse`` it may be a view of a scratch buffer that the
    next call overwrites (the caller copies what it needs first). With
    ``into`` (a C-contiguous array of the chunk's size, only when
    :func:`can_decode_into`) the chunk is decoded straight into it.

    A chunk must decode to exactly the bytes a chunk holds: a decode into a
    buffer (``into`` or the scratch buffer) is made only when the codec's
    frame announces that size and the codec checks its output against it,
    otherwise the codec decodes on its own and its result is measured first
    (:func:`_decode_exact`). Raises :class:`DecodeFailed` on corrupt input,
    including a chunk that decodes to fewer or more bytes.
    """
    import numpy as np

    filters, compressors = _codecs(spec)
    dtype = spec_dtype(spec.dtype)
    expected = _nbytes(spec.grid, dtype.itemsize)
    try:
        data: Any = raw
        last = len(compressors) - 1
        for i, c in enumerate(reversed(compressors)):
            cid = spec.compressors[last - i].get("id")
            if cid == "blosc":
                check_blosc_frame(data)
            if i == last and into is not None:
                _decode_exact(c, cid, data, into.reshape(-1).view("u1"))
                return into
            if i == last and reuse and not filters and cid in DECODES_INTO:
                # the final step decodes straight into a reused buffer
                data = _decode_exact(c, cid, data, _scratch(expected))
            else:
                data = c.decode(data)
        if spec.engine == "v2":
            arr = _v2_unfilter(spec, filters, data, dtype, expected)
        else:
            _check_size(_byte_size(data), expected)
            arr = np.frombuffer(data, dtype=dtype).reshape(spec.grid)
            if filters:
                native = dtype.newbyteorder("=")
                arr = arr.astype(native, copy=False)
                for f in reversed(filters):
                    arr = np.asarray(f.decode(arr)).reshape(spec.grid)
    except _SizeMismatch as e:
        raise DecodeFailed(f"cannot decode chunk: {e}", decoded_bytes=e.got,
                           expected_bytes=e.expected) from None
    except Exception as e:  # numcodecs raises many kinds
        raise DecodeFailed(f"cannot decode chunk: {type(e).__name__}: {e}") from e
    out: np.ndarray = arr
    return out


def _v2_unfilter(spec: ChunkSpec, filters: list[Any], data: Any, dtype: np.dtype[Any],
                 expected: int) -> np.ndarray:
    """A v2 chunk's decompressed bytes through its filters, as an array of ``spec.grid``."""
    from numcodecs.compat import ensure_ndarray_like

    for f in reversed(filters):
        data = f.decode(data)
    flat = ensure_ndarray_like(data)
    _check_size(flat.nbytes, expected)
    arr: np.ndarray = flat.view(dtype)
    order = cast(Literal["C", "F"], spec.order)
    shaped: np.ndarray = arr.reshape(-1, order="A").reshape(tuple(spec.grid), order=order)
    return shaped


class _SizeMismatch(ValueError):
    """A chunk decoded (or announced that it decodes) to the wrong number of bytes."""

    def __init__(self, got: int, expected: int, announced: bool = False) -> None:
        what = "its frame header announces" if announced else "it decoded to"
        super().__init__(f"{what} {got} bytes, a chunk holds {expected}")
        self.got = got
        self.expected = expected


def _check_size(got: int, expected: int) -> None:
    if got != expected:
        raise _SizeMismatch(got, expected)


def _byte_size(data: Any) -> int:
    """The size in bytes of a codec's output (bytes, memoryview or array)."""
    nbytes = getattr(data, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    return memoryview(data).nbytes


def _decode_exact(codec: Any, cid: str | None, data: Any, out: np.ndarray) -> np.ndarray:
    """Decode ``data`` into ``out`` (uint8), proving that it fills ``out`` exactly.

    numcodecs' ``decode(buf, out=...)`` hands back all of ``out`` however
    little it wrote (gzip even decodes a short stream into it without a
    word), so what the buffer held before would pass for chunk data. A codec
    of :data:`HEADER_CHECKED` decodes into ``out`` only when its frame
    announces exactly ``out.nbytes`` (another announced size is refused); any
    other codec, or a frame that announces nothing, decodes on its own and
    its output is measured before it is copied in.
    """
    from numcodecs.compat import ensure_contiguous_ndarray

    expected = out.nbytes
    if cid in HEADER_CHECKED:
        announced = decoded_size(cid, data)
        if announced is not None:
            if announced != expected:
                raise _SizeMismatch(announced, expected, announced=True)
            codec.decode(data, out=out)
            return out
    got = ensure_contiguous_ndarray(codec.decode(data)).reshape(-1).view("u1")
    _check_size(got.nbytes, expected)
    out[...] = got
    return out


def blame_chunk(e: BridgeError, spec: ChunkSpec, index: tuple[int, ...]) -> None:
    """Name the chunk at ``index`` of ``spec``'s array in the error ``e``.

    Sets ``details.chunk`` (the chunk's key; for a sharded array the shard's,
    with ``details.inner`` already set by the shard reader) and
    ``details.path`` (the array's path in its store) unless they are set,
    and, for a :class:`DecodeFailed`, says both in the message.
    """
    if "chunk" in e.details:
        return
    key = spec.chunk_name(index)
    e.details["chunk"] = key
    e.details.setdefault("path", spec.path)
    if isinstance(e, DecodeFailed):
        inner = e.details.get("inner")
        what = f"inner chunk {inner} of shard {key!r}" if inner is not None else f"chunk {key!r}"
        e.message = f"{e.message} ({what} of the array at path {spec.path!r} of {spec.root!r})"
        e.args = (e.message,)


def blosc_outermost(doc: dict[str, Any]) -> bool:
    """Whether every stored chunk of the array (metadata ``doc``) is a blosc frame."""
    if doc.get("zarr_format") == 2:
        comp = doc.get("compressor")
        return isinstance(comp, dict) and comp.get("id") == "blosc"
    codecs = doc.get("codecs") or []
    last = codecs[-1] if codecs else None
    return isinstance(last, dict) and last.get("name") == "blosc"


_CHECKED: Any = None


def checked_store(store: Any, doc: dict[str, Any]) -> Any:
    """``store`` for zarr-python, checking blosc frames first when the array's
    chunks are blosc frames (zarr-python's own decoding does not)."""
    global _CHECKED
    if not blosc_outermost(doc):
        return store
    if _CHECKED is None:
        from zarr.storage import WrapperStore

        class BloscCheckedStore(WrapperStore[Any]):
            async def get(self, key: str, prototype: Any = None,
                          byte_range: Any = None) -> Any:
                buf = await self._store.get(key, prototype, byte_range)
                name = key.rsplit("/", 1)[-1]
                if buf is not None and byte_range is None and name not in _METADATA_NAMES:
                    try:
                        check_blosc_frame(buf.as_numpy_array())
                    except ValueError as e:
                        raise DecodeFailed(f"cannot decode chunk: {e}",
                                           chunk=key) from None
                return buf

        _CHECKED = BloscCheckedStore
    return _CHECKED(store)


_METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


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
    dtype = spec_dtype(spec.dtype)
    try:
        data: Any
        if spec.engine == "v2":
            data = arr.astype(dtype, order=spec.order, copy=False)  # type: ignore[call-overload]
            for f in filters:
                data = f.encode(data)
        else:
            data = np.ascontiguousarray(arr)
            if filters:
                native = dtype.newbyteorder("=")
                data = data.astype(native, copy=False)
                for f in filters:
                    data = np.asarray(f.encode(data))
                    if data.dtype != native:  # bitround hands back an integer view
                        data = data.view(native)
            data = np.ascontiguousarray(data.astype(dtype, copy=False)).reshape(-1).view("u1")
        for c in compressors:
            data = c.encode(data)
        encoded: bytes = ensure_bytes(data)
        return encoded
    except Exception as e:
        raise EncodeFailed(f"cannot encode chunk: {type(e).__name__}: {e}") from e


def is_fill(arr: np.ndarray, fill: Any) -> bool:
    """Whether every element equals the fill value (zarr-python's rule).

    Floats and complex compare by value with NaN equal to NaN, except that a
    fill of 0.0 compares bit patterns (so -0.0 is kept as data); everything
    else (integers, datetimes with NaT, strings, structured records)
    compares the stored bytes.
    """
    import numpy as np

    if arr.dtype.kind == "f" and fill == 0.0:
        void = f"V{arr.dtype.itemsize}"
        zero = np.zeros((), dtype=arr.dtype)
        return bool(np.all(np.ascontiguousarray(arr).view(void) == zero.view(void)))
    if arr.dtype.kind in "fc":
        return bool(np.array_equal(arr, np.broadcast_to(np.asarray(fill, arr.dtype), arr.shape),
                                   equal_nan=True))
    size = arr.dtype.itemsize
    if size == 0 or arr.size == 0:
        return True
    want = np.ascontiguousarray(np.full((1,), fill, dtype=arr.dtype)).view("u1")
    got = np.ascontiguousarray(arr).reshape(-1).view("u1").reshape(-1, size)
    return bool(np.all(got == want))


def chunk_limit(spec: ChunkSpec) -> int | None:
    """The most bytes a stored chunk (or shard) of ``spec`` may hold (None:
    no bound, for variable-length data)."""
    from pybridge.zarr.files import max_stored_bytes

    if spec.dtype in ("|O", "O") or "StringDType" in spec.dtype:
        return None
    raw = _nbytes(tuple(spec.grid), spec_dtype(spec.dtype).itemsize)
    pieces = 1
    if spec.shard is not None:
        for g, c in zip(spec.grid, spec.shard.chunks):
            pieces *= max(1, g // max(c, 1))
        raw += spec.shard.index_nbytes(pieces)
    return max_stored_bytes(raw, pieces)


