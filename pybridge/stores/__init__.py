"""Remote (object-storage) stores: the wire store map to a zarr-python store.

:func:`open_remote_store` is the one entry point; :func:`translate_error`
turns a store library's exception into the wire error; :mod:`.redact` keeps
credentials out of messages and reprs.
"""

from __future__ import annotations

from .redact import redact, redacted_map
from .remote import (
    ENGINES,
    KINDS,
    RemoteSpec,
    RetryPolicy,
    check_allowed,
    open_remote_store,
    parse_spec,
    probe,
    store_errors,
    translate_error,
)

__all__ = [
    "ENGINES",
    "KINDS",
    "RemoteSpec",
    "RetryPolicy",
    "check_allowed",
    "open_remote_store",
    "parse_spec",
    "probe",
    "redact",
    "redacted_map",
    "store_errors",
    "translate_error",
]
