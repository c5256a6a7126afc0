"""The read loop and dispatch: frames in, handlers run, replies out.

Layering (as in pynvim's msgpack_rpc): :mod:`pybridge.rpc.framing` moves frames,
:mod:`pybridge.rpc.protocol` turns them into messages, this module dispatches
them, and :mod:`pybridge.methods` holds the handlers.

One **reader thread** (the main thread) reads frames without pause. For a
request it checks the id, looks the method up and validates the params, then

- runs ``inline`` methods (``hello``, ``ping``) right there and writes the
  reply, so a ping costs no thread hop;
- hands every other request to a small pool of **handler threads** (up to
  :data:`HANDLER_THREADS`, started on demand). Beyond ``max_in_flight``
  accepted requests the reply is ``overloaded`` at once.

Replies are written by whoever finishes, so they go out in completion order.
Notifications are handled on the reader thread: ``cancel`` sets the call's
``cancelled`` event (a queued call then never runs, and no reply is sent for
a cancelled call), ``stream.data`` feeds the call's upload queue (see
:mod:`pybridge.rpc.call` for the back-pressure this implies).

Bad input never stops the loop: a body that is not msgpack or not a valid
message gets ``invalid_message``, addressed to the request id when one could
be read from it and to id 0 otherwise; an unknown method gets
``unknown_method``, bad params ``invalid_params``, an oversized frame
``frame_too_large``. At EOF every call is cancelled and :func:`serve`
returns.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

from pybridge.errors import (
    BridgeError,
    Cancelled,
    FrameTooLarge,
    InvalidMessage,
    InvalidParams,
    Overloaded,
    TooLarge,
    UnknownMethod,
)
from pybridge.libraries import ready
from pybridge.rpc.call import Call, payload_source
from pybridge.rpc.framing import (
    FrameReader,
    FrameWriter,
    OversizedFrame,
    TruncatedFrame,
    set_pipe_size,
)
from pybridge.rpc.params import Bin, Int, validate
from pybridge.rpc.protocol import (
    BadMessage,
    Request,
    pack_notification,
    pack_response,
    parse,
    peek_request_id,
)

if TYPE_CHECKING:
    from pybridge.context import SidecarContext
    from pybridge.methods import Method
    from pybridge.settings import Settings

__all__ = ["HANDLER_THREADS", "POOL_FAILED_STATUS", "Server", "error_to_wire", "serve"]

log = logging.getLogger("pybridge")

#: Most handler threads running requests at once.
HANDLER_THREADS = 32
#: The GIL switch interval (see :func:`serve`).
SWITCH_INTERVAL_S = 0.0005
#: After EOF the worker pool gets this long to close; then the process exits
#: anyway (workers die with it by their parent-death signal, and leftover
#: shared-memory segments are swept by the next sidecar).
CLOSE_GRACE_S = 0.75
#: After EOF, the process is ended by force if clean shutdown takes longer.
EXIT_DEADLINE_S = 3.0
#: The exit status of a sidecar whose worker pool cannot start (EX_CONFIG).
POOL_FAILED_STATUS = 78

_CANCEL_SPEC = {"id": Int(min=0)}
_STREAM_DATA_SPEC = {"id": Int(min=0), "data": Bin()}


def _type_name(exc: BaseException) -> str:
    """The exception's type as the wire shows it.

    An exception that stands for one raised elsewhere (a worker's
    :class:`~pybridge.pool.pool.RemoteError`) names the original type through
    its ``python_type`` attribute.
    """
    remote = getattr(exc, "python_type", None)
    if isinstance(remote, str) and remote:
        return remote
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The wire error map for any exception (PROTOCOL.md §5).

    A :class:`BridgeError` keeps its code; when it was raised from a Python
    exception (``raise DecodeFailed(...) from e``) that cause's type and
    traceback are added. Anything else is ``internal`` with its type and
    traceback.
    """
    if isinstance(exc, BridgeError):
        wire = exc.to_wire()
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, BridgeError):
            wire["python_type"] = _type_name(cause)
            wire["traceback"] = "".join(traceback.format_exception(cause))
        return wire
    remote = getattr(exc, "python_type", None)
    return {
        "code": "internal",
        "message": str(exc) if isinstance(remote, str) and remote
        else f"{type(exc).__name__}: {exc}",
        "details": {},
        "python_type": _type_name(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class _HandlerThreads:
    """A minimal thread pool: threads started on demand up to a limit.

    ``idle`` counts threads waiting for work that no submit has claimed, so
    a new thread is started exactly when no waiting thread can take the item.
    """

    def __init__(self, run: Any, limit: int) -> None:
        self._run = run
        self._limit = limit
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[tuple[Call, Method]] = deque()
        self._idle = 0
        self._count = 0
        self._stopping = False

    def submit(self, call: Call, method: Method) -> None:
        with self._cond:
            self._pending.append((call, method))
            if self._idle > 0:
                self._idle -= 1
                self._cond.notify()
                return
            if self._count >= self._limit:
                return  # the next thread to finish takes it
            self._count += 1
        threading.Thread(target=self._loop, name=f"pybridge-handler-{self._count}",
                         daemon=True).start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if self._stopping:
                        return
                    self._idle += 1
                    self._cond.wait()
                item = self._pending.popleft()
            self._run(*item)

    def stop(self) -> None:
        """Let waiting threads end; queued items are dropped (their calls are cancelled)."""
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cond.notify_all()


class Server:
    """Dispatches the frames read from ``reader``; replies through ``writer``."""

    def __init__(self, settings: Settings, reader: FrameReader, writer: FrameWriter,
                 context: SidecarContext, methods: dict[str, Method]) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.context = context
        self.methods = methods
        self._calls: dict[int, Call] = {}
        self._lock = threading.Lock()
        self._threads = _HandlerThreads(self._run, HANDLER_THREADS)
        self._output_closed = False

    # -- the loop ----------------------------------------------------------

    def serve(self) -> None:
        """Read and dispatch frames until EOF; then cancel every call."""
        first = True
        try:
            while True:
                try:
                    frame = self.reader.read()
                except TruncatedFrame as e:
                    log.warning("input closed mid-frame: %s", e)
                    break
                if frame is None:
                    break
                try:
                    self._on_frame(frame)
                except Exception as e:  # a bug in dispatch: report it, keep serving
                    log.exception("dispatch failed")
                    self._reply(0, error_to_wire(e), None)
                if first:
                    first = False
                    self.context.start_pool()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Cancel every call in flight and let the handler threads go."""
        with self._lock:
            calls = list(self._calls.values())
        for call in calls:
            call.cancelled.set()
        self._threads.stop()

    def _on_frame(self, frame: memoryview | OversizedFrame) -> None:
        if isinstance(frame, OversizedFrame):
            rid = peek_request_id(frame.head)
            limit = self.settings.max_frame_bytes
            err = FrameTooLarge(f"a frame of {frame.length} bytes exceeds the limit of {limit}",
                                bytes=frame.length, limit=limit)
            self._reply(rid or 0, err.to_wire(), None)
            return
        try:
            msg = parse(frame)
        except BadMessage as e:
            rid = e.request_id if e.request_id is not None else peek_request_id(frame[:64])
            self._reply(rid or 0, e.to_wire(), None)
            return
        if type(msg) is Request:
            self._on_request(msg)
        else:
            self._on_notification(msg.method, msg.params)

    # -- requests ----------------------------------------------------------

    def _on_request(self, req: Request) -> None:
        rid = req.id
        if rid in self._calls:
            self._reply(rid, InvalidMessage(f"request id {rid} is already in flight",
                                            id=rid).to_wire(), None)
            return
        method = self.methods.get(req.method)
        if method is None:
            self._reply(rid, UnknownMethod(f"unknown method {req.method!r}",
                                           method=req.method).to_wire(), None)
            return
        try:
            params = validate(method.params, req.params)
            upload = self._upload_size(method, params)
        except BridgeError as e:  # invalid_params, or too_large for an upload
            self._reply(rid, e.to_wire(), None)
            return
        call = Call(rid, req.method, params, self.context, self.writer, inline=method.inline)
        if method.payload:
            # The transport is decided here, once: the handler takes its input
            # from call.payload() and never checks which param carried it.
            try:
                call.payload_source = payload_source(method.payload, params)
            except InvalidParams as e:
                call.finished = True  # an upload handoff it names is removed all the same
                self._reply(rid, e.to_wire(), None)
                return
        if method.inline:
            error, result, cancelled = self._invoke(call, method)
            if not cancelled:
                self._finish(call, error, result)
            return
        with self._lock:
            if len(self._calls) >= self.settings.max_in_flight:
                overloaded = True
            else:
                overloaded = False
                self._calls[rid] = call
        if overloaded:
            limit = self.settings.max_in_flight
            self._reply(rid, Overloaded(f"more than {limit} requests in flight",
                                        limit=limit).to_wire(), None)
            return
        if upload is not None:
            call.expect_upload(upload)
        self._threads.submit(call, method)

    def _upload_size(self, method: Method, params: dict[str, Any]) -> int | None:
        """The declared size of the request's upload stream, if it has one.

        An upload over ``max_request_bytes`` is refused (``too_large``)
        before a byte of it is read.
        """
        if "stream" not in method.params:
            return None
        stream = params.get("stream")
        if stream is None:
            return None
        total = stream.get("bytes") if isinstance(stream, dict) else None
        if (not isinstance(stream, dict) or set(stream) != {"bytes"}
                or type(total) is not int or total < 0):
            raise InvalidParams("param 'stream' must be {\"bytes\": int >= 0}",
                                param="stream", expected="{bytes: int >= 0}")
        limit = self.settings.max_request_bytes
        if total > limit:
            raise TooLarge(f"an upload of {total} bytes is over the per-request limit of "
                           f"{limit} bytes", bytes=total, limit=limit)
        return total

    def _run(self, call: Call, method: Method) -> None:
        """Handler thread: run one queued call unless it was cancelled meanwhile."""
        try:
            if call.cancelled.is_set():
                error, result, cancelled = None, None, True
            else:
                error, result, cancelled = self._invoke(call, method)
        finally:
            call.finished = True
            with self._lock:
                if self._calls.get(call.id) is call:
                    del self._calls[call.id]
        if not cancelled and not call.cancelled.is_set():
            self._finish(call, error, result)
        else:
            _drop_handoff(result)

    @staticmethod
    def _invoke(call: Call, method: Method) -> tuple[dict[str, Any] | None, Any, bool]:
        """Run the handler; return ``(error, result, cancelled)``."""
        try:
            ready(method.name)
            return None, method.handler(call), False
        except Cancelled:
            return None, None, True
        except BridgeError as e:
            return error_to_wire(e), None, False
        except BaseException as e:
            log.error("%s (request %d) raised %s", call.method, call.id, _type_name(e),
                      exc_info=e)
            return error_to_wire(e), None, False

    def _finish(self, call: Call, error: dict[str, Any] | None, result: Any) -> None:
        if error is None:
            if not isinstance(result, dict):
                error = error_to_wire(TypeError(
                    f"handler {call.method!r} returned {type(result).__name__}, not a map"))
                result = None
            elif call.streamed:
                result["stream"] = {"bytes": call.stream_bytes, "frames": call.stream_frames}
        self._reply(call.id, error, result)

    def _reply(self, rid: int, error: dict[str, Any] | None, result: Any) -> None:
        try:
            body = pack_response(rid, error, result)
        except Exception as e:  # noqa: BLE001 -- a value msgpack cannot carry
            if error is not None:
                # Keep the error's code: only its details can hold such a
                # value (an integer past 64 bits, say); send those as text.
                body = pack_response(rid, _packable(error), None)
            else:
                body = pack_response(rid, error_to_wire(e), None)
        if self._output_closed:
            return
        try:
            self.writer.write(body)
        except OSError as e:  # the client is gone; EOF on input follows
            self._output_closed = True
            log.info("output closed: %s", e)

    # -- notifications -------------------------------------------------------

    def _on_notification(self, name: str, params: dict[str, Any]) -> None:
        if name == "stream.data":
            try:
                p = validate(_STREAM_DATA_SPEC, params)
            except InvalidParams as e:
                self._reply(0, e.to_wire(), None)
                return
            call = self._calls.get(p["id"])
            if call is None or not call.feed_upload(p["data"]):
                log.debug("dropped stream.data for request %d", p["id"])
        elif name == "cancel":
            try:
                p = validate(_CANCEL_SPEC, params)
            except InvalidParams as e:
                self._reply(0, e.to_wire(), None)
                return
            call = self._calls.get(p["id"])
            if call is not None:
                call.cancelled.set()
        else:
            self._reply(0, UnknownMethod(f"unknown notification {name!r}",
                                         method=name).to_wire(), None)


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _packable(value: Any) -> Any:
    """``value`` with everything msgpack cannot carry turned into text.

    Maps, lists, str, bytes, bools, floats, None and integers in msgpack's
    range are kept; anything else (a huge integer, a numpy scalar, an
    object) becomes its ``repr``.
    """
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, dict):
        return {str(k): _packable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_packable(v) for v in value]
    return repr(value)


def _drop_handoff(result: Any) -> None:
    """Unlink the shared-memory file a result hands over, when its reply is dropped.

    Only this sidecar's own segments are touched (the name check of
    :func:`pybridge.handoff.shm.segment_pid`), whatever the result says.
    """
    if not isinstance(result, dict):
        return
    handoff = result.get("shm")
    path = handoff.get("path") if isinstance(handoff, dict) else None
    if not isinstance(path, str):
        return
    from pybridge.handoff import shm

    if os.path.dirname(path) == shm.SHM_DIR and shm.segment_pid(path) == shm.sidecar_pid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the dropped handoff %s: %s", path, e)


# -- process set-up -----------------------------------------------------------

def _take_channel(settings: Settings) -> tuple[int, int]:
    """Return the channel's (input fd, output fd), making stray prints harmless.

    In fd 3/4 mode fd 1 is not the channel and is left alone. In ``--stdio``
    mode the channel is moved off fds 0 and 1 (dup), fd 1 is pointed at
    stderr and fd 0 at /dev/null. Either way ``sys.stdout`` becomes stderr.
    """
    if settings.stdio:
        in_fd, out_fd = os.dup(0), os.dup(1)
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    else:
        in_fd, out_fd = 3, 4
        for fd in (in_fd, out_fd):
            os.fstat(fd)  # OSError (EBADF) when the fd is not open
            os.set_inheritable(fd, False)
    sys.stdout = sys.stderr
    return in_fd, out_fd


def _sweep() -> None:
    """Remove every shared-memory file named after this sidecar (never raises)."""
    from pybridge.handoff import shm

    try:
        removed = shm.sweep_own()
    except Exception as e:  # noqa: BLE001 - exiting anyway
        log.warning("cannot sweep shared memory: %s", e)
        return
    if removed:
        log.debug("removed %d shared-memory files at exit", len(removed))


def _exit_now(status: int, context: SidecarContext | None = None) -> None:
    """Exit at once: kill the workers, remove this sidecar's shared memory, go.

    The workers are killed first so that none can create a segment after
    the sweep; a worker still starting dies by its parent-death signal.
    """
    if context is not None:
        context.kill_workers()
    _sweep()
    logging.shutdown()
    sys.stderr.flush()
    os._exit(status)


def _exit_watchdog(status: int, context: SidecarContext) -> None:
    """End the process if clean shutdown hangs (the client is gone)."""
    def force() -> None:
        log.warning("shutdown took more than %.0f s; exiting", EXIT_DEADLINE_S)
        _exit_now(status, context)

    timer = threading.Timer(EXIT_DEADLINE_S, force)
    timer.daemon = True
    timer.start()


def _close_within(context: SidecarContext, grace: float, status: int) -> None:
    """Close the context, but exit at once if that takes more than ``grace`` s.

    Either way this sidecar's shared-memory files are removed.
    """
    # A pool still starting (the fork server imports zarr) is not worth
    # waiting for, nor worth a warning.
    was_up = context.workers_up()
    closer = threading.Thread(target=context.close, name="pybridge-close", daemon=True)
    closer.start()
    closer.join(grace)
    if closer.is_alive():
        level = logging.WARNING if was_up else logging.DEBUG
        log.log(level, "worker pool did not close within %.2f s; exiting", grace)
        _exit_now(status, context)
    _sweep()


def _pool_failed(writer: FrameWriter, context: SidecarContext, exc: BaseException) -> None:
    """End a sidecar whose worker pool cannot start (PROTOCOL.md §1).

    A sidecar that answers ``ping`` but can run no task looks healthy and is
    not: it tells the client why in a ``sidecar.failed`` notification (an
    error map, §5), says so on stderr, and exits with
    :data:`POOL_FAILED_STATUS`. Requests waiting for the pool get no reply;
    the client fails them when it sees the exit.
    """
    wire = error_to_wire(exc)
    wire["message"] = f"the worker pool cannot start: {wire['message']}"
    print(f"pybridge: {wire['message']}; exiting with status {POOL_FAILED_STATUS}\n"  # noqa: T201
          f"{wire.get('traceback', '')}", file=sys.stderr)
    try:
        writer.write(pack_notification("sidecar.failed", _packable(wire)))
    except OSError:
        pass  # the client is gone: the exit status is all there is
    _exit_now(POOL_FAILED_STATUS, context)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _report_handoff(settings: Settings) -> None:
    """Say on stderr, at start, when handoffs cannot be used (all goes by the pipe)."""
    from pybridge.methods.basic import handoff_status

    status = handoff_status(settings)
    if not status["usable"]:
        log.warning("shared-memory handoff is unusable, results and uploads go by the "
                    "pipe: %s", status["reason"])


def serve(settings: Settings) -> int:
    """Serve the channel until its input ends; return the exit status."""
    from pybridge.context import SidecarContext
    from pybridge.methods import method_table
    from pybridge.pool.blosc import install_blosc_hook

    try:
        in_fd, out_fd = _take_channel(settings)
    except OSError as e:
        print(f"pybridge: fds 3 and 4 are not open ({e}); "  # noqa: T201
              "start the sidecar from a Port with :nouse_stdio, or use --stdio",
              file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    # The reader thread must get the GIL back quickly when another thread is
    # busy in Python code (the pool starting, a handler): a ping then waits
    # at most this long instead of the default 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    set_pipe_size(in_fd)
    set_pipe_size(out_fd)
    install_blosc_hook()  # no semaphore for small requests that use blosc here
    context = SidecarContext(settings)
    writer = FrameWriter(out_fd)
    context.on_pool_failure = lambda exc: _pool_failed(writer, context, exc)
    status = 0
    try:
        server = Server(settings, FrameReader(in_fd, settings.max_frame_bytes),
                        writer, context, method_table(settings))
        log.info("serving (pid %d, %d methods)", os.getpid(), len(server.methods))
        _report_handoff(settings)
        server.serve()
        log.info("input closed; exiting")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
        raise
    finally:
        _exit_watchdog(status, context)
        _close_within(context, CLOSE_GRACE_S, status)
    return 0
