"""The method table: a plain dict from method name to :class:`Method`.

Each area has its own module with a ``METHODS: list[Method]``:
``basic`` (hello, ping, test methods), ``codec`` (``codec.*``) and ``array``
(``array.*``). Those modules must stay cheap to import: zarr, numcodecs and
numpy are imported inside the handlers, never at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pybridge.rpc.call import Call
    from pybridge.rpc.params import Param
    from pybridge.settings import Settings

__all__ = ["Method", "method_table"]


@dataclass(frozen=True)
class Method:
    """One method: its name, handler, param spec and how it is run.

    ``inline`` methods run on the reader thread (they must be quick and never
    block); others run on the server's handler threads. ``test_only``
    methods exist only when ``PYBRIDGE_TEST_METHODS=1``.
    """

    name: str
    handler: Callable[[Call], dict[str, Any]]
    params: Mapping[str, Param]
    inline: bool = False
    test_only: bool = False


def method_table(settings: Settings) -> dict[str, Method]:
    """Gather every area's methods; test-only ones only when enabled."""
    from pybridge.methods import array, basic, codec, group

    table: dict[str, Method] = {}
    for module in (basic, codec, array, group):
        for method in module.METHODS:
            if method.test_only and not settings.test_methods:
                continue
            if method.name in table:
                raise RuntimeError(f"method {method.name!r} is defined twice")
            table[method.name] = method
    return table
