"""Validation of request params at the dispatcher's edge.

Each method declares a spec, a dict from param name to :class:`Param`. The
server calls :func:`validate` before the handler runs, so handlers receive a
complete dict (optional params missing from the request hold their default)
and never see an unknown key or a value of the wrong wire type. Deeper checks
(a dtype that exists, a codec config numcodecs accepts) stay in the handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pybridge.errors import InvalidParams

__all__ = [
    "Any_",
    "Bin",
    "Bool",
    "Int",
    "IntList",
    "MAX_DIM",
    "List",
    "Map",
    "Param",
    "Str",
    "validate",
]

_MISSING: Any = object()

#: The largest array length or chunk length accepted (an int64 holds it;
#: numpy indexes with int64).
MAX_DIM = 2**63 - 1


@dataclass(frozen=True)
class Param:
    """One declared param: a checker, whether it is required, its default."""

    expected: str
    check: Callable[[Any], bool]
    required: bool = True
    default: Any = None
    nullable: bool = False


def _int_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def Int(*, required: bool = True, default: Any = None, min: int | None = None,
        max: int | None = None, nullable: bool = False) -> Param:
    def check(v: Any) -> bool:
        return _int_ok(v) and (min is None or v >= min) and (max is None or v <= max)

    bounds = ""
    if min is not None or max is not None:
        bounds = f" in [{'-inf' if min is None else min}, {'inf' if max is None else max}]"
    return Param(f"int{bounds}", check, required, default, nullable)


def Bin(*, required: bool = True, nullable: bool = False) -> Param:
    return Param("bin", lambda v: isinstance(v, (bytes, bytearray, memoryview)),
                 required, None, nullable)


def Str(*, required: bool = True, default: Any = None, choices: tuple[str, ...] | None = None,
        nullable: bool = False) -> Param:
    def check(v: Any) -> bool:
        return isinstance(v, str) and (choices is None or v in choices)

    expected = "str" if choices is None else "one of " + ", ".join(repr(c) for c in choices)
    return Param(expected, check, required, default, nullable)


def Bool(*, required: bool = True, default: Any = None, nullable: bool = False) -> Param:
    return Param("bool", lambda v: isinstance(v, bool), required, default, nullable)


def Map(*, required: bool = True, default: Any = None, nullable: bool = False) -> Param:
    return Param("map", lambda v: isinstance(v, dict), required, default, nullable)


def List(of: Param | None = None, *, required: bool = True, default: Any = None,
         nullable: bool = False) -> Param:
    def check(v: Any) -> bool:
        return isinstance(v, list) and (of is None or all(of.check(x) for x in v))

    expected = "array" if of is None else f"array of {of.expected}"
    return Param(expected, check, required, default, nullable)


def IntList(*, required: bool = True, default: Any = None, min: int | None = None,
            max: int | None = None, nullable: bool = False) -> Param:
    return List(Int(min=min, max=max), required=required, default=default, nullable=nullable)


def Any_(*, required: bool = True, default: Any = None) -> Param:
    return Param("any", lambda v: True, required, default, True)


def validate(spec: Mapping[str, Param], params: Any) -> dict[str, Any]:
    """Check ``params`` against ``spec``; return a complete params dict.

    Raises :class:`InvalidParams` naming the first bad param.
    """
    if not isinstance(params, dict):
        raise InvalidParams("params must be a map", param=None, expected="map")
    for key in params:
        if key not in spec:
            raise InvalidParams(f"unknown param {key!r}", param=str(key), expected="absent")
    out: dict[str, Any] = {}
    for name, p in spec.items():
        v = params.get(name, _MISSING)
        if v is _MISSING:
            if p.required:
                raise InvalidParams(f"missing param {name!r}", param=name, expected=p.expected)
            out[name] = p.default
        elif v is None and (p.nullable or not p.required):
            out[name] = p.default if not p.nullable else None
        elif p.check(v):
            out[name] = v
        else:
            raise InvalidParams(
                f"param {name!r} must be {p.expected}, got {type(v).__name__}",
                param=name, expected=p.expected,
            )
    return out
