"""Corruption checks of encoded data, made before a codec sees it.

One set, used by the codec tasks (:mod:`pybridge.pool.codec_tasks`) and the
chunk codec pipeline of arrays (:mod:`pybridge.zarr.chunk_codecs`) alike.
Several C codecs trust what a header says: blosc its compressed size, zfp
its shape, numcodecs' vlen codecs their item count. A corrupt header must be
a :class:`~pybridge.errors.DecodeFailed`, never a read past the buffer, a
huge allocation or a crash. :func:`decoded_size` reads the size a frame
announces, so that a decode can go straight into its output buffer.

Cheap to import: numpy and zfpy are imported only by :func:`zfp_checked`.
"""

from __future__ import annotations

import math
from typing import Any

from pybridge.errors import DecodeFailed

__all__ = [
    "HEADER_CHECKED",
    "MAX_PEEKED_BYTES",
    "blosc_checked",
    "check_blosc_frame",
    "decoded_size",
    "vlen_checked",
    "zfp_checked",
]

#: Largest decoded size taken from a header on trust (a corrupt header must
#: not make a worker map gigabytes).
MAX_PEEKED_BYTES = 1 << 30
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_DICT_ID_BYTES = (0, 1, 2, 4)


#: Codecs whose ``decode(buf, out=...)`` checks the decoded size against the
#: size their frame header announces (zstd's frame content size, numcodecs'
#: LZ4 length prefix, blosc's ``nbytes``) and fails when it differs.
HEADER_CHECKED = frozenset({"zstd", "lz4", "blosc"})



# -- blosc frames

def check_blosc_frame(buf: Any) -> None:
    """Refuse a blosc frame whose length is not the one its header states.

    blosc itself decodes some truncated frames to garbage without a word.
    """
    mv = memoryview(buf).cast("B")
    if mv.nbytes < 16:
        raise ValueError(f"a blosc frame of {mv.nbytes} bytes is shorter than its header")
    cbytes = int.from_bytes(mv[12:16], "little")
    if cbytes != mv.nbytes:
        raise ValueError(f"the blosc frame is {mv.nbytes} bytes long, its header says {cbytes}")


def blosc_checked(payload: Any, what: str) -> None:
    """Refuse a blosc frame cut short: blosc trusts the compressed size in its
    header and would read past the end of the buffer."""
    try:
        check_blosc_frame(payload)
    except ValueError as exc:
        raise DecodeFailed(f"{what}: {exc}", id="blosc") from None


# -- vlen buffers

_VLEN_IDS = frozenset({"vlen-utf8", "vlen-bytes", "vlen-array"})


def vlen_checked(codec_id: str, buf: Any) -> None:
    """Refuse a vlen buffer whose item count cannot fit in it.

    numcodecs allocates the object array the header asks for before it reads
    a single item: a corrupt 4-byte count would ask for billions. Every item
    takes at least its 4-byte length, so the count is bounded by the size.
    """
    if codec_id not in _VLEN_IDS:
        return
    view = memoryview(buf).cast("B")
    if view.nbytes < 4:
        raise DecodeFailed(f"codec {codec_id!r} decode failed: {view.nbytes} bytes have no header",
                           id=codec_id)
    count = int.from_bytes(view[:4], "little")
    if 4 + 4 * count > view.nbytes:
        raise DecodeFailed(
            f"codec {codec_id!r} decode failed: the header announces {count} items but the "
            f"buffer holds only {view.nbytes} bytes", id=codec_id, items=count, bytes=view.nbytes)


# -- zfp streams

_ZFP_TYPES = {"float32": (32, 10), "float64": (64, 13), "int32": (32, 5), "int64": (64, 6)}
#: Bits a zfp stream header can take (ZFP_HEADER_MAX_BITS is 148), rounded up.
_ZFP_HEADER_BITS = 256


def zfp_checked(payload: Any) -> Any:
    """A zfp stream that zfp can decode without reading past its end.

    zfp trusts its header: a corrupt one that announces more values than the
    stream holds makes it read past the buffer (a segfault). The header is
    checked against the stream's length (every block takes at least one
    bit), and the stream is padded with zeros up to the largest size those
    values can take, so a corrupt body decodes to garbage instead of a crash.
    """
    import numpy as np
    import zfpy

    data = bytes(payload)
    try:
        header = zfpy.header(data)
        dims = [int(header[k]) for k in ("nx", "ny", "nz", "nw") if int(header[k]) > 0]
        bits, overhead = _ZFP_TYPES[np.dtype(header["type"]).name]
        # In fixed-rate mode every block takes exactly minbits (it can be
        # more than the values' own width); elsewhere it is 1 or less.
        min_block_bits = max(1, int(header["config"]["expert"]["minbits"]))
    except Exception as exc:  # noqa: BLE001 - not a zfp stream at all
        raise DecodeFailed(f"codec 'zfpy' decode failed: not a zfp stream header ({exc})",
                           id="zfpy") from None
    count = math.prod(dims) if dims else 0
    blocks = math.prod((n + 3) // 4 for n in dims) if dims else 0
    if not dims or count * bits // 8 > MAX_PEEKED_BYTES:
        raise DecodeFailed(f"codec 'zfpy' decode failed: the header announces shape {dims}",
                           id="zfpy", shape=dims)
    if blocks * min_block_bits > len(data) * 8:
        raise DecodeFailed(
            f"codec 'zfpy' decode failed: the header announces {count} values but the stream "
            f"holds only {len(data)} bytes", id="zfpy", shape=dims, bytes=len(data))
    values = 4 ** len(dims)
    block_bits = max(values - 1 + values * bits + overhead, min_block_bits)
    most_bits = _ZFP_HEADER_BITS + blocks * block_bits
    most = (most_bits + 63) // 64 * 8
    if most <= len(data):
        return data
    padded = bytearray(most)
    padded[:len(data)] = data
    return padded


# -- announced sizes

def decoded_size(codec_id: str, payload: Any) -> int | None:
    """The decoded size a zstd, blosc or lz4 buffer announces, or None.

    Codecs that can tell their output size up front decode straight into
    the worker's output segment (:func:`pybridge.pool.pool.output_buffer`).
    """
    try:
        head = bytes(memoryview(payload)[:18])
        total = memoryview(payload).nbytes
    except TypeError:
        return None
    size: int | None = None
    if codec_id == "zstd" and len(head) >= 6 and head[:4] == _ZSTD_MAGIC:
        fhd = head[4]
        single = (fhd >> 5) & 1
        pos = 5 + (0 if single else 1) + _ZSTD_DICT_ID_BYTES[fhd & 3]
        width = (1 if single else 0, 2, 4, 8)[fhd >> 6]
        if width and len(head) >= pos + width:
            size = int.from_bytes(head[pos:pos + width], "little") + (256 if width == 2 else 0)
    elif codec_id == "blosc" and len(head) >= 16:
        nbytes = int.from_bytes(head[4:8], "little")
        cbytes = int.from_bytes(head[12:16], "little")
        size = nbytes if cbytes == total else None
    elif codec_id == "lz4" and len(head) >= 4:
        size = int.from_bytes(head[:4], "little")
    if size is None or size <= 0 or size > MAX_PEEKED_BYTES:
        return None
    return size
