"""Store references: the ``store`` param of array requests.

A store ref names where a node lives. Only ``{"kind": "filesystem",
"path": "/abs/dir"}`` exists for now. When the sidecar has allowed roots,
the node's directory (with symlinks resolved) must lie under one of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pybridge.errors import ForbiddenPath, InvalidParams

__all__ = ["StoreRef", "parse_node_path", "parse_store", "zarr_store"]

KINDS = ("filesystem",)


@dataclass(frozen=True)
class StoreRef:
    """A parsed store plus the node path inside it.

    ``root`` is the store directory (absolute, normalised); ``path`` the
    node's path inside it (``""`` for the root, ``a/b`` otherwise); ``dir``
    the node's directory on disk.
    """

    kind: str
    root: str
    path: str

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.path) if self.path else self.root

    @property
    def key(self) -> tuple[str, str]:
        """What caches and locks are keyed by."""
        return (self.root, self.path)


def parse_node_path(path: str) -> str:
    """Normalise a node path: no leading/trailing ``/``, no ``.`` parts.

    ``..`` is refused with :class:`ForbiddenPath`: a node never lives
    outside its store.
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ForbiddenPath(f"node path {path!r} may not contain '..'", path=path)
    return "/".join(parts)


def _confine(dir_: str, allowed_roots: Sequence[str]) -> None:
    real = os.path.realpath(dir_)
    for root in allowed_roots:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip("/") + "/"):
            return
    raise ForbiddenPath(f"{dir_!r} is outside the allowed roots", path=dir_)


def parse_store(store: Mapping[str, Any], path: str,
                allowed_roots: Sequence[str] = ()) -> StoreRef:
    """Turn the ``store`` and ``path`` params into a :class:`StoreRef`.

    Raises :class:`InvalidParams` for a malformed store map and
    :class:`ForbiddenPath` for a node outside ``allowed_roots`` (when any).
    """
    kind = store.get("kind")
    if kind not in KINDS:
        raise InvalidParams(f"store kind must be one of {', '.join(KINDS)}, got {kind!r}",
                            param="store", expected="store map")
    unknown = set(store) - {"kind", "path"}
    if unknown:
        raise InvalidParams(f"unknown store key {sorted(unknown)[0]!r}",
                            param="store", expected="store map")
    root = store.get("path")
    if not isinstance(root, str) or not os.path.isabs(root):
        raise InvalidParams("store path must be an absolute path (str)",
                            param="store", expected="absolute path")
    ref = StoreRef(kind, os.path.normpath(root), parse_node_path(path))
    if allowed_roots:
        _confine(ref.dir, allowed_roots)
    return ref


def zarr_store(ref: StoreRef, read_only: bool) -> Any:
    """A zarr-python store for ``ref`` (imports zarr)."""
    from zarr.storage import LocalStore

    return LocalStore(ref.root, read_only=read_only)
