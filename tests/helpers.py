"""Test helpers: a real sidecar process on real pipes, and frame utilities.

Typical use, through the ``sidecar`` fixture (see ``conftest.py``)::

    def test_something(sidecar):
        reply = sidecar.call("echo", {"data": b"abc"})
        assert reply.ok and reply.data == b"abc"

or directly::

    with SidecarProcess(workers=2, args=["--max-frame-bytes", "4096"]) as sc:
        sc.call("ping").unwrap()

:class:`SidecarProcess` starts ``python -m pybridge --stdio`` (or the fd 3/4
mode the Elixir Port uses, with ``fd34=True``) with
``PYBRIDGE_TEST_METHODS=1``. A background thread reads every frame the
sidecar writes; :meth:`SidecarProcess.call` sends a request and waits for its
reply, collecting the ``stream.data`` notifications for that id on the way.
Messages for other ids stay buffered, so several requests can be in flight.
"""

from __future__ import annotations

import fcntl
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

__all__ = [
    "REPO",
    "Reply",
    "SidecarProcess",
    "err",
    "frame",
    "fs",
    "iter_frames",
    "ok",
    "pack",
    "unpack",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent

_HEADER = struct.Struct(">I")
_EOF = object()


def pack(obj: Any) -> bytes:
    """msgpack bytes as the protocol wants them (bin for bytes, str for str)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(body: bytes) -> Any:
    """Decode one msgpack value (str keys not enforced, to see what was sent)."""
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def frame(body: bytes) -> bytes:
    """``body`` with its 4-byte big-endian length prefix."""
    return _HEADER.pack(len(body)) + body


@dataclass
class Reply:
    """A response, with the ``stream.data`` pieces that came before it.

    ``error`` and ``result`` are as on the wire; ``stream`` holds the data of
    each ``stream.data`` notification for this id in order, and
    ``frame_sizes`` the body size of each of those frames.
    """

    id: int
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    stream: list[bytes] = field(default_factory=list)
    frame_sizes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def code(self) -> str | None:
        """The error code, or None for a result."""
        return None if self.error is None else self.error["code"]

    @property
    def data(self) -> bytes:
        """The payload: ``result["data"]`` when inline, else the joined stream."""
        assert self.result is not None, f"no result: {self.error}"
        if "data" in self.result:
            return self.result["data"]
        return b"".join(self.stream)

    def unwrap(self) -> dict[str, Any]:
        """The result; fails the test with the error when there is one."""
        assert self.error is None, f"request {self.id} failed: {self.error}"
        assert self.result is not None
        return self.result


class SidecarProcess:
    """A ``python -m pybridge`` child process driven over real pipes.

    Args:
        args: extra command-line options, e.g. ``["--max-frame-bytes", "4096"]``.
        workers: passed as ``--workers N`` (None: the sidecar's default).
        test_methods: set ``PYBRIDGE_TEST_METHODS=1`` (default True).
        env: extra environment variables.
        fd34: use fds 3 and 4 for the channel, as the Elixir Port does,
            instead of ``--stdio``; the child's stdout is then captured
            separately (see :meth:`stdout_bytes`).
        start: start the process now (default True).
        wrapper: a command the sidecar's command line is appended to, for
            example ``["unshare", "--mount", "sh", "-c", "...; exec \"$@\"", "sh"]``
            to give the sidecar its own ``/dev/shm``; :attr:`pid` is then
            the wrapper's, which must ``exec`` the sidecar.
        python_flags: interpreter options before ``-m pybridge`` (``["-P"]``).
        cwd: the working directory (default: the repository).
    """

    def __init__(self, args: Sequence[str] = (), *, workers: int | None = 1,
                 test_methods: bool = True, env: Mapping[str, str] | None = None,
                 fd34: bool = False, start: bool = True,
                 wrapper: Sequence[str] = (), python_flags: Sequence[str] = (),
                 cwd: Path | None = None) -> None:
        self.args = list(args)
        self.wrapper = list(wrapper)
        self.python_flags = list(python_flags)
        self.cwd = cwd or REPO
        self.workers = workers
        self.fd34 = fd34
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH", "")) if p)
        if test_methods:
            self.env["PYBRIDGE_TEST_METHODS"] = "1"
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._in: Any = None  # file object we write frames to
        self._out: Any = None  # file object we read frames from
        self._stderr = tempfile.TemporaryFile()
        self._stdout = tempfile.TemporaryFile()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._inbox: list[tuple[Any, int]] = []
        self._reader: threading.Thread | None = None
        self._next_id = 1
        self._write_lock = threading.Lock()
        self.eof = False
        if start:
            self.start()

    # -- life cycle ---------------------------------------------------------

    @property
    def command(self) -> list[str]:
        cmd = [*self.wrapper, sys.executable, *self.python_flags, "-m", "pybridge"]
        if not self.fd34:
            cmd.append("--stdio")
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        return cmd + self.args

    def start(self) -> SidecarProcess:
        """Start the process and the frame-reading thread."""
        if self.fd34:
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()

            # Put the child's ends on fds 3 and 4, the fds an Erlang Port with
            # :nouse_stdio gives. They are first moved above 9 so that neither
            # is 3 or 4 already; the originals are close-on-exec.
            r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
            w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(to_child_r)
            os.close(from_child_w)

            def move_fds() -> None:
                os.dup2(r, 3)  # dup2 leaves the copies inheritable
                os.dup2(w, 4)

            self.proc = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=self._stdout,
                stderr=self._stderr, preexec_fn=move_fds, close_fds=False, cwd=self.cwd)
            os.close(r)
            os.close(w)
            self._in = os.fdopen(to_child_w, "wb", buffering=0)
            self._out = os.fdopen(from_child_r, "rb", buffering=0)
        else:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, bufsize=0, cwd=self.cwd)
            self._in, self._out = self.proc.stdin, self.proc.stdout
        self._reader = threading.Thread(target=self._read_frames, daemon=True,
                                        name="sidecar-test-reader")
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def close_input(self) -> None:
        """Close the sidecar's input (EOF): it should exit on its own."""
        if self._in is not None and not self._in.closed:
            self._in.close()

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit; return its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self, timeout: float = 5.0) -> int | None:
        """Close the input, wait for the exit, kill after ``timeout``. Idempotent."""
        if self.proc is None:
            return None
        try:
            self.close_input()
        except OSError:
            pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._out is not None:
            self._out.close()
        return code

    def __enter__(self) -> SidecarProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stderr_text(self) -> str:
        """Everything the sidecar wrote to stderr so far."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stdout_bytes(self) -> bytes:
        """What the sidecar wrote to its fd 1 (only captured with ``fd34=True``)."""
        self._stdout.flush()
        self._stdout.seek(0)
        return self._stdout.read()

    # -- sending ------------------------------------------------------------

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` to the channel as it is (no length prefix added)."""
        with self._write_lock:
            self._in.write(data)

    def send_frame(self, body: bytes) -> None:
        """Write one frame whose body is ``body``."""
        self.send_raw(frame(body))

    def send(self, message: Any) -> None:
        """Pack ``message`` and write it as one frame."""
        self.send_frame(pack(message))

    def request(self, method: str, params: Mapping[str, Any] | None = None, *,
                id: int | None = None) -> int:
        """Send a request without waiting; return its id."""
        rid = self.next_id() if id is None else id
        self.send([0, rid, method, dict(params or {})])
        return rid

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        self.send([2, method, dict(params)])

    def cancel(self, rid: int) -> None:
        self.notify("cancel", {"id": rid})

    def upload(self, rid: int, data: bytes, piece: int = 256 * 1024) -> None:
        """Send ``data`` as ``stream.data`` notifications for request ``rid``."""
        for offset in range(0, len(data), piece):
            self.notify("stream.data", {"id": rid, "data": data[offset:offset + piece]})

    # -- receiving ----------------------------------------------------------

    def _read_frames(self) -> None:
        out = self._out
        try:
            while True:
                header = _read_exact(out, 4)
                if header is None:
                    break
                (n,) = _HEADER.unpack(header)
                body = _read_exact(out, n) if n else b""
                if body is None:
                    self._queue.put(AssertionError("sidecar output ended mid-frame"))
                    break
                try:
                    self._queue.put((unpack(body), n))
                except Exception as e:  # noqa: BLE001
                    self._queue.put(AssertionError(f"sidecar sent a non-msgpack frame: {e}"))
        except (OSError, ValueError):
            pass
        finally:
            self._queue.put(_EOF)

    def _pull(self, deadline: float) -> tuple[Any, int]:
        remaining = deadline - time.monotonic()
        if self.eof:
            raise EOFError(self._eof_message())
        try:
            item = self._queue.get(timeout=max(remaining, 0))
        except queue.Empty:
            raise TimeoutError(f"no message from the sidecar in time; stderr:\n"
                               f"{self.stderr_text()[-3000:]}") from None
        if item is _EOF:
            self.eof = True
            raise EOFError(self._eof_message())
        if isinstance(item, Exception):
            raise item
        return item

    def _eof_message(self) -> str:
        code = self.proc.poll() if self.proc else None
        return f"sidecar closed its output (exit status {code}); stderr:\n" \
               f"{self.stderr_text()[-3000:]}"

    def recv(self, timeout: float = 10.0) -> Any:
        """The next message from the sidecar, whatever it is (buffered ones first)."""
        if self._inbox:
            return self._inbox.pop(0)[0]
        return self._pull(time.monotonic() + timeout)[0]

    def pending(self, wait: float = 0.0) -> list[Any]:
        """Messages received and not yet claimed, after waiting ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._inbox.append(self._pull(deadline))
            except TimeoutError:
                break
        return [m for m, _ in self._inbox]

    def response(self, rid: int, timeout: float = 10.0) -> Reply:
        """Wait for the response to ``rid``, with its ``stream.data`` pieces."""
        deadline = time.monotonic() + timeout
        reply = Reply(rid, None, None)
        i = 0
        while True:
            if i < len(self._inbox):
                msg, size = self._inbox[i]
            else:
                self._inbox.append(self._pull(deadline))
                continue
            if _is_stream_data(msg, rid):
                reply.stream.append(msg[2]["data"])
                reply.frame_sizes.append(size)
                del self._inbox[i]
            elif isinstance(msg, list) and len(msg) == 4 and msg[0] == 1 and msg[1] == rid:
                del self._inbox[i]
                reply.error, reply.result = msg[2], msg[3]
                return reply
            else:
                i += 1

    def call(self, method: str, params: Mapping[str, Any] | None = None, *,
             timeout: float = 10.0) -> Reply:
        """Send a request and wait for its reply."""
        return self.response(self.request(method, params), timeout)

    def ping(self, timeout: float = 10.0) -> Reply:
        """A ping that must succeed: the sidecar is alive and serving."""
        reply = self.call("ping", timeout=timeout)
        assert reply.result == {"pong": True}, reply
        return reply


def _is_stream_data(msg: Any, rid: int) -> bool:
    return (isinstance(msg, list) and len(msg) == 3 and msg[0] == 2
            and msg[1] == "stream.data" and isinstance(msg[2], dict)
            and msg[2].get("id") == rid)


def _read_exact(f: Any, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = f.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def iter_frames(data: bytes) -> Iterable[bytes]:
    """Split a byte string of whole frames into bodies."""
    offset = 0
    while offset < len(data):
        (n,) = _HEADER.unpack_from(data, offset)
        yield data[offset + 4:offset + 4 + n]
        offset += 4 + n


# -- replies and stores, as every test file uses them ---------------------------

def fs(path: Path | str) -> dict[str, str]:
    """The wire store map of the filesystem store at ``path``."""
    return {"kind": "filesystem", "path": str(path)}


def ok(reply: Reply) -> dict[str, Any]:
    """The reply's result; fails the test with the error when there is one."""
    return reply.unwrap()


def err(reply: Reply, code: str) -> dict[str, Any]:
    """The reply's error, which must carry ``code`` and a message."""
    assert reply.error is not None, f"expected {code}, got the result {reply.result!r}"
    assert reply.error["code"] == code, reply.error
    assert reply.error["message"], reply.error
    return reply.error
