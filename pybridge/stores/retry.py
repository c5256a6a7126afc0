"""Retries of idempotent reads that the store library does not retry itself.

obstore retries 5xx answers, refused connections and timeouts (its
``RetryConfig``, bounded by ``retry_timeout``), and s3fs/gcsfs retry their own
transient errors; none of them retries a body that breaks off after the
headers. :class:`RetryingStore` wraps a zarr store and retries ``get``,
``get_partial_values`` and ``exists`` (reads only; writes are never
repeated here) when the failure is transient, with exponential backoff, at
most ``max_retries`` times and never past ``timeout_s`` from the first
attempt.

Every failure that leaves the wrapper (of any method: reads, writes,
deletes, listings) is the wire error the library's exception means
(``translate``), so that zarr-python's in-process path and the sidecar's own
key-value access raise the same codes, with no credential in them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from zarr.storage import WrapperStore

from ..errors import BridgeError, StoreUnavailable

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

    def _wire(self, exc: Exception) -> Exception:
        return exc if isinstance(exc, BridgeError) else self._translate(exc, self._spec)

    async def _once(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - every store library error is translated
            raise self._wire(exc) from None

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        policy = self._spec.retry
        deadline = time.monotonic() + policy.timeout_s
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:  # noqa: BLE001 - every store library error is translated
                wire = self._wire(exc)
                transient = isinstance(wire, StoreUnavailable)
                delay = policy.initial_backoff_s * (2**attempt) * (0.5 + random.random() / 2)
                if not transient or attempt >= policy.max_retries or time.monotonic() + delay > deadline:
                    raise wire from None
                attempt += 1
                await asyncio.sleep(delay)

    async def _listing(self, items: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for item in items:
                yield item
        except Exception as exc:  # noqa: BLE001 - every store library error is translated
            raise self._wire(exc) from None

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

    async def set(self, key: str, value: Buffer) -> None:
        await self._once(lambda: self._store.set(key, value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._once(lambda: self._store.set_if_not_exists(key, value))

    async def delete(self, key: str) -> None:
        await self._once(lambda: self._store.delete(key))

    async def delete_dir(self, prefix: str) -> None:
        await self._once(lambda: self._store.delete_dir(prefix))

    async def getsize(self, key: str) -> int:
        return await self._retrying(lambda: self._store.getsize(key))

    async def is_empty(self, prefix: str) -> bool:
        return await self._once(lambda: self._store.is_empty(prefix))

    def list(self) -> AsyncIterator[str]:
        return self._listing(self._store.list())

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_prefix(prefix))

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_dir(prefix))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
