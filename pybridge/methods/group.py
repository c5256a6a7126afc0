"""The ``group.*`` methods and ``store.consolidate_metadata`` (PROTOCOL.md §8).

Like the array methods, each request names its store and the group's path
inside it, and runs inside one store session. The work is in
:mod:`pybridge.zarr.groups`, imported by the handlers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pybridge.errors import ReadOnly
from pybridge.methods.array import check_json, store_ref, with_store_errors
from pybridge.methods.method import Method
from pybridge.rpc.params import Int, Map, Str

if TYPE_CHECKING:
    from pybridge.rpc.call import Call
    from pybridge.zarr.kv import KV
    from pybridge.zarr.store import StoreRef

__all__ = ["METHODS"]

_MODES = ("r", "r+", "a", "w", "w-")
_OPEN_MODES = ("r", "r+", "a")
_STORE = {"store": Map(), "path": Str(required=False, default="")}


@contextlib.contextmanager
def _session(call: Call, writable: bool, create: bool = False
             ) -> Iterator[tuple[StoreRef, KV]]:
    from pybridge.zarr.kv import session

    if writable and call.params.get("mode") == "r":
        raise ReadOnly("the group was opened with mode 'r'", mode="r")
    ref = store_ref(call, create=create)
    with session(ref, writable) as kv:
        yield ref, kv


def create(call: Call) -> dict[str, Any]:
    from pybridge.zarr.groups import create_group, group_info

    p = call.params
    if p["attributes"] is not None:
        check_json(p["attributes"], "attributes")
    writes = p["mode"] not in ("r", "r+")
    with _session(call, writable=writes, create=writes) as (ref, kv):
        node = create_group(ref, kv, p["mode"], p["zarr_format"], p["attributes"])
        return {"group": group_info(kv, node)}


def open_(call: Call) -> dict[str, Any]:
    from pybridge.zarr.groups import create_group, group_info, open_group

    p = call.params
    if p["mode"] == "a":
        with _session(call, writable=True, create=True) as (ref, kv):
            node = create_group(ref, kv, "a", 3, None)
            return {"group": group_info(kv, node)}
    with _session(call, writable=False) as (ref, kv):
        return {"group": group_info(kv, open_group(ref, kv))}


def members(call: Call) -> dict[str, Any]:
    from pybridge.zarr.groups import members as members_

    with _session(call, writable=False) as (ref, kv):
        return {"members": members_(ref, kv)}


def tree(call: Call) -> dict[str, Any]:
    from pybridge.zarr.groups import tree as tree_

    with _session(call, writable=False) as (ref, kv):
        return {"nodes": tree_(ref, kv)}


def get_attributes(call: Call) -> dict[str, Any]:
    from pybridge.zarr.groups import group_info, open_group

    with _session(call, writable=False) as (ref, kv):
        return {"attributes": group_info(kv, open_group(ref, kv))["attributes"]}


def _set_attributes(call: Call, merge: bool) -> dict[str, Any]:
    from pybridge.zarr.groups import set_attributes

    attrs = call.params["attributes"]
    check_json(attrs, "attributes")
    with _session(call, writable=True) as (ref, kv):
        keys = call.context.chunk_locks.acquire([(ref.dir, "attributes")])
        try:
            return {"attributes": set_attributes(ref, kv, attrs, merge)}
        finally:
            call.context.chunk_locks.release(keys)


def put_attributes(call: Call) -> dict[str, Any]:
    return _set_attributes(call, merge=False)


def update_attributes(call: Call) -> dict[str, Any]:
    return _set_attributes(call, merge=True)


def consolidate_metadata(call: Call) -> dict[str, Any]:
    from pybridge.zarr.groups import consolidate, group_info

    with _session(call, writable=True) as (ref, kv):
        return {"group": group_info(kv, consolidate(ref, kv))}


_METHODS: list[Method] = [
    Method("group.create", create, {
        **_STORE,
        "mode": Str(required=False, default="w-", choices=_MODES),
        "zarr_format": Int(required=False, default=3, min=2, max=3),
        "attributes": Map(required=False, nullable=True),
    }),
    Method("group.open", open_, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
    }),
    Method("group.members", members, dict(_STORE)),
    Method("group.tree", tree, dict(_STORE)),
    Method("group.get_attributes", get_attributes, dict(_STORE)),
    Method("group.put_attributes", put_attributes, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "attributes": Map(),
    }),
    Method("group.update_attributes", update_attributes, {
        **_STORE,
        "mode": Str(required=False, default="r+", choices=_OPEN_MODES),
        "attributes": Map(),
    }),
    Method("store.consolidate_metadata", consolidate_metadata, dict(_STORE)),
]

METHODS: list[Method] = with_store_errors(_METHODS, {
    "group.create": "create the group at",
    "group.open": "open the group at",
    "group.members": "list the members of the group at",
    "group.tree": "list the tree of the group at",
    "group.get_attributes": "read the attributes of the group at",
    "group.put_attributes": "replace the attributes of the group at",
    "group.update_attributes": "update the attributes of the group at",
    "store.consolidate_metadata": "consolidate the metadata of the group at",
})
