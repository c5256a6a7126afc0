"""Wire dtypes (``protocol/PROTOCOL.md`` §6) to numpy dtypes and back.

A wire dtype is a str such as ``"float64"``, ``"datetime64[ns]"``, ``"S8"``,
``"U4"``, ``"string"`` or ``"bytes"``, or a list of ``[name, dtype]`` pairs
for a structured type. Raw array bytes on the wire are little-endian, so
:func:`parse_dtype` returns little-endian dtypes, and :func:`wire_dtype` gives
the same name to both byte orders.

``"string"`` is variable-length UTF-8 text (numpy's ``StringDType``) and
``"bytes"`` variable-length binary (numpy ``object``). Neither has a raw
byte form: their values travel as a list.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from pybridge.errors import UnsupportedDtype

__all__ = ["VARIABLE", "is_variable", "parse_dtype", "to_little_endian", "wire_dtype"]

_SIMPLE: dict[str, str] = {
    "bool": "|b1",
    "int8": "|i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "|u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
}
_SIMPLE_BY_KIND = {np.dtype(v).kind + str(np.dtype(v).itemsize): k for k, v in _SIMPLE.items()}

_TIME_RE = re.compile(r"^(datetime64|timedelta64)\[(\d*)(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\]$")
_FIXED_RE = re.compile(r"^([SU])(\d+)$")

#: The wire names of the variable-length dtypes.
VARIABLE = ("string", "bytes")

STRING_DTYPE = np.dtypes.StringDType()
BYTES_DTYPE = np.dtype(object)


def parse_dtype(wire: Any) -> np.dtype[Any]:
    """The numpy dtype for a wire dtype; :class:`UnsupportedDtype` otherwise."""
    if isinstance(wire, str):
        return _parse_name(wire)
    if isinstance(wire, list) and wire:
        return _parse_struct(wire)
    raise UnsupportedDtype(f"unsupported dtype {wire!r}", dtype=_printable(wire))


def _parse_name(wire: str) -> np.dtype[Any]:
    simple = _SIMPLE.get(wire)
    if simple is not None:
        return np.dtype(simple)
    if wire == "string":
        return STRING_DTYPE
    if wire == "bytes":
        return BYTES_DTYPE
    m = _TIME_RE.match(wire)
    if m:
        kind, count, unit = m.groups()
        if count and int(count) == 0:
            raise UnsupportedDtype(f"unsupported dtype {wire!r}", dtype=wire)
        return np.dtype(f"<{'M8' if kind == 'datetime64' else 'm8'}[{count}{unit}]")
    m = _FIXED_RE.match(wire)
    if m and int(m.group(2)) > 0:
        return np.dtype(f"{'|S' if m.group(1) == 'S' else '<U'}{m.group(2)}")
    raise UnsupportedDtype(f"unsupported dtype {wire!r}", dtype=wire)


def _parse_struct(wire: list[Any]) -> np.dtype[Any]:
    fields = []
    names = set()
    for item in wire:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and item[0] and item[0] not in names):
            raise UnsupportedDtype(
                "a structured dtype is a list of [name, dtype] pairs with distinct names",
                dtype=_printable(wire))
        names.add(item[0])
        field = parse_dtype(item[1])
        if is_variable(field):
            raise UnsupportedDtype(
                f"field {item[0]!r}: a structured dtype cannot hold variable-length fields",
                dtype=_printable(wire))
        fields.append((item[0], field))
    return np.dtype(fields)


def is_variable(dtype: np.dtype[Any]) -> bool:
    """True for the variable-length dtypes (``string``, ``bytes``, object)."""
    return dtype.kind in "OT"


def wire_dtype(dtype: np.dtype[Any], *, object_as: str = "string") -> str | list[Any]:
    """The wire name of a numpy dtype (either byte order).

    ``object_as`` names what an ``object`` dtype holds: ``"string"`` (the
    usual case in Zarr) or ``"bytes"``.
    """
    dtype = np.dtype(dtype)
    if dtype.fields is not None:
        return _wire_struct(dtype, object_as)
    if dtype.subdtype is not None:
        raise UnsupportedDtype(f"unsupported dtype {dtype.str} (subarray)", dtype=dtype.str)
    kind = dtype.kind
    if kind in "biufc":
        name = _SIMPLE_BY_KIND.get(kind + str(dtype.itemsize))
        if name is not None:
            return name
    elif kind in "Mm":
        unit, count = np.datetime_data(dtype)
        if unit != "generic":
            prefix = "datetime64" if kind == "M" else "timedelta64"
            return f"{prefix}[{'' if count == 1 else count}{unit}]"
    elif kind == "S" and dtype.itemsize > 0:
        return f"S{dtype.itemsize}"
    elif kind == "U" and dtype.itemsize > 0:
        return f"U{dtype.itemsize // 4}"
    elif kind == "T":
        return "string"
    elif kind == "O":
        if object_as not in VARIABLE:
            raise ValueError(f"object_as must be 'string' or 'bytes', got {object_as!r}")
        return object_as
    raise UnsupportedDtype(f"unsupported dtype {dtype.str}", dtype=dtype.str)


def _wire_struct(dtype: np.dtype[Any], object_as: str) -> list[Any]:
    out = []
    offset = 0
    assert dtype.names is not None and dtype.fields is not None
    for name in dtype.names:
        field, field_offset = dtype.fields[name][:2]
        if field_offset != offset:
            raise UnsupportedDtype(
                f"unsupported dtype {dtype.descr}: padded or overlapping fields",
                dtype=str(dtype.descr))
        out.append([name, wire_dtype(field, object_as=object_as)])
        offset += field.itemsize
    if offset != dtype.itemsize:
        raise UnsupportedDtype(f"unsupported dtype {dtype.descr}: trailing padding",
                               dtype=str(dtype.descr))
    return out


def to_little_endian(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The same dtype with every multi-byte part little-endian."""
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if _has_big_endian(dtype) else dtype


def _has_big_endian(dtype: np.dtype[Any]) -> bool:
    if dtype.fields is not None:
        return any(_has_big_endian(f[0]) for f in dtype.fields.values())
    if dtype.subdtype is not None:
        return _has_big_endian(dtype.subdtype[0])
    return dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False)


def _printable(wire: Any) -> Any:
    if isinstance(wire, (str, int, float, bool)) or wire is None:
        return wire
    if isinstance(wire, (list, tuple)):
        return [_printable(x) for x in wire]
    return repr(wire)
