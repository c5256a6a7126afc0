"""The wire and the dispatcher: frames, messages, params, calls and the server loop.

- :mod:`~pybridge.rpc.framing`: length-prefixed frames on fds 3/4;
- :mod:`~pybridge.rpc.protocol`: messages (requests, replies, stream parts) parsed and built;
- :mod:`~pybridge.rpc.params`: the param types of the method table, validated;
- :mod:`~pybridge.rpc.call`: one request in flight (its payload, cancellation, its reply);
- :mod:`~pybridge.rpc.server`: the reader loop, the handler threads, dispatch.

``framing``, ``protocol`` and ``params`` are the bottom of the sidecar (they
import only :mod:`pybridge.errors`); ``call`` sits on the handoff layer;
``server`` is the top, above the methods (tests/test_layers.py checks it).
"""
