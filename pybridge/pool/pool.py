"""The worker pool: processes that do the CPU-heavy chunk work.

``WorkerPool(size)`` keeps ``size`` worker processes, started through the
``forkserver`` start method (the fork server preloads numpy, numcodecs, zarr
and :mod:`pybridge.pool.codec_tasks`, so a new worker costs a fork, not an import). Each
worker is served by one dispatcher thread in the sidecar. A task is a
module-level function called in a worker as ``fn(payload, *args)``.

Transport
    ``payload`` (bytes-like) and a bytes-like return value travel through
    shared memory when they are bigger than :data:`SHM_THRESHOLD`, never
    pickled. Every worker has two input segments (created by the sidecar),
    used in turn, and output segments (created by the worker) by index.
    Segments are reused from task to task, and only recreated to grow (or to
    shrink after an unusually large buffer). They are made with
    :meth:`pybridge.handoff.shm.Segment.scratch`: in ``/dev/shm``, or as memfds when
    ``/dev/shm`` cannot hold them. Small payloads and every other
    argument or return value go through the worker's pipe, pickled.

    A small bytes-like return value comes back as ``bytes``. A large one
    comes back, without a copy, as a **read-only memoryview of the output
    segment** it was written to: that segment is the caller's until every
    view of it is dropped, and only then serves another task (the worker
    meanwhile writes to other indices). Past :data:`LEASE_LIMIT` bytes held
    that way, results are copied out as ``bytes`` instead. Idle segments
    beyond :data:`KEEP_IDLE_BYTES` per worker are removed.

    The payload view a task receives is only valid during the call: copy
    what you need to keep.

    A task that knows its result's size can write it in place with
    :func:`output_buffer` and return that view: the copy into the output
    segment is saved. Outside a worker, :func:`output_buffer` returns a
    plain buffer, so the same task also runs in process.

Writing straight into a named segment
    A task can also write its result into a segment that the sidecar made
    for it, which avoids the copy out of the output segment too::

        seg = shm.Segment.create(nbytes, "read")
        futures = [pool.submit(mymodule.decode_into, seg.path, offset, payload=chunk)
                   for chunk, offset in ...]

        # mymodule, run in a worker:
        def decode_into(payload, path, offset):
            with shm.Segment.attach(path) as out:
                ...write into out.buf[offset:...]...
            return None

    The segment is created (and later unlinked, or handed to the client) by
    the sidecar; workers only attach to it.

Pipelining
    A dispatcher keeps up to two tasks in its worker's pipe, so the worker
    never waits for the sidecar between tasks. It takes the second only when
    no other dispatcher is idle, so a queued task never waits behind a busy
    worker while another one is free.

Failures
    An exception raised by a task comes back as the same
    :class:`~pybridge.errors.BridgeError` subclass with its message and
    details, or as :class:`RemoteError` (carrying the Python type and the
    worker's traceback) for any other exception. A worker that dies while it
    runs a task (a signal, a segfault, ``os._exit``) fails only that task, with
    :class:`~pybridge.errors.WorkerCrashed`, and is replaced at once; a task
    queued behind it in its pipe goes to the replacement.

Back-pressure
    At most ``2 * size`` tasks wait in the queue; :meth:`WorkerPool.submit`
    blocks while it is full. A future cancelled before a worker picks it up
    never runs.

Workers die with the sidecar: each sets ``PR_SET_PDEATHSIG`` to SIGKILL. Its
parent is the fork server, which sets the same signal for itself when it
preloads this module (:func:`_arm_fork_server`), so a SIGKILL of the sidecar
takes the fork server and then every worker down within milliseconds, even
in the middle of a task. (The workers also close their inherited copy of the
fork server's "alive" pipe, see :func:`_release_fork_server`.) Workers
ignore SIGINT, use no blosc threads (the pool is the parallelism) and call
:func:`tune_malloc`.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from pybridge import errors
from pybridge.handoff import shm

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerProcess

__all__ = ["SHM_THRESHOLD", "RemoteError", "WorkerPool", "in_worker", "output_buffer", "probe",
           "quiet_blosc", "tune_malloc"]

log = logging.getLogger("pybridge.pool.pool")

#: Payloads and bytes results bigger than this go through shared memory.
SHM_THRESHOLD = 64 * 1024

#: Modules the fork server imports once, before it forks any worker.
PRELOAD = ["pybridge.pool.pool", "pybridge.pool.codec_tasks", "pybridge.zarr.chunk_tasks",
           "numpy", "numcodecs", "zarr"]

#: Freed memory glibc may keep for reuse (see :func:`tune_malloc`).
MALLOC_TRIM_BYTES = 256 << 20

#: Tasks a dispatcher keeps in its worker's pipe.
PIPELINE_DEPTH = 2

#: Bytes of results handed out as views of output segments at once; past it
#: results are copied out, so callers that hoard results cannot pin unbounded
#: shared memory.
LEASE_LIMIT = 256 << 20
#: Bytes of idle output segments kept per worker for reuse; the biggest idle
#: ones beyond it are removed.
KEEP_IDLE_BYTES = 64 << 20

#: Smallest segment made; a segment above ``_SHRINK_ABOVE`` that a buffer a
#: quarter of its size uses is replaced by a smaller one.
_MIN_SEGMENT = 1 << 20
_SHRINK_ABOVE = 32 << 20

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_STOP: Any = object()


class RemoteError(Exception):
    """A task raised an exception that is not a BridgeError.

    ``python_type`` is the exception's qualified type name and
    ``remote_traceback`` the traceback text from the worker.
    """

    def __init__(self, python_type: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{python_type}: {message}")
        self.python_type = python_type
        self.message = message
        self.remote_traceback = remote_traceback
        # traceback.format_exception() shows notes: the worker's traceback
        # then reaches the wire error with the sidecar's own.
        self.add_note(f"In the worker:\n{remote_traceback.rstrip()}")


def tune_malloc() -> bool:
    """Let glibc keep freed chunk-sized buffers for reuse instead of unmapping them.

    By default glibc serves every allocation above 128 KiB with a fresh
    ``mmap`` and gives it back on free, so each 1 MiB result is page-faulted
    in again (on this kind of VM that costs about as much as decoding it).
    Raising ``M_MMAP_THRESHOLD`` to 32 MiB and ``M_TRIM_THRESHOLD`` to
    :data:`MALLOC_TRIM_BYTES` makes such buffers come from the heap and be
    reused, at the cost of keeping up to that much freed memory. Workers
    call it at start. Returns False when this is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    ok: bool = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    trimmed: bool = mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_BYTES) == 1
    return ok and trimmed


def quiet_blosc(use_threads: bool | None = None) -> None:
    """Give numcodecs' blosc a thread lock instead of a multiprocessing one
    (:func:`pybridge.pool.blosc.blosc_thread_lock` says why), and set its
    ``use_threads`` (None keeps numcodecs' default). Workers call it at
    start, from their only thread. Does nothing when numcodecs is missing.
    """
    try:
        import numcodecs.blosc as blosc
    except Exception:  # noqa: BLE001 - no blosc, nothing to do
        return
    from pybridge.pool.blosc import blosc_thread_lock

    blosc_thread_lock(blosc)
    if use_threads is not None:
        blosc.use_threads = use_threads


def _segment_size(need: int, current: int) -> int | None:
    """The size for a new segment, or None when ``current`` will do."""
    if current >= need and not (current > _SHRINK_ABOVE and need * 4 < current):
        return None
    return max(need, _MIN_SEGMENT)


# --------------------------------------------------------------------------
# The worker process


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    parent = os.getppid()
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not Linux, or refused: the pipe's EOF still ends the worker
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed


#: Set, while :func:`_start_fork_server` starts the fork server, to the pid
#: of the process that starts it, so the fork server can tell that it was.
_OWNER_ENV = "PYBRIDGE_POOL_OWNER_PID"

_keeper_lock = threading.Lock()
_keeper: threading.Thread | None = None


def _start_fork_server() -> None:
    """Start the fork server from a thread that lives as long as this process.

    A parent-death signal fires when the parent *thread* ends, not the
    parent process: the fork server is therefore started by a keeper thread
    that never returns, so its death signal (see :func:`_arm_fork_server`)
    fires exactly when this process dies. Idempotent. A fork server that
    died and is restarted later by :mod:`multiprocessing` itself, from some
    other thread, is not armed (it still exits when this process does,
    through its "alive" pipe, only more slowly).
    """
    global _keeper
    from multiprocessing import forkserver

    with _keeper_lock:
        if _keeper is not None:
            return
        ready = threading.Event()

        def keep() -> None:
            os.environ[_OWNER_ENV] = str(os.getpid())
            try:
                forkserver.ensure_running()
            except Exception:
                log.exception("could not start the fork server")
            finally:
                os.environ.pop(_OWNER_ENV, None)
                ready.set()
            threading.Event().wait()  # the fork server's parent thread must live

        _keeper = threading.Thread(target=keep, name="pybridge-fork-server", daemon=True)
        _keeper.start()
    ready.wait()


def _arm_fork_server() -> None:
    """In the fork server: die with the sidecar, by signal, at once.

    Runs when the fork server preloads this module (its command line is
    ``python -c 'from multiprocessing.forkserver import main; ...'`` and it
    was started by :func:`_start_fork_server` of its parent). Left alone, the
    fork server notices the sidecar's death through its "alive" pipe and then
    exits like any Python process, which takes a few hundred milliseconds;
    only then does the workers' death signal fire, and meanwhile a worker can
    go on writing chunks after a new sidecar has started. With its own death
    signal the fork server, and so every worker, is gone within milliseconds.
    """
    owner = os.environ.pop(_OWNER_ENV, None)  # not for the workers it forks
    if owner is not None and owner == str(os.getppid()) and sys.argv[:1] == ["-c"]:
        _die_with_parent()


def _release_fork_server() -> None:
    """Close this worker's copy of the fork server's "alive" pipe.

    Every child of the fork server inherits the write end of the pipe on
    which the fork server waits for EOF, the sign that the sidecar is gone.
    While a worker holds it, the fork server outlives a killed sidecar, and
    so the workers' death signal (sent when the fork server exits) never
    comes. Workers never start processes, so they drop it.
    """
    try:
        from multiprocessing import forkserver

        server: Any = forkserver._forkserver
        fd = server._forkserver_alive_fd
    except (ImportError, AttributeError):
        return
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def _error_reply(exc: BaseException) -> tuple[Any, ...]:
    cls = type(exc)
    if isinstance(exc, errors.BridgeError):
        return ("bridge", cls.__module__, cls.__qualname__, exc.code, exc.message,
                dict(exc.details))
    tb = "".join(traceback.format_exception(exc))
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    return ("error", name, str(exc), tb)


class _WorkerState:
    """What one worker process keeps between tasks."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.inputs: dict[str, shm.Segment] = {}
        self.outputs: dict[int, shm.Segment] = {}
        self.out = 0
        self.claimed: memoryview | None = None

    def payload(self, spec: Any) -> Any:
        if not isinstance(spec, tuple):
            return spec  # None or small bytes
        path, n = spec
        seg = self.inputs.get(path)
        if seg is None:
            seg = self.inputs[path] = shm.Segment.attach(path)
            while len(self.inputs) > PIPELINE_DEPTH:
                old = next(iter(self.inputs))
                self.inputs.pop(old).close()
        return seg.buf[:n]

    def output(self, n: int) -> shm.Segment:
        """The current task's output segment, at least ``n`` bytes."""
        seg = self.outputs.get(self.out)
        size = _segment_size(n, seg.size if seg is not None else 0)
        if size is not None:
            if seg is not None:
                seg.close()
                seg.unlink()
            # The worker's own pid is in the name, so the sidecar can find
            # the segments of a worker that died.
            seg = shm.Segment.scratch(size, f"w{os.getpid()}o{self.out}")
            self.outputs[self.out] = seg
        assert seg is not None
        return seg

    def result(self, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return ("ok", value)
        if value is self.claimed:
            return ("shm", self.outputs[self.out].path, value.nbytes)
        view = memoryview(value)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        n = view.nbytes
        if n <= self.threshold:
            return ("ok", value if isinstance(value, bytes) else view.tobytes())
        seg = self.output(n)
        seg.buf[:n] = view
        return ("shm", seg.path, n)

    def drop(self, outs: tuple[int, ...]) -> None:
        """Remove the output segments the sidecar retired."""
        for out in outs:
            seg = self.outputs.pop(out, None)
            if seg is not None:
                seg.close()
                seg.unlink()

    def close(self) -> None:
        for seg in self.inputs.values():
            seg.close()
        self.drop(tuple(self.outputs))


_state: _WorkerState | None = None


def in_worker() -> bool:
    """True inside a worker process of a pool."""
    return _state is not None


def output_buffer(nbytes: int) -> memoryview:
    """A writable buffer for the running task's bytes result.

    Return it (the very object) from the task and the pool sends it without
    copying it. In a worker it is a view of the task's output segment, valid
    until the task returns; outside a worker it is a fresh bytearray's view.
    """
    state = _state
    if state is None or nbytes <= state.threshold:
        return memoryview(bytearray(nbytes))
    state.claimed = state.output(nbytes).buf[:nbytes]
    return state.claimed


def probe(payload: Any) -> str:
    """A task that imports every module the workers need; returns the worker's pid.

    The fork server swallows an ``ImportError`` while it preloads
    :data:`PRELOAD`, so a worker can start without the modules its tasks
    need (a shadowed or broken ``numpy``, say). The sidecar runs this task
    once its pool has started: a failure here means that no task can run.
    """
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    return str(os.getpid())


def _worker_main(conn: Connection, sidecar_pid: int, threshold: int) -> None:
    """The loop of one worker process: receive a task, run it, reply."""
    global _state
    _release_fork_server()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_malloc()
    shm.set_sidecar_pid(sidecar_pid)
    quiet_blosc(use_threads=False)  # the pool is the parallelism
    state = _state = _WorkerState(threshold)
    try:
        while True:
            try:
                msg = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the sidecar is gone
            state.claimed = None
            payload = None
            try:
                # Unpickling runs code (it imports the task's module, and a
                # module may fail to import): a failure is this task's error
                # reply, never the worker's death.
                task = pickle.loads(msg)
                if task is None:
                    return
                fn, args, spec, state.out, retired = task
                state.drop(retired)
                payload = state.payload(spec)
                reply = state.result(fn(payload, *args))
            except BaseException as exc:  # noqa: BLE001 - every failure is reported
                reply = _error_reply(exc)
            if isinstance(payload, memoryview):
                with contextlib.suppress(BufferError):
                    payload.release()
            payload = state.claimed = None
            try:
                data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - an unpicklable result
                data = pickle.dumps(_error_reply(exc), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                conn.send_bytes(data)
            except OSError:
                return
    finally:
        state.close()
        _state = None


# --------------------------------------------------------------------------
# The sidecar side


@dataclass
class _Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    payload: Any
    future: Future[Any]


@dataclass
class _Slot:
    """One worker process and what its dispatcher thread knows about it."""

    index: int
    proc: ForkServerProcess | None = None
    conn: Connection | None = None
    inputs: list[shm.Segment | None] = field(default_factory=lambda: [None] * PIPELINE_DEPTH)
    next_buf: int = 0
    thread: threading.Thread | None = None
    # Output segments, by index (guarded by the pool's lease lock): the
    # sidecar's mapping of each, the indices free for the next task, those
    # whose segment was retired (or never made), and the retired ones the
    # worker has yet to be told about. ``generation`` changes with the worker.
    outputs: dict[int, shm.Segment] = field(default_factory=dict)
    free_outs: list[int] = field(default_factory=list)
    spare_outs: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)
    out_count: int = 0
    generation: int = 0


def _bridge_error(module: str, qualname: str, code: str, message: str,
                  details: dict[str, Any]) -> errors.BridgeError:
    cls: Any = None
    if module.startswith("pybridge.") and "." not in qualname:
        mod = __import__(module, fromlist=[qualname])
        cls = getattr(mod, qualname, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.BridgeError)):
        exc = errors.BridgeError(message, **details)
        exc.code = code
        return exc
    return cls(message, **details)


def _signal_name(code: int | None) -> str | None:
    """The name of the signal that ended a process (exit code -N), if any."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    name = _signal_name(code)
    return f"signal {name}" if name else f"exit status {code}"


_live_pools: set[WorkerPool] = set()
_live_lock = threading.Lock()


class WorkerPool:
    """A fixed-size pool of worker processes. See the module docstring."""

    def __init__(self, size: int, settings: Any = None) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        self._size = size
        self._threshold = int(getattr(settings, "shm_threshold", SHM_THRESHOLD))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._space = threading.Semaphore(2 * size)
        self._slots = [_Slot(i) for i in range(size)]
        self._ctx = multiprocessing.get_context("forkserver")
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._idle = 0
        self._lease_lock = threading.Lock()
        self._leased_bytes = 0
        self._started = False
        self._closed = False
        self._sidecar_pid = shm.sidecar_pid()

    # -- life cycle -------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def start(self) -> None:
        """Start the dispatcher threads; each starts its worker in the background.

        Returns at once: tasks submitted before the workers are up wait in the
        queue. :meth:`wait_ready` waits for the whole pool.
        """
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        with _live_lock:
            _live_pools.add(self)
        shm.sweep_dead()
        with contextlib.suppress(ValueError):
            self._ctx.set_forkserver_preload(PRELOAD)
        _start_fork_server()
        for slot in self._slots:
            slot.thread = threading.Thread(
                target=self._run, args=(slot,), name=f"pybridge-dispatch-{slot.index}",
                daemon=True)
            slot.thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every worker is running; False on timeout."""
        with self._ready:
            return self._ready.wait_for(lambda: self.alive_count() == self._size or self._closed,
                                        timeout) and not self._closed

    def close(self) -> None:
        """Stop the pool: fail waiting tasks, stop workers, unlink segments.

        Idempotent. Workers get SIGTERM, then SIGKILL after half a second.
        When the last started pool of the process closes, every segment named
        after this sidecar is swept (:func:`pybridge.handoff.shm.sweep_own`).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ready.notify_all()
        for _ in self._slots:
            self._queue.put(_STOP)
        for slot in self._slots:
            proc = slot.proc
            if proc is not None and proc.is_alive():
                with contextlib.suppress(Exception):
                    proc.terminate()
        for slot in self._slots:
            if slot.thread is not None and slot.thread is not threading.current_thread():
                slot.thread.join(timeout=2.0)
        for slot in self._slots:
            proc = slot.proc
            if proc is not None:
                proc.join(timeout=0.5)
            self._drop_worker(slot)
            self._drop_inputs(slot)
        self._fail_queued()
        with _live_lock:
            _live_pools.discard(self)
            last = not _live_pools
        if last:
            shm.sweep_own()  # segments of dead workers, and anything else left behind

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def alive_count(self) -> int:
        """How many workers are running now."""
        return sum(1 for s in self._slots if s.proc is not None and s.proc.is_alive())

    def kill_workers(self) -> None:
        """SIGKILL every worker now and return (for a sidecar exiting by force).

        Takes no lock and waits for nothing, so it works while :meth:`close`
        is stuck; the pool is unusable afterwards.
        """
        for slot in list(self._slots):
            proc = slot.proc
            with contextlib.suppress(Exception):
                # A worker already reaped is skipped: its pid may be reused.
                if proc is not None and proc.pid is not None and proc.exitcode is None:
                    os.kill(proc.pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        """The pids of the running workers."""
        return [s.proc.pid for s in self._slots
                if s.proc is not None and s.proc.pid is not None and s.proc.is_alive()]

    # -- tasks ------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, payload: Any = None) -> Future[Any]:
        """Run ``fn(payload_view_or_None, *args)`` in a worker.

        ``fn`` must be a module-level function. A list of bytes-like
        payloads reaches the task as one view of their concatenation. Blocks while ``2 * size``
        tasks are already waiting. Raises RuntimeError when the pool is closed.
        A bytes-like result is ``bytes``, or a read-only ``memoryview`` when
        large (see the module docstring): drop it when done.
        """
        if not self._started:
            raise RuntimeError("the worker pool is not started")
        if (payload is not None and not isinstance(payload, (bytes, bytearray, memoryview))
                and not (isinstance(payload, (list, tuple)) and all(
                    isinstance(p, (bytes, bytearray, memoryview)) for p in payload))):
            raise TypeError("payload must be bytes-like or a list of bytes-like, got "
                            f"{type(payload).__name__}")
        while not self._space.acquire(timeout=0.25):
            if self._closed:
                break
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        future: Future[Any] = Future()
        self._queue.put(_Task(fn, args, payload, future))
        return future

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args: Any) -> list[Any]:
        """Run ``fn(item, *args)`` for every item; results in input order.

        Raises the first failure in input order, after cancelling what has
        not started yet.
        """
        futures: list[Future[Any]] = []
        try:
            for item in items:
                futures.append(self.submit(fn, *args, payload=item))
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # -- the dispatcher thread ---------------------------------------------

    def _run(self, slot: _Slot) -> None:
        try:
            self._spawn(slot)
        except Exception:
            log.exception("could not start worker %d", slot.index)
        sent: deque[tuple[_Task, int, int]] = deque()
        stopping = False
        while True:
            while not stopping and len(sent) < PIPELINE_DEPTH:
                task = self._next_task(wait_for_one=not sent)
                if task is None:
                    break
                if task is _STOP:
                    stopping = True
                    break
                if task.future.set_running_or_notify_cancel():
                    self._send(slot, task, sent)
                # else: cancelled while queued, never runs
            if not sent:
                if stopping:
                    return
                continue
            task, _, out = sent.popleft()
            reply = self._await(slot, task)
            if reply is None:
                # The worker died running ``task``; what it had not started
                # goes to its replacement (or fails if the pool is closing).
                waiting = [t for t, _, _ in sent]
                sent.clear()
                for t in waiting:
                    self._send(slot, t, sent)
                continue
            self._finish(slot, task, out, reply)

    def _next_task(self, wait_for_one: bool) -> Any:
        """The next queued task, or None.

        With ``wait_for_one`` it blocks. Otherwise it takes a task only when
        more are queued than dispatchers wait idle, so it never takes one an
        idle worker could start at once.
        """
        if wait_for_one:
            with self._lock:
                self._idle += 1
            try:
                task = self._queue.get()
            finally:
                with self._lock:
                    self._idle -= 1
        else:
            if self._closed or self._queue.qsize() <= self._idle:
                return None
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return None
        if task is not _STOP:
            self._space.release()
        return task

    def _spawn(self, slot: _Slot) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child_end, self._sidecar_pid, self._threshold),
            name=f"pybridge-worker-{slot.index}", daemon=True)
        try:
            proc.start()
        finally:
            child_end.close()
        with self._ready:
            if self._closed:
                proc.kill()
                proc.join()
                parent_end.close()
                return
            slot.proc, slot.conn = proc, parent_end
            self._ready.notify_all()

    def _send(self, slot: _Slot, task: _Task, sent: deque[tuple[_Task, int, int]]) -> None:
        """Hand a running-state task to the slot's worker; fail it if that is impossible."""
        if self._closed:
            task.future.set_exception(errors.WorkerCrashed("the worker pool was closed"))
            return
        buf = slot.next_buf
        for attempt in (1, 2):
            if slot.proc is None or not slot.proc.is_alive():
                try:
                    self._replace(slot)
                except Exception as exc:  # noqa: BLE001 - no worker could be started
                    task.future.set_exception(errors.WorkerCrashed(
                        f"could not start a worker: {exc}", worker=slot.index))
                    return
            assert slot.conn is not None
            out, retired, generation = self._take_output(slot)
            try:
                spec = self._payload_spec(slot, buf, task.payload)
                data = pickle.dumps((task.fn, task.args, spec, out, retired),
                                    protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable argument
                self._give_back(slot, out, generation, retired)
                task.future.set_exception(exc)
                return
            try:
                slot.conn.send_bytes(data)
                break
            except OSError as exc:
                if attempt == 2 or self._closed:
                    task.future.set_exception(errors.WorkerCrashed(
                        f"could not hand the task to a worker: {exc}", worker=slot.index))
                    return
                self._drop_worker(slot)
        slot.next_buf = (buf + 1) % PIPELINE_DEPTH
        sent.append((task, buf, out))

    # -- output segments and leases ------------------------------------------

    def _take_output(self, slot: _Slot) -> tuple[int, tuple[int, ...], int]:
        """An output index for the next task, the retired indices to tell
        the worker about, and the slot's generation."""
        with self._lease_lock:
            if slot.free_outs:
                out = slot.free_outs.pop()  # the most recently used: its pages are warm
            elif slot.spare_outs:
                out = slot.spare_outs.pop()
            else:
                out = slot.out_count
                slot.out_count += 1
            retired = tuple(slot.retired)
            slot.retired.clear()
            return out, retired, slot.generation

    def _give_back(self, slot: _Slot, out: int, generation: int,
                   retired: tuple[int, ...] = ()) -> None:
        """Output ``out`` is free again; retire idle segments beyond the budget."""
        with self._lease_lock:
            if slot.generation != generation:
                return  # from a worker that has been replaced
            slot.retired.extend(retired)
            slot.free_outs.append(out)
            idle = {k: slot.outputs[k].size if k in slot.outputs else 0 for k in slot.free_outs}
            total = sum(idle.values())
            while total > KEEP_IDLE_BYTES and len(slot.free_outs) > PIPELINE_DEPTH:
                k = max(slot.free_outs, key=idle.__getitem__)
                slot.free_outs.remove(k)
                total -= idle[k]
                seg = slot.outputs.pop(k, None)
                if seg is not None:
                    seg.close()
                slot.retired.append(k)
                slot.spare_outs.append(k)

    def _lease(self, slot: _Slot, out: int, generation: int, seg: shm.Segment,
               n: int) -> bytes | memoryview:
        """The result in output segment ``out``: a read-only view that keeps
        the segment for itself until it is dropped, or a copy past the lease
        budget."""
        with self._lease_lock:
            lease = self._leased_bytes + n <= LEASE_LIMIT
            if lease:
                self._leased_bytes += n
        if not lease:
            with seg.buf[:n] as view:
                data = view.tobytes()
            self._give_back(slot, out, generation)
            return data
        import numpy as np  # the sidecar has it loaded for the codecs anyway

        # A numpy array, because a memoryview cannot be weakly referenced:
        # every view of the result keeps this array alive, and the segment is
        # free again once the array is gone.
        arr = np.frombuffer(seg.buf, dtype=np.uint8, count=n)
        arr.flags.writeable = False
        weakref.finalize(arr, self._release, slot, out, generation, n)
        return arr.data

    def _release(self, slot: _Slot, out: int, generation: int, n: int) -> None:
        with self._lease_lock:
            self._leased_bytes -= n
        self._give_back(slot, out, generation)

    def _payload_spec(self, slot: _Slot, buf: int, payload: Any) -> Any:
        if payload is None:
            return None
        if isinstance(payload, (list, tuple)):
            views = [memoryview(p).cast("B") for p in payload]
        else:
            views = [memoryview(payload).cast("B")]
        n = sum(v.nbytes for v in views)
        if n <= self._threshold:
            if len(views) == 1 and isinstance(payload, bytes):
                return payload
            return b"".join(views)
        seg = slot.inputs[buf]
        size = _segment_size(n, seg.size if seg is not None else 0)
        if size is not None:
            if seg is not None:
                seg.close()
                seg.unlink()
            seg = slot.inputs[buf] = shm.Segment.scratch(size, f"w{slot.index}i{buf}")
        assert seg is not None
        offset = 0
        for view in views:
            seg.buf[offset:offset + view.nbytes] = view
            offset += view.nbytes
        return (seg.path, n)

    def _await(self, slot: _Slot, task: _Task) -> tuple[Any, ...] | None:
        """Wait for the worker's reply; on its death fail the task and replace it."""
        assert slot.conn is not None and slot.proc is not None
        conn, proc = slot.conn, slot.proc
        ready = wait([conn, proc.sentinel])
        if conn in ready:
            try:
                return pickle.loads(conn.recv_bytes())  # type: ignore[no-any-return]
            except (EOFError, OSError):
                pass  # it died while replying
        proc.join(timeout=1.0)
        pid, code = proc.pid, proc.exitcode
        if self._closed:
            task.future.set_exception(errors.WorkerCrashed(
                "the worker pool was closed while the task ran", worker=slot.index))
        else:
            task.future.set_exception(errors.WorkerCrashed(
                f"worker {pid} died with {_exit_reason(code)} while running the task",
                worker=slot.index, pid=pid, exit_code=code, signal=_signal_name(code)))
            log.warning("worker %s died with %s; replacing it", pid, _exit_reason(code))
        self._drop_worker(slot)
        if not self._closed:
            try:
                self._replace(slot)
            except Exception:
                log.exception("could not replace worker %d", slot.index)
        return None

    def _replace(self, slot: _Slot) -> None:
        self._drop_worker(slot)
        self._drop_inputs(slot)  # fresh input segments: old files may have been swept
        self._spawn(slot)
        if slot.proc is None:
            raise RuntimeError("the worker pool is closed")

    def _drop_inputs(self, slot: _Slot) -> None:
        for i, seg in enumerate(slot.inputs):
            if seg is not None:
                seg.close()
                seg.unlink()
                slot.inputs[i] = None

    def _drop_worker(self, slot: _Slot) -> None:
        """Forget the slot's worker and remove the segments it created."""
        proc, conn = slot.proc, slot.conn
        slot.proc = slot.conn = None
        if conn is not None:
            conn.close()
        with self._lease_lock:
            # Views still leased keep their mapping (and so their memory)
            # until they are dropped; their release is then ignored.
            slot.generation += 1
            for seg in slot.outputs.values():
                seg.close()
            slot.outputs.clear()
            slot.free_outs.clear()
            slot.spare_outs.clear()
            slot.retired.clear()
            slot.out_count = 0
        if proc is not None and proc.pid is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=1.0)
            pattern = os.path.join(shm.SHM_DIR, f"{shm.PREFIX}{self._sidecar_pid}-w{proc.pid}o*")
            for path in glob.glob(pattern):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _finish(self, slot: _Slot, task: _Task, out: int, reply: tuple[Any, ...]) -> None:
        kind = reply[0]
        future = task.future
        generation = slot.generation
        if kind != "shm":
            self._give_back(slot, out, generation)
        if kind == "ok":
            future.set_result(reply[1])
        elif kind == "shm":
            _, path, n = reply
            try:
                with self._lease_lock:
                    seg = slot.outputs.get(out)
                    if seg is None or seg.path != path:
                        if seg is not None:
                            seg.close()  # the worker replaced it: nobody holds it
                        seg = slot.outputs[out] = shm.Segment.attach(path)
                result = self._lease(slot, out, generation, seg, n)
            except Exception as exc:  # noqa: BLE001 - e.g. the file was swept
                self._give_back(slot, out, generation)
                future.set_exception(exc)
                return
            future.set_result(result)
        elif kind == "bridge":
            future.set_exception(_bridge_error(*reply[1:]))
        else:
            future.set_exception(RemoteError(*reply[1:]))

    def _fail_queued(self) -> None:
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return
            if task is _STOP:
                continue
            self._space.release()
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(errors.WorkerCrashed("the worker pool was closed"))


_arm_fork_server()
