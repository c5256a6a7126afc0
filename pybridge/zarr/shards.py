"""Shards of Zarr v3 arrays, read by hand (``sharding_indexed``).

A shard file holds the encoded inner chunks one after another and an index:
one (offset, nbytes) pair of uint64 per inner chunk, in C order of the
shard's inner grid, at the start or at the end of the file, optionally
followed by its CRC-32C. A pair of 2**64-1 marks an inner chunk that is not
stored (it reads as the fill value); a missing shard file is all fill value.

The workers read a shard here when its inner codecs are ones
:mod:`pybridge.zarr.chunk_codecs` decodes by hand and its index codecs are
``bytes`` (either byte order), optionally followed by ``crc32c``; the
inner codecs may start with a ``transpose``. The :class:`ShardLayout`
attached to the array's :class:`~pybridge.zarr.chunk_codecs.ChunkSpec` says
so. Anything else (nested sharding, other array-to-array or array-to-bytes
codecs inside) stays with zarr-python in the workers, as do all writes.

A selection that needs every inner chunk of a shard reads the file in one
call; one that needs a few reads the index, then only the byte ranges of the
inner chunks it needs (neighbouring ones in one call). Each inner chunk is
decoded straight into the band when it lands there whole and contiguous,
else into a scratch buffer and copied.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybridge.errors import BridgeError, DecodeFailed, StoreError
from pybridge.zarr.chunk_codecs import ChunkSpec, blame_chunk, can_decode_into, chunk_limit, decode_chunk
from pybridge.zarr.chunks import ChunkPart, product

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EMPTY", "ShardLayout", "fill_shard", "parse_index", "with_shard_layout"]

#: Offset and nbytes of an inner chunk that is not stored.
EMPTY = 2**64 - 1
#: Needed inner chunks whose stored bytes are at most this far apart are read
#: in one call (the gap is read and ignored).
MERGE_GAP = 64 << 10
#: A shard file at most this big is read whole even for one inner chunk.
SMALL_SHARD = 256 << 10
#: The buffer that shard bytes are read into is kept between shards up to
#: this size in a worker process (one per process), and up to
#: :data:`KEEP_BUFFER_BYTES_SIDECAR` in each of the sidecar's handler threads
#: (which read only small selections themselves); bigger reads get a buffer
#: of their own.
KEEP_BUFFER_BYTES = 32 << 20
KEEP_BUFFER_BYTES_SIDECAR = 1 << 20


@dataclass(frozen=True)
class ShardLayout:
    """How one array's shards are laid out.

    ``chunks`` is the inner chunk shape; ``inner`` the spec that decodes one
    inner chunk (engine ``"v3"``, ``grid`` = ``chunks``, or ``chunks``
    permuted by ``transpose``); ``index_at_end`` where the index is;
    ``index_dtype`` its uint64 dtype (``"<u8"`` or ``">u8"``); ``index_crc``
    whether a CRC-32C follows it. ``transpose`` is the order of a leading
    ``transpose`` codec (None: there is none): an inner chunk decodes to
    that permutation of its axes.
    """

    chunks: tuple[int, ...]
    inner: ChunkSpec
    index_at_end: bool = True
    index_dtype: str = "<u8"
    index_crc: bool = True
    transpose: tuple[int, ...] | None = None

    @property
    def untranspose(self) -> tuple[int, ...] | None:
        """The axes that turn a decoded inner chunk back into array order."""
        if self.transpose is None:
            return None
        return tuple(sorted(range(len(self.transpose)), key=self.transpose.__getitem__))

    def per_shard(self, grid: Sequence[int]) -> tuple[int, ...]:
        """Inner chunks per shard, per dimension, for a shard of shape ``grid``."""
        return tuple(g // c for g, c in zip(grid, self.chunks))

    def index_nbytes(self, count: int) -> int:
        """The stored size of the index of a shard of ``count`` inner chunks."""
        return 16 * count + (4 if self.index_crc else 0)


# -- building the layout (from the metadata) -------------------------------

def with_shard_layout(spec: ChunkSpec, codecs: Sequence[dict[str, Any]],
                      plan: Callable[..., tuple[str, Any, Any, str]],
                      native: np.dtype[Any]) -> ChunkSpec:
    """``spec`` with a :class:`ShardLayout` when its shards can be read by hand.

    ``codecs`` is the array's v3 codec list (plain JSON) and ``plan`` the
    metadata's planner for a codec list, giving ``(engine, filters,
    compressors, stored dtype)``; the inner codecs must plan to ``"v3"``.
    Otherwise ``spec`` comes back unchanged.
    """
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed" or not spec.grid:
        return spec
    cfg = codecs[0].get("configuration") or {}
    chunks = tuple(int(c) for c in cfg.get("chunk_shape") or ())
    if len(chunks) != len(spec.grid) or any(
            c < 1 or g % c for g, c in zip(spec.grid, chunks)):
        return spec
    index = _index_codecs(cfg.get("index_codecs") or [])
    location = cfg.get("index_location", "end")
    if index is None or location not in ("start", "end"):
        return spec
    inner_codecs = list(cfg.get("codecs") or [])
    transpose = _transpose(inner_codecs[0], len(chunks)) if inner_codecs else None
    grid = chunks
    if transpose is not None:
        inner_codecs = inner_codecs[1:]
        grid = tuple(chunks[i] for i in transpose)
        if transpose == tuple(range(len(chunks))):
            transpose = None
    engine, filters, compressors, stored = plan(inner_codecs, native)
    if engine != "v3":
        return spec
    import json

    inner = dataclasses.replace(
        spec, engine="v3", grid=grid, dtype=stored, filters=filters,
        compressors=compressors, meta_json="{}",
        token=json.dumps([3, "v3", filters, compressors, stored], default=repr))
    layout = ShardLayout(chunks=chunks, inner=inner, index_at_end=location == "end",
                         index_dtype=index[0], index_crc=index[1], transpose=transpose)
    return dataclasses.replace(spec, shard=layout)


def _transpose(codec: dict[str, Any], ndim: int) -> tuple[int, ...] | None:
    """The order of a ``transpose`` codec (a permutation of the axes), else None."""
    if codec.get("name") != "transpose":
        return None
    order = (codec.get("configuration") or {}).get("order")
    if not isinstance(order, (list, tuple)) or sorted(order) != list(range(ndim)):
        return None
    return tuple(int(i) for i in order)


def _index_codecs(codecs: Sequence[dict[str, Any]]) -> tuple[str, bool] | None:
    """(uint64 dtype, crc32c follows) for the index codecs read by hand, else None."""
    if not codecs or codecs[0].get("name") != "bytes":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if endian not in ("little", "big"):
        return None
    dtype = "<u8" if endian == "little" else ">u8"
    rest = [c.get("name") for c in codecs[1:]]
    if rest == []:
        return dtype, False
    if rest == ["crc32c"]:
        return dtype, True
    return None


# -- the index -------------------------------------------------------------

def parse_index(layout: ShardLayout, raw: Any, count: int) -> list[int]:
    """The index bytes ``raw`` as a flat list ``[offset0, nbytes0, offset1, ...]``.

    Raises :class:`DecodeFailed` when the checksum does not match.
    """
    import numpy as np

    mv = memoryview(raw).cast("B")
    body = mv[:16 * count]
    if layout.index_crc:
        import google_crc32c

        stored = struct.unpack("<I", mv[16 * count:16 * count + 4])[0]
        if google_crc32c.value(bytes(body)) != stored:
            raise DecodeFailed("cannot decode chunk: the shard index fails its crc32c checksum")
    pairs: list[int] = np.frombuffer(body, dtype=layout.index_dtype).tolist()
    return pairs


# -- reading ---------------------------------------------------------------

_local = threading.local()


def _buffer(nbytes: int) -> np.ndarray:
    """A uint8 buffer of at least ``nbytes``, reused per thread when not too big."""
    import numpy as np

    from pybridge.pool.pool import in_worker

    buf: np.ndarray | None = getattr(_local, "buf", None)
    if buf is not None and buf.nbytes >= nbytes:
        return buf
    keep = KEEP_BUFFER_BYTES if in_worker() else KEEP_BUFFER_BYTES_SIDECAR
    if nbytes > keep:
        return np.empty(nbytes, dtype="u1")
    size = 1 << max(nbytes - 1, 1).bit_length()
    buf = _local.buf = np.empty(min(size, keep), dtype="u1")
    return buf


def _read_into(fd: int, buf: Any, offset: int) -> int:
    """Fill ``buf`` from ``fd`` at ``offset``; returns the bytes read (short at EOF)."""
    view = memoryview(buf)
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


class _Shard:
    """One open shard file: its size and index, and its bytes as needed."""

    def __init__(self, fd: int, layout: ShardLayout, count: int) -> None:
        self.fd = fd
        self.layout = layout
        self.count = count
        self.size = os.fstat(self.fd).st_size
        self.data: Any = None  # the bytes read so far (all of the file, or ranges)
        self.where: dict[int, int] = {}  # inner chunk -> its offset in data (ranges)

    def _index_range(self) -> tuple[int, int]:
        n = self.layout.index_nbytes(self.count)
        if self.size < n:
            raise DecodeFailed(f"cannot decode chunk: the shard file is {self.size} bytes, "
                               f"shorter than its index of {n} bytes")
        return (self.size - n, self.size) if self.layout.index_at_end else (0, n)

    def read_all(self) -> list[int]:
        """Read the whole file; returns the index."""
        a, b = self._index_range()
        buf = _buffer(self.size)
        got = _read_into(self.fd, buf[:self.size], 0)
        if got != self.size:
            raise DecodeFailed("cannot decode chunk: the shard file shrank while it was read")
        self.data = buf[:self.size]
        return parse_index(self.layout, self.data[a:b], self.count)

    def read_index(self) -> list[int]:
        a, b = self._index_range()
        raw = bytearray(b - a)
        if _read_into(self.fd, raw, a) != b - a:
            raise DecodeFailed("cannot decode chunk: the shard file shrank while it was read")
        return parse_index(self.layout, raw, self.count)

    def read_ranges(self, spans: list[tuple[int, int, int]]) -> None:
        """Read the inner chunks ``(flat index, offset, nbytes)``, merging near ones."""
        spans = sorted(spans, key=lambda s: s[1])
        groups: list[tuple[int, int, list[tuple[int, int]]]] = []  # (start, end, [(k, off)])
        for k, off, n in spans:
            if groups and off - groups[-1][1] <= MERGE_GAP:
                start, end, members = groups[-1]
                members.append((k, off))
                groups[-1] = (start, max(end, off + n), members)
            else:
                groups.append((off, off + n, [(k, off)]))
        total = sum(end - start for start, end, _ in groups)
        buf = _buffer(total)
        pos = 0
        for start, end, members in groups:
            if _read_into(self.fd, buf[pos:pos + end - start], start) != end - start:
                raise DecodeFailed("cannot decode chunk: the shard file shrank while it was read")
            for k, off in members:
                self.where[k] = pos + off - start
            pos += end - start
        self.data = buf[:total]

    def chunk_bytes(self, k: int, off: int, n: int) -> Any:
        base = self.where.get(k, off) if self.where else off
        return self.data[base:base + n]


def _open(path: str, limit: int | None) -> Any:
    """The shard file opened for reading, or None when it is missing.

    Anything but a regular file is :class:`StoreError`; a file over
    ``limit`` bytes is :class:`DecodeFailed` (:mod:`pybridge.zarr.files`).
    """
    from pybridge.zarr.files import open_regular

    fd = open_regular(path, "shard", limit, DecodeFailed)
    return None if fd is None else os.fdopen(fd, "rb", buffering=0)


def _dim_pieces(lo: int, hi: int, c: int) -> list[tuple[int, slice, slice, bool]]:
    """Per dimension: (inner index, slice in the inner chunk, slice in the part, whole)."""
    out = []
    for i in range(lo // c, (hi - 1) // c + 1):
        c0 = i * c
        a = max(lo, c0)
        b = min(hi, c0 + c)
        out.append((i, slice(a - c0, b - c0), slice(a - lo, b - lo), a == c0 and b == c0 + c))
    return out


def fill_shard(dst: np.ndarray, spec: ChunkSpec, part: ChunkPart) -> None:
    """Decode the piece ``part`` of one shard into ``dst`` (its place in the band).

    ``spec.shard`` must be set. Raises :class:`DecodeFailed` (with
    ``details.chunk``, the shard's key, and ``details.inner``, the inner
    chunk's coordinates in the shard, when one is to blame) on a corrupt
    shard, :class:`StoreError` when the file cannot be read.
    """
    layout = spec.shard
    assert layout is not None
    path = spec.chunk_path(part.coords)
    try:
        f = _open(path, chunk_limit(spec))
        if f is None:
            dst[...] = spec.fill
            return
        with f:
            count = product(layout.per_shard(spec.grid))
            _fill(dst, spec, layout, part, _Shard(f.fileno(), layout, count))
    except BridgeError as e:
        blame_chunk(e, spec, part.coords)
        raise
    except OSError as e:
        raise StoreError(f"cannot read chunk {path!r}: {e.strerror or e}", path=path) from e


def _fill(dst: np.ndarray, spec: ChunkSpec, layout: ShardLayout, part: ChunkPart,
          shard: _Shard) -> None:
    per = layout.per_shard(spec.grid)
    dims = [_dim_pieces(lo, hi, c) for lo, hi, c in zip(part.lo, part.hi, layout.chunks)]
    strides = [product(per[d + 1:]) for d in range(len(per))]
    needed = [(sum(p[0] * s for p, s in zip(combo, strides)), combo)
              for combo in itertools.product(*dims)]
    if len(needed) == shard.count or shard.size <= SMALL_SHARD:
        index = shard.read_all()
    else:
        index = shard.read_index()
        spans = []
        for k, _ in needed:
            off, n = index[2 * k], index[2 * k + 1]
            if not _is_empty(off, n):
                spans.append((k, _check_range(off, n, shard.size, k, per), n))
        if spans:
            shard.read_ranges(spans)

    inner = layout.inner
    untranspose = layout.untranspose
    direct = untranspose is None and can_decode_into(inner, dst.dtype)
    fill = spec.fill
    for k, combo in needed:
        off, n = index[2 * k], index[2 * k + 1]
        out = dst[tuple(p[2] for p in combo)]
        if _is_empty(off, n):
            out[...] = fill
            continue
        _check_range(off, n, shard.size, k, per)
        raw = shard.chunk_bytes(k, off, n)
        try:
            if direct and out.flags.c_contiguous and all(p[3] for p in combo):
                decode_chunk(inner, raw, into=out)
                continue
            chunk = decode_chunk(inner, raw, reuse=True)
            if untranspose is not None:
                chunk = chunk.transpose(untranspose)
        except BridgeError as e:
            e.details.setdefault("inner", _coords(k, per))
            raise
        out[...] = chunk[tuple(p[1] for p in combo)]


def _is_empty(off: int, n: int) -> bool:
    """An inner chunk that is not stored (zarr-python also reads a zero-length one as missing)."""
    return (off == EMPTY and n == EMPTY) or n == 0


def _coords(k: int, per: Sequence[int]) -> list[int]:
    out = []
    for n in reversed(per):
        k, r = divmod(k, n)
        out.append(r)
    return out[::-1]


def _check_range(off: int, n: int, size: int, k: int, per: Sequence[int]) -> int:
    if off + n > size:
        raise DecodeFailed(
            f"cannot decode chunk: inner chunk {_coords(k, per)} lies past the end of the "
            f"shard file (bytes {off}..{off + n} of {size})", inner=_coords(k, per))
    return off
