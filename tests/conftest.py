"""Shared fixtures: real sidecar processes (see ``helpers.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import SidecarProcess


@pytest.fixture
def sidecar() -> Iterator[SidecarProcess]:
    """A running sidecar (``--stdio``, one worker, test methods on), closed after the test."""
    sc = SidecarProcess(workers=1)
    try:
        yield sc
    finally:
        sc.close()


@pytest.fixture
def sidecar_factory() -> Iterator[Callable[..., SidecarProcess]]:
    """Start sidecars with custom options: ``sidecar_factory(args=[...], workers=2)``.

    Takes the same arguments as :class:`helpers.SidecarProcess`; every
    sidecar started is closed after the test.
    """
    started: list[SidecarProcess] = []

    def make(*args: Any, **kwargs: Any) -> SidecarProcess:
        sc = SidecarProcess(*args, **kwargs)
        started.append(sc)
        return sc

    try:
        yield make
    finally:
        for sc in started:
            sc.close()
