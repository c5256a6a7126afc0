"""Store references: the ``store`` and ``path`` params of array and group requests.

A store ref names where a node lives:

- ``{"kind": "filesystem", "path": "/abs/dir"}``: a directory;
- ``{"kind": "zip", "path": "/abs/file.zip"}``: a zip archive
  (:mod:`pybridge.zarr.zipstore`);
- ``{"kind": "memory", "name": str}``: a named store inside the sidecar,
  kept in ``context.stores`` for the sidecar's lifetime;
- a remote store map (``s3``, ``gcs``, ``azure``, ``azure_blob``, ``http``,
  ``url``; PROTOCOL.md §8), validated by :func:`pybridge.stores.parse_spec`.
  Its ref's ``root`` is the store's location (``s3://bucket/prefix``), never
  a credential; ``remote`` is the zarr-python store, one per distinct map in
  a sidecar (:class:`RemoteStores`). A ``file://`` url is a filesystem store.

When the sidecar has allowed roots, a filesystem node's directory and a zip
file (symlinks resolved) must lie under one of them; so must every file the
sidecar reads or writes inside a filesystem store (:func:`check_inside`):
a chunk file or directory that is a symlink pointing outside is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pybridge.errors import ForbiddenPath, InvalidParams, NotFound

__all__ = [
    "RemoteStores",
    "StoreRef",
    "check_inside",
    "memory_store",
    "parse_node_path",
    "parse_store",
    "real_roots",
]

KINDS = ("filesystem", "zip", "memory")
#: The kind of every remote store's ref (its map's kind is in ``remote.spec``).
REMOTE = "remote"
#: Where memory stores live in ``context.stores``: ``MEMORY_PREFIX + name``.
MEMORY_PREFIX = "memory:"

_memory_lock = threading.Lock()


@dataclass(frozen=True)
class StoreRef:
    """A parsed store plus the node path inside it.

    ``root`` is the store directory or zip file (absolute, normalised), or
    a memory store's name; ``path`` the node's path inside the store (``""``
    for the root, ``a/b`` otherwise); ``roots`` the allowed roots, resolved
    (empty when the sidecar is unconfined). ``memory`` is the memory store
    object itself (memory stores only); ``remote`` the :class:`RemoteHandle`
    of a remote store (its location is ``root``).
    """

    kind: str
    root: str
    path: str
    roots: tuple[str, ...] = ()
    memory: Any = field(default=None, compare=False, hash=False, repr=False)
    remote: Any = field(default=None, compare=False, hash=False, repr=False)

    @property
    def dir(self) -> str:
        """The node's directory (filesystem), or a unique name for the node (others)."""
        if self.kind == "filesystem":
            return os.path.join(self.root, self.path) if self.path else self.root
        return f"{self.kind}:{self.root}!/{self.path}"

    @property
    def key(self) -> tuple[str, str, str]:
        """What caches and locks are keyed by."""
        return (self.kind, self.root, self.path)

    def at(self, path: str) -> StoreRef:
        """The ref of another node of the same store."""
        return StoreRef(self.kind, self.root, parse_node_path(path), self.roots, self.memory,
                        self.remote)

    def describe(self) -> str:
        name = {"filesystem": "store", "zip": "zip store", "memory": "memory store",
                REMOTE: "remote store"}[self.kind]
        return f"path {self.path!r} of {name} {self.root!r}"


def parse_node_path(path: str) -> str:
    """Normalise a node path: no leading/trailing ``/``, no ``.`` parts.

    ``..`` is refused with :class:`ForbiddenPath`: a node never lives
    outside its store.
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ForbiddenPath(f"node path {path!r} may not contain '..'", path=path)
    return "/".join(parts)


def real_roots(allowed_roots: Sequence[str]) -> tuple[str, ...]:
    """The allowed roots with symlinks resolved."""
    return tuple(os.path.realpath(r) for r in allowed_roots)


def _under(real: str, roots: Sequence[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)


def check_inside(path: str, roots: Sequence[str]) -> None:
    """Refuse ``path`` (symlinks resolved) when it is outside ``roots``.

    Does nothing when ``roots`` is empty, so an unconfined sidecar pays
    nothing; a confined one pays one ``realpath`` per file.
    """
    if roots and not _under(os.path.realpath(path), roots):
        raise ForbiddenPath(f"{path!r} resolves outside the allowed roots", path=path)


class MemoryHolder:
    """A memory store: the dict of its keys, and zarr-python's store over it."""

    def __init__(self) -> None:
        from zarr.storage import MemoryStore

        self.dict: dict[str, Any] = {}
        self.store = MemoryStore(store_dict=self.dict)


def memory_store(stores: dict[str, Any], name: str, create: bool) -> Any:
    """The memory store ``name`` from ``context.stores`` (created when asked).

    Returns a :class:`MemoryHolder`.
    """
    key = MEMORY_PREFIX + name
    store = stores.get(key)
    if store is None:
        if not create:
            raise NotFound(f"no memory store named {name!r}", store=name)
        from pybridge.libraries import import_zarr

        import_zarr()
        with _memory_lock:
            store = stores.get(key)
            if store is None:
                store = stores[key] = MemoryHolder()
    return store


class RemoteHandle:
    """A remote store: its validated map (``spec``) and zarr-python's store."""

    def __init__(self, spec: Any, store: Any) -> None:
        self.spec = spec
        self.store = store

    def __repr__(self) -> str:
        return f"RemoteHandle({self.spec.location})"


class RemoteStores:
    """The remote stores a sidecar has opened: one zarr-python store per
    distinct map (so connections are reused), the ``limit`` most recently
    used kept. Keyed by a digest of the map: credentials count in the key
    but the key shows none."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._stores: OrderedDict[str, RemoteHandle] = OrderedDict()

    @staticmethod
    def key(raw: Mapping[str, Any]) -> str:
        text = json.dumps(raw, sort_keys=True, default=repr, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, raw: Mapping[str, Any], allowed: Sequence[str] | None) -> RemoteHandle:
        """The handle for ``raw`` (opened on first use); ``allowed`` is checked every time."""
        from pybridge.stores import check_allowed, open_remote_store, parse_spec

        spec = parse_spec(raw)
        check_allowed(spec, allowed)
        key = self.key(raw)
        with self._lock:
            handle = self._stores.get(key)
            if handle is not None:
                self._stores.move_to_end(key)
                return handle
        handle = RemoteHandle(spec, open_remote_store(spec))
        with self._lock:
            handle = self._stores.setdefault(key, handle)
            self._stores.move_to_end(key)
            while len(self._stores) > self.limit:
                self._stores.popitem(last=False)
        return handle

    def __len__(self) -> int:
        return len(self._stores)


def _parse_remote(store: Mapping[str, Any], node: str, allowed_roots: Sequence[str],
                  remotes: RemoteStores | None, allowed_urls: Sequence[str]) -> StoreRef:
    from pybridge.stores import check_allowed, parse_spec

    spec = parse_spec(store)
    if spec.kind == "file":
        check_allowed(spec, allowed_urls or None)
        return parse_store({"kind": "filesystem", "path": spec.prefix}, node, allowed_roots)
    if remotes is None:
        raise _bad_store("remote stores are not available here")
    handle = remotes.get(store, allowed_urls or None)
    return StoreRef(REMOTE, handle.spec.location, node, (), None, handle)


def _bad_store(message: str) -> InvalidParams:
    return InvalidParams(message, param="store", expected="store map")


def parse_store(store: Mapping[str, Any], path: str, allowed_roots: Sequence[str] = (),
                stores: dict[str, Any] | None = None, create: bool = False,
                remotes: RemoteStores | None = None,
                allowed_urls: Sequence[str] = ()) -> StoreRef:
    """Turn the ``store`` and ``path`` params into a :class:`StoreRef`.

    ``stores`` is ``context.stores`` (for memory stores); ``create`` makes a
    missing memory store (methods that create nodes). Raises
    :class:`InvalidParams` for a malformed store map, :class:`ForbiddenPath`
    for a location outside ``allowed_roots`` (when any) and
    :class:`NotFound` for an unknown memory store. ``remotes`` holds the
    sidecar's remote stores; a remote store outside ``allowed_urls`` (when
    any) is :class:`ForbiddenPath`.
    """
    from pybridge.stores import KINDS as REMOTE_KINDS

    kind = store.get("kind")
    if kind in REMOTE_KINDS:
        return _parse_remote(store, parse_node_path(path), allowed_roots, remotes, allowed_urls)
    if kind not in KINDS:
        known = ", ".join((*KINDS, *REMOTE_KINDS))
        raise _bad_store(f"store kind must be one of {known}, got {kind!r}")
    allowed = {"kind", "name"} if kind == "memory" else {"kind", "path"}
    unknown = set(store) - allowed
    if unknown:
        raise _bad_store(f"unknown key {sorted(unknown)[0]!r} in a {kind} store")
    node = parse_node_path(path)
    if kind == "memory":
        name = store.get("name")
        if not isinstance(name, str) or not name:
            raise _bad_store("a memory store needs a non-empty str 'name'")
        if stores is None:
            raise _bad_store("memory stores are not available here")
        return StoreRef(kind, name, node, (), memory_store(stores, name, create))
    root = store.get("path")
    if not isinstance(root, str) or not os.path.isabs(root):
        raise _bad_store("store path must be an absolute path (str)")
    roots = real_roots(allowed_roots) if allowed_roots else ()
    ref = StoreRef(kind, os.path.normpath(root), node, roots)
    if roots:
        target = ref.dir if kind == "filesystem" else ref.root
        if not _under(os.path.realpath(target), roots):
            raise ForbiddenPath(f"{target!r} is outside the allowed roots", path=target)
    return ref
