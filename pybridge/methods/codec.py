"""The ``codec.*`` methods (PROTOCOL.md §6).

Every encode and decode runs in the worker pool (:mod:`pybridge.pool.codec_tasks`), so
the sidecar's own threads only check params, move bytes and reply. Codec
configs and dtypes are checked here first, so a bad request is answered
without a round trip to a worker and a forbidden codec never reaches one.

Large inputs may arrive as an upload stream (``"stream": {"bytes": n}`` in
place of ``"data"``) or an upload handoff file (``"shm"``), and large
results leave as a result stream
(:meth:`~pybridge.rpc.call.Call.reply_bytes`). Variable-length data (``string``
and ``bytes`` dtypes, and codecs such as ``vlen-utf8`` or ``json2`` that work
on object arrays) travels as ``"values"``, a list, in both directions.

This module stays cheap to import: numpy, numcodecs and zarr are imported by
the handlers.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from pybridge.errors import BridgeError, DataSizeMismatch, InvalidParams, TooLarge
from pybridge.methods.method import Method
from pybridge.rpc.params import Any_, Bin, Bool, Int, IntList, List, Map, Param, Str
from pybridge.rpc.protocol import MAX_FRAME_ELEMENTS

if TYPE_CHECKING:
    from pybridge.rpc.call import Call

__all__ = ["METHODS"]

#: Room for the msgpack framing around a ``*_many`` result's items.
_ITEM_OVERHEAD = 8
_RESULT_OVERHEAD = 64
#: The most values a reply carries: a frame's element limit, less room for the envelope.
_MAX_VALUES = MAX_FRAME_ELEMENTS - 1024
_WAIT_S = 0.05

_DATA = Bin(required=False)
_STREAM = Map(required=False)
#: An upload handoff file (PROTOCOL.md §3), in place of "data" or "stream".
_SHM = Map(required=False)
_DTYPE = Any_(required=False)
_SHAPE = IntList(required=False, min=0)
_VALUES = List(required=False)
#: A batch: its items, or their sizes with the items uploaded back to back.
_ITEMS = List(Bin(), required=False)
_SIZES = IntList(required=False, min=0)


# --------------------------------------------------------------------------
# Shared steps

def _check_dtype(wire: Any) -> None:
    if wire is not None:
        from pybridge.dtypes import parse_dtype

        parse_dtype(wire)


def _checked_codec(call: Call) -> bool:
    """Check the request's codec config and dtype here, before any worker
    sees them; return whether pickle is allowed."""
    from pybridge.codecs import get_codec

    allow: bool = call.settings.allow_pickle
    get_codec(call.params["codec"], allow)
    _check_dtype(call.params["dtype"])
    return allow


def _gather(call: Call, futures: list[Future[Any]]) -> list[Any]:
    """Wait for every future; cancel the rest on the first failure or a cancel.

    A BridgeError from item ``i`` gets ``details["index"] = i``.
    """
    index = {f: i for i, f in enumerate(futures)}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=_WAIT_S, return_when=FIRST_EXCEPTION)
            for f in done:
                exc = f.exception()
                if exc is not None:
                    if isinstance(exc, BridgeError) and len(futures) > 1:
                        exc.details.setdefault("index", index[f])
                    raise exc
            call.check_cancelled()
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _run_one(call: Call, fn: Any, *args: Any, payload: Any = None) -> Any:
    future = call.context.pool.submit(fn, *args, payload=payload)
    try:
        while True:
            try:
                return future.result(timeout=_WAIT_S)
            except FutureTimeout:
                call.check_cancelled()
    except BaseException:
        future.cancel()
        raise


def _run_many(call: Call, fn: Any, items: list[Any], *args: Any) -> list[Any]:
    pool = call.context.pool
    futures: list[Future[Any]] = []
    try:
        for item in items:
            call.check_cancelled()
            futures.append(pool.submit(fn, *args, payload=item))
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return _gather(call, futures)


def _reply(call: Call, result: Any) -> dict[str, Any]:
    if isinstance(result, list):
        if len(result) > _MAX_VALUES:
            raise TooLarge(f"the codec's output has {len(result)} values, more than one frame "
                           f"may hold ({_MAX_VALUES})", values=len(result), limit=_MAX_VALUES)
        return {"values": result}
    return call.reply_bytes(result)


def _reply_items(call: Call, results: list[Any]) -> dict[str, Any]:
    """``{"items": [...]}`` when the results fit in one frame; else the
    results back to back as a result stream, cut by ``"sizes"``."""
    total = _RESULT_OVERHEAD + sum(
        memoryview(r).nbytes + _ITEM_OVERHEAD if not isinstance(r, list) else _ITEM_OVERHEAD
        for r in results)
    limit = call.settings.max_frame_bytes
    if total <= limit:
        return {"items": results}
    if any(isinstance(r, list) for r in results):
        raise TooLarge(f"the {len(results)} items decode to values that make a {total}-byte "
                       f"reply, over the frame limit of {limit}; values cannot be streamed: "
                       "send fewer items per request", bytes=total, limit=limit)
    sizes = []
    for k, r in enumerate(results):
        sizes.append(memoryview(r).nbytes)
        call.send_data(r)
        results[k] = None  # each result is freed once it is on its way
    return {"sizes": sizes}


def _items(call: Call) -> list[Any]:
    """The batch's items: ``items``, or an upload (``stream`` or ``shm``) of
    the items back to back with their ``sizes``."""
    p = call.params
    uploaded = any(p.get(k) is not None for k in ("stream", "shm"))
    if p["items"] is not None:
        if uploaded or p["sizes"] is not None:
            raise InvalidParams("give either 'items', or 'sizes' with an upload, not both",
                                param="items", expected="items alone")
        items: list[Any] = list(p["items"])
        total = sum(memoryview(i).nbytes for i in items)
        limit = call.settings.max_request_bytes
        if limit is not None and total > limit:
            raise TooLarge(f"a batch of {len(items)} items holding {total} bytes is over the "
                           f"per-request limit of {limit} bytes (max_request_bytes): split it "
                           "into smaller batches", bytes=total, limit=limit)
        return items
    if p["sizes"] is None or not uploaded:
        raise InvalidParams("give 'items', or 'sizes' with the items uploaded back to back "
                            "('stream' or 'shm')", param="items", expected="array of bin")
    sizes: list[int] = p["sizes"]
    if call.has_upload_handoff:
        data: Any = call.upload_handoff().segment().buf
    else:
        data = memoryview(call.read_upload())
    nbytes = memoryview(data).nbytes
    if sum(sizes) != nbytes:
        raise DataSizeMismatch(f"the upload holds {nbytes} bytes, 'sizes' add up to "
                               f"{sum(sizes)}", expected_bytes=sum(sizes), bytes=nbytes)
    views, offset = [], 0
    for n in sizes:
        views.append(data[offset:offset + n])
        offset += n
    return views


# --------------------------------------------------------------------------
# Handlers

def codec_list(call: Call) -> dict[str, Any]:
    from pybridge.codecs import list_codecs

    return {"codecs": list_codecs(call.settings.allow_pickle)}


def codec_encode(call: Call) -> dict[str, Any]:
    from pybridge.pool import codec_tasks as tasks

    p = call.params
    allow = _checked_codec(call)
    payload = call.payload()
    result = _run_one(call, tasks.encode, p["codec"], p["dtype"], p["shape"], p["values"], allow,
                      payload=payload)
    return _reply(call, result)


def codec_decode(call: Call) -> dict[str, Any]:
    from pybridge.pool import codec_tasks as tasks

    p = call.params
    allow = _checked_codec(call)
    payload = call.payload()
    result = _run_one(call, tasks.decode, p["codec"], p["dtype"], p["shape"], allow,
                      payload=payload)
    return _reply(call, result)


def codec_encode_many(call: Call) -> dict[str, Any]:
    from pybridge.pool import codec_tasks as tasks

    p = call.params
    allow = _checked_codec(call)
    results = _run_many(call, tasks.encode, _items(call), p["codec"], p["dtype"], p["shape"],
                        None, allow)
    return _reply_items(call, results)


def codec_decode_many(call: Call) -> dict[str, Any]:
    from pybridge.pool import codec_tasks as tasks

    p = call.params
    allow = _checked_codec(call)
    from pybridge.handoff.results import HandoffUnavailable

    items = _items(call)
    handoff = p["handoff"]
    if handoff:
        sizes = _decoded_sizes(p["codec"], items, p["dtype"], p["shape"])
        if sizes is not None and call.way_back(sum(sizes), True) == "handoff":
            try:
                return _decode_many_handoff(call, items, sizes)
            except HandoffUnavailable:
                handoff = False  # /dev/shm cannot hold it: by the pipe
    results = _run_many(call, tasks.decode, items, p["codec"], p["dtype"], p["shape"], allow)
    if handoff and not any(isinstance(r, list) for r in results):
        total = sum(memoryview(r).nbytes for r in results)
        if call.way_back(total, True) == "handoff":
            with contextlib.suppress(HandoffUnavailable):  # else by the pipe
                return _items_handoff(call, results, total)
    return _reply_items(call, results)


def _decoded_sizes(config: Any, items: list[Any], wire_dtype: Any,
                   shape: list[int] | None) -> list[int] | None:
    """Each item's decoded size, when all can be told before decoding; else None.

    From ``dtype`` and ``shape`` when both are given, else from the codec's
    header (zstd, blosc, lz4).
    """
    from pybridge.dtypes import is_variable, parse_dtype
    from pybridge.pool import codec_tasks as tasks

    if wire_dtype is not None:
        dt = parse_dtype(wire_dtype)
        if is_variable(dt):
            return None
        if shape is not None:
            n = 1
            for d in shape:
                n *= d
            return [n * dt.itemsize] * len(items)
    sizes = []
    for item in items:
        size = tasks.decoded_size(config["id"], item)
        if size is None:
            return None
        sizes.append(size)
    return sizes


def _decode_many_handoff(call: Call, items: list[Any], sizes: list[int]) -> dict[str, Any]:
    """Decode every item into one handoff segment, at its offset.

    The items are cut into one run per worker (of about equal decoded size),
    so a request costs a round trip per worker, not per item. A worker
    decodes its run into memory it reuses and hands it back without a copy;
    this thread writes each run into the segment's file as it arrives
    (``pwrite``, off the workers' critical path: on few cores the sidecar's
    thread is otherwise idle meanwhile).
    """
    import os

    from pybridge.handoff.results import result_handoff
    from pybridge.handoff.shm import pwrite_all
    from pybridge.pool import codec_tasks as tasks

    p = call.params
    pool = call.context.pool
    total = sum(sizes)
    offsets = [0] * len(sizes)
    for k in range(1, len(sizes)):
        offsets[k] = offsets[k - 1] + sizes[k - 1]
    with result_handoff(call, total) as seg:
        where: dict[Future[Any], int] = {}
        try:
            for a, b in _runs(sizes, pool.size):
                call.check_cancelled()
                f = pool.submit(tasks.decode_run, p["codec"], p["dtype"], p["shape"],
                                call.settings.allow_pickle, [len(x) for x in items[a:b]], a,
                                sizes[a:b], payload=items[a:b])
                where[f] = offsets[a]
            fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                pending = set(where)
                while pending:
                    done, pending = wait(pending, timeout=_WAIT_S, return_when=FIRST_COMPLETED)
                    for f in done:
                        offset = where.pop(f)  # dropping the future frees its output segment
                        pwrite_all(fd, f.result(), offset)
                    done = set()
                    call.check_cancelled()
            finally:
                os.close(fd)
        except BaseException:
            for f in where:
                f.cancel()
            wait(where)
            raise
    return {"shm": {"path": seg.path, "bytes": total}, "sizes": sizes}


def _runs(sizes: list[int], parts: int) -> list[tuple[int, int]]:
    """Cut ``range(len(sizes))`` into at most ``parts`` runs of about equal total size."""
    n = len(sizes)
    parts = max(1, min(parts, n))
    total = sum(sizes)
    runs: list[tuple[int, int]] = []
    start, acc = 0, 0
    for k, size in enumerate(sizes):
        acc += size
        left = parts - len(runs) - 1  # runs still to make after this one
        if left and (acc * parts >= total * (len(runs) + 1) or n - k - 1 == left):
            runs.append((start, k + 1))
            start = k + 1
    runs.append((start, n))
    return [r for r in runs if r[0] < r[1]]


def _items_handoff(call: Call, results: list[Any], total: int) -> dict[str, Any]:
    """Write decoded items (whose sizes were not known up front) into one handoff segment."""
    import os

    from pybridge.handoff.results import result_handoff
    from pybridge.handoff.shm import pwrite_all

    sizes = []
    with result_handoff(call, total) as seg:
        fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            offset = 0
            for r in results:
                size = memoryview(r).nbytes
                pwrite_all(fd, r, offset)
                offset += size
                sizes.append(size)
        finally:
            os.close(fd)
    return {"shm": {"path": seg.path, "bytes": total}, "sizes": sizes}


def _pipeline_spec(call: Call, *, encode: bool) -> dict[str, Any]:
    """Check the pipeline params; return the spec the worker gets."""
    from pybridge.codecs import check_safe, get_codec

    p = call.params
    allow = call.settings.allow_pickle
    _check_dtype(p["dtype"])
    if p["dtype"] is None:
        raise InvalidParams("missing param 'dtype'", param="dtype", expected="dtype")
    fmt = p["zarr_format"]
    spec = {"zarr_format": fmt, "dtype": p["dtype"], "shape": p["shape"],
            "values": p["values"] if encode else None}
    if fmt == 2:
        if p["codecs"] is not None:
            raise InvalidParams("'codecs' is for zarr_format 3; use 'filters' and 'compressor'",
                                param="codecs", expected="absent")
        for f in p["filters"] or []:
            if not isinstance(f, dict):
                raise InvalidParams("'filters' must be a list of codec configs",
                                    param="filters", expected="array of map")
            get_codec(f, allow)
        if p["compressor"] is not None:
            get_codec(p["compressor"], allow)
        spec.update(filters=p["filters"], compressor=p["compressor"], order=p["order"],
                    endian=p["endian"])
    else:
        for key in ("filters", "compressor"):
            if p[key] is not None:
                raise InvalidParams(f"{key!r} is for zarr_format 2; use 'codecs'",
                                    param=key, expected="absent")
        if p["order"] != "C":
            raise InvalidParams("'order' is for zarr_format 2; use a 'transpose' codec",
                                param="order", expected="absent")
        if p["codecs"] is None:
            raise InvalidParams("missing param 'codecs'", param="codecs", expected="array of map")
        check_safe(p["codecs"], allow)
        spec.update(codecs=p["codecs"], fill_value=p["fill_value"])
    return spec


def codec_pipeline_encode(call: Call) -> dict[str, Any]:
    from pybridge.pool import codec_tasks as tasks

    spec = _pipeline_spec(call, encode=True)
    payload = call.payload()
    result = _run_one(call, tasks.pipeline_encode, spec, call.settings.allow_pickle,
                      payload=payload)
    return _reply(call, result)


def codec_pipeline_decode(call: Call) -> dict[str, Any]:
    from pybridge.pool import codec_tasks as tasks

    spec = _pipeline_spec(call, encode=False)
    payload = call.payload()
    result = _run_one(call, tasks.pipeline_decode, spec, call.settings.allow_pickle,
                      payload=payload)
    return _reply(call, result)


# --------------------------------------------------------------------------
# The table

_CODEC = Map()

_PIPELINE: dict[str, Param] = {
    "zarr_format": Int(min=2, max=3),
    "dtype": _DTYPE,
    "shape": IntList(min=0),
    "filters": List(required=False, nullable=True),
    "compressor": Map(required=False, nullable=True),
    "order": Str(required=False, default="C", choices=("C", "F")),
    "endian": Str(required=False, default="little", choices=("little", "big")),
    "codecs": List(Map(), required=False),
    "fill_value": Any_(required=False),
    "data": _DATA,
    "stream": _STREAM,
    "shm": _SHM,
}

_BYTES = ("data", "stream", "shm")
_BYTES_OR_VALUES = (*_BYTES, "values")

METHODS: list[Method] = [
    Method("codec.list", codec_list, {}),
    Method("codec.encode", codec_encode, {
        "codec": _CODEC, "data": _DATA, "stream": _STREAM, "shm": _SHM, "values": _VALUES,
        "dtype": _DTYPE, "shape": _SHAPE}, payload=_BYTES_OR_VALUES),
    Method("codec.decode", codec_decode, {
        "codec": _CODEC, "data": _DATA, "stream": _STREAM, "shm": _SHM, "dtype": _DTYPE,
        "shape": _SHAPE}, payload=_BYTES),
    Method("codec.encode_many", codec_encode_many, {
        "codec": _CODEC, "items": _ITEMS, "sizes": _SIZES, "stream": _STREAM, "shm": _SHM,
        "dtype": _DTYPE, "shape": _SHAPE}),
    Method("codec.decode_many", codec_decode_many, {
        "codec": _CODEC, "items": _ITEMS, "sizes": _SIZES, "stream": _STREAM, "shm": _SHM,
        "dtype": _DTYPE, "shape": _SHAPE, "handoff": Bool(required=False, default=False)}),
    Method("codec.pipeline_encode", codec_pipeline_encode, {**_PIPELINE, "values": _VALUES},
           payload=_BYTES_OR_VALUES),
    Method("codec.pipeline_decode", codec_pipeline_decode, _PIPELINE, payload=_BYTES),
]
