"""zarr-python and numcodecs, imported once and by one thread at a time.

Both are imported lazily so that the sidecar answers ``hello`` fast. The
first requests of a fresh sidecar run on several handler threads at once,
and zarr-python's modules import each other in cycles: two threads entering
it from different modules (``import zarr`` in one, ``zarr.abc.store`` in
another) make Python raise ``_DeadlockError``, or give one of them a
partially initialised module. :func:`ready` is called by the server before
every handler that may touch either library, so the first import runs
whole in one thread while the others wait for it.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["import_zarr", "ready"]

_lock = threading.Lock()
_zarr: Any = None
_numcodecs_ready = False


def import_zarr() -> Any:
    """The ``zarr`` module, imported whole, with its warnings about numcodecs
    codecs and dtypes that have no v3 spec silenced (the sidecar stores what
    it is asked to)."""
    global _zarr
    if _zarr is not None:
        return _zarr
    with _lock:
        if _zarr is None:
            import warnings

            import zarr
            from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

            warnings.filterwarnings("ignore", category=ZarrUserWarning)
            warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
            _zarr = zarr
    return _zarr


def _import_numcodecs() -> None:
    global _numcodecs_ready
    if _numcodecs_ready:
        return
    with _lock:
        if not _numcodecs_ready:
            import numcodecs  # noqa: F401 - imported for its side effect

            _numcodecs_ready = True


def ready(method: str) -> None:
    """Import what ``method`` may use before its handler runs.

    ``codec.*`` methods need numcodecs only; ``array.*``, ``group.*`` and
    ``store.*`` methods reach zarr-python (which imports numcodecs itself).
    """
    if method.startswith("codec."):
        _import_numcodecs()
    elif method.startswith(("array.", "group.", "store.")):
        import_zarr()
