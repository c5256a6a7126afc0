"""One method of the sidecar's method table: its name, handler, params and how it runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pybridge.rpc.call import Call
    from pybridge.rpc.params import Param

__all__ = ["Method"]


@dataclass(frozen=True)
class Method:
    """One method: its name, handler, param spec and how it is run.

    ``inline`` methods run on the reader thread (they must be quick and never
    block); others run on the server's handler threads. ``test_only``
    methods exist only when ``PYBRIDGE_TEST_METHODS=1``.

    ``payload`` names the params a method's input may arrive in (``data``
    inline, ``stream`` frames, an ``shm`` upload handoff, ``values``): a
    request gives exactly one of them, which the dispatcher checks before the
    handler runs (:func:`pybridge.rpc.call.payload_source`); the handler then
    takes the input from :meth:`pybridge.rpc.call.Call.payload`.
    """

    name: str
    handler: Callable[[Call], dict[str, Any]]
    params: Mapping[str, Param]
    inline: bool = False
    test_only: bool = False
    payload: tuple[str, ...] = ()
