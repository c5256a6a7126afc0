"""The method table: a plain dict from method name to :class:`Method`.

Each area has its own module with a ``METHODS: list[Method]``:
``basic`` (hello, ping, test methods), ``codec`` (``codec.*``) and ``array``
(``array.*``). Those modules must stay cheap to import: zarr, numcodecs and
numpy are imported inside the handlers, never at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pybridge.methods.method import Method

if TYPE_CHECKING:
    from pybridge.settings import Settings

__all__ = ["Method", "method_table"]


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
