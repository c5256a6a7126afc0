"""The ``array.*`` methods (PROTOCOL.md §7 and §8).

Requests are stateless: each names its store and path. The work is in
:mod:`pybridge.zarr`, imported by the handlers so that this module stays
cheap to import (zarr, numcodecs and numpy load on the first array request).
Every handler works inside one store session (:func:`pybridge.zarr.kv.session`):
for a zip store, a request's writes become visible together when it succeeds.
Handlers that read, write or reshape an array hold its extent lock
(:mod:`pybridge.zarr.extent`): resize, append and attribute changes
exclusively, reads and writes shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pybridge.errors import BridgeError, InvalidParams, ReadOnly, StoreError
from pybridge.methods.method import Method
from pybridge.rpc.params import MAX_DIM, Any_, Bin, Bool, Int, IntList, List, Map, Param, Str

if TYPE_CHECKING:
    from pybridge.rpc.call import Call
    from pybridge.zarr.kv import KV
    from pybridge.zarr.metadata import ArrayMeta
    from pybridge.zarr.store import StoreRef

__all__ = ["METHODS", "check_json", "store_ref", "with_store_errors"]

_MODES = ("r", "r+", "a", "w", "w-")
_OPEN_MODES = ("r", "r+", "a")


def _default() -> Any:
    from pybridge.zarr.metadata import DEFAULT

    return DEFAULT


class _Unset:
    """Default of a create param that was not given (resolved lazily to DEFAULT)."""

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Any = _Unset()


def _str_or_nil_list() -> Param:
    return Param("array of str or nil",
                 lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
                 False, None, True)


_STORE = {"store": Map(), "path": Str(required=False, default="")}


def store_ref(call: Call, create: bool = False) -> StoreRef:
    """The request's ``store`` and ``path`` as a ref (``create``: make a memory store)."""
    from pybridge.zarr.store import parse_store

    settings = call.context.settings
    return parse_store(call.params["store"], call.params["path"], settings.allowed_roots,
                       call.context.stores, create, call.context.remote_stores,
                       settings.allowed_urls)


Handler = Callable[["Call"], dict[str, Any]]


def _store_errors(operation: str, handler: Handler) -> Handler:
    """``handler`` with the OSErrors of its store I/O (a full disk, a read-only
    file system, permissions) answered as ``store_error`` naming ``operation``
    (e.g. "update the attributes of the array at"), the node and the full path."""
    @functools.wraps(handler)
    def run(call: Call) -> dict[str, Any]:
        try:
            return handler(call)
        except BridgeError:
            raise
        except OSError as e:
            from pybridge.zarr.oserrors import reason, store_error

            try:
                ref = store_ref(call)
            except BridgeError:  # the store is gone: say what we know
                raise StoreError(f"cannot {operation} {call.params.get('path')!r}: "
                                 f"{reason(e)}", operation=operation) from e
            raise store_error(e, f"{operation} {ref.describe()}", ref) from e

    return run


def with_store_errors(methods: list[Method], operations: Mapping[str, str]) -> list[Method]:
    """``methods`` whose handlers answer OSErrors as ``store_error`` (see
    :func:`_store_errors`); ``operations`` maps each method name to its words."""
    return [dataclasses.replace(m, handler=_store_errors(operations[m.name], m.handler))
            for m in methods]


def _ref(call: Call) -> StoreRef:
    return store_ref(call)


def _meta(call: Call, ref: StoreRef, kv: KV, fresh: bool = False) -> ArrayMeta:
    from pybridge.zarr.metadata import open_meta

    return open_meta(ref, call.context.settings.allow_pickle, kv, fresh,
                     call.context.metadata_cache)


def _check_writable(call: Call) -> None:
    if call.params.get("mode") == "r":
        raise ReadOnly("the node was opened with mode 'r'", mode="r")


#: How a handler holds its array's extent lock (:mod:`pybridge.zarr.extent`).
SHARED = "shared"
EXCLUSIVE = "exclusive"


@contextlib.contextmanager
def _array(call: Call, writable: bool = False, extent: str | None = None,
           upload: _Upload | None = None) -> Iterator[tuple[ArrayMeta, KV]]:
    """The request's array and its store session (checks mode ``r`` for writes).

    With ``extent``, the array's extent lock is held (``SHARED`` or
    ``EXCLUSIVE``) for the block and the metadata is opened under it
    (read afresh for ``EXCLUSIVE``). ``upload`` is taken before waiting for
    the lock, if the request has to wait.
    """
    from pybridge.zarr.extent import extent_key
    from pybridge.zarr.kv import session

    if writable:
        _check_writable(call)
    ref = _ref(call)
    with session(ref, writable) as kv:
        if extent is None:
            yield _meta(call, ref, kv), kv
            return

        def before_wait() -> None:
            if upload is not None:
                upload.take(_meta(call, ref, kv))

        with call.context.extent_locks.hold(extent_key(ref), extent == EXCLUSIVE, call, before_wait):
            yield _meta(call, ref, kv, fresh=extent == EXCLUSIVE), kv


# -- create / open -----------------------------------------------------------

def create(call: Call) -> dict[str, Any]:
    from pybridge.zarr.create import create_array

    p = dict(call.params)
    for key in ("compressor", "filters", "fill_value"):
        if p[key] is _UNSET:
            p[key] = _default()
    if p["attributes"] is not None:
        check_json(p["attributes"], "attributes")
    ref = store_ref(call, create=p["mode"] not in ("r", "r+"))
    meta = create_array(ref, p, call.context.settings.allow_pickle, call.context.metadata_cache)
    return {"metadata": meta.wire}


def open_(call: Call) -> dict[str, Any]:
    with _array(call) as (meta, _):
        return {"metadata": meta.wire}


# -- read / write -------------------------------------------------------------

def read(call: Call) -> dict[str, Any]:
    from pybridge.zarr.read import read_array

    p = call.params
    with _array(call, extent=SHARED) as (meta, kv):
        return read_array(call, meta, kv, p["start"], p["stop"], p["step"], p["handoff"])


class _Upload:
    """A write's or append's upload stream, taken whole ahead of time when
    the request must wait: for a zip archive's write session, or for the
    array's extent lock. A request that waited with its upload unread would
    stop the reader thread once its queue is full, and the holder might need
    that thread (see :func:`pybridge.zarr.write.spool_upload`).
    ``pieces`` is the taken upload, or None when it is still to be read.
    """

    def __init__(self, call: Call, shape: list[int]) -> None:
        self.call = call
        self.shape = shape
        self.pieces: Iterator[bytes] | None = None
        if call.params["stream"] is not None and call.params["store"].get("kind") == "zip":
            _check_writable(call)
            from pybridge.zarr.kv import session

            ref = _ref(call)
            with session(ref) as kv:
                self.take(_meta(call, ref, kv))

    def take(self, meta: ArrayMeta) -> None:
        """Take the upload now (once), checking its declared size against ``meta``."""
        from pybridge.zarr.chunk_tasks import out_dtype
        from pybridge.zarr.chunks import product
        from pybridge.zarr.write import spool_upload

        if self.pieces is not None or self.call.params["stream"] is None:
            return
        if meta.variable:
            raise InvalidParams(f"{meta.wire_dtype!r} data travel as 'values'",
                                param="values", expected="array of str or bin")
        nbytes = product(self.shape) * out_dtype(meta.spec.dtype).itemsize
        self.pieces = spool_upload(self.call, nbytes)


def write(call: Call) -> dict[str, Any]:
    from pybridge.zarr.write import write_array

    p = call.params
    upload = _Upload(call, p["shape"])
    with _array(call, writable=True, extent=SHARED, upload=upload) as (meta, kv):
        return write_array(call, meta, kv, p["start"], p["shape"], p["data"], p["values"],
                           upload.pieces)


# -- resize / append / raw chunks ------------------------------------------------

def resize(call: Call) -> dict[str, Any]:
    from pybridge.zarr.ops import resize as resize_

    with _array(call, writable=True, extent=EXCLUSIVE) as (meta, kv):
        new = resize_(meta, kv, call.params["shape"], call.context.settings.allow_pickle,
                      call.context.metadata_cache)
        return {"metadata": new.wire}


def append(call: Call) -> dict[str, Any]:
    from pybridge.zarr.ops import append as append_

    p = call.params
    upload = _Upload(call, p["shape"])
    with _array(call, writable=True, extent=EXCLUSIVE, upload=upload) as (meta, kv):
        done = append_(call, meta, kv, p["axis"], p["shape"], p["data"], p["values"],
                       call.context.settings.allow_pickle, upload.pieces)
        return {"metadata": done.meta.wire,
                "region": {"start": list(done.start), "stop": list(done.stop)}}


def chunk_keys(call: Call) -> dict[str, Any]:
    from pybridge.zarr.ops import chunk_keys as keys

    with _array(call) as (meta, kv):
        return {"keys": keys(meta, kv)}


def stats(call: Call) -> dict[str, Any]:
    from pybridge.zarr.ops import stats as array_stats

    with _array(call) as (meta, kv):
        return array_stats(meta, kv)


def read_chunk_raw(call: Call) -> dict[str, Any]:
    from pybridge.zarr.ops import read_chunk_raw as read_raw

    with _array(call) as (meta, kv):
        raw = read_raw(meta, kv, call.params["key"])
    return call.reply_bytes(raw)


def write_chunk_raw(call: Call) -> dict[str, Any]:
    from pybridge.zarr.ops import write_chunk_raw as write_raw

    p = call.params
    data = call.payload()
    with _array(call, writable=True, extent=SHARED) as (meta, kv):
        write_raw(call, meta, kv, p["key"], data)
    return {}


# -- attributes ----------------------------------------------------------------

def check_json(value: Any, where: str) -> None:
    """Refuse what JSON cannot hold: bin, non-str keys, other types."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return  # NaN and infinities are written as zarr-python writes them
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_json(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidParams(f"{where} has a non-str key {k!r}", param="attributes",
                                    expected="JSON object")
            check_json(v, f"{where}.{k}")
        return
    raise InvalidParams(f"{where} holds a {type(value).__name__}, which JSON cannot hold",
                        param="attributes", expected="JSON-serializable values")


def get_attributes(call: Call) -> dict[str, Any]:
    with _array(call) as (meta, _):
        return {"attributes": meta.wire["attributes"]}


def _set_attributes(call: Call, merge: bool) -> dict[str, Any]:
    from pybridge.zarr.metadata import zarr_array

    attrs = call.params["attributes"]
    check_json(attrs, "attributes")
    # Exclusive: a v3 attribute change rewrites zarr.json, shape included.
    with _array(call, writable=True, extent=EXCLUSIVE) as (meta, kv):
        try:
            z = zarr_array(meta, kv)
            if merge:
                z.update_attributes(attrs)
            else:
                z.attrs.put(attrs)
            out = dict(z.attrs.asdict())
        finally:
            call.context.metadata_cache.forget(meta.ref)
    return {"attributes": out}


def put_attributes(call: Call) -> dict[str, Any]:
    return _set_attributes(call, merge=False)


def update_attributes(call: Call) -> dict[str, Any]:
    return _set_attributes(call, merge=True)


# -- the table -------------------------------------------------------------------

_SELECTION = IntList(required=False, nullable=True)
_VALUES = Param("array of str or bin",
                lambda v: isinstance(v, list) and all(isinstance(x, (str, bytes, bytearray))
                                                      for x in v),
                False, None, True)

#: An upload handoff (PROTOCOL.md §3): ``{"path": str, "bytes": int}``,
#: checked by :meth:`pybridge.rpc.call.Call.upload_handoff`.
_SHM = Map(required=False)

_BYTES = ("data", "stream", "shm")
_BYTES_OR_VALUES = (*_BYTES, "values")

_METHODS: list[Method] = [
    Method("array.create", create, {
        **_STORE,
        "mode": Str(required=False, default="w-", choices=_MODES),
        "zarr_format": Int(required=False, default=3, min=2, max=3),
        "shape": IntList(min=0, max=MAX_DIM),
        "chunks": IntList(min=1, max=MAX_DIM),
        "dtype": Any_(),
        "compressor": Param("codec config map or nil", lambda v: isinstance(v, dict),
                            False, _UNSET, True),
        "filters": Param("array of codec config maps or nil",
                         lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
                         False, _UNSET, True),
        "codecs": List(Map(), required=False, nullable=True),
        "shards": IntList(required=False, min=1, max=MAX_DIM, nullable=True),
        "fill_value": Param("a scalar or nil", lambda v: True, False, _UNSET, True),
        "order": Str(required=False, choices=("C", "F"), nullable=True),
        "dimension_separator": Str(required=False, choices=(".", "/"), nullable=True),
        "chunk_key_encoding": Map(required=False, nullable=True),
        "dimension_names": _str_or_nil_list(),
        "attributes": Map(required=False, nullable=True),
    }),
    Method("array.open", open_, {
        **_STORE,
        "mode": Str(required=False, default="r", choices=_OPEN_MODES),
    }),
    Method("array.read", read, {
        **_STORE,
        "start": _SELECTION,
        "stop": _SELECTION,
        "step": IntList(required=False, min=1, nullable=True),
        "handoff": Bool(required=False, default=False),
    }),
    Method("array.write", write, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "start": _SELECTION,
        "shape": IntList(),
        "data": Bin(required=False),
        "stream": Map(required=False),
        "shm": _SHM,
        "values": _VALUES,
    }, payload=_BYTES_OR_VALUES),
    Method("array.resize", resize, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "shape": IntList(min=0, max=MAX_DIM),
    }),
    Method("array.append", append, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "axis": Int(required=False, default=0),
        "shape": IntList(min=0),
        "data": Bin(required=False),
        "stream": Map(required=False),
        "shm": _SHM,
        "values": _VALUES,
    }, payload=_BYTES_OR_VALUES),
    Method("array.chunk_keys", chunk_keys, dict(_STORE)),
    Method("array.read_chunk_raw", read_chunk_raw, {**_STORE, "key": Str()}),
    Method("array.write_chunk_raw", write_chunk_raw, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "key": Str(),
        "data": Bin(required=False),
        "stream": Map(required=False),
        "shm": _SHM,
    }, payload=_BYTES),
    Method("array.get_attributes", get_attributes, dict(_STORE)),
    Method("array.put_attributes", put_attributes, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "attributes": Map(),
    }),
    Method("array.update_attributes", update_attributes, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "attributes": Map(),
    }),
    Method("array.stats", stats, dict(_STORE)),
]

METHODS: list[Method] = with_store_errors(_METHODS, {
    "array.create": "create the array at",
    "array.open": "open the array at",
    "array.read": "read the array at",
    "array.write": "write to the array at",
    "array.resize": "resize the array at",
    "array.append": "append to the array at",
    "array.chunk_keys": "list the chunks of the array at",
    "array.read_chunk_raw": "read a chunk of the array at",
    "array.write_chunk_raw": "write a chunk of the array at",
    "array.get_attributes": "read the attributes of the array at",
    "array.put_attributes": "replace the attributes of the array at",
    "array.update_attributes": "update the attributes of the array at",
    "array.stats": "measure the stored chunks of the array at",
})
