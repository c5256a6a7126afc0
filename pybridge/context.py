"""State shared by every handler: the settings and the worker pool.

The worker pool is started in a background thread once the sidecar has
answered its first frame, so ``hello`` is answered before any worker is
spawned (start-up time is a benchmark target). ``context.pool`` starts it
if that has not happened yet and waits until it is ready.

A pool counts as started once one of its workers has run
:func:`pybridge.pool.pool.probe` (it imports what every task needs). A pool
that cannot get there is unusable: :attr:`SidecarContext.on_pool_failure`
is then called with the error, and the server ends the sidecar with it
(:func:`pybridge.rpc.server.serve`), so that a client never talks to a sidecar
that answers ``ping`` but can run no task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pybridge.errors import Internal, WorkerCrashed

if TYPE_CHECKING:
    from pybridge.handoff.results import HandoffJanitor
    from pybridge.pool.pool import WorkerPool
    from pybridge.settings import Settings
    from pybridge.zarr.buffers import BandBuffers
    from pybridge.zarr.extent import ExtentLocks
    from pybridge.zarr.locks import LockTable
    from pybridge.zarr.metadata import MetadataCache
    from pybridge.zarr.store import RemoteStores

T = TypeVar("T")

__all__ = ["SidecarContext"]

log = logging.getLogger(__name__)

#: How long :meth:`SidecarContext.close` waits for a pool that is still starting.
_START_JOIN_S = 10.0
#: Probe attempts before the pool counts as unable to start: a worker killed
#: from outside while it starts fails one probe, a broken environment every one.
_PROBE_ATTEMPTS = 2


def _chunk_locks() -> LockTable:
    from pybridge.zarr.locks import LockTable

    return LockTable()


def _extent_locks() -> ExtentLocks:
    from pybridge.zarr.extent import ExtentLocks

    return ExtentLocks()


def _band_buffers() -> BandBuffers:
    from pybridge.zarr.buffers import BandBuffers

    return BandBuffers()


def _metadata_cache() -> MetadataCache:
    from pybridge.zarr.metadata import MetadataCache

    return MetadataCache()


def _remote_stores() -> RemoteStores:
    from pybridge.zarr.store import RemoteStores

    return RemoteStores()


def _handoff_janitor() -> HandoffJanitor:
    from pybridge.handoff.results import HandoffJanitor

    return HandoffJanitor()


def _probe(pool: WorkerPool) -> None:
    """Run :func:`pybridge.pool.pool.probe` in the pool; raise its last failure.

    A worker that crashed is retried (it may have been killed from outside);
    an exception raised by the probe itself (an import failed) is final.
    """
    from pybridge.pool.pool import probe

    for attempt in range(1, _PROBE_ATTEMPTS + 1):
        try:
            pool.submit(probe).result()
            return
        except WorkerCrashed:
            if attempt == _PROBE_ATTEMPTS:
                raise


class SidecarContext:
    """The settings, the worker pool, and the stores opened so far."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Placeholder for stores kept open between requests (memory stores).
        self.stores: dict[str, Any] = {}
        self._pool: WorkerPool | None = None
        #: The pool while its probe runs (so that close can stop it).
        self._starting: WorkerPool | None = None
        self._pool_error: BaseException | None = None
        self._pool_ready = threading.Event()
        self._start_lock = threading.Lock()
        self._start_thread: threading.Thread | None = None
        self._closed = False
        #: Called (from the pool-start thread) with the error when the pool
        #: cannot start; None keeps the error for :attr:`pool` to raise.
        self.on_pool_failure: Callable[[BaseException], None] | None = None
        # The sidecar's shared state (locks, buffers, the janitor), each made
        # on first use: start-up imports none of their modules.
        self._shared: dict[str, Any] = {}
        self._shared_lock = threading.Lock()

    def _one(self, name: str, make: Callable[[], T]) -> T:
        obj = self._shared.get(name)
        if obj is None:
            with self._shared_lock:
                obj = self._shared.get(name)
                if obj is None:
                    obj = self._shared[name] = make()
        return cast(T, obj)

    @property
    def chunk_locks(self) -> LockTable:
        """Locks of the chunks under a read-modify-write (:mod:`pybridge.zarr.locks`)."""
        return self._one("chunk_locks", _chunk_locks)

    @property
    def extent_locks(self) -> ExtentLocks:
        """Per-array locks of shape changes (:mod:`pybridge.zarr.extent`)."""
        return self._one("extent_locks", _extent_locks)

    @property
    def band_buffers(self) -> BandBuffers:
        """Shared-memory band buffers reused by reads and writes (:mod:`pybridge.zarr.buffers`)."""
        return self._one("band_buffers", _band_buffers)

    @property
    def metadata_cache(self) -> MetadataCache:
        """The metadata of the arrays opened lately (:mod:`pybridge.zarr.metadata`)."""
        return self._one("metadata_cache", _metadata_cache)

    @property
    def remote_stores(self) -> RemoteStores:
        """The remote stores opened so far, one per distinct store map (:class:`RemoteStores`)."""
        return self._one("remote_stores", _remote_stores)

    @property
    def handoff_janitor(self) -> HandoffJanitor:
        """Removes result handoffs of requests cancelled before their reply
        (:mod:`pybridge.handoff.results`)."""
        return self._one("handoff_janitor", _handoff_janitor)

    def start_pool(self) -> None:
        """Start the worker pool in a background thread (idempotent)."""
        with self._start_lock:
            if self._start_thread is not None or self._closed:
                return
            self._start_thread = threading.Thread(
                target=self._start_pool, name="pybridge-pool-start", daemon=True)
            self._start_thread.start()

    def _was_closed(self) -> bool:
        return self._closed

    def _start_pool(self) -> None:
        try:
            from pybridge.pool.pool import WorkerPool

            pool = WorkerPool(self.settings.workers, self.settings)
            with self._start_lock:
                if self._closed:
                    return
                self._starting = pool
            pool.start()
            try:
                _probe(pool)
            except BaseException:
                pool.close()
                raise
            finally:
                with self._start_lock:
                    self._starting = None
            if self._was_closed():  # close() may have run while the pool started
                pool.close()
                return
            self._pool = pool
            log.debug("worker pool ready: %d workers", pool.size)
        except BaseException as e:  # noqa: BLE001 -- kept, and raised to every caller
            self._pool_error = e
            if self._closed:
                log.debug("worker pool not started: %s: %s", type(e).__name__, e)
            elif self.on_pool_failure is not None:
                self.on_pool_failure(e)  # ends the sidecar
                return
            else:
                log.warning("worker pool unavailable: %s: %s", type(e).__name__, e)
        finally:
            self._pool_ready.set()

    @property
    def pool(self) -> WorkerPool:
        """The running worker pool; waits for it to be ready.

        Raises :class:`~pybridge.errors.Internal` ("worker pool unavailable")
        when it could not be started.
        """
        if not self._pool_ready.is_set():
            self.start_pool()
            self._pool_ready.wait()
        if self._pool is None:
            err = self._pool_error
            reason = f"{type(err).__name__}: {err}" if err is not None else "closed"
            raise Internal("worker pool unavailable", reason=reason)
        return self._pool

    @property
    def pool_ready(self) -> bool:
        """True once the pool is running (never waits)."""
        return self._pool is not None

    def workers_up(self) -> bool:
        """True when the pool runs and every worker is alive (never waits)."""
        pool = self._pool
        return pool is not None and pool.alive_count() == pool.size

    def kill_workers(self) -> None:
        """SIGKILL the pool's workers now, without waiting (for a forced exit)."""
        for pool in (self._pool, self._starting):
            if pool is not None:
                pool.kill_workers()

    def close(self) -> None:
        """Stop the worker pool (waiting for it if it is still starting)."""
        with self._start_lock:
            self._closed = True
            thread = self._start_thread
            starting = self._starting
        if starting is not None:
            starting.close()  # its probe fails at once
        if thread is not None:
            thread.join(_START_JOIN_S)
        pool, self._pool = self._pool, None
        self._pool_ready.set()
        if pool is not None:
            started = time.monotonic()
            pool.close()
            log.debug("worker pool closed in %.3f s", time.monotonic() - started)
