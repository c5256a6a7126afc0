"""Retries of idempotent reads that the store library does not retry itself.

obstore retries 5xx answers, refused connections and timeouts (its
``RetryConfig``, bounded by ``retry_timeout``), and s3fs/gcsfs retry their own
transient errors; none of them retries a body that breaks off after the
headers. :class:`RetryingStore` wraps a zarr store and retries ``get``,
``get_partial_values`` and ``exists`` (reads only; writes are never
repeated here) when the failure is transient, with exponential backoff, at
most ``max_retries`` times and never past ``timeout_s`` from the first
attempt.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from zarr.storage import WrapperStore

from ..errors import StoreUnavailable

if TYPE_CHECKING:
    from zarr.abc.store import ByteRequest, Store
    from zarr.core.buffer import Buffer, BufferPrototype

    from .remote import RemoteSpec

T = TypeVar("T")


class RetryingStore(WrapperStore["Store"]):
    """``store`` with its reads retried on transient errors (see the module docstring)."""

    def __init__(self, store: Store, spec: RemoteSpec,
                 translate: Callable[[BaseException, RemoteSpec], Exception]) -> None:
        super().__init__(store)
        self._spec = spec
        self._translate = translate  # the error a failure means (remote.translate_error)

    def _with_store(self, store: Store) -> RetryingStore:
        return type(self)(store, self._spec, self._translate)

    def __repr__(self) -> str:
        return f"RetryingStore({self._spec.engine} {self._spec.location})"

    def __str__(self) -> str:
        return self._spec.location

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        policy = self._spec.retry
        deadline = time.monotonic() + policy.timeout_s
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                transient = isinstance(self._translate(exc, self._spec), StoreUnavailable)
                delay = policy.initial_backoff_s * (2**attempt) * (0.5 + random.random() / 2)
                if not transient or attempt >= policy.max_retries or time.monotonic() + delay > deadline:
                    raise
                attempt += 1
                await asyncio.sleep(delay)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        return await self._retrying(lambda: self._store.get(key, prototype, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        ranges = list(key_ranges)
        return await self._retrying(lambda: self._store.get_partial_values(prototype, ranges))

    async def exists(self, key: str) -> bool:
        return await self._retrying(lambda: self._store.exists(key))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
