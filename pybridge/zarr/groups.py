"""Groups: create, open, list members, walk the tree, attributes, consolidate.

Group documents are read by :mod:`pybridge.zarr.documents`; creating groups,
changing their attributes and consolidating metadata go through
zarr-python. A group with consolidated metadata (v2 ``.zmetadata``, or
zarr-python's v3 inline form) lists its members and its tree from it, as
zarr-python does; otherwise the store is listed.

A ``group_info`` on the wire is
``{"path", "zarr_format", "attributes", "consolidated": bool}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pybridge.errors import AlreadyExists, BridgeError, InvalidParams, NotFound
from pybridge.libraries import import_zarr
from pybridge.zarr.documents import (
    ZMETADATA,
    NodeDoc,
    consolidated_docs,
    join,
    no_node,
    node_signature,
    read_node,
)
from pybridge.zarr.metadata import meta_from_doc, plain
from pybridge.zarr.oserrors import store_error, undo_new_dirs
from pybridge.zarr.store import StoreRef

if TYPE_CHECKING:
    from pybridge.zarr.kv import KV

__all__ = [
    "consolidate",
    "create_group",
    "group_info",
    "members",
    "open_group",
    "set_attributes",
    "tree",
]


def _where(ref: StoreRef) -> str:
    return ref.describe()


def group_info(kv: KV, node: NodeDoc) -> dict[str, Any]:
    """The wire description of a group node."""
    if node.zarr_format == 3:
        consolidated = node.doc.get("consolidated_metadata") is not None
    else:
        consolidated = kv.stamp(join(node.path, ZMETADATA)) is not None
    attrs = node.doc.get("attributes") or {}
    return {"path": node.path, "zarr_format": node.zarr_format,
            "attributes": plain(attrs), "consolidated": consolidated}


def open_group(ref: StoreRef, kv: KV) -> NodeDoc:
    """The group at ``ref``: NotFound when there is none (or an array is there)."""
    node = read_node(kv, ref.path)
    if node is None:
        raise no_node(kv, ref.path, "group", _where(ref))
    if node.kind != "group":
        raise NotFound(f"{_where(ref)} is an array, not a group", path=ref.path,
                       node_type="array")
    return node


def create_group(ref: StoreRef, kv: KV, mode: str, zarr_format: int,
                 attributes: Mapping[str, Any] | None) -> NodeDoc:
    """Create the group at ``ref`` (modes ``w-``, ``w``, ``a``; ``r``/``r+`` open)."""
    if mode in ("r", "r+"):
        return open_group(ref, kv)
    existing = node_signature(kv, ref.path)
    if existing is not None:
        if mode == "w-":
            raise AlreadyExists(f"a node exists at {_where(ref)}", path=ref.path)
        if mode == "a":
            node = read_node(kv, ref.path, existing)
            if node is not None and node.kind == "group":
                return node
            raise AlreadyExists(f"an array exists at {_where(ref)}", path=ref.path)
    kv.require_writable()
    zarr = import_zarr()
    try:
        with undo_new_dirs(ref):
            zarr.create_group(kv.zarr_store, path=ref.path or None, overwrite=(mode == "w"),
                              zarr_format=zarr_format, attributes=dict(attributes or {}))
    except BridgeError:
        raise
    except OSError as e:
        raise store_error(e, f"create the group at {_where(ref)}", ref) from e
    except (TypeError, ValueError) as e:
        if "exist" in str(e).lower():
            raise AlreadyExists(f"a node exists at {_where(ref)}: {e}", path=ref.path) from e
        raise InvalidParams(f"zarr-python rejected the group: {e}", param=None,
                            expected="valid group metadata") from e
    return open_group(ref, kv)


def _children(kv: KV, group: NodeDoc) -> dict[str, NodeDoc]:
    """The group's direct members by name (consolidated metadata first)."""
    cons = consolidated_docs(kv, group)
    if cons is not None:
        return {rel: node for rel, node in cons.items() if "/" not in rel}
    out = {}
    for name in kv.children(group.path):
        if name.startswith(".") or name == "zarr.json":
            continue
        node = read_node(kv, join(group.path, name))
        if node is not None:
            out[name] = node
    return out


def members(ref: StoreRef, kv: KV) -> list[dict[str, Any]]:
    """``[{"name", "path", "kind"}]`` of the group's direct members, sorted by name."""
    group = open_group(ref, kv)
    kids = _children(kv, group)
    return [{"name": name, "path": kids[name].path, "kind": kids[name].kind}
            for name in sorted(kids)]


def _describe(ref: StoreRef, node: NodeDoc) -> dict[str, Any]:
    out: dict[str, Any] = {"path": node.path, "kind": node.kind}
    if node.kind == "array":
        try:
            # Describing only: nothing is decoded, so no codec is refused here.
            meta = meta_from_doc(ref.at(node.path), node, allow_pickle=True)
            out["shape"] = list(meta.shape)
            out["dtype"] = meta.wire_dtype
        except BridgeError:
            shape = node.doc.get("shape")
            out["shape"] = list(shape) if isinstance(shape, list) else None
            out["dtype"] = None
    return out


def tree(ref: StoreRef, kv: KV) -> list[dict[str, Any]]:
    """Every node below the group, depth-first, members sorted by name."""
    group = open_group(ref, kv)
    cons = consolidated_docs(kv, group)
    out: list[dict[str, Any]] = []
    if cons is not None:
        for rel in sorted(cons, key=lambda r: r.split("/")):
            out.append(_describe(ref, cons[rel]))
        return out

    def walk(node: NodeDoc) -> None:
        kids = _children(kv, node)
        for name in sorted(kids):
            child = kids[name]
            out.append(_describe(ref, child))
            if child.kind == "group":
                walk(child)

    walk(group)
    return out


def _zarr_group(ref: StoreRef, kv: KV, node: NodeDoc) -> Any:
    zarr = import_zarr()
    from zarr.core.group import AsyncGroup, GroupMetadata
    from zarr.storage import StorePath

    doc = dict(node.doc)
    if node.zarr_format == 2:
        doc = {"zarr_format": 2, "attributes": doc.get("attributes") or {}}
    md = GroupMetadata.from_dict(doc)
    return zarr.Group(AsyncGroup(metadata=md, store_path=StorePath(kv.zarr_store, ref.path)))


def set_attributes(ref: StoreRef, kv: KV, attributes: Mapping[str, Any],
                   merge: bool) -> dict[str, Any]:
    """Replace (or merge into) the group's attributes; returns them."""
    node = open_group(ref, kv)
    g = _zarr_group(ref, kv, node)
    if merge:
        g.update_attributes(dict(attributes))
    else:
        g.attrs.put(dict(attributes))
    attrs: dict[str, Any] = plain(dict(open_group(ref, kv).doc.get("attributes") or {}))
    return attrs


def consolidate(ref: StoreRef, kv: KV) -> NodeDoc:
    """Write the group's consolidated metadata (zarr-python's form for its format)."""
    node = open_group(ref, kv)
    zarr = import_zarr()
    try:
        zarr.consolidate_metadata(kv.zarr_store, path=ref.path or None,
                                  zarr_format=node.zarr_format)
    except BridgeError:
        raise
    except OSError as e:
        raise store_error(e, f"consolidate the metadata at {_where(ref)}", ref) from e
    return open_group(ref, kv)
