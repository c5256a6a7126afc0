"""Codec work that runs in the workers (module-level functions for the pool).

Every function takes the pool's ``payload`` (a bytes-like view, or None)
first. Array results are returned as raw little-endian C-order bytes; the
results of variable-length dtypes (``string``, ``bytes`` and the ``object``
arrays of codecs such as ``json2``) are returned as a ``list`` of values in
C order. Input values for those dtypes are passed as a list too.

Errors: a codec that fails on its input raises
:class:`~pybridge.errors.DecodeFailed` or
:class:`~pybridge.errors.EncodeFailed`, never anything that could take the
worker down with it (short of a crash inside C code, which the pool contains;
zfp streams are checked first because zfp trusts its header blindly).

Decoders that announce their output size in a header (zstd, blosc, lz4)
decode straight into the worker's output segment
(:func:`pybridge.pool.pool.output_buffer`), so a decoded chunk is written once.

Pipelines describe one chunk of a Zarr array:

- Zarr v2 runs the ``filters`` in order then the ``compressor`` to encode,
  the reverse to decode, on the chunk in its ``order`` ("C" or "F") and its
  stored byte order (``endian``), as zarr-python does.
- Zarr v3 runs zarr-python's own codec classes (``bytes``, ``transpose``,
  ``sharding_indexed``, ``blosc``, ``zstd``, ``gzip``, ``crc32c``,
  ``vlen-utf8``, ``numcodecs.*``...) through its ``BatchedCodecPipeline``, on a
  private event loop whose executor runs zarr's ``to_thread`` calls inline:
  the pool already gives the parallelism.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like

from pybridge import codecs as codec_registry
from pybridge.codec_checks import (
    blosc_checked,
    decoded_size,
    vlen_checked,
    zfp_checked,
)
from pybridge.dtypes import STRING_DTYPE, is_variable, parse_dtype, to_little_endian
from pybridge.errors import (
    BridgeError,
    CodecForbidden,
    CodecUnavailable,
    DataSizeMismatch,
    DecodeFailed,
    EncodeFailed,
    InvalidCodecConfig,
    UnsupportedDtype,
)
from pybridge.pool.pool import output_buffer

__all__ = [
    "decode",
    "decode_run",
    "decoded_size",
    "encode",
    "pipeline_decode",
    "pipeline_encode",
    "raw_bytes",
    "to_values",
    "vlen_checked",
    "zfp_checked",
]

# --------------------------------------------------------------------------
# Arrays in and out

def raw_bytes(arr: np.ndarray[Any, Any]) -> bytes | memoryview:
    """An array's data as little-endian C-order bytes (no copy when it can)."""
    le = to_little_endian(arr.dtype)
    if le != arr.dtype:
        arr = arr.astype(le)
    arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8).data


def to_values(arr: np.ndarray[Any, Any]) -> list[Any]:
    """The elements of an object or string array, C order, as wire values."""
    return [_wire_value(v) for v in np.asarray(arr).ravel(order="C").tolist()]


def _wire_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "OT":
            return to_values(v)
        return bytes(raw_bytes(v))
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_wire_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _wire_value(x) for k, x in v.items()}
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return v


def _count(shape: Sequence[int] | None) -> int | None:
    return None if shape is None else math.prod(shape)


def _array_from_payload(payload: Any, dtype: np.dtype[Any], shape: Sequence[int] | None,
                        what: str) -> np.ndarray[Any, Any]:
    if payload is None:
        raise DataSizeMismatch(f"{what}: no data given", expected_bytes=None, bytes=0)
    if is_variable(dtype):
        raise UnsupportedDtype(
            f"{what}: {'string' if dtype.kind == 'T' else 'bytes'} data travels as 'values', "
            "not as raw bytes", dtype="string" if dtype.kind == "T" else "bytes")
    nbytes = memoryview(payload).nbytes
    count = _count(shape)
    if count is not None and count * dtype.itemsize != nbytes:
        raise DataSizeMismatch(
            f"{what}: {nbytes} bytes do not fill shape {list(shape or [])} of "
            f"{dtype.itemsize}-byte items", expected_bytes=count * dtype.itemsize, bytes=nbytes)
    if dtype.itemsize == 0 or nbytes % dtype.itemsize:
        raise DataSizeMismatch(
            f"{what}: {nbytes} bytes are not a whole number of {dtype.itemsize}-byte items",
            itemsize=dtype.itemsize, bytes=nbytes)
    arr = np.frombuffer(payload, dtype=dtype)
    return arr.reshape(shape) if shape is not None else arr


def _array_from_values(values: Sequence[Any], dtype: np.dtype[Any] | None,
                       shape: Sequence[int] | None, what: str,
                       element_dtype: Any = None) -> np.ndarray[Any, Any]:
    count = _count(shape)
    if count is not None and count != len(values):
        raise DataSizeMismatch(
            f"{what}: {len(values)} values do not fill shape {list(shape or [])}",
            expected=count, values=len(values))
    if dtype is not None and dtype.kind == "T":
        if not all(isinstance(v, str) for v in values):
            raise UnsupportedDtype(f"{what}: 'string' values must all be str", dtype="string")
        arr = np.array(values, dtype=STRING_DTYPE)
    else:
        arr = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if element_dtype is not None and isinstance(v, (bytes, bytearray, memoryview)):
                v = np.frombuffer(v, dtype=element_dtype)  # vlen-array elements
            arr[i] = v
    return arr.reshape(shape) if shape is not None else arr


def _decoded(out: Any, dtype: np.dtype[Any] | None, shape: Sequence[int] | None,
             what: str) -> bytes | memoryview | list[Any]:
    """A codec's decoded output in wire form, checked against dtype/shape."""
    if isinstance(out, np.ndarray) and out.dtype.kind in "OT":
        count = _count(shape)
        if count is not None and count != out.size:
            raise DataSizeMismatch(f"{what}: decoded {out.size} values, shape {list(shape or [])} "
                                   f"needs {count}", expected=count, values=out.size)
        return to_values(out)
    if dtype is not None and is_variable(dtype):
        raise DecodeFailed(f"{what}: the codec did not decode to variable-length values",
                           dtype="string" if dtype.kind == "T" else "bytes")
    if isinstance(out, np.ndarray):
        data: Any = raw_bytes(out)
    elif isinstance(out, (bytes, _Sized)):
        data = out
    else:
        data = memoryview(ensure_contiguous_ndarray(out)).cast("B")
    if dtype is not None:
        nbytes = data.nbytes if isinstance(data, _Sized) else memoryview(data).nbytes
        count = _count(shape)
        if count is not None and count * dtype.itemsize != nbytes:
            raise DataSizeMismatch(
                f"{what}: decoded {nbytes} bytes, shape {list(shape or [])} of {dtype} needs "
                f"{count * dtype.itemsize}", expected_bytes=count * dtype.itemsize, bytes=nbytes)
        if dtype.itemsize and nbytes % dtype.itemsize:
            raise DataSizeMismatch(
                f"{what}: decoded {nbytes} bytes are not a whole number of {dtype} items",
                itemsize=dtype.itemsize, bytes=nbytes)
    return data  # type: ignore[no-any-return]


def _zeros_like(arr: Any) -> Any:
    """Zeros of ``arr``'s dtype and shape (or as many zero bytes), or None for
    object data, which has no neutral value."""
    if isinstance(arr, np.ndarray):
        if arr.dtype.kind in "OTV" or arr.dtype.hasobject:
            return None
        return np.zeros(arr.shape, dtype=arr.dtype, order="F" if arr.flags.f_contiguous
                        and not arr.flags.c_contiguous else "C")
    try:
        return bytes(memoryview(arr).nbytes)
    except TypeError:
        return None


def _fails_on_zeros(encode_fn: Any, arr: Any) -> bool:
    """Whether ``encode_fn`` also fails on zeros of ``arr``'s dtype and shape.

    numcodecs checks many config values only when it first encodes (zlib's
    level, blosc's clevel and cname, bz2's level...). An encode that fails
    on zeros as well failed for its config, not for the data: that is
    ``invalid_codec_config``, with numcodecs' own message.
    """
    probe = _zeros_like(arr)
    if probe is None:
        return False
    try:
        encode_fn(probe)
    except Exception:  # noqa: BLE001 - any failure counts
        return True
    return False


def _chain_rejection(filters: Sequence[Any], compressor: Any, arr: Any) -> BridgeError | None:
    """The config error of the first v2 codec that fails on zeros shaped like ``arr``."""
    chunk = _zeros_like(arr)
    if chunk is None:
        return None
    for codec in [*filters, *([compressor] if compressor is not None else [])]:
        try:
            chunk = codec.encode(chunk)
        except Exception as exc:  # noqa: BLE001 - any failure counts
            return codec_registry.rejected(codec, exc)
    return None


def _failure(cls: type[BridgeError], what: str, exc: Exception, **details: Any) -> BridgeError:
    return cls(f"{what} failed: {type(exc).__name__}: {exc}", python_type=type(exc).__name__,
               **details)


# --------------------------------------------------------------------------
# Single codecs

def encode(payload: Any, config: Mapping[str, Any], dtype: Any = None,
           shape: Sequence[int] | None = None, values: Sequence[Any] | None = None,
           allow_pickle: bool = False) -> bytes | memoryview:
    """Encode ``payload`` (or ``values``) with one numcodecs codec.

    With ``dtype`` the input is viewed as that dtype (and ``shape``) first.
    Returns the encoded bytes exactly as the codec produced them.
    """
    codec = codec_registry.get_codec(config, allow_pickle)
    cid = config["id"]
    what = f"codec {cid!r} encode"
    dt = parse_dtype(dtype) if dtype is not None else None
    if values is not None:
        arr: Any = _array_from_values(values, dt, shape, what, getattr(codec, "dtype", None)
                                      if cid == "vlen-array" else None)
    elif dt is not None:
        arr = _array_from_payload(payload, dt, shape, what)
    elif shape is not None:
        arr = _array_from_payload(payload, np.dtype(np.uint8), shape, what)
    else:
        if payload is None:
            raise DataSizeMismatch(f"{what}: no data given", bytes=0)
        arr = payload
    try:
        out = codec.encode(arr)
        view = ensure_contiguous_ndarray(out)
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec may raise anything
        if _fails_on_zeros(codec.encode, arr):
            raise codec_registry.rejected(codec, exc) from None
        raise _failure(EncodeFailed, what, exc, id=cid) from None
    if isinstance(out, bytes):
        return out
    return memoryview(view).cast("B")


def decode(payload: Any, config: Mapping[str, Any], dtype: Any = None,
           shape: Sequence[int] | None = None,
           allow_pickle: bool = False) -> bytes | memoryview | list[Any]:
    """Decode ``payload`` with one numcodecs codec.

    Returns little-endian bytes (checked against ``dtype`` and ``shape`` when
    given), or a list of values when the codec decodes to an object array.
    """
    codec = codec_registry.get_codec(config, allow_pickle)
    cid = config["id"]
    what = f"codec {cid!r} decode"
    dt = parse_dtype(dtype) if dtype is not None else None
    if payload is None:
        raise DecodeFailed(f"{what}: no data given", id=cid)
    if cid == "zfpy":
        payload = zfp_checked(payload)
    elif cid == "blosc":
        blosc_checked(payload, what)
    vlen_checked(cid, payload)
    size = decoded_size(cid, payload)
    if size is not None:
        if dt is not None and not is_variable(dt):
            # Check the size the header announces before decoding anything.
            _decoded(_Sized(size), dt, shape, what)
        buf = output_buffer(size)
        try:
            codec.decode(payload, out=buf)
            return buf
        except Exception:  # noqa: BLE001 - let the plain decode report it
            pass
    try:
        out = codec.decode(payload)
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt input can raise anything
        raise _failure(DecodeFailed, what, exc, id=cid) from None
    return _decoded(out, dt, shape, what)


def decode_run(payload: Any, config: Mapping[str, Any], dtype: Any,
               shape: Sequence[int] | None, allow_pickle: bool, lengths: Sequence[int],
               first_index: int, sizes: Sequence[int]) -> memoryview:
    """Decode consecutive items into one buffer, back to back.

    ``payload`` is the items' encoded bytes, one after the other
    (``lengths``); item ``k`` decodes to exactly ``sizes[k]`` bytes (told
    beforehand, from the codec's header or from ``dtype`` and ``shape``).
    In a worker the buffer is the task's output segment
    (:func:`pybridge.pool.pool.output_buffer`), which the worker reuses, so
    decoding writes into warm memory and the result leaves without a copy.
    A decoded size other than announced is
    :class:`~pybridge.errors.DataSizeMismatch`; an error names its item as
    ``details["index"]`` (``first_index`` + k).
    """
    cid = config["id"]
    what = f"codec {cid!r} decode"
    codec = codec_registry.get_codec(config, allow_pickle)
    dt = parse_dtype(dtype) if dtype is not None else None
    view = memoryview(payload).cast("B") if payload is not None else memoryview(b"")
    out = output_buffer(sum(sizes))
    pos = offset = 0
    for k, (n, size) in enumerate(zip(lengths, sizes)):
        try:
            _decode_sized_into(codec, view[pos:pos + n], config, dt, dtype, shape,
                               allow_pickle, out[offset:offset + size], what)
        except BridgeError as exc:
            exc.details.setdefault("index", first_index + k)
            raise
        pos += n
        offset += size
    return out


def _decode_sized_into(codec: Any, item: memoryview, config: Mapping[str, Any],
                       dt: np.dtype[Any] | None, dtype: Any, shape: Sequence[int] | None,
                       allow_pickle: bool, out: memoryview, what: str) -> None:
    """Decode ``item`` into ``out``, which it must fill exactly."""
    cid = config["id"]
    size = out.nbytes
    if decoded_size(cid, item) == size:
        if cid == "blosc":
            blosc_checked(item, what)
        if dt is not None:
            _decoded(_Sized(size), dt, shape, what)
        try:
            codec.decode(item, out=out)
            return
        except Exception:  # noqa: BLE001 - let the plain decode report it
            pass
    decoded = decode(item, config, dtype, shape, allow_pickle)
    if isinstance(decoded, list):
        raise DecodeFailed(f"{what}: the codec decoded to values, which have no raw byte form",
                           id=cid)
    got = memoryview(decoded).cast("B")
    if got.nbytes != size:
        raise DataSizeMismatch(f"{what}: decoded {got.nbytes} bytes, {size} were expected",
                               expected_bytes=size, bytes=got.nbytes)
    out[:] = got


# -- Decoding in place

class _Sized:
    """Stands for a decoded buffer of known size in :func:`_decoded`'s checks."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


# --------------------------------------------------------------------------
# Pipelines

def pipeline_encode(payload: Any, spec: Mapping[str, Any],
                    allow_pickle: bool = False) -> bytes | memoryview:
    """Encode one chunk (raw little-endian C-order bytes, or ``spec["values"]``)."""
    if spec["zarr_format"] == 2:
        return _v2_encode(payload, spec, allow_pickle)
    return _v3_encode(payload, spec, allow_pickle)


def pipeline_decode(payload: Any, spec: Mapping[str, Any],
                    allow_pickle: bool = False) -> bytes | memoryview | list[Any]:
    """Decode one stored chunk into raw little-endian C-order bytes (or values)."""
    if payload is None:
        raise DecodeFailed("pipeline decode: no data given")
    if spec["zarr_format"] == 2:
        return _v2_decode(payload, spec, allow_pickle)
    return _v3_decode(payload, spec, allow_pickle)


def _shape(spec: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(spec["shape"])


# -- Zarr v2

def _v2_codecs(spec: Mapping[str, Any], allow_pickle: bool) -> tuple[list[Any], Any]:
    filters = [codec_registry.get_codec(f, allow_pickle) for f in spec.get("filters") or []]
    comp = spec.get("compressor")
    compressor = codec_registry.get_codec(comp, allow_pickle) if comp else None
    return filters, compressor


def _v2_stored_dtype(dt: np.dtype[Any], spec: Mapping[str, Any]) -> np.dtype[Any]:
    if spec.get("endian", "little") == "big" and not is_variable(dt):
        return dt.newbyteorder(">")
    return dt


def _v2_decode(payload: Any, spec: Mapping[str, Any],
               allow_pickle: bool) -> bytes | memoryview | list[Any]:
    dt = parse_dtype(spec["dtype"])
    stored = _v2_stored_dtype(dt, spec)
    shape = _shape(spec)
    order: Literal["C", "F"] = "F" if spec.get("order") == "F" else "C"
    filters, compressor = _v2_codecs(spec, allow_pickle)
    what = "zarr v2 chunk decode"
    if compressor is not None and compressor.codec_id == "zfpy":
        payload = zfp_checked(payload)
    try:
        chunk = compressor.decode(payload) if compressor is not None else payload
        for f in reversed(filters):
            vlen_checked(f.codec_id, chunk)
            chunk = f.decode(chunk)
        arr = ensure_ndarray_like(chunk)
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt input can raise anything
        raise _failure(DecodeFailed, what, exc) from None
    count = math.prod(shape)
    if is_variable(dt):
        if arr.dtype.kind not in "OT":
            raise DecodeFailed(f"{what}: a {spec['dtype']} chunk needs an object codec "
                               "(vlen-utf8, vlen-bytes, json2...) in its filters")
        if arr.size != count:
            raise DataSizeMismatch(f"{what}: decoded {arr.size} values, chunk shape "
                                   f"{list(shape)} needs {count}", expected=count, values=arr.size)
        return to_values(arr.reshape(-1, order="A").reshape(shape, order=order))
    if arr.dtype.kind in "OT":
        raise DecodeFailed(f"{what}: decoded an object array for dtype {spec['dtype']}")
    flat = arr.reshape(-1, order="A")
    nbytes = flat.nbytes
    if nbytes != count * dt.itemsize:
        raise DataSizeMismatch(
            f"{what}: decoded {nbytes} bytes, chunk shape {list(shape)} of {stored} needs "
            f"{count * dt.itemsize}", expected_bytes=count * dt.itemsize, bytes=nbytes)
    if flat.dtype != stored:
        flat = flat.view(np.uint8).view(stored)
    if order == "C":
        return raw_bytes(flat)
    return raw_bytes(flat.reshape(shape, order=order))


def _v2_encode(payload: Any, spec: Mapping[str, Any], allow_pickle: bool) -> bytes | memoryview:
    dt = parse_dtype(spec["dtype"])
    stored = _v2_stored_dtype(dt, spec)
    shape = _shape(spec)
    order: Literal["C", "F"] = "F" if spec.get("order") == "F" else "C"
    filters, compressor = _v2_codecs(spec, allow_pickle)
    what = "zarr v2 chunk encode"
    values = spec.get("values")
    if values is not None:
        arr = _array_from_values(values, dt, shape, what)
        if arr.dtype.kind == "T":
            arr = arr.astype(object)  # numcodecs' object codecs take object arrays
    else:
        arr = _array_from_payload(payload, dt, shape, what)
    arr = arr.astype(stored, order=order, copy=False) if not is_variable(dt) else \
        np.asarray(arr, order=order)
    try:
        chunk: Any = arr
        for f in filters:
            chunk = f.encode(chunk)
        if ensure_ndarray_like(chunk).dtype == object:
            raise EncodeFailed(f"{what}: an object array needs an object codec "
                               "(vlen-utf8, vlen-bytes, json2...) in its filters")
        cdata = compressor.encode(chunk) if compressor is not None else chunk
        if isinstance(cdata, bytes):
            return cdata
        if isinstance(cdata, np.ndarray) and not cdata.flags.c_contiguous and \
                not cdata.flags.f_contiguous:
            cdata = np.ascontiguousarray(cdata)
        return memoryview(ensure_contiguous_ndarray(cdata)).cast("B")
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec may raise anything
        config_error = _chain_rejection(filters, compressor, arr)
        if config_error is not None:
            raise config_error from None
        raise _failure(EncodeFailed, what, exc) from None


# -- Zarr v3

class _InlineExecutor(ThreadPoolExecutor):
    """Runs what zarr hands to ``asyncio.to_thread`` right away, in this thread."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            future.set_exception(exc)
        return future


_local = threading.local()
_PIPELINES: OrderedDict[str, Any] = OrderedDict()
_PIPELINES_LOCK = threading.Lock()
_V3_FORBIDDEN_NAMES = frozenset({"numcodecs.pickle", "pickle"})


def _run(coro: Any) -> Any:
    loop = getattr(_local, "loop", None)
    if loop is None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(_InlineExecutor(max_workers=1))
        _local.loop = loop
    return loop.run_until_complete(coro)


def _check_v3_safe(codecs: Any, allow_pickle: bool) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            name = node.get("name")
            if name in _V3_FORBIDDEN_NAMES and not allow_pickle:
                raise CodecForbidden(f"codec {name!r} can run code on decode", id=name)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
    walk(codecs)
    codec_registry.check_safe(codecs, allow_pickle)


def _zarr_dtype(dt: np.dtype[Any], wire: Any) -> Any:
    from zarr.core.dtype import VariableLengthBytes, get_data_type_from_native_dtype

    if dt.kind == "O":
        return VariableLengthBytes()
    try:
        return get_data_type_from_native_dtype(dt)
    except Exception as exc:  # noqa: BLE001 - zarr has no v3 name for it
        raise UnsupportedDtype(f"zarr v3 has no data type for {wire!r}: {exc}",
                               dtype=wire if isinstance(wire, str) else str(wire)) from None


def _v3_pipeline(spec: Mapping[str, Any], allow_pickle: bool) -> tuple[Any, Any, np.dtype[Any]]:
    codecs = spec.get("codecs")
    if not isinstance(codecs, list) or not codecs:
        raise InvalidCodecConfig("zarr v3 pipeline needs a non-empty 'codecs' list", key="codecs")
    _check_v3_safe(codecs, allow_pickle)
    try:
        key = json.dumps([codecs, spec["dtype"], spec["shape"], spec.get("fill_value")],
                         sort_keys=True, default=repr)
    except ValueError:
        key = None
    if key is not None:
        with _PIPELINES_LOCK:
            hit = _PIPELINES.get(key)
            if hit is not None:
                _PIPELINES.move_to_end(key)
                return hit  # type: ignore[no-any-return]
    built = _build_v3(codecs, spec)
    if key is not None:
        with _PIPELINES_LOCK:
            _PIPELINES[key] = built
            while len(_PIPELINES) > 64:
                _PIPELINES.popitem(last=False)
    return built


def _build_v3(codecs: list[Any], spec: Mapping[str, Any]) -> tuple[Any, Any, np.dtype[Any]]:
    import warnings

    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.metadata.v3 import parse_codecs, validate_codecs
    from zarr.errors import UnknownCodecError
    from zarr.registry import get_pipeline_class

    dt = parse_dtype(spec["dtype"])
    zdtype = _zarr_dtype(dt, spec["dtype"])
    fill = spec.get("fill_value")
    try:
        fill_value = zdtype.default_scalar() if fill is None else _v3_fill(zdtype, fill)
    except Exception as exc:  # noqa: BLE001
        raise InvalidCodecConfig(f"bad fill_value {fill!r} for {spec['dtype']!r}: {exc}",
                                 key="fill_value") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = parse_codecs(codecs)
            array_spec = ArraySpec(
                shape=_shape(spec), dtype=zdtype, fill_value=fill_value,
                config=ArrayConfig(order="C", write_empty_chunks=True),
                prototype=default_buffer_prototype())
            evolved = tuple(c.evolve_from_array_spec(array_spec) for c in parsed)
            validate_codecs(parsed, zdtype)
            for c in evolved:
                c.validate(shape=array_spec.shape, dtype=zdtype,
                           chunk_grid=_single_chunk_grid(array_spec.shape))
            pipeline = get_pipeline_class().from_codecs(evolved)
    except (UnknownCodecError, KeyError) as exc:
        m = re.search(r"'([^']+)'", str(exc))
        name = m.group(1) if m else str(exc)
        raise CodecUnavailable(f"unknown zarr v3 codec {name!r}", id=name,
                               reason="unknown name") from None
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr rejects a config with many types
        raise InvalidCodecConfig(f"zarr v3 codecs rejected: {type(exc).__name__}: {exc}",
                                 key=_v3_bad_key(exc, codecs)) from None
    return pipeline, array_spec, dt


def _single_chunk_grid(shape: tuple[int, ...]) -> Any:
    from zarr.core.chunk_grids import RegularChunkGrid

    return RegularChunkGrid(chunk_shape=shape)


def _v3_fill(zdtype: Any, fill: Any) -> Any:
    try:
        return zdtype.cast_scalar(fill)
    except Exception:  # noqa: BLE001 - maybe its JSON form ("NaN", [re, im], base64)
        return zdtype.from_json_scalar(fill, zarr_format=3)


def _v3_bad_key(exc: Exception, codecs: list[Any]) -> str | None:
    for c in codecs:
        conf = c.get("configuration") if isinstance(c, Mapping) else None
        if isinstance(conf, Mapping):
            key = codec_registry._bad_key(exc, conf)
            if key is not None:
                return key
    return None


def _v3_decode(payload: Any, spec: Mapping[str, Any],
               allow_pickle: bool) -> bytes | memoryview | list[Any]:
    pipeline, array_spec, _ = _v3_pipeline(spec, allow_pickle)
    what = "zarr v3 chunk decode"
    if not pipeline.bytes_bytes_codecs and type(pipeline.array_bytes_codec).__name__ in (
            "VLenUTF8Codec", "VLenBytesCodec"):
        vlen_checked("vlen-bytes", payload)  # the stored bytes are the vlen buffer itself
    try:
        buf = array_spec.prototype.buffer.from_bytes(payload)
        (nd,) = _run(pipeline.decode([(buf, array_spec)]))
        arr = nd.as_numpy_array()
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt input can raise anything
        raise _failure(DecodeFailed, what, exc) from None
    if arr.shape != array_spec.shape:
        raise DataSizeMismatch(f"{what}: decoded shape {list(arr.shape)}, expected "
                               f"{list(array_spec.shape)}")
    if arr.dtype.kind in "OT":
        return to_values(arr)
    return raw_bytes(arr)


def _v3_encode_array(pipeline: Any, array_spec: Any, arr: np.ndarray[Any, Any]) -> Any:
    nd = array_spec.prototype.nd_buffer.from_numpy_array(arr)
    return _run(pipeline.encode([(nd, array_spec)]))


def _v3_encode(payload: Any, spec: Mapping[str, Any], allow_pickle: bool) -> bytes | memoryview:
    pipeline, array_spec, dt = _v3_pipeline(spec, allow_pickle)
    what = "zarr v3 chunk encode"
    values = spec.get("values")
    if values is not None:
        arr = _array_from_values(values, dt, array_spec.shape, what)
    else:
        arr = _array_from_payload(payload, dt, array_spec.shape, what)
    try:
        (out,) = _v3_encode_array(pipeline, array_spec, arr)
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec may raise anything
        if _fails_on_zeros(lambda a: _v3_encode_array(pipeline, array_spec, a), arr):
            raise InvalidCodecConfig(f"zarr v3 codecs rejected their config: "
                                     f"{type(exc).__name__}: {exc}", key=None) from None
        raise _failure(EncodeFailed, what, exc) from None
    if out is None:
        raise EncodeFailed(f"{what}: the pipeline produced no chunk")
    return memoryview(out.as_numpy_array()).cast("B")
