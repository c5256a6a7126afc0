"""The sidecar's error hierarchy.

Every error that crosses the wire is a :class:`BridgeError` subclass carrying
its wire ``code`` (the closed set in ``protocol/PROTOCOL.md``). The server
turns any other exception into an ``internal`` error with the Python type and
traceback, so a handler never needs to catch broadly.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "BridgeError",
    "Cancelled",
    "CodecForbidden",
    "CodecUnavailable",
    "Conflict",
    "DataSizeMismatch",
    "DecodeFailed",
    "EncodeFailed",
    "ForbiddenPath",
    "FrameTooLarge",
    "Internal",
    "InvalidCodecConfig",
    "InvalidMessage",
    "InvalidMetadata",
    "InvalidParams",
    "InvalidSelection",
    "NotFound",
    "Overloaded",
    "ProtocolMismatch",
    "ReadOnly",
    "StoreError",
    "TooLarge",
    "UnknownMethod",
    "UnsupportedDtype",
    "WorkerCrashed",
]


class BridgeError(Exception):
    """Base of every error with a wire code.

    ``details`` are machine-readable context (str keys, msgpack-able values).
    """

    code: str = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidMessage(BridgeError):
    code = "invalid_message"


class UnknownMethod(BridgeError):
    code = "unknown_method"


class InvalidParams(BridgeError):
    code = "invalid_params"


class FrameTooLarge(BridgeError):
    code = "frame_too_large"


class Overloaded(BridgeError):
    code = "overloaded"


class ProtocolMismatch(BridgeError):
    code = "protocol_mismatch"


class Internal(BridgeError):
    code = "internal"


class WorkerCrashed(BridgeError):
    code = "worker_crashed"


class CodecUnavailable(BridgeError):
    code = "codec_unavailable"


class CodecForbidden(BridgeError):
    code = "codec_forbidden"


class InvalidCodecConfig(BridgeError):
    code = "invalid_codec_config"


class DecodeFailed(BridgeError):
    code = "decode_failed"


class EncodeFailed(BridgeError):
    code = "encode_failed"


class UnsupportedDtype(BridgeError):
    code = "unsupported_dtype"


class NotFound(BridgeError, FileNotFoundError):
    code = "not_found"


class AlreadyExists(BridgeError, FileExistsError):
    code = "already_exists"


class ReadOnly(BridgeError, PermissionError):
    code = "read_only"


class InvalidSelection(BridgeError, IndexError):
    code = "invalid_selection"


class DataSizeMismatch(BridgeError, ValueError):
    code = "data_size_mismatch"


class InvalidMetadata(BridgeError, ValueError):
    code = "invalid_metadata"


class StoreError(BridgeError, OSError):
    code = "store_error"


class ForbiddenPath(BridgeError, PermissionError):
    code = "forbidden_path"


class TooLarge(BridgeError):
    code = "too_large"


class Conflict(BridgeError):
    """Another process changed the node while the request ran (an append
    that finds the array's extent changed under it)."""

    code = "conflict"


class Cancelled(BridgeError):
    """Raised inside a handler whose request was cancelled; never replied."""

    code = "cancelled"


# --- Remote (object-storage) store errors (issue 13) ---------------------------


class AccessDenied(BridgeError, PermissionError):
    """The object store refused the credentials or the operation (401/403)."""

    code = "access_denied"


class NoSuchBucket(BridgeError, FileNotFoundError):
    """The bucket or container named in the store map does not exist."""

    code = "no_such_bucket"


class StoreUnavailable(BridgeError, ConnectionError):
    """The object store did not answer (connection refused or dropped, 5xx,
    timeouts) after the retries the store map allows."""

    code = "store_unavailable"


__all__ += ["AccessDenied", "NoSuchBucket", "StoreUnavailable"]
