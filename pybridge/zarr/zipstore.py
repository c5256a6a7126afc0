"""Zip archives as Zarr stores, written atomically.

Reading opens the archive once per version of the file (cached by its
``stat``); the last entry of a name wins, as in zarr-python's ``ZipStore``.
An archive with an entry whose name could escape (``..`` parts, an
absolute name, a backslash) is refused as a whole with ``forbidden_path``.

Writing never touches the archive in place. A :class:`ZipSession` (one per
request, one at a time per archive inside the sidecar) copies the archive to
a temporary file next to it, appends the new entries there, and on
:meth:`ZipSession.commit` closes it (writing the central directory), drops
superseded and deleted entries if there are any (by copying the live ones
into a second temporary file), syncs it, and renames it over the archive. A
crash at any point leaves the old archive as it was (plus a temporary file
``.<name>.<pid>.<n>.tmp``). The cost: every write request rewrites the whole
archive once, so write an archive with few, large requests.

:class:`ZipArchiveStore` is the zarr-python store over either.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from pybridge.errors import ForbiddenPath, StoreError
from pybridge.zarr.oserrors import file_error

__all__ = [
    "ZipArchive",
    "ZipArchiveStore",
    "ZipSession",
    "archive_stamp",
    "child_names",
    "open_reader",
    "session_lock",
]

# A session appends a new entry for a name it rewrites; the old one is
# dropped at commit, so zipfile's warning about it is noise.
warnings.filterwarnings("ignore", message="Duplicate name", category=UserWarning,
                        module="zipfile")

_counter = itertools.count()
_readers: OrderedDict[str, tuple[Any, ZipArchive]] = OrderedDict()
_readers_lock = threading.Lock()
_READERS = 8
_session_locks: dict[str, threading.Lock] = {}
_session_locks_lock = threading.Lock()


def _check_name(name: str, path: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
        raise ForbiddenPath(f"zip archive {path!r} has an entry {name!r} that escapes its root",
                            path=path, entry=name)


class ZipArchive:
    """One open zip file: the live entries by name, reads by range, writes."""

    def __init__(self, zf: zipfile.ZipFile, path: str) -> None:
        self.zf = zf
        self.path = path
        self.lock = threading.RLock()
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            _check_name(info.filename, path)
            if not info.is_dir():
                self.infos[info.filename] = info
        self.superseded = len(zf.infolist()) - len(self.infos)
        self.deleted: set[str] = set()

    def read(self, key: str, byte_range: ByteRequest | None = None,
             limit: int | None = None) -> bytes | None:
        """The bytes of ``key`` (a zarr ``ByteRequest`` range of them), or None.

        A whole read of a metadata document over its limit, or of anything
        else over ``limit`` bytes, is refused before it is read
        (:func:`~pybridge.zarr.files.limits_for`).
        """
        with self.lock:
            info = self.infos.get(key)
            if info is None or key in self.deleted:
                return None
            if byte_range is None:
                self._check_size(key, info, limit)
            with self.zf.open(info) as f:
                if byte_range is None:
                    return f.read()
                return _read_range(f, info.file_size, byte_range)

    def _check_size(self, key: str, info: zipfile.ZipInfo, limit: int | None) -> None:
        from pybridge.zarr.files import limits_for

        what, limit, oversize = limits_for(key, limit)
        if limit is not None and info.file_size > limit:
            raise oversize(f"{what} {key!r} of zip archive {self.path!r} holds "
                           f"{info.file_size} bytes, more than the {limit} bytes allowed",
                           path=self.path, key=key, bytes=info.file_size, limit=limit)

    def keys(self) -> list[str]:
        with self.lock:
            return [k for k in self.infos if k not in self.deleted]

    def write(self, key: str, data: bytes) -> None:
        _check_name(key, self.path)
        info = zipfile.ZipInfo(key, date_time=time.localtime(time.time())[:6])
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        with self.lock:
            if key in self.infos:
                self.superseded += 1
            self.zf.writestr(info, data)
            self.infos[key] = info
            self.deleted.discard(key)

    def delete(self, key: str) -> None:
        with self.lock:
            if key in self.infos and key not in self.deleted:
                self.deleted.add(key)


def _read_range(f: Any, size: int, byte_range: ByteRequest) -> bytes:
    if isinstance(byte_range, RangeByteRequest):
        f.seek(byte_range.start)
        return bytes(f.read(max(0, byte_range.end - byte_range.start)))
    if isinstance(byte_range, OffsetByteRequest):
        f.seek(byte_range.offset)
    elif isinstance(byte_range, SuffixByteRequest):
        f.seek(max(0, size - byte_range.suffix))
    else:
        raise TypeError(f"unexpected byte range {byte_range!r}")
    return bytes(f.read())


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise file_error(e, "stat zip archive", path) from e
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def archive_stamp(path: str) -> tuple[int, int, int] | None:
    """What changes whenever the archive is rewritten (None: no archive)."""
    return _stat(path)


def _regular(path: str) -> Any:
    """The archive file opened for reading (None: missing); anything but a
    regular file is :class:`StoreError` (:mod:`pybridge.zarr.files`)."""
    from pybridge.zarr.files import open_regular

    fd = open_regular(path, "zip archive")
    return None if fd is None else os.fdopen(fd, "rb")


class _OwningZipFile(zipfile.ZipFile):
    """A ZipFile for reading that closes the file object it was given."""

    def __init__(self, f: Any) -> None:
        self._owned = f
        super().__init__(f, "r")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._owned.close()


def _open_zip(path: str) -> zipfile.ZipFile:
    f = _regular(path)
    if f is None:
        raise StoreError(f"cannot open zip archive {path!r}: it is missing", path=path)
    try:
        return _OwningZipFile(f)
    except zipfile.BadZipFile as e:
        f.close()
        raise StoreError(f"{path!r} is not a readable zip archive: {e}", path=path) from e
    except OSError as e:
        f.close()
        raise file_error(e, "open zip archive", path) from e


def open_reader(path: str) -> ZipArchive | None:
    """The archive at ``path`` opened for reading (cached per version), or None."""
    stamp = _stat(path)
    if stamp is None:
        return None
    with _readers_lock:
        hit = _readers.get(path)
        if hit is not None and hit[0] == stamp:
            _readers.move_to_end(path)
            return hit[1]
    archive = ZipArchive(_open_zip(path), path)
    with _readers_lock:
        _readers.pop(path, None)
        _readers[path] = (stamp, archive)
        while len(_readers) > _READERS:
            _readers.popitem(last=False)
    # A replaced reader is not closed here: a request that took it before
    # the archive changed may still be reading from it ("Attempt to use ZIP
    # archive that was already closed"). It closes when its last user drops it.
    return archive


def session_lock(path: str) -> threading.Lock:
    """The lock that serializes write sessions on one archive."""
    with _session_locks_lock:
        return _session_locks.setdefault(path, threading.Lock())


class ZipSession:
    """Writes to one archive, made visible all at once by :meth:`commit`.

    The caller holds :func:`session_lock` for the archive.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        d, base = os.path.split(path)
        self.tmp = os.path.join(d, f".{base}.{os.getpid()}.{next(_counter)}.tmp")
        try:
            src = _regular(path)
            if src is not None:
                with src, open(self.tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                zf = zipfile.ZipFile(self.tmp, "a")
            else:
                os.makedirs(d, exist_ok=True)
                zf = zipfile.ZipFile(self.tmp, "w")
        except StoreError:
            self._remove(self.tmp)
            raise
        except zipfile.BadZipFile as e:
            self._remove(self.tmp)
            raise StoreError(f"{path!r} is not a readable zip archive: {e}", path=path) from e
        except OSError as e:
            self._remove(self.tmp)
            raise file_error(e, "write zip archive", path) from e
        try:
            self.archive = ZipArchive(zf, path)
        except BaseException:
            zf.close()
            self._remove(self.tmp)
            raise
        self.dirty = False

    @staticmethod
    def _remove(path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    def write(self, key: str, data: bytes) -> None:
        self.archive.write(key, data)
        self.dirty = True

    def delete(self, key: str) -> None:
        self.archive.delete(key)
        self.dirty = True

    def commit(self) -> None:
        """Make the writes visible (or drop the copy when nothing was written)."""
        archive = self.archive
        try:
            archive.zf.close()
            if not self.dirty:
                self._remove(self.tmp)
                return
            final = self.tmp
            if archive.superseded or archive.deleted:
                final = self._compact()
            _fsync(final)
            os.replace(final, self.path)
            _fsync_dir(os.path.dirname(self.path))
        except OSError as e:
            self.abort()
            raise file_error(e, "write zip archive", self.path) from e

    def _compact(self) -> str:
        """Copy the live entries into a fresh archive; return its path."""
        out_path = self.tmp + ".c"
        live = self.archive.infos
        deleted = self.archive.deleted
        try:
            with zipfile.ZipFile(self.tmp, "r") as src, zipfile.ZipFile(out_path, "w") as dst:
                for name, info in live.items():
                    if name in deleted:
                        continue
                    copy = zipfile.ZipInfo(name, date_time=info.date_time)
                    copy.compress_type = info.compress_type
                    copy.external_attr = info.external_attr
                    with src.open(info) as fin, dst.open(copy, "w") as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
        except BaseException:
            self._remove(out_path)
            raise
        self._remove(self.tmp)
        return out_path

    def abort(self) -> None:
        """Drop every write; the archive stays as it was."""
        with contextlib.suppress(Exception):
            self.archive.zf.close()
        self._remove(self.tmp)
        self._remove(self.tmp + ".c")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ZipArchiveStore(Store):
    """zarr-python's view of a :class:`ZipArchive` (None: a missing archive).

    Writes go to ``session`` (read-only without one).
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True

    def __init__(self, archive: ZipArchive | None, session: ZipSession | None = None,
                 *, read_only: bool = True, limit: int | None = None) -> None:
        super().__init__(read_only=read_only or session is None)
        self.archive = archive
        self.session = session
        self.limit = limit

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __str__(self) -> str:
        return f"zip://{self.archive.path if self.archive else '(missing)'}"

    def with_read_only(self, read_only: bool = False) -> ZipArchiveStore:
        return ZipArchiveStore(self.archive, self.session, read_only=read_only,
                               limit=self.limit)

    def with_chunk_limit(self, limit: int | None) -> ZipArchiveStore:
        """This store, refusing whole reads of chunks over ``limit`` bytes."""
        return ZipArchiveStore(self.archive, self.session, read_only=self.read_only,
                               limit=limit)

    async def _open(self) -> None:
        self._is_open = True

    def _keys(self) -> list[str]:
        return self.archive.keys() if self.archive is not None else []

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        data = (self.archive.read(key, byte_range, self.limit) if self.archive is not None
                else None)
        if data is None:
            return None
        return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        a = self.archive
        return a is not None and key in a.infos and key not in a.deleted

    def _writable_session(self) -> ZipSession:
        self._check_writable()
        assert self.session is not None
        return self.session

    async def set(self, key: str, value: Buffer) -> None:
        self._writable_session().write(key, value.to_bytes())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not await self.exists(key):
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self._writable_session().delete(key)

    async def delete_dir(self, prefix: str) -> None:
        session = self._writable_session()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        for key in self._keys():
            if key.startswith(prefix):
                session.delete(key)

    async def list(self) -> AsyncIterator[str]:
        for key in self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for name in child_names(self._keys(), prefix):
            yield name

    def close(self) -> None:
        pass


def child_names(keys: Iterable[str], prefix: str) -> list[str]:
    """The names one level below ``prefix`` among ``keys`` (in first-seen order)."""
    prefix = prefix.strip("/")
    seen: dict[str, None] = {}
    for key in keys:
        if prefix:
            if not key.startswith(prefix + "/"):
                continue
            key = key[len(prefix) + 1:]
        name = key.split("/")[0]
        if name:
            seen[name] = None
    return list(seen)
