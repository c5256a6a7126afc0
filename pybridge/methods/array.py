"""The ``array.*`` methods (PROTOCOL.md §7).

Requests are stateless: each names its store and path. The work is in
:mod:`pybridge.arrays`, imported by the handlers so that this module stays
cheap to import (zarr, numcodecs and numpy load on the first array request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pybridge.errors import InvalidParams, ReadOnly
from pybridge.methods import Method
from pybridge.params import Any_, Bin, Bool, Int, IntList, List, Map, Param, Str

if TYPE_CHECKING:
    from pybridge.arrays.metadata import ArrayMeta
    from pybridge.arrays.store import StoreRef
    from pybridge.call import Call

__all__ = ["METHODS"]

_MODES = ("r", "r+", "a", "w", "w-")
_OPEN_MODES = ("r", "r+", "a")


def _default() -> Any:
    from pybridge.arrays.metadata import DEFAULT

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


def _ref(call: Call) -> StoreRef:
    from pybridge.arrays.store import parse_store

    return parse_store(call.params["store"], call.params["path"],
                       call.context.settings.allowed_roots)


def _meta(call: Call, ref: StoreRef) -> ArrayMeta:
    from pybridge.arrays.metadata import open_meta

    return open_meta(ref, call.context.settings.allow_pickle)


def _check_writable(call: Call) -> None:
    if call.params.get("mode") == "r":
        raise ReadOnly("the array was opened with mode 'r'", mode="r")


# -- create / open -----------------------------------------------------------

def create(call: Call) -> dict[str, Any]:
    from pybridge.arrays.create import create_array

    p = dict(call.params)
    for key in ("compressor", "filters", "fill_value"):
        if p[key] is _UNSET:
            p[key] = _default()
    if p["attributes"] is not None:
        _check_json(p["attributes"], "attributes")
    meta = create_array(_ref(call), p, call.context.settings.allow_pickle)
    return {"metadata": meta.wire}


def open_(call: Call) -> dict[str, Any]:
    return {"metadata": _meta(call, _ref(call)).wire}


# -- read / write -------------------------------------------------------------

def read(call: Call) -> dict[str, Any]:
    from pybridge.arrays.read import read_array

    p = call.params
    return read_array(call, _meta(call, _ref(call)), p["start"], p["stop"], p["handoff"])


def write(call: Call) -> dict[str, Any]:
    from pybridge.arrays.write import write_array

    p = call.params
    if (p["data"] is None) == (p["stream"] is None):
        raise InvalidParams("give exactly one of 'data' and 'stream'", param="data",
                            expected="bin")
    _check_writable(call)
    return write_array(call, _meta(call, _ref(call)), p["start"], p["shape"], p["data"])


# -- attributes ----------------------------------------------------------------

def _check_json(value: Any, where: str) -> None:
    """Refuse what JSON cannot hold: bin, non-str keys, other types."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return  # NaN and infinities are written as zarr-python writes them
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidParams(f"{where} has a non-str key {k!r}", param="attributes",
                                    expected="JSON object")
            _check_json(v, f"{where}.{k}")
        return
    raise InvalidParams(f"{where} holds a {type(value).__name__}, which JSON cannot hold",
                        param="attributes", expected="JSON-serializable values")


def get_attributes(call: Call) -> dict[str, Any]:
    return {"attributes": _meta(call, _ref(call)).wire["attributes"]}


def _set_attributes(call: Call, merge: bool) -> dict[str, Any]:
    from pybridge.arrays.metadata import forget, locate, open_zarr
    from pybridge.arrays.write import LOCKS

    _check_writable(call)
    attrs = call.params["attributes"]
    _check_json(attrs, "attributes")
    ref = _ref(call)
    fmt, _ = locate(ref)
    keys = LOCKS.acquire([(ref.dir, "attributes")])
    try:
        z = open_zarr(ref, "r+", fmt)
        if merge:
            z.update_attributes(attrs)
        else:
            z.attrs.put(attrs)
        out = dict(z.attrs.asdict())
    finally:
        LOCKS.release(keys)
        forget(ref)
    return {"attributes": out}


def put_attributes(call: Call) -> dict[str, Any]:
    return _set_attributes(call, merge=False)


def update_attributes(call: Call) -> dict[str, Any]:
    return _set_attributes(call, merge=True)


# -- the table -------------------------------------------------------------------

_SELECTION = IntList(required=False, nullable=True)

METHODS: list[Method] = [
    Method("array.create", create, {
        **_STORE,
        "mode": Str(required=False, default="w-", choices=_MODES),
        "zarr_format": Int(required=False, default=3, min=2, max=3),
        "shape": IntList(min=0),
        "chunks": IntList(min=1),
        "dtype": Any_(),
        "compressor": Param("codec config map or nil", lambda v: isinstance(v, dict),
                            False, _UNSET, True),
        "filters": Param("array of codec config maps or nil",
                         lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
                         False, _UNSET, True),
        "codecs": List(Map(), required=False, nullable=True),
        "shards": IntList(required=False, min=1, nullable=True),
        "fill_value": Param("a scalar or nil", lambda v: True, False, _UNSET, True),
        "order": Str(required=False, choices=("C", "F"), nullable=True),
        "dimension_separator": Str(required=False, choices=(".", "/"), nullable=True),
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
        "handoff": Bool(required=False, default=False),
    }),
    Method("array.write", write, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "start": _SELECTION,
        "shape": IntList(),
        "data": Bin(required=False),
        "stream": Map(required=False),
    }),
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
]
