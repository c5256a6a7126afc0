"""Shared-memory segments: files in ``/dev/shm`` mapped with ``mmap``.

A segment is a plain file created with ``O_CREAT | O_EXCL`` and mode 0600, so
no other user can read it and no two creators can share a name. Its name is
``pybridge-<sidecar pid>-<purpose>-<n>``: the pid is the sidecar's (the main
process's), also in the workers, so one glob finds everything a sidecar left.

``multiprocessing.shared_memory`` is not used on purpose: on Python 3.11 its
resource tracker warns about (and may unlink) segments that another process
attached to. Here the rule is simple: whoever creates a segment unlinks it,
:func:`sweep_own` removes any leftovers when the sidecar stops, and
:func:`sweep_dead` removes those of sidecars that died without cleaning up.

A segment is never resized in place: :meth:`Segment.grow` creates a bigger one
and unlinks the old file (so a reader that still maps the old file keeps
valid memory until it unmaps it).

Space is reserved with ``posix_fallocate`` before anything is mapped, so a
full ``/dev/shm`` is an error at creation (:class:`ShmUnavailable`), never a
SIGBUS when a page of the mapping is first written.

Segments that never leave the sidecar and its workers (band buffers, the
workers' input and output buffers) are made with :meth:`Segment.scratch`:
in ``/dev/shm`` when it can hold them, else as a ``memfd`` (anonymous shared
memory that needs no ``/dev/shm``). A memfd segment's :attr:`~Segment.path`
is a locator ``memfd:<pid>:<fd>:<inode>``; other processes of the same user
open it through ``/proc/<pid>/fd/<fd>`` (:func:`open_segment`), and its
memory is freed once its creator unlinks it (closes its descriptor) and
every mapping is gone, or when its creator dies.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import re
from typing import Any

__all__ = [
    "SHM_DIR",
    "Segment",
    "ShmUnavailable",
    "open_segment",
    "probe",
    "segment_pid",
    "set_sidecar_pid",
    "sidecar_pid",
    "sweep_dead",
    "sweep_own",
]

SHM_DIR = "/dev/shm"
PREFIX = "pybridge-"

MEMFD = "memfd:"

_NAME_RE = re.compile(r"^pybridge-(\d+)-")
_MEMFD_RE = re.compile(r"^memfd:(\d+):(\d+):(\d+)$")
_PURPOSE_RE = re.compile(r"^[A-Za-z0-9_.]+$")

_sidecar_pid: int | None = None
_counter = itertools.count()


def set_sidecar_pid(pid: int) -> None:
    """Name segments after ``pid``; workers call this with the sidecar's pid."""
    global _sidecar_pid
    _sidecar_pid = pid


def sidecar_pid() -> int:
    """The pid segments are named after: the sidecar's, ``os.getpid()`` by default."""
    return os.getpid() if _sidecar_pid is None else _sidecar_pid


def segment_pid(path: str) -> int | None:
    """The sidecar pid in a segment's file name, or None for other files."""
    m = _NAME_RE.match(os.path.basename(path))
    return int(m.group(1)) if m else None


class ShmUnavailable(OSError):
    """``/dev/shm`` cannot hold a segment: missing, read-only, not ours, or full."""


def _reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes for ``fd`` now (ENOSPC here, not SIGBUS later)."""
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, size)


def _shm_error(size: int, e: OSError) -> ShmUnavailable:
    reason = errno.errorcode.get(e.errno or 0, "") or type(e).__name__
    return ShmUnavailable(e.errno or 0, f"{SHM_DIR} cannot hold a segment of {size} bytes: "
                                        f"{e.strerror or e} ({reason})")


def open_segment(path: str, flags: int) -> int:
    """Open a segment by its :attr:`Segment.path` (a file, or a memfd locator)."""
    m = _MEMFD_RE.match(path)
    if m is None:
        return os.open(path, flags | os.O_CLOEXEC)
    pid, fd_no, ino = m.groups()
    fd = os.open(f"/proc/{pid}/fd/{fd_no}", flags | os.O_CLOEXEC)
    if os.fstat(fd).st_ino != int(ino):
        os.close(fd)  # that descriptor number now holds something else
        raise FileNotFoundError(errno.ENOENT, f"the memfd segment {path} is gone")
    return fd


class Segment:
    """One mapped shared-memory file.

    ``buf`` is a writable memoryview of the whole file. Slices of it must be
    released (or dropped) before :meth:`close`; a mapping that still has
    exported views is left to the garbage collector instead of failing.
    """

    __slots__ = ("_fd", "_mm", "buf", "owner", "path", "size")

    def __init__(self, path: str, size: int, mm: mmap.mmap | None, owner: bool,
                 fd: int | None = None) -> None:
        self.path = path
        self.size = size
        self.owner = owner
        self._mm = mm
        self._fd = fd  # a memfd's creator keeps it open: the segment lives as long
        self.buf: memoryview = memoryview(mm) if mm is not None else memoryview(b"")

    def __repr__(self) -> str:
        return f"Segment({self.path!r}, size={self.size})"

    @classmethod
    def create(cls, size: int, purpose: str) -> Segment:
        """Create a new segment in ``/dev/shm`` of exactly ``size`` bytes, mode 0600.

        ``purpose`` is a short tag (letters, digits, ``_`` and ``.``) that
        goes into the name, for example ``"w0in"`` or ``"read"``. The space
        is reserved first: raises :class:`ShmUnavailable` (an ``OSError``
        whose message names ``/dev/shm``) when the file cannot be made or
        the space cannot be had.
        """
        if size < 0:
            raise ValueError(f"segment size must be >= 0, got {size}")
        if not _PURPOSE_RE.match(purpose):
            raise ValueError(f"bad segment purpose {purpose!r}")
        while True:
            path = os.path.join(SHM_DIR, f"{PREFIX}{sidecar_pid()}-{purpose}-{next(_counter)}")
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # another process of this sidecar took that number
            except OSError as e:
                raise _shm_error(size, e) from None
            break
        try:
            if size:
                _reserve(fd, size)
                mm: mmap.mmap | None = mmap.mmap(fd, size)
            else:
                mm = None
        except BaseException as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            if isinstance(e, OSError):
                raise _shm_error(size, e) from None
            raise
        os.close(fd)
        return cls(path, size, mm, owner=True)

    @classmethod
    def scratch(cls, size: int, purpose: str) -> Segment:
        """A segment for the sidecar and its workers only: in ``/dev/shm``, or
        else a memfd. Raises :class:`~pybridge.errors.TooLarge` when neither
        can reserve ``size`` bytes (the machine is out of memory)."""
        try:
            return cls.create(size, purpose)
        except ShmUnavailable as e:
            shm_error = e
        try:
            return cls.create_memfd(size, purpose)
        except OSError as e:
            from pybridge.errors import TooLarge

            raise TooLarge(f"cannot reserve {size} bytes of shared memory: {shm_error}; "
                           f"nor as a memfd: {e.strerror or e}", bytes=size,
                           reason=str(e)) from None

    @classmethod
    def create_memfd(cls, size: int, purpose: str) -> Segment:
        """A memfd segment of exactly ``size`` bytes (see the module docstring)."""
        if size < 0:
            raise ValueError(f"segment size must be >= 0, got {size}")
        fd = os.memfd_create(f"{PREFIX}{purpose}", os.MFD_CLOEXEC)
        try:
            mm: mmap.mmap | None = None
            if size:
                _reserve(fd, size)
                mm = mmap.mmap(fd, size)
            path = f"{MEMFD}{os.getpid()}:{fd}:{os.fstat(fd).st_ino}"
        except BaseException:
            os.close(fd)
            raise
        return cls(path, size, mm, owner=True, fd=fd)

    @classmethod
    def attach(cls, path: str) -> Segment:
        """Map an existing segment (for example one the sidecar created)."""
        fd = open_segment(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size) if size else None
        finally:
            os.close(fd)
        return cls(path, size, mm, owner=False)

    def grow(self, min_size: int, purpose: str) -> Segment:
        """Return a segment of at least ``min_size`` bytes.

        Returns ``self`` when it is big enough. Otherwise creates a new
        segment (at least twice the old size), then closes this one and
        unlinks its file when this process created it.
        """
        if min_size <= self.size:
            return self
        new = Segment.scratch(max(min_size, 2 * self.size), purpose)
        self.close()
        if self.owner:
            self.unlink()
        return new

    def close(self) -> None:
        """Unmap. Idempotent. Views still exported keep the memory alive."""
        try:
            self.buf.release()
        except BufferError:
            pass  # something holds a buffer of the view itself
        self.buf = memoryview(b"")
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a slice is still exported; the GC unmaps it later

    def unlink(self) -> None:
        """Remove the file (close a memfd). Idempotent; the mapping stays valid
        until closed."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            return
        if self.path.startswith(MEMFD):
            return  # someone else's memfd: its creator frees it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (bytes-like) at ``offset`` of the open file ``fd``."""
    view = memoryview(data).cast("B")
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is someone else's
    return True


def _segment_files() -> list[str]:
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    return [os.path.join(SHM_DIR, n) for n in names if n.startswith(PREFIX)]


def _remove(path: str) -> bool:
    """Remove a leftover: a segment file, or a client's upload staging
    directory (``…-up-….stage``, left if the client died while creating an
    upload file). Never follows a symlink. True when it is gone."""
    try:
        os.unlink(path)
        return True
    except IsADirectoryError:
        pass
    except OSError:
        return False
    try:
        for name in os.listdir(path):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)
        return True
    except OSError:
        return False


def sweep_dead() -> list[str]:
    """Unlink the segments of sidecars that are no longer running.

    Called when the pool starts. Returns the paths removed.
    """
    own = sidecar_pid()
    removed = []
    for path in _segment_files():
        pid = segment_pid(path)
        if pid is None or pid == own or _pid_alive(pid):
            continue
        if _remove(path):  # else gone already, or not ours to remove
            removed.append(path)
    return removed


def sweep_own() -> list[str]:
    """Unlink every segment named after this sidecar. Called at shutdown."""
    own = sidecar_pid()
    removed = []
    for path in _segment_files():
        if segment_pid(path) == own and _remove(path):
            removed.append(path)
    return removed


def probe(nbytes: int) -> dict[str, Any]:
    """Whether a handoff of ``nbytes`` can go through ``/dev/shm`` now.

    Creates (and removes) a segment of ``nbytes`` (at least one page) with
    its space reserved. The answer is ``hello``'s ``"handoff"`` map
    (PROTOCOL.md §4): ``usable``, ``dir``, ``free_bytes`` (None when
    unknown), ``dev`` (the directory's device number, so that a client can
    tell whether it sees the same ``/dev/shm``), ``uid`` (the owner an upload
    file must have) and ``reason`` (None when usable).
    """
    out: dict[str, Any] = {"usable": False, "dir": SHM_DIR, "free_bytes": None,
                           "dev": None, "uid": os.geteuid(), "reason": None}
    try:
        st = os.statvfs(SHM_DIR)
        out["free_bytes"] = st.f_bavail * st.f_frsize
        out["dev"] = os.stat(SHM_DIR).st_dev
    except OSError as e:
        out["reason"] = f"{SHM_DIR}: {e.strerror or e}"
        return out
    try:
        seg = Segment.create(max(nbytes, mmap.PAGESIZE), "probe")
    except ShmUnavailable as e:
        out["reason"] = str(e)
        return out
    seg.close()
    seg.unlink()
    out["usable"] = True
    return out
