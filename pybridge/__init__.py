"""pybridge: the ZarrBridge sidecar.

A long-running process that serves zarr-python and numcodecs to a client over
length-prefixed msgpack frames (see ``protocol/PROTOCOL.md``). Run it with
``python -m pybridge``.

Importing the package is cheap on purpose: zarr, numcodecs and numpy are
imported only by the handlers that need them, because the sidecar's start-up
time is a benchmark target.
"""

from __future__ import annotations

__all__ = ["PROTOCOL_VERSION", "__version__"]

__version__ = "0.1.0"

#: The wire protocol version this sidecar speaks (``major.minor``).
PROTOCOL_VERSION = "1.0"
