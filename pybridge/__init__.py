"""pybridge: the ZarrBridge sidecar.

A long-running process that serves zarr-python and numcodecs to a client over
length-prefixed msgpack frames (see ``protocol/PROTOCOL.md``). Run it with
``python -m pybridge``.

The package is in layers, each importing only the ones below it (checked by
tests/test_layers.py), top first:

- ``cli``, ``__main__``: the command line (``python -m pybridge [doctor]``);
- ``rpc.server``: the reader loop, dispatch, the handler threads;
- ``methods``: the method table and its handlers (``basic``, ``codec``,
  ``array``, ``group``);
- ``context``: the sidecar's state (settings, the worker pool, locks,
  buffers, the handoff janitor);
- ``zarr``: stores, store files, metadata, the chunk codec pipeline, shards,
  the read and write paths, chunk tasks;
- ``pool``: the worker processes and the codec tasks they run;
- ``rpc.call``: one request in flight (its payload, its reply);
- ``handoff``: payloads that travel as files in /dev/shm;
- ``rpc.framing``, ``rpc.protocol``, ``rpc.params``: frames, messages, params;
- ``errors``, ``libraries``, ``settings``, ``dtypes``, ``codecs`` (the numcodecs
  registry and the one codec cache), ``codec_checks``: the base.

Importing the package is cheap on purpose: zarr, numcodecs and numpy are
imported only by the handlers that need them, because the sidecar's start-up
time is a benchmark target.
"""

from __future__ import annotations

__all__ = ["PROTOCOL_VERSION", "__version__"]

__version__ = "0.1.0"

#: The wire protocol version this sidecar speaks (``major.minor``).
PROTOCOL_VERSION = "1.0"
