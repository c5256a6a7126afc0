"""Node metadata documents, read through a :class:`~pybridge.zarr.kv.KV`.

The sidecar reads ``zarr.json`` (v3) and ``.zarray``/``.zgroup`` plus
``.zattrs`` (v2) itself, so that it can

- tell an array from a group and a missing node cheaply, and notice a
  changed document by its stamp (:func:`node_signature`);
- accept every spelling real writers produce before zarr-python sees the
  document (:func:`normalize_v2`): ``<u1``/``>u1``/``=u1`` and other
  one-byte types with a byte order (tensorstore writes ``<u1``, which
  zarr-python 3.1 refuses), ``<S5``, ``=f8``, structured fields likewise,
  and a complex ``fill_value`` given as one number;
- use consolidated metadata (v2 ``.zmetadata``, zarr-python's v3 inline
  ``consolidated_metadata``) for a group's members, and for an array whose
  own document is missing;
- refuse a document that would exhaust the sidecar: over
  :data:`~pybridge.zarr.files.MAX_METADATA_BYTES` (checked before it is
  read) or nested deeper than :data:`MAX_JSON_DEPTH`;
- say what is there instead when no Zarr node is (:func:`no_node`: an N5
  container, an HDF5 or zip file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybridge.errors import BridgeError, InvalidMetadata, NotFound

if TYPE_CHECKING:
    from pybridge.zarr.kv import KV

__all__ = [
    "NodeDoc",
    "consolidated_docs",
    "foreign_node",
    "join",
    "no_node",
    "node_signature",
    "normalize_v2",
    "read_node",
]

ZARR_JSON = "zarr.json"
ZARRAY = ".zarray"
ZATTRS = ".zattrs"
ZGROUP = ".zgroup"
ZMETADATA = ".zmetadata"
#: Keys that are metadata, never chunks.
METADATA_KEYS = frozenset({ZARR_JSON, ZARRAY, ZATTRS, ZGROUP, ZMETADATA})


@dataclass(frozen=True)
class NodeDoc:
    """One node's metadata.

    ``doc`` is zarr.json (v3), or ``.zarray``/``.zgroup`` with the
    ``.zattrs`` content under ``"attributes"`` (v2), as zarr-python's
    ``from_dict`` takes them. ``signature`` changes when any of the files
    change. ``path`` is the node's path in the store.
    """

    path: str
    kind: str
    zarr_format: int
    doc: dict[str, Any]
    signature: tuple[Any, ...]


def join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def node_signature(kv: KV, path: str) -> tuple[Any, ...] | None:
    """The stamps of the node's metadata files (None: no node there)."""
    s3 = kv.stamp(join(path, ZARR_JSON))
    if s3 is not None:
        return (3, s3)
    s2 = kv.stamp(join(path, ZARRAY))
    if s2 is not None:
        return (2, "array", s2, kv.stamp(join(path, ZATTRS)))
    g2 = kv.stamp(join(path, ZGROUP))
    if g2 is not None:
        return (2, "group", g2, kv.stamp(join(path, ZATTRS)), kv.stamp(join(path, ZMETADATA)))
    return None


#: The deepest nesting of lists and objects accepted in a metadata document
#: (deeper ones would exhaust the recursion of the code that walks them).
MAX_JSON_DEPTH = 128


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of a parsed JSON value (walked without recursion),
    at most ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return d
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _load(kv: KV, key: str) -> Any:
    raw = kv.get(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    except ValueError as e:
        raise InvalidMetadata(f"{key!r} is not valid JSON: {e}", key=key) from None
    else:
        depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise InvalidMetadata(f"{key!r} nests lists and objects more than "
                              f"{MAX_JSON_DEPTH} deep", key=key, limit=MAX_JSON_DEPTH)
    return value


def _object(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidMetadata(f"{key!r} is not a JSON object", key=key)
    return value


def read_node(kv: KV, path: str, signature: tuple[Any, ...] | None = None) -> NodeDoc | None:
    """The node at ``path``, or None when there is none."""
    sig = signature if signature is not None else node_signature(kv, path)
    if sig is None:
        return None
    if sig[0] == 3:
        key = join(path, ZARR_JSON)
        doc = _object(_load(kv, key), key)
        kind = doc.get("node_type")
        if kind not in ("array", "group"):
            raise InvalidMetadata(f"{key!r} has node_type {kind!r}", key=key)
        return NodeDoc(path, kind, 3, doc, sig)
    kind = sig[1]
    key = join(path, ZARRAY if kind == "array" else ZGROUP)
    doc = dict(_object(_load(kv, key), key))
    attrs = _load(kv, join(path, ZATTRS))
    doc["attributes"] = _object(attrs, join(path, ZATTRS)) if attrs is not None else {}
    if kind == "array":
        doc = normalize_v2(doc)
    return NodeDoc(path, kind, 2, doc, sig)


# -- what else may be there ----------------------------------------------------

N5_ATTRIBUTES = "attributes.json"
_MAGIC = ((b"\x89HDF\r\n\x1a\n", "hdf5", "an HDF5 file"),
          (b"PK\x03\x04", "zip", "a zip archive (open it with store kind 'zip')"))


def _n5_attributes(kv: KV, path: str) -> Any:
    try:
        raw = kv.get(join(path, N5_ATTRIBUTES))
        return json.loads(raw) if raw is not None else None
    except (BridgeError, ValueError, RecursionError):
        return None


def foreign_node(kv: KV, path: str) -> tuple[str, str] | None:
    """``(kind, words)`` when a recognisable non-Zarr container is at ``path``
    where no Zarr node is: N5 (an ``attributes.json`` with an ``n5`` version
    at the path or above it, or N5 dataset attributes at the path), or a
    filesystem store whose root is an HDF5 or zip file. None otherwise."""
    parts = path.split("/") if path else []
    for i in range(len(parts), -1, -1):
        attrs = _n5_attributes(kv, "/".join(parts[:i]))
        if not isinstance(attrs, dict):
            continue
        if "n5" in attrs:
            return "n5", "an N5 container"
        if i == len(parts) and "dimensions" in attrs and "dataType" in attrs:
            return "n5", "an N5 dataset"
    root = getattr(kv, "root", None)
    if kv.kind == "filesystem" and isinstance(root, str):
        head = _head(root)
        for magic, kind, words in _MAGIC:
            if head.startswith(magic):
                return kind, words
    return None


def _head(path: str) -> bytes:
    """The first bytes of ``path`` when it is a regular file (else b"")."""
    import os

    from pybridge.zarr.files import open_regular

    try:
        fd = open_regular(path, "store")
    except BridgeError:
        return b""
    if fd is None:
        return b""
    try:
        return os.pread(fd, 16, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


def no_node(kv: KV, path: str, what: str, where: str) -> NotFound:
    """The ``not_found`` error for no ``what`` ("array", "group") at ``path``,
    saying what was found instead when it is something recognisable."""
    found = foreign_node(kv, path)
    if found is None:
        return NotFound(f"no {what} at {where}", path=path)
    return NotFound(f"no {what} at {where}: found {found[1]} there; ZarrBridge reads "
                    "Zarr v2 and v3", path=path, found=found[0])


# -- tolerant spellings -------------------------------------------------------

_ORDERED = re.compile(r"^([<>=|])(.+)$")


def _v2_dtype(spec: Any) -> Any:
    """A v2 dtype spelled the way zarr-python 3.1 accepts it."""
    if isinstance(spec, list):
        return [[f[0], _v2_dtype(f[1]), *f[2:]] if isinstance(f, list) and len(f) >= 2 else f
                for f in spec]
    if not isinstance(spec, str):
        return spec
    import numpy as np

    m = _ORDERED.match(spec)
    order, rest = (m.group(1), m.group(2)) if m else ("", spec)
    try:
        dt = np.dtype(rest)
    except TypeError:
        return spec
    if dt.kind in "SVO" or (dt.itemsize == 1 and dt.kind in "biu"):
        return "|" + rest
    if order in ("", "=", "|"):
        return ("<" if np.little_endian else ">") + rest
    return spec


def normalize_v2(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A v2 ``.zarray`` document with its dtype (and complex fill) made canonical."""
    out = dict(doc)
    if "dtype" in out:
        out["dtype"] = _v2_dtype(out["dtype"])
    fill = out.get("fill_value")
    dt = out.get("dtype")
    if isinstance(dt, str) and dt[1:2] == "c" and isinstance(fill, (int, float)) \
            and not isinstance(fill, bool):
        out["fill_value"] = [fill, 0.0]
    return out


# -- consolidated metadata ---------------------------------------------------------

def consolidated_docs(kv: KV, group: NodeDoc) -> dict[str, NodeDoc] | None:
    """The group's consolidated members, by path relative to the group (None: none)."""
    sig = ("consolidated", group.signature)
    if group.zarr_format == 3:
        cm = group.doc.get("consolidated_metadata")
        if not isinstance(cm, dict) or not isinstance(cm.get("metadata"), dict):
            return None
        out = {}
        for rel, doc in cm["metadata"].items():
            if isinstance(doc, dict) and doc.get("node_type") in ("array", "group"):
                out[rel] = NodeDoc(join(group.path, rel), doc["node_type"], 3, doc, sig)
        return out
    zm = _load(kv, join(group.path, ZMETADATA))
    if not isinstance(zm, dict) or not isinstance(zm.get("metadata"), dict):
        return None
    entries = zm["metadata"]
    out = {}
    for key, value in entries.items():
        if not isinstance(key, str) or not isinstance(value, dict):
            continue
        rel, _, name = key.rpartition("/")
        if name not in (ZARRAY, ZGROUP) or not rel:
            continue
        attrs = entries.get(join(rel, ZATTRS))
        doc = {**value, "attributes": attrs if isinstance(attrs, dict) else {}}
        kind = "array" if name == ZARRAY else "group"
        out[rel] = NodeDoc(join(group.path, rel), kind, 2,
                           normalize_v2(doc) if kind == "array" else doc, sig)
    return out


def from_consolidated(kv: KV, path: str) -> NodeDoc | None:
    """The node at ``path`` as an ancestor group's consolidated metadata has it."""
    parts = path.split("/") if path else []
    for i in range(len(parts) - 1, -1, -1):
        anc = "/".join(parts[:i])
        group = read_node(kv, anc)
        if group is None or group.kind != "group":
            continue
        members = consolidated_docs(kv, group)
        if members is not None:
            rel = "/".join(parts[i:])
            if rel in members:
                return members[rel]
    return None
