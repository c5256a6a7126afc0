"""Store references: the ``store`` and ``path`` params of array and group requests.

A store ref names where a node lives:

- ``{"kind": "filesystem", "path": "/abs/dir"}``: a directory;
- ``{"kind": "zip", "path": "/abs/file.zip"}``: a zip archive
  (:mod:`pybridge.zarr.zipstore`);
- ``{"kind": "memory", "name": str}``: a named store inside the sidecar,
  kept in ``context.stores`` for the sidecar's lifetime.

When the sidecar has allowed roots, a filesystem node's directory and a zip
file (symlinks resolved) must lie under one of them; so must every file the
sidecar reads or writes inside a filesystem store (:func:`check_inside`):
a chunk file or directory that is a symlink pointing outside is refused.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pybridge.errors import ForbiddenPath, InvalidParams, NotFound

__all__ = [
    "StoreRef",
    "check_inside",
    "memory_store",
    "parse_node_path",
    "parse_store",
    "real_roots",
]

KINDS = ("filesystem", "zip", "memory")
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
    object itself (memory stores only).
    """

    kind: str
    root: str
    path: str
    roots: tuple[str, ...] = ()
    memory: Any = field(default=None, compare=False, hash=False, repr=False)

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
        return StoreRef(self.kind, self.root, parse_node_path(path), self.roots, self.memory)

    def describe(self) -> str:
        name = {"filesystem": "store", "zip": "zip store", "memory": "memory store"}[self.kind]
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


def _bad_store(message: str) -> InvalidParams:
    return InvalidParams(message, param="store", expected="store map")


def parse_store(store: Mapping[str, Any], path: str, allowed_roots: Sequence[str] = (),
                stores: dict[str, Any] | None = None, create: bool = False) -> StoreRef:
    """Turn the ``store`` and ``path`` params into a :class:`StoreRef`.

    ``stores`` is ``context.stores`` (for memory stores); ``create`` makes a
    missing memory store (methods that create nodes). Raises
    :class:`InvalidParams` for a malformed store map, :class:`ForbiddenPath`
    for a location outside ``allowed_roots`` (when any) and
    :class:`NotFound` for an unknown memory store.
    """
    kind = store.get("kind")
    if kind not in KINDS:
        raise _bad_store(f"store kind must be one of {', '.join(KINDS)}, got {kind!r}")
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
