"""Opening store files so that no file can block or exhaust the sidecar.

Every file the sidecar or a worker reads from a store (chunks, shards,
metadata documents, zip archives, and the files zarr-python reads through
the sidecar's ``LocalStore``) is opened here, by :func:`open_regular`:

- with ``O_NONBLOCK``, so that opening a FIFO returns at once instead of
  waiting forever for a writer (the flag is cleared again once the file is
  known to be regular, so reads block as usual);
- then checked with ``fstat``: anything but a regular file (a directory, a
  FIFO, a socket, a device such as ``/dev/zero`` behind a symlink) is a
  :class:`~pybridge.errors.StoreError` that names the path and what it is;
- and its size checked against a limit before a byte is read, so a sparse
  10 GiB file is refused in microseconds instead of being read.

A missing file (or a path through a missing directory or a file) is None:
the caller decides what missing means (a chunk reads as the fill value).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from typing import Any

from pybridge.errors import BridgeError, DecodeFailed, InvalidMetadata, StoreError
from pybridge.zarr.oserrors import file_error

__all__ = [
    "CHUNK_SLACK",
    "MAX_METADATA_BYTES",
    "METADATA_NAMES",
    "max_stored_bytes",
    "kind_of",
    "limits_for",
    "open_regular",
    "read_metadata",
    "read_range",
    "read_chunk_file",
    "read_regular",
    "remove_chunk_file",
    "write_chunk_file",
]

KiB = 1024
MiB = 1024 * KiB

#: The largest metadata document (``zarr.json``, ``.zarray``, ...) read.
MAX_METADATA_BYTES = 64 * MiB
#: A stored chunk may be at most ``EXPANSION`` times its raw size plus
#: ``CHUNK_SLACK`` bytes: far above what any numcodecs codec chain produces
#: (compressors add a few bytes; text codecs such as ``json`` a few times the
#: raw size), far below a sparse or endless file.
EXPANSION = 16
CHUNK_SLACK = 1 * MiB
#: The per-inner-chunk slack of a shard.
INNER_SLACK = 64 * KiB

_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


#: Names of metadata documents (Zarr v2 and v3, and N5's ``attributes.json``).
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata",
                            "attributes.json"})


def limits_for(key: str, limit: int | None) -> tuple[str, int | None, type[BridgeError]]:
    """``(what, limit, error)`` for reading the store value ``key``: a metadata
    document is limited to :data:`MAX_METADATA_BYTES` (:class:`InvalidMetadata`),
    anything else (a chunk) to ``limit`` (:class:`DecodeFailed`)."""
    if key.rsplit("/", 1)[-1] in METADATA_NAMES:
        return "metadata document", MAX_METADATA_BYTES, InvalidMetadata
    return "chunk", limit, DecodeFailed


def max_stored_bytes(raw_nbytes: int, pieces: int = 1) -> int:
    """The largest stored size accepted for an object of ``raw_nbytes``
    (``pieces`` encoded parts: the inner chunks of a shard)."""
    return EXPANSION * raw_nbytes + CHUNK_SLACK + (pieces - 1) * INNER_SLACK


def kind_of(mode: int) -> str:
    """What a file that is not regular is, from its ``st_mode`` ("FIFO", ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def _not_regular(path: str, what: str, mode: int) -> StoreError:
    kind = kind_of(mode)
    return StoreError(f"cannot read {what} {path!r}: it is a {kind}, not a regular file",
                      path=path, file_type=kind)


def _open_failed(path: str, what: str, e: OSError) -> StoreError:
    if e.errno == errno.ENXIO:  # opening a socket fails so: say what it is
        try:
            mode = os.stat(path).st_mode
        except OSError:
            pass
        else:
            if not stat.S_ISREG(mode):
                return _not_regular(path, what, mode)
    return file_error(e, f"read {what}", path)


def open_regular(path: str, what: str = "file", limit: int | None = None,
                 oversize: type[BridgeError] = StoreError) -> int | None:
    """A blocking read-only fd of the regular file ``path``, or None when missing.

    Raises :class:`StoreError` when ``path`` is anything but a regular file
    or cannot be opened, and ``oversize`` (details: ``path``, ``bytes``,
    ``limit``) when it holds more than ``limit`` bytes. ``what`` names the
    file in messages ("chunk", "metadata document").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _open_failed(path, what, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, what, st.st_mode)
        if limit is not None and st.st_size > limit:
            raise oversize(f"{what} {path!r} holds {st.st_size} bytes, more than the "
                           f"{limit} bytes allowed", path=path, bytes=st.st_size, limit=limit)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, what: str = "file", limit: int | None = None,
                 oversize: type[BridgeError] = StoreError) -> bytes | None:
    """The bytes of the regular file ``path`` (None when missing), checked as
    :func:`open_regular` does; a file that grows past ``limit`` while it is
    read is refused too."""
    fd = open_regular(path, what, limit, oversize)
    if fd is None:
        return None
    try:
        return _read_all(fd, path, what, limit, oversize)
    except OSError as e:
        raise file_error(e, f"read {what}", path) from e
    finally:
        os.close(fd)


def _read_all(fd: int, path: str, what: str, limit: int | None,
              oversize: type[BridgeError]) -> bytes:
    size = os.fstat(fd).st_size
    cap = size + 1 if limit is None else min(size, limit) + 1
    parts: list[bytes] = []
    got = 0
    while True:
        piece = os.read(fd, max(cap - got, 64 * KiB))
        if not piece:
            return b"".join(parts)
        parts.append(piece)
        got += len(piece)
        if limit is not None and got > limit:
            raise oversize(f"{what} {path!r} grew past the {limit} bytes allowed while it "
                           "was read", path=path, bytes=got, limit=limit)


def read_range(path: str, what: str, byte_range: Any) -> bytes | None:
    """A zarr ``ByteRequest`` range of the regular file ``path`` (None: missing)."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    fd = open_regular(path, what)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        if isinstance(byte_range, RangeByteRequest):
            start, end = byte_range.start, min(byte_range.end, size)
        elif isinstance(byte_range, OffsetByteRequest):
            start, end = byte_range.offset, size
        elif isinstance(byte_range, SuffixByteRequest):
            start, end = max(0, size - byte_range.suffix), size
        else:
            raise TypeError(f"unexpected byte range {byte_range!r}")
        parts: list[bytes] = []
        pos = start
        while pos < end:
            piece = os.pread(fd, end - pos, pos)
            if not piece:
                break
            parts.append(piece)
            pos += len(piece)
        return b"".join(parts)
    except OSError as e:
        raise file_error(e, f"read {what}", path) from e
    finally:
        os.close(fd)


def read_metadata(path: str) -> bytes | None:
    """A metadata document's bytes (None: missing); over
    :data:`MAX_METADATA_BYTES` is :class:`InvalidMetadata`."""
    return read_regular(path, "metadata document", MAX_METADATA_BYTES, InvalidMetadata)


# -- chunk files -----------------------------------------------------------

_tmp_counter = itertools.count()


def read_chunk_file(path: str, limit: int | None = None) -> bytes | None:
    """The stored bytes of a chunk, or None when the chunk is missing.

    Anything but a regular file there is :class:`StoreError`; a file over
    ``limit`` bytes (see :func:`chunk_limit`) is :class:`DecodeFailed`,
    refused before it is read (:mod:`pybridge.zarr.files`).
    """
    return read_regular(path, "chunk", limit, DecodeFailed)


def write_chunk_file(path: str, data: bytes) -> None:
    """Write a chunk atomically: a temporary file, then a rename."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    try:
        os.makedirs(d, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise file_error(e, "write chunk", path) from e


def remove_chunk_file(path: str) -> None:
    """Delete a chunk (it then reads as the fill value). Missing is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise file_error(e, "delete chunk", path) from e
