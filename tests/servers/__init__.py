"""Real storage servers on loopback for the remote-store tests.

Each server is a small class with ``start()``, ``stop()`` and ``endpoint``
(a JSON-able :class:`Endpoint`: the URL plus what a client needs to log in).
pytest fixtures start each kind once per session; the Elixir tests start them
through the launcher, which prints the endpoint as JSON and runs until its
stdin closes::

    python -m tests.servers s3

A server that cannot start raises :class:`ServerStartError` with the reason
(never a skip): a missing test dependency is a broken setup.
"""

from __future__ import annotations

from .base import Endpoint, ServerStartError, TestServer
from .registry import KINDS, make_server

__all__ = ["KINDS", "Endpoint", "ServerStartError", "TestServer", "make_server"]
